"""Writes tests/fixtures/spectral/dgks.json: a symmetric matrix on which Lanczos with a single
classical Gram–Schmidt pass per step loses orthogonality, and scipy's top eigenpair of it on the
complement of a locked vector (the reference for `src/linalg/lanczos.rs`'s DGKS test).

Why it needs a constructed matrix. The second Gram–Schmidt pass only matters when the first one
cancels most of w = M q_k − α q_k − β q_{k−1}, i.e. when w's components along the locked vectors
and the earlier Lanczos vectors are comparable to what is left, β_k. For a locked vector that is
an exact eigenvector of M those components are rounding errors (~1e-16), while β_k > 1e-10 (the
Fiedler tolerance; smaller ends the run). So the matrix here couples its locked unit vector z to
the complement (z is not an eigenvector: M z has a part r ⟂ z, as for a Ritz vector with a
residual or a degree-guarded graph's D^1/2 1), and makes the Krylov space nearly invariant:

    M = A + z rᵀ + r zᵀ,   A = μ₁ e eᵀ + Σ_i λ_i v_i v_iᵀ   (everything ⟂ z),

with μ₁ = 0.8 the top eigenvalue on z^⊥ and λ_i ∈ {0.5, −0.3, 0.2} on S = {z, e}^⊥. The start
vector Lanczos draws (stream `key`, deflated against z; the same uniforms as
`fiedler::linalg::synthetic::uniform`) has only η = 2e-10 of e. Its part in S lies in three
eigenspaces, so after three steps the Krylov space is invariant but for η: β_2 ≈ 1.2e-9, while
rᵀq_2 puts 0.16 of M q_2 on z. One pass leaves ~1e-16·0.16/1.2e-9 ≈ 1e-8 of q_3 along z and
the basis; then r's part along e turns that into first-order errors in T_k (Ritz value, vector
and its overlap with z all off by ~1e-9). With the second pass the result is exact to ~1e-15.

Usage (from the repo root, < 1 s):

    tools/reference/.venv/bin/python tools/reference/dgks_golden.py
"""

import json
import pathlib
import sys

import numpy as np
import scipy
import scipy.linalg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from spectral_features import uniform  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/spectral/dgks.json"

N = 12
KEY = 0xF1ED1E70  # START_FIEDLER in src/linalg/solve.rs
TOL = 1e-10  # TOL_VECTOR in src/linalg/solve.rs
ETA = 2e-10  # share of the top eigenvector in the start vector
TOP = 0.8
REST = [0.5, -0.3, 0.2]  # eigenvalues on S, cycled
R_S, R_TOP = 0.3, 0.2  # size of z's coupling into S and onto the top eigenvector
SEED = 0


def start_vector(n, key, z):
    """lanczos::start_vector's first attempt: uniforms − 0.5, deflated twice, normalised."""
    s = uniform(key, np.arange(n)) - 0.5
    for _ in range(2):
        s = s - (z @ s) * z
    return s / np.linalg.norm(s)


def orthonormal_complement(vectors, n, rng):
    """An orthonormal basis of the complement of the given orthonormal vectors."""
    q = np.column_stack(vectors)
    x = rng.standard_normal((n, n - q.shape[1]))
    for _ in range(2):
        x -= q @ (q.T @ x)
    basis, _ = np.linalg.qr(x)
    return basis


def build():
    rng = np.random.default_rng(SEED)
    z = rng.standard_normal(N)
    z /= np.linalg.norm(z)
    s = start_vector(N, KEY, z)
    c = orthonormal_complement([z, s], N, rng)
    # The top eigenvector e has exactly ETA of s; S = {z, e}^⊥ holds the rest of s.
    e = np.sqrt(1 - ETA**2) * c[:, 0] + ETA * s
    s_rest = np.sqrt(1 - ETA**2) * s - ETA * c[:, 0]
    basis_s = np.column_stack([s_rest, c[:, 1:]])
    rotation, _ = np.linalg.qr(rng.standard_normal((N - 2, N - 2)))
    v = basis_s @ rotation
    lam = np.array([REST[i % len(REST)] for i in range(N - 2)])
    a = TOP * np.outer(e, e) + (v * lam) @ v.T
    r = R_TOP * e + R_S * (basis_s @ rng.standard_normal(N - 2)) / np.sqrt(N - 2)
    m = a + np.outer(z, r) + np.outer(r, z)
    m = (m + m.T) / 2  # exactly symmetric
    return m, z, s, e


def main():
    m, z, s, e = build()
    norm = np.linalg.norm(m, 2)
    assert norm <= 1.0, f"‖M‖ = {norm} > 1 (Lanczos' tolerance is relative to ‖M‖ ≤ 1)"
    # The reference: M restricted to z^⊥, in an orthonormal basis of it.
    comp = scipy.linalg.null_space(z[None, :])
    values, vectors = scipy.linalg.eigh(comp.T @ m @ comp)
    top = comp @ vectors[:, -1]
    top *= np.sign(top @ e)
    print(f"‖M‖₂ = {norm:.4f}; top two on z⊥: {float(values[-1])!r}, {float(values[-2])!r}")
    print(f"start vector's share of the top eigenvector: {abs(s @ top):.3e}")
    doc = {
        "about": "tools/reference/dgks_golden.py: M (row-major) and its locked unit vector; "
        "`eigenvalue`/`vector` are the top eigenpair of M on the complement of `locked` "
        "(scipy.linalg.eigh in an orthonormal basis of it), `next` the second eigenvalue there. "
        "Lanczos must start from stream `key` (the matrix is built around that start vector).",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "n": N,
        "key": KEY,
        "tol": TOL,
        "eta": ETA,
        "m": [float(x) for x in m.ravel()],
        "locked": [float(x) for x in z],
        "eigenvalue": float(values[-1]),
        "next": float(values[-2]),
        "vector": [float(x) for x in top],
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
