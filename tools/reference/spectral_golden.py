"""Golden cases for the spectral core (spec/methods.md §B), written to
tests/fixtures/spectral/golden.json.

For each case: the token features (a deterministic generator from spectral_features.py,
or inline values for the small hand-built graphs), the mask, and two references:

- "eigh": scipy.linalg.eigh(L, D) in float64 on W = max(F Fᵀ, 0)/max formed in float64 from
  the float32 features: the exact answer. lambdas[:4] and |v| for column 1 (D-normalised).
- "seed": the seed's own call (seed:spectral/get_fev.py::get_eigs) in float32:
  scipy.sparse.linalg.eigs(L, k=K, which='LM', sigma=-0.5, M=D) with K = 5 and the K guard
  (K >= n-1 -> K = n-2), its fallbacks, torch.kthvalue(real, 2) and abs(). For n <= 3 the
  seed raises; the error is recorded instead.

Run: tools/reference/.venv/bin/python tools/reference/spectral_golden.py
"""

import json
import math
import os
import sys

import numpy as np
import scipy
import scipy.linalg
import scipy.sparse.linalg

sys.path.insert(0, os.path.dirname(__file__))
import spectral_features as sf  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "spectral",
                   "golden.json")

CLUSTERED = {"clusters": 4, "shared": 0.5, "noise": 1.0}


def gen(kind, rows, dim, seed, **shape):
    spec = {"kind": kind, "rows": rows, "dim": dim, "seed": seed}
    if kind == "clustered":
        spec.update(CLUSTERED)
        spec.update(shape)
    return spec


def inline(values):
    values = np.asarray(values, dtype=np.float32)
    return {"kind": "inline", "rows": values.shape[0], "dim": values.shape[1],
            "values": [float(v) for v in values.ravel()]}


def noise(rows, dim, seed):
    return sf.random_features(rows, dim, seed).astype(np.float64)


def orthonormal_pair(dim, seed):
    g = noise(2, dim, seed)
    u = g[0] / np.linalg.norm(g[0])
    v = g[1] - (g[1] @ u) * u
    return u, v / np.linalg.norm(v)


def near_degenerate(scale):
    """Three equal clusters on orthogonal axes, joined by a shared direction: S3 symmetry
    makes λ2 = λ3 in the limit; noise of size `scale` splits them (gap ∝ scale)."""
    n, d = 36, 16
    f = np.zeros((n, d))
    f[np.arange(n), np.arange(n) % 3] = 1.0
    f[:, 3] = 0.6
    return inline(f + scale * noise(n, d, 31))


def polygon():
    """Points on a circle plus an offset: W is circulant, so λ2 is exactly double (up to
    the f32 rounding of the features)."""
    n, d = 18, 16
    t = 2 * np.pi * np.arange(n) / n
    f = np.zeros((n, d))
    f[:, 0], f[:, 1], f[:, 2] = np.cos(t), np.sin(t), 0.5
    return inline(f)


def antipodal():
    """Two clusters around +c and -c: all cross affinities clip to 0, two components."""
    n, d = 20, 16
    c, _ = orthonormal_pair(d, 41)
    sign = np.where(np.arange(n) < 9, 1.0, -1.0)
    return inline(sign[:, None] * c[None, :] + 0.05 * noise(n, d, 42))


def tripod():
    """Three clusters 120° apart: cross affinities ≈ -0.5 clip to 0, three components
    (λ2 = λ3 = 0)."""
    n, d = 24, 16
    u, v = orthonormal_pair(d, 51)
    k = np.array([0] * 7 + [1] * 8 + [2] * 9)
    ang = 2 * np.pi * k / 3
    f = np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v
    return inline(f + 0.05 * noise(n, d, 52))


def cases():
    out = []

    def add(name, features, mask=None, zero_rows=(), l2=True):
        rows = features["rows"]
        mask = [True] * rows if mask is None else mask
        out.append({"name": name, "rows": rows, "dim": features["dim"], "features": features,
                    "mask": [int(m) for m in mask], "zero_rows": list(zero_rows),
                    "l2_normalize": l2})

    seed = 100
    for n, d, kinds in [
        (2, 16, ["random", "clustered"]), (2, 768, ["clustered"]),
        (3, 16, ["random", "clustered"]), (3, 768, ["clustered"]),
        (4, 16, ["random", "clustered"]), (4, 768, ["clustered"]),
        (18, 16, ["random", "clustered"]), (18, 768, ["clustered"]),
        (36, 768, ["random", "clustered"]), (36, 2048, ["clustered"]),
        (49, 16, ["random"]), (49, 768, ["clustered"]),
        (145, 768, ["random", "clustered"]),
        (196, 768, ["random", "clustered"]), (196, 2048, ["clustered"]),
        (577, 768, ["random", "clustered"]), (577, 2048, ["clustered"]),
    ]:
        for kind in kinds:
            seed += 1
            add(f"{kind}_n{n}_d{d}", gen(kind, n, d, seed))
    add("text_mask_drops_cls_sep_n20_d768", gen("clustered", 20, 768, 201),
        mask=[False] + [True] * 18 + [False])
    add("image_mask_drops_cls_n50_d768", gen("clustered", 50, 768, 202), mask=[False] + [True] * 49)
    add("unnormalised_clip_variant_n49_d768", gen("clustered", 49, 768, 203, shared=2.0), l2=False)
    add("zero_rows_n18_d16", gen("clustered", 18, 16, 204), zero_rows=[3, 11])
    add("near_degenerate_gap5e-4_n36", near_degenerate(0.001))
    add("near_degenerate_gap2e-3_n36", near_degenerate(0.005))
    add("repeated_polygon_n18", polygon())
    add("disconnected_two_components_n20", antipodal())
    add("disconnected_three_components_n24", tripod())
    return out


