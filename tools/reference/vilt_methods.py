"""Reference explanation methods for one ViLT sample (numpy, float64), fiedler's defaults (spec §H).

The method building blocks (head mean, rule 5, gradient-only aggregation, attention Grad-CAM,
rollout, Chefer's recursion and the spectral core) are imported from clip_methods.py; this module
only adds ViLT's single-stream token layout (spec §A.3, §H "Readout rows", "Single-stream (ViLT)
modality split", "Patch order"):

  * every matrix is first restricted to the sample's REAL tokens, in this order:
      text tokens 0..len-1 ([CLS] = 0, words 1..len-2, [SEP] = len-1), the image [CLS],
      the valid patches in raster order
    (text padding and image padding tokens dropped; both are masked keys, so real query rows of A
    still sum to 1 over real keys);
  * readout row 0 = the text [CLS] (the token the pooler reads);
  * image vector = row-0 values at the patch columns (image [CLS] excluded), raster order;
  * text vector = length len, row-0 values at the word columns, 0 at [CLS] and [SEP];
  * spectral graphs: one per modality, words (rows 1..len-2) and valid patches, from each layer's
    output hidden_states[l+1] (no final LayerNorm); Gbar_l / Abar_l restricted to the diagonal
    block of that modality.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_methods import (  # noqa: E402
    SPECTRAL_DEFINITION,
    chefer,
    fiedler,
    grad_cam,
    grad_only,
    head_mean,
    rollout,
    rule5,
)

METHODS = ["raw-attn", "grad-cam", "rollout", "chefer", "chefer-last", "dsmi", "dsmi-grad", "dsmi-grad-attn"]

METHOD_DEFINITIONS = {
    "raw-attn": "last layer: M = mean_h A_L (real tokens only); image = M[0, patches], text = M[0, words] "
    "(0 at [CLS]/[SEP])",
    "grad-cam": "last layer: w_h = mean over all (i, j) of the REAL-token block of dA_h; "
    "M = max(mean_h(w_h * A_h), 0); readout as raw-attn",
    "rollout": "B_l = mean_h A_l + I (real tokens), each row divided by its sum; R = B_{L-1} ... B_0 "
    "(later layers on the left); readout row 0 as raw-attn",
    "chefer": "R = I; for l = 0..L-1: R <- R + Abar_l R, Abar_l = mean_h(max(dA_l * A_l, 0)) (clamp per head, "
    "then mean); no residual normalisation; readout row 0 as raw-attn",
    "chefer-last": "as chefer with start layer L-1 (--start-layer -1): R = I + Abar_{L-1}",
    "dsmi": "|Fiedler vector| of the last layer output hidden_states[L] over the modality's graph tokens "
    "(image: valid patches; text: words, 0 at [CLS]/[SEP])",
    "dsmi-grad": "r = sum over all layers l of Gbar_l[mod, mod] f_l (matrix-vector), Gbar_l = mean_h(max(dA_l, 0)), "
    "f_l = |Fiedler| of hidden_states[l+1] over the same tokens",
    "dsmi-grad-attn": "as dsmi-grad with Abar_l = mean_h(max(dA_l * A_l, 0)) in place of Gbar_l",
}


class Sample:
    """One sample of a (possibly padded) batch.

    attns[l], grads[l]: [H, N, N] for the padded sequence; hiddens[l]: [N, D] = hidden_states[l+1].
    real: indices (into the padded sequence) of the real tokens in the order
          text 0..len-1, image [CLS], valid patches (raster order)."""

    def __init__(self, attns, grads, hiddens, real: list[int], text_len: int, n_patches: int):
        real = np.asarray(real, dtype=np.int64)
        assert len(real) == text_len + 1 + n_patches
        ix = np.ix_(real, real)
        self.attns = [np.asarray(a, dtype=np.float64)[:, ix[0], ix[1]] for a in attns]
        self.grads = [np.asarray(g, dtype=np.float64)[:, ix[0], ix[1]] for g in grads]
        self.hiddens = [np.asarray(h, dtype=np.float64)[real] for h in hiddens]
        self.n = len(real)
        self.text_len = text_len
        self.words = np.arange(1, text_len - 1)
        self.patches = np.arange(text_len + 1, text_len + 1 + n_patches)
        self.n_layers = len(self.attns)
        assert text_len - 2 >= 3, "text graph needs >= 3 word tokens"
        assert n_patches >= 3, "image graph needs >= 3 patches"
        for a in self.attns:  # real query rows never attend to padding keys
            s = a.sum(axis=-1)
            assert np.abs(s - 1).max() < 1e-5, np.abs(s - 1).max()

    def text_vec(self, vals: np.ndarray) -> np.ndarray:
        out = np.zeros(self.text_len)
        out[self.words] = vals
        return out

    def readout(self, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return M[0, self.patches].copy(), self.text_vec(M[0, self.words])

    def spectra(self, cols):
        res = [fiedler(h[cols]) for h in self.hiddens]
        return [r[0] for r in res], np.array([[r[1], r[2]] for r in res])


def explain(s: Sample):
    """Returns ({method: (image_vec, text_vec)}, {"image": (fs, lam), "text": (fs, lam)})."""
    L = s.n_layers
    out = {}
    out["raw-attn"] = s.readout(head_mean(s.attns[-1]))
    out["grad-cam"] = s.readout(grad_cam(s.attns[-1], s.grads[-1]))
    out["rollout"] = s.readout(rollout(s.attns, 0))
    out["chefer"] = s.readout(chefer(s.attns, s.grads, 0))
    out["chefer-last"] = s.readout(chefer(s.attns, s.grads, L - 1))
    spec = {"image": s.spectra(s.patches), "text": s.spectra(s.words)}
    fi, ft = spec["image"][0], spec["text"][0]
    out["dsmi"] = (fi[-1].copy(), s.text_vec(ft[-1]))
    P, W = np.ix_(s.patches, s.patches), np.ix_(s.words, s.words)
    gi, gt = np.zeros(len(s.patches)), np.zeros(len(s.words))
    ai, at = np.zeros(len(s.patches)), np.zeros(len(s.words))
    for l in range(L):
        G = grad_only(s.grads[l])
        A = rule5(s.attns[l], s.grads[l])
        gi += G[P] @ fi[l]
        gt += G[W] @ ft[l]
        ai += A[P] @ fi[l]
        at += A[W] @ ft[l]
    out["dsmi-grad"] = (gi, s.text_vec(gt))
    out["dsmi-grad-attn"] = (ai, s.text_vec(at))
    assert list(out) == METHODS
    return out, spec


__all__ = ["METHODS", "METHOD_DEFINITIONS", "SPECTRAL_DEFINITION", "Sample", "explain"]
