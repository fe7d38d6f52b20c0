"""Deterministic synthetic token features, bit-identical to `fiedler::linalg::synthetic`.

Counter-based SplitMix64: value i of the stream with key s is mix(s + (i + 1) * GOLDEN).
Uniforms take the top 53 bits; normals are Irwin-Hall sums of four uniforms scaled to unit
variance (no transcendental functions, so no libm differences). Each step is one exactly
rounded IEEE operation in a fixed order in float64, rounded to float32 once at the end.
"""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SQRT_3 = 1.7320508075688772

TAG_ASSIGN = 0xA5516E00
TAG_CENTER = 0xCE47E200
TAG_SHARED = 0x5A4ED000
TAG_NOISE = 0x4015E000


def mix(z):
    """SplitMix64 output function on a uint64 array (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(key, idx):
    """Values idx (uint64 array) of stream `key`, uniform in [0, 1) on a 2^-53 grid."""
    idx = np.asarray(idx, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = mix(np.uint64(key) + (idx + np.uint64(1)) * GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / float(1 << 53))


def normal(key, idx):
    """Values idx of stream `key`: mean 0, variance 1 (Irwin-Hall of four uniforms)."""
    idx = np.asarray(idx, dtype=np.uint64)
    base = np.uint64(4) * idx
    u = [uniform(key, base + np.uint64(j)) for j in range(4)]
    return (((u[0] + u[1]) + u[2]) + u[3] - 2.0) * SQRT_3


def stream(seed, tag):
    return int(mix(np.uint64(seed ^ tag)))


def random_features(rows, dim, seed):
    """rows x dim float32 features with i.i.d. unit-variance entries."""
    idx = np.arange(rows * dim, dtype=np.uint64)
    return normal(seed, idx).astype(np.float32).reshape(rows, dim)


def clustered_features(rows, dim, clusters, shared, noise, seed):
    """Row i = shared*s + c_{k(i)} + noise*g_i (see the Rust docs), as float32."""
    clusters = max(clusters, 1)
    assign = stream(seed, TAG_ASSIGN)
    center = stream(seed, TAG_CENTER)
    shared_key = stream(seed, TAG_SHARED)
    noise_key = stream(seed, TAG_NOISE)
    k = np.minimum((uniform(assign, np.arange(rows, dtype=np.uint64)) * clusters).astype(np.int64),
                   clusters - 1)
    j = np.arange(dim, dtype=np.uint64)
    s = shared * normal(shared_key, j)                                   # (dim,)
    c = normal(center, k[:, None].astype(np.uint64) * np.uint64(dim) + j[None, :])
    g = noise * normal(noise_key, np.arange(rows * dim, dtype=np.uint64).reshape(rows, dim))
    return ((s[None, :] + c) + g).astype(np.float32)


def make(spec):
    """Features for a fixture's `features` object."""
    kind = spec["kind"]
    if kind == "random":
        return random_features(spec["rows"], spec["dim"], spec["seed"])
    if kind == "clustered":
        return clustered_features(spec["rows"], spec["dim"], spec["clusters"], spec["shared"],
                                  spec["noise"], spec["seed"])
    if kind == "inline":
        return np.asarray(spec["values"], dtype=np.float32).reshape(spec["rows"], spec["dim"])
    raise ValueError(f"unknown feature kind {kind!r}")
