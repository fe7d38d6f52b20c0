"""Reference explanation methods for a CLIP image/text pair (numpy, float64).

Written from the fiedler methods spec (/work/shared/spec/methods.md, sections B, C.1, C.4-C.10,
H); no third-party explanation code is used.  Everything here works on ONE pair and on
UNPADDED tensors: the caller slices text matrices to [0:len, 0:len] and text features to
[0:len] before calling.  All arithmetic is float64 (inputs are the float32 tensors captured from
the model), so the results are the exact values of the methods applied to the f32 forward and
backward pass, up to float64 rounding.

Shapes, per tower:
    attn[l], grad[l]   [H, N, N]   attention probabilities of encoder layer l and dy/dA
    hidden[l]          [N, D]      output of encoder layer l (= hidden_states[l + 1])
Vision: N = 1 + patches, row/column 0 is the class token.
Text:   N = len (no padding), position 0 = start token, e = end-of-text position, words 1..e-1.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

METHODS = [
    "raw-attn",
    "grad-cam",
    "rollout",
    "chefer",
    "chefer-last",
    "dsmi",
    "dsmi-grad",
    "dsmi-grad-attn",
]

METHOD_DEFINITIONS = {
    "raw-attn": "last layer: M = mean_h A_L; image = M_vis[0, 1:], text = M_txt[e, words] (0 at start/end)",
    "grad-cam": "last layer: w_h = mean over all (i,j) of dA_h (text: unpadded [0:len,0:len], causally "
    "masked entries included); M = max(mean_h(w_h * A_h), 0); readout as raw-attn",
    "rollout": "B_l = mean_h A_l + I, each row divided by its sum; R = B_{L-1} ... B_0 (later layers on "
    "the left); image = R_vis[0, 1:], text = R_txt[e, words]",
    "chefer": "R = I; for l = 0..L-1: R <- R + Abar_l R with Abar_l = mean_h(max(dA_l * A_l, 0)) (clamp per "
    "head, then mean); no residual normalisation; readout as rollout",
    "chefer-last": "as chefer with start layer L-1 (last layer only, Chefer's CLIP notebook): "
    "R = I + Abar_{L-1}",
    "dsmi": "|Fiedler vector| of the last layer output over the graph tokens (image: patches; text: "
    "words, 0 at start/end)",
    "dsmi-grad": "r = sum over all layers l of Gbar_l f_l (matrix-vector), Gbar_l = mean_h(max(dA_l, 0)) "
    "restricted to graph-token rows and columns, f_l = |Fiedler| of layer-l output over the same tokens; "
    "image = r, text = r at words, 0 at start/end",
    "dsmi-grad-attn": "as dsmi-grad with Abar_l = mean_h(max(dA_l * A_l, 0)) in place of Gbar_l",
}

SPECTRAL_DEFINITION = (
    "F = graph-token rows of the layer output (float64); rows L2-normalised; W = F F^T; W[W < 0] = 0; "
    "W /= max(W); d = row sums of W (d < 1e-12 -> 1); L = diag(d) - W; solve L v = lambda diag(d) v "
    "with scipy.linalg.eigh(L, diag(d)) (ascending eigenvalues, vectors with v^T D v = 1); "
    "f = |column 1|; lambda2 = w[1], gap = w[2] - w[1]"
)


def fiedler(features: np.ndarray) -> tuple[np.ndarray, float, float]:
    """|Fiedler vector| of the normalised-cut graph of `features` (rows = graph tokens).

    Returns (f, lambda2, lambda3 - lambda2)."""
    F = np.asarray(features, dtype=np.float64)
    n = F.shape[0]
    if n < 3:
        raise ValueError(f"spectral graph needs >= 3 tokens, got {n}")
    norms = np.sqrt((F * F).sum(axis=1, keepdims=True))
    F = F / np.maximum(norms, 1e-12)  # guard only matters for an all-zero row
    W = F @ F.T
    W[W < 0] = 0.0
    if W.max() > 0:
        W = W / W.max()
    d = W.sum(axis=1)
    d[d < 1e-12] = 1.0
    D = np.diag(d)
    L = D - W
    w, v = scipy.linalg.eigh(L, D)
    f = np.abs(v[:, 1])
    return f, float(w[1]), float(w[2] - w[1])


def head_mean(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).mean(axis=0)


def rule5(attn: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Abar = mean_h((dA_h * A_h)^+), clamp per head before the mean."""
    a = np.asarray(attn, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    return np.maximum(g * a, 0.0).mean(axis=0)


def grad_only(grad: np.ndarray) -> np.ndarray:
    """Gbar = mean_h((dA_h)^+)."""
    return np.maximum(np.asarray(grad, dtype=np.float64), 0.0).mean(axis=0)


def grad_cam(attn: np.ndarray, grad: np.ndarray) -> np.ndarray:
    a = np.asarray(attn, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    w = g.mean(axis=(1, 2))  # one weight per head, over every (i, j)
    return np.maximum((w[:, None, None] * a).mean(axis=0), 0.0)


def rollout(attns: list[np.ndarray], start: int = 0) -> np.ndarray:
    n = attns[0].shape[-1]
    R = np.eye(n)
    for a in attns[start:]:
        B = head_mean(a) + np.eye(n)
        B = B / B.sum(axis=1, keepdims=True)
        R = B @ R  # later layers on the left
    return R


def chefer(attns: list[np.ndarray], grads: list[np.ndarray], start: int = 0) -> np.ndarray:
    n = attns[0].shape[-1]
    R = np.eye(n)
    for a, g in list(zip(attns, grads))[start:]:
        R = R + rule5(a, g) @ R
    return R


class Tower:
    """Per-pair inputs of one tower plus its graph tokens and readout row."""

    def __init__(self, kind: str, attns, grads, hiddens, eot: int | None = None):
        assert kind in ("vision", "text")
        self.kind = kind
        self.attns = [np.asarray(a, dtype=np.float64) for a in attns]
        self.grads = [np.asarray(g, dtype=np.float64) for g in grads]
        self.hiddens = [np.asarray(h, dtype=np.float64) for h in hiddens]
        n = self.attns[0].shape[-1]
        for a, g, h in zip(self.attns, self.grads, self.hiddens):
            assert a.shape[1:] == (n, n) and g.shape == a.shape and h.shape[0] == n
        self.n = n
        if kind == "vision":
            self.row = 0
            self.cols = np.arange(1, n)  # patches, raster order
        else:
            assert eot is not None and eot == n - 1, (eot, n)
            self.row = eot
            self.cols = np.arange(1, eot)  # words
        self.n_layers = len(self.attns)

    def readout(self, M: np.ndarray) -> np.ndarray:
        """Image: M[0, 1:] (length patches).  Text: length len, M[e, j] at words, 0 elsewhere."""
        vals = M[self.row, self.cols]
        return self.scatter(vals)

    def scatter(self, vals: np.ndarray) -> np.ndarray:
        if self.kind == "vision":
            return np.asarray(vals, dtype=np.float64).copy()
        out = np.zeros(self.n)
        out[self.cols] = vals
        return out

    def block(self, M: np.ndarray) -> np.ndarray:
        return M[np.ix_(self.cols, self.cols)]

    def spectra(self):
        res = [fiedler(h[self.cols]) for h in self.hiddens]
        fs = [r[0] for r in res]
        lam = np.array([[r[1], r[2]] for r in res])
        return fs, lam


def explain_tower(t: Tower) -> tuple[dict[str, np.ndarray], list[np.ndarray], np.ndarray]:
    """All methods for one tower; returns (vectors by method, Fiedler vectors per layer, lambdas)."""
    L = t.n_layers
    out: dict[str, np.ndarray] = {}
    out["raw-attn"] = t.readout(head_mean(t.attns[-1]))
    out["grad-cam"] = t.readout(grad_cam(t.attns[-1], t.grads[-1]))
    out["rollout"] = t.readout(rollout(t.attns, 0))
    out["chefer"] = t.readout(chefer(t.attns, t.grads, 0))
    out["chefer-last"] = t.readout(chefer(t.attns, t.grads, L - 1))
    fs, lam = t.spectra()
    out["dsmi"] = t.scatter(fs[-1])
    r_g = np.zeros(len(t.cols))
    r_a = np.zeros(len(t.cols))
    for l in range(L):
        r_g += t.block(grad_only(t.grads[l])) @ fs[l]
        r_a += t.block(rule5(t.attns[l], t.grads[l])) @ fs[l]
    out["dsmi-grad"] = t.scatter(r_g)
    out["dsmi-grad-attn"] = t.scatter(r_a)
    assert set(out) == set(METHODS)
    return out, fs, lam
