"""Per-graph time of the seed's eigensolver call (spec §B step 5) on the graphs that
`cargo bench --bench spectral` times:

    scipy.sparse.linalg.eigs(L, k=K, which='LM', sigma=-0.5, M=D)   (float32, K = 5)

on L = D - W, D from W = max(F Fᵀ, 0)/max with L2-normalised rows, features from
spectral_features.py (d = 768, the same seeds as benches/spectral.rs). Also times the
whole get_eigs path (normalise, W, D, eigs, kthvalue, abs) in numpy, for comparison
with the bench's `spectral_features` group.

Run: tools/reference/.venv/bin/python tools/reference/spectral_time_scipy.py
(BLAS threads as configured; set OPENBLAS_NUM_THREADS=1 for one core.)
"""

import os
import sys
import time

import numpy as np
import scipy
import scipy.sparse.linalg

sys.path.insert(0, os.path.dirname(__file__))
import spectral_features as sf  # noqa: E402

SIZES = [36, 49, 196, 577]
DIM = 768
DISTINCT = 16
SHAPE = dict(clusters=4, shared=0.5, noise=1.0)


def features(kind, n, i):
    seed = n * 1000 + i
    if kind == "random":
        return sf.random_features(n, DIM, seed)
    return sf.clustered_features(n, DIM, seed=seed, **SHAPE)


def laplacian(f):
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), np.float32(1e-12))
    w = f @ f.T
    w = w * (w > 0)
    w = w / w.max()
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0
    dm = np.diag(d).astype(np.float32)
    return dm - w, dm


def eigs(lap, dm):
    k = 5
    if k >= lap.shape[0] - 1:
        k = lap.shape[0] - 2
    return scipy.sparse.linalg.eigs(lap, k=k, which="LM", sigma=-0.5, M=dm)


def get_eigs(f):
    lap, dm = laplacian(f)
    vals, vecs = eigs(lap, dm)
    idx = np.argsort(vals.real, kind="stable")[1]
    return np.abs(vecs[:, idx].real.astype(np.float32))


def per_graph(fn, args, min_seconds=2.0):
    """Mean seconds per call, cycling through the distinct graphs for at least min_seconds."""
    fn(*args[0])  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn(*args[calls % len(args)])
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= len(args):
            return elapsed / calls


def main():
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, d = {DIM}")
    print(f"{'features':10s} {'n':>4s} {'eigs ms/graph':>14s} {'eigs graphs/s':>14s} "
          f"{'get_eigs ms/graph':>18s} {'get_eigs graphs/s':>18s}")
    for kind in ["clustered", "random"]:
        for n in SIZES:
            feats = [features(kind, n, i) for i in range(DISTINCT)]
            graphs = [laplacian(f) for f in feats]
            t_eigs = per_graph(eigs, graphs)
            t_all = per_graph(get_eigs, [(f,) for f in feats]) if kind == "clustered" else float("nan")
            print(f"{kind:10s} {n:4d} {t_eigs * 1e3:14.3f} {1 / t_eigs:14.1f} "
                  f"{t_all * 1e3:18.3f} {1 / t_all:18.1f}")


if __name__ == "__main__":
    main()