def features_of(case):
    f = sf.make(case["features"]).copy()
    f[case["zero_rows"]] = 0.0
    return f


def eigh_reference(f32, mask, l2):
    f = f32.astype(np.float64)
    if l2:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    f = f[np.asarray(mask, dtype=bool)]
    w = f @ f.T
    w = w * (w > 0)
    if w.max() > 0:
        w = w / w.max()
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0
    lap = np.diag(d) - w
    n = len(d)
    res = {"norm_l": float(np.linalg.norm(lap, 2))}
    if n < 2:
        return res
    vals, vecs = scipy.linalg.eigh(lap, np.diag(d))
    res["lambdas"] = [float(v) for v in vals[:4]]
    res["vector"] = [float(f"{abs(v):.13g}") for v in vecs[:, 1]]
    return res


def seed_reference(f32, mask, l2):
    """get_eigs as the seed runs it, on the masked rows, in float32."""
    f = f32.astype(np.float32)
    if l2:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), np.float32(1e-12))
    f = f[np.asarray(mask, dtype=bool)]
    w = f @ f.T
    w = w * (w > 0)
    w = w / w.max()
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0
    dm = np.diag(d).astype(np.float32)
    lap = dm - w
    k = 5
    if k >= lap.shape[0] - 1:
        k = lap.shape[0] - 2
    branch = "M=D"
    try:
        try:
            vals, vecs = scipy.sparse.linalg.eigs(lap, k=k, which="LM", sigma=-0.5, M=dm)
        except Exception:
            branch = "no M"
            try:
                vals, vecs = scipy.sparse.linalg.eigs(lap, k=k, which="LM", sigma=-0.5)
            except Exception:
                branch = "largest"
                vals, vecs = scipy.sparse.linalg.eigs(lap, k=k, which="LM")
    except Exception as e:  # the seed crashes here (n <= 2)
        return {"k": k, "error": f"{type(e).__name__}: {e}"}
    real = vals.real
    if len(real) < 2:  # torch.kthvalue(real, 2) raises
        return {"k": k, "error": f"kthvalue(k=2) on {len(real)} eigenvalue(s)"}
    idx = int(np.argsort(real, kind="stable")[1])
    vec = np.abs(vecs[:, idx].real.astype(np.float32))
    return {"k": k, "branch": branch, "lambdas": sorted(float(v) for v in real),
            "lambda2": float(real[idx]), "vector": [float(v) for v in vec]}


def checksum(f32):
    flat = f32.astype(np.float64).ravel()
    return {"sum": float(flat.sum()), "sum_abs": float(np.abs(flat).sum()),
            "head": [float(v) for v in f32.ravel()[:3]], "tail": [float(v) for v in f32.ravel()[-3:]]}


def main():
    out = []
    for case in cases():
        raw = sf.make(case["features"])
        f = features_of(case)
        if case["features"]["kind"] != "inline":
            case["checksum"] = checksum(raw)
        case["eigh"] = eigh_reference(f, case["mask"], case["l2_normalize"])
        case["seed"] = seed_reference(f, case["mask"], case["l2_normalize"])
        e, s = case["eigh"], case["seed"]
        lam = e.get("lambdas", [])
        gap = lam[2] - lam[1] if len(lam) > 2 else float("nan")
        diff = (max(abs(a - b) for a, b in zip(e["vector"], s["vector"]))
                if "vector" in s and "vector" in e else float("nan"))
        print(f"{case['name']:45s} n={sum(case['mask']):4d} lambda2={lam[1] if len(lam) > 1 else float('nan'):.6f} "
              f"gap={gap:.2e} seed-vs-eigh |v| {diff:.1e}")
        out.append(case)
    doc = {
        "about": "Spectral core golden cases (spec §B); written by tools/reference/spectral_golden.py",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cases": out,
    }
    with open(OUT, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {os.path.relpath(OUT)} ({os.path.getsize(OUT) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
