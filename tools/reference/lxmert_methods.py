"""Reference explanation methods for one LXMERT (question, image regions) pair (numpy, float64).

Written from the fiedler methods spec (/work/shared/spec/methods.md: A.1, B, C.1, C.4-C.9, C.11,
H); no third-party explanation code is used. Everything works on ONE pair and on UNPADDED
tensors: the caller slices every text axis to [0:T] (T = real tokens incl. [CLS] and [SEP])
before calling. Arithmetic is float64 on the float32 captures.

Inputs (module keys as in golden.safetensors, l/r/k 0-based):
    attn[key], grad[key]  [H, Nq, Nk]  attention probabilities and dy/dA of
        lang.l   text self, L-layer l           [H, T, T]
        visn.r   image self, R-layer r          [H, I, I]
        xt2i.k   X-layer k cross, text queries -> image keys   [H, T, I]
        xi2t.k   X-layer k cross, image queries -> text keys   [H, I, T]
        xlang.k  X-layer k lang_self_att        [H, T, T]
        xvisn.k  X-layer k visn_self_att        [H, I, I]
    xlang[k]  [T, D]  output t3 of X-layer k;   xvisn[k]  [I, D]  output v3 of X-layer k

Readout (C.11): image = row 0 ([CLS]) of R_ti (length I); text = row 0 of R_tt (length T) with
entry 0 set to 0. Spectral text vectors are 0 at [CLS] (0) and [SEP] (T-1).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

METHODS = ["chefer", "raw-attn", "grad-cam", "rollout", "dsmi", "dsmi-grad", "dsmi-grad-attn"]
SUM_LOGITS_METHODS = ["dsmi-grad.sum-logits", "dsmi-grad-attn.sum-logits"]

METHOD_DEFINITIONS = {
    "chefer": "rm_no_lrp (C.1, residual normalisation on): R_tt=I_T, R_ii=I_I, R_ti=0, R_it=0; "
    "Abar = mean_h(max(dA*A,0)); self rule on stream s with partner q: R_ss += Abar R_ss, R_sq += Abar R_sq "
    "(both from pre-update values); co-attention s->q: dR_sq = Rn_ss^T Abar_sq Rn_qq, dR_ss = Abar_sq R_qs "
    "with Rn = I + rownorm(R - I). Schedule: text self lang.0..L-1; image self visn.0..R-1; for k=0..X-2: "
    "the four co-attention additions from xt2i.k (text side) and xi2t.k (image side), all computed from the "
    "state before the step, then text self xlang.k, then image self xvisn.k; for k=X-1: text-side "
    "co-attention xt2i.k only, then text self xlang.k; R_tt[0,0]=0. R - I is carried as its own f64 matrix.",
    "raw-attn": "R_ti = mean_h A(xt2i.X-1), R_tt = mean_h A(xlang.X-1), R_tt[0,0]=0",
    "grad-cam": "last X-layer; per head w_h = mean over all (i,j) of dA_h (unpadded block); "
    "M = max(mean_h(w_h A_h), 0); R_ti = M(xt2i.X-1), R_tt = M(xlang.X-1), R_tt[0,0]=0",
    "rollout": "B = mean_h A + I, rows divided by their sums; roll(list) = B_last ... B_first; "
    "text list = lang.0..L-1, xlang.0..X-2; image list = visn.0..R-1, xvisn.0..X-2; "
    "R_ti = roll(text)^T mean_h A(xt2i.X-1) roll(image) (note the transpose); "
    "R_tt = roll(text list + xlang.X-1), R_tt[0,0]=0",
    "dsmi": "image = |Fiedler| of xvisn[X-2] output over all regions; text = |Fiedler| of xlang[X-1] output "
    "over the word tokens 1..T-2, re-padded with 0 at [CLS]/[SEP]",
    "dsmi-grad": "target = logit of the predicted answer; image = sum_{k=0..X-2} Gbar(xvisn.k) f(xvisn[k]) "
    "(all regions, matrix-vector); text = sum_{k=0..X-1} Gbar(xlang.k)[words,words] f(xlang[k] words), "
    "re-padded with 0; Gbar = mean_h(max(dA,0))",
    "dsmi-grad-attn": "as dsmi-grad with Abar = mean_h(max(dA*A,0)) in place of Gbar",
    "dsmi-grad.sum-logits": "dsmi-grad with the seed's target y = sum over all answers c of logit_c (bug B1); "
    "every other choice as dsmi-grad",
    "dsmi-grad-attn.sum-logits": "dsmi-grad-attn with the target sum_c logit_c (bug B1)",
}

SPECTRAL_DEFINITION = (
    "F = graph-token rows of the layer output (float64); rows L2-normalised; W = F F^T; W[W < 0] = 0; "
    "W /= max(W); d = row sums of W (d < 1e-12 -> 1); L = diag(d) - W; solve L v = lambda diag(d) v with "
    "scipy.linalg.eigh(L, diag(d)) (ascending, v^T D v = 1); f = |column 1|; lambda2 = w[1], gap = w[2] - w[1]"
)


def fiedler(features: np.ndarray) -> tuple[np.ndarray, float, float]:
    """|Fiedler vector| of the normalised-cut graph of `features` (rows = graph tokens)."""
    F = np.asarray(features, dtype=np.float64)
    n = F.shape[0]
    if n < 3:
        raise ValueError(f"spectral graph needs >= 3 tokens, got {n}")
    F = F / np.maximum(np.sqrt((F * F).sum(axis=1, keepdims=True)), 1e-12)
    W = F @ F.T
    W[W < 0] = 0.0
    if W.max() > 0:
        W = W / W.max()
    d = W.sum(axis=1)
    d[d < 1e-12] = 1.0
    D = np.diag(d)
    w, v = scipy.linalg.eigh(D - W, D)
    return np.abs(v[:, 1]), float(w[1]), float(w[2] - w[1])


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def head_mean(a) -> np.ndarray:
    return f64(a).mean(axis=0)


def rule5(a, g) -> np.ndarray:
    """Abar = mean_h((dA_h * A_h)^+): clamp per head, then the mean."""
    return np.maximum(f64(g) * f64(a), 0.0).mean(axis=0)


def grad_only(g) -> np.ndarray:
    """Gbar = mean_h((dA_h)^+)."""
    return np.maximum(f64(g), 0.0).mean(axis=0)


def grad_cam(a, g) -> np.ndarray:
    w = f64(g).mean(axis=(1, 2))
    return np.maximum((w[:, None, None] * f64(a)).mean(axis=0), 0.0)


def rollout(mats: list[np.ndarray]) -> np.ndarray:
    """compute_rollout_attention on head-averaged matrices: later layers on the left."""
    n = mats[0].shape[-1]
    R = None
    for m in mats:
        B = m + np.eye(n)
        B = B / B.sum(axis=1, keepdims=True)
        R = B if R is None else B @ R
    return R


def residual_norm(Dm: np.ndarray) -> np.ndarray:
    """handle_residual with R - I given: I + rownorm(R - I)."""
    assert np.diag(Dm).min() >= 0, "diag(R - I) < 0"
    s = Dm.sum(axis=1, keepdims=True)
    assert np.all(s != 0), "zero row in R - I (0/0)"
    return np.eye(Dm.shape[0]) + Dm / s


def chefer(attn, grad, n_l: int, n_r: int, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """rm_no_lrp; returns (R_tt with [0,0] = 0, R_ti). R_tt = I + Dtt, R_ii = I + Dii."""
    T = attn["lang.0"].shape[-1]
    I = attn["visn.0"].shape[-1]
    Dtt, Dii = np.zeros((T, T)), np.zeros((I, I))
    Rti, Rit = np.zeros((T, I)), np.zeros((I, T))
    eyeT, eyeI = np.eye(T), np.eye(I)

    def text_self(key):
        nonlocal Dtt, Rti
        A = rule5(attn[key], grad[key])
        Dtt, Rti = Dtt + A @ (eyeT + Dtt), Rti + A @ Rti

    def image_self(key):
        nonlocal Dii, Rit
        A = rule5(attn[key], grad[key])
        Dii, Rit = Dii + A @ (eyeI + Dii), Rit + A @ Rit

    def co_text(k):
        A = rule5(attn[f"xt2i.{k}"], grad[f"xt2i.{k}"])
        return residual_norm(Dtt).T @ A @ residual_norm(Dii), A @ Rit  # (dR_ti, dR_tt)

    def co_image(k):
        A = rule5(attn[f"xi2t.{k}"], grad[f"xi2t.{k}"])
        return residual_norm(Dii).T @ A @ residual_norm(Dtt), A @ Rti  # (dR_it, dR_ii)

    for l in range(n_l):
        text_self(f"lang.{l}")
    for r in range(n_r):
        image_self(f"visn.{r}")
    for k in range(n_x - 1):
        dti, dtt = co_text(k)
        dit, dii = co_image(k)
        Rti, Dtt, Rit, Dii = Rti + dti, Dtt + dtt, Rit + dit, Dii + dii
        text_self(f"xlang.{k}")
        image_self(f"xvisn.{k}")
    k = n_x - 1
    dti, dtt = co_text(k)
    Rti, Dtt = Rti + dti, Dtt + dtt
    text_self(f"xlang.{k}")
    Rtt = eyeT + Dtt
    Rtt[0, 0] = 0.0
    return Rtt, Rti


def readout(Rtt: np.ndarray, Rti: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    text = Rtt[0].copy()
    text[0] = 0.0
    return Rti[0].copy(), text


def spectra(xlang: list[np.ndarray], xvisn: list[np.ndarray]):
    """Fiedler vectors and (lambda2, gap) of every X-layer output graph (image: all regions; text: words)."""
    img = [fiedler(v) for v in xvisn]
    txt = [fiedler(t[1:-1]) for t in xlang]
    return ([r[0] for r in img], np.array([[r[1], r[2]] for r in img]),
            [r[0] for r in txt], np.array([[r[1], r[2]] for r in txt]))


def pad_text(v: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], v, [0.0]])


def spectral_grad(agg, attn, grad, fi, ft, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """sum_k agg(k) f_k: image k = 0..X-2 (all regions), text k = 0..X-1 (words, re-padded)."""
    r_img = np.zeros(fi[0].shape[0])
    for k in range(n_x - 1):
        r_img += agg(attn[f"xvisn.{k}"], grad[f"xvisn.{k}"]) @ fi[k]
    r_txt = np.zeros(ft[0].shape[0])
    for k in range(n_x):
        r_txt += agg(attn[f"xlang.{k}"], grad[f"xlang.{k}"])[1:-1, 1:-1] @ ft[k]
    return r_img, pad_text(r_txt)


def explain(attn, grad, grad_sum, xlang, xvisn, n_l: int, n_r: int, n_x: int):
    """All methods for one unpadded pair. Returns ({method: (image, text)}, spectra)."""
    last = n_x - 1
    out = {}
    out["chefer"] = readout(*chefer(attn, grad, n_l, n_r, n_x))
    Rtt = head_mean(attn[f"xlang.{last}"])
    Rtt[0, 0] = 0.0
    out["raw-attn"] = readout(Rtt, head_mean(attn[f"xt2i.{last}"]))
    Rtt = grad_cam(attn[f"xlang.{last}"], grad[f"xlang.{last}"])
    Rtt[0, 0] = 0.0
    out["grad-cam"] = readout(Rtt, grad_cam(attn[f"xt2i.{last}"], grad[f"xt2i.{last}"]))
    text_list = [head_mean(attn[f"lang.{l}"]) for l in range(n_l)] + [head_mean(attn[f"xlang.{k}"]) for k in range(last)]
    image_list = [head_mean(attn[f"visn.{r}"]) for r in range(n_r)] + [head_mean(attn[f"xvisn.{k}"]) for k in range(last)]
    roll_t, roll_i = rollout(text_list), rollout(image_list)
    Rti = roll_t.T @ head_mean(attn[f"xt2i.{last}"]) @ roll_i
    Rtt = rollout(text_list + [head_mean(attn[f"xlang.{last}"])])
    Rtt[0, 0] = 0.0
    out["rollout"] = readout(Rtt, Rti)
    fi, lam_i, ft, lam_t = spectra(xlang, xvisn)
    out["dsmi"] = (fi[n_x - 2].copy(), pad_text(ft[last]))
    out["dsmi-grad"] = spectral_grad(lambda a, g: grad_only(g), attn, grad, fi, ft, n_x)
    out["dsmi-grad-attn"] = spectral_grad(rule5, attn, grad, fi, ft, n_x)
    out["dsmi-grad.sum-logits"] = spectral_grad(lambda a, g: grad_only(g), attn, grad_sum, fi, ft, n_x)
    out["dsmi-grad-attn.sum-logits"] = spectral_grad(rule5, attn, grad_sum, fi, ft, n_x)
    assert set(out) == set(METHODS + SUM_LOGITS_METHODS)
    return out, (fi, lam_i, ft, lam_t)


def chefer_literal(attn, grad, n_l: int, n_r: int, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """The same schedule written the way the research code is (R matrices held directly, handle_residual
    on R). Used only as a cross-check of chefer(); in float64 the two agree to rounding."""
    T = attn["lang.0"].shape[-1]
    I = attn["visn.0"].shape[-1]
    R_tt, R_ii, R_ti, R_it = np.eye(T), np.eye(I), np.zeros((T, I)), np.zeros((I, T))

    def handle_residual(R):
        S = R - np.eye(R.shape[0])
        S = S / S.sum(axis=-1, keepdims=True)
        return S + np.eye(R.shape[0])

    def rules(R_ss, R_qq, R_qs, cam_sq):
        return handle_residual(R_ss).T @ (cam_sq @ handle_residual(R_qq)), cam_sq @ R_qs

    for l in range(n_l):
        cam = rule5(attn[f"lang.{l}"], grad[f"lang.{l}"])
        R_tt = R_tt + cam @ R_tt
        R_ti = R_ti + cam @ R_ti
    for r in range(n_r):
        cam = rule5(attn[f"visn.{r}"], grad[f"visn.{r}"])
        R_ii = R_ii + cam @ R_ii
        R_it = R_it + cam @ R_it
    for k in range(n_x):
        a_ti, a_tt = rules(R_tt, R_ii, R_it, rule5(attn[f"xt2i.{k}"], grad[f"xt2i.{k}"]))
        if k < n_x - 1:
            a_it, a_ii = rules(R_ii, R_tt, R_ti, rule5(attn[f"xi2t.{k}"], grad[f"xi2t.{k}"]))
            R_ti, R_tt, R_it, R_ii = R_ti + a_ti, R_tt + a_tt, R_it + a_it, R_ii + a_ii
        else:
            R_ti, R_tt = R_ti + a_ti, R_tt + a_tt
        cam = rule5(attn[f"xlang.{k}"], grad[f"xlang.{k}"])
        R_tt = R_tt + cam @ R_tt
        R_ti = R_ti + cam @ R_ti
        if k < n_x - 1:
            cam = rule5(attn[f"xvisn.{k}"], grad[f"xvisn.{k}"])
            R_ii = R_ii + cam @ R_ii
            R_it = R_it + cam @ R_it
    R_tt[0, 0] = 0.0
    return R_tt, R_ti
