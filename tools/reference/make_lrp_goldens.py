#!/usr/bin/env python3
"""Golden LRP relevance (attn_cam) and the LRP methods for the tiny random LXMERT fixture.

Writes tests/fixtures/{lxmert,vilt}/lrp.safetensors and lrp.json from the committed fixtures
(model weights, golden.safetensors inputs, golden.json token ids); it needs no tokenizer.
`make_lrp_goldens.py vilt` rebuilds one family only. CLIP's keys are
`<c>.{vision,text}.{cam,grad}.<layer>.<b>` (text over its real tokens) and the method vectors
(image from the vision tower's class row, text from the end-of-text row). ViLT's keys are `<c>.cam.<layer>.<b>`
[H, N, N] over the sample's real tokens (text, image [CLS], valid patches, in sequence order),
`<c>.grad.<layer>.<b>`, `<c>.<method>.{image,text}.<b>` and `<c>.spread.<name>.<b>`; its
methods are the single-stream forms of §A.3 (TA = chefer-lrp; partial LRP min-max scaled).

Per case (b1, b3) and pair b, unpadded (text axes sliced to the pair's T tokens):
  <c>.cam.<module>.<b>        [H, Nq, Nk]  attn_cam of every attention module (lrp_lxmert.py)
  <c>.grad.<module>.<b>       [H, Nq, Nk]  d logit_target / d probs of the same run (autograd)
  <c>.<method>.image.<b>      [regions]    method vectors from those two (as stored, float32), below
  <c>.<method>.text.<b>       [T]
  <c>.chefer-lrp.naive-f32.{image,text}.<b>   chefer-lrp with R held as I + ΔR in float32 (the
                              form spec §H warns about), to show that the precision matters.
  <c>.chefer-lrp.small[.naive-f32].{image,text}.<b>   the same with every attn_cam times SMALL =
                              1e-7 (the size of LRP relevance in a base-size random model): there
                              the naive float32 form deviates by ~5e-4 of the maximum.

Methods (spec §C.1-§C.3, C.11; Abar = mean_h((dA * cam)^+)):
  transformer-attribution  R_tt = I; R_tt += Abar R_tt over lang.0.., xlang.0..X-1 (cross attention
                           ignored); image = Abar(xt2i.X-1)[0]; text = R_tt[0] with [0] = 0
  partial-lrp              R_ti = mean_h cam(xt2i.X-1), R_tt = mean_h cam(xlang.X-1), each min-max
                           normalised over the whole matrix; R_tt[0,0] = 0; rows 0
  chefer-lrp               rm_with_lrp: chefer (lxmert_methods.chefer) with cam in place of A

  <c>.spread.<name>.<b>       [1] how far rounding alone moves that tensor (see `spread` in lrp.json):
                              LRP is badly conditioned where the add rule divides by a sum that
                              nearly cancels; a 1e-7 relative change of the weights moves early
                              layers' attn_cam by up to ~2e-2 of its maximum on this fixture.

Arithmetic: forward + LRP in float64, methods in float64, stored float32.  Run: tools/reference/.venv/bin/python tools/reference/make_lrp_goldens.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lrp_lxmert  # noqa: E402
import lrp_single_stream as ss  # noqa: E402
import lrp_rules  # noqa: E402
import lxmert_methods as lm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LX = REPO / "tests" / "fixtures" / "lxmert"
VT = REPO / "tests" / "fixtures" / "vilt"
CL = REPO / "tests" / "fixtures" / "clip"
METHODS = ["transformer-attribution", "partial-lrp", "chefer-lrp"]
# The precision case: attn_cam scaled to what a base-size random-weight model gives (spec §H)
SMALL = 1e-7
PERTURBATIONS, PERTURB = 4, 1e-7


def f64(x):
    return np.asarray(x, dtype=np.float64)


def rule5(a, g):
    return np.maximum(f64(g) * f64(a), 0.0).mean(axis=0)


def minmax(m):
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def transformer_attribution(cam, grad, n_l, n_x):
    T = cam["lang.0"].shape[-1]
    Dtt = np.zeros((T, T))  # R_tt - I
    for key in [f"lang.{l}" for l in range(n_l)] + [f"xlang.{k}" for k in range(n_x)]:
        A = rule5(cam[key], grad[key])
        Dtt = Dtt + A @ (np.eye(T) + Dtt)
    image = rule5(cam[f"xt2i.{n_x - 1}"], grad[f"xt2i.{n_x - 1}"])[0]
    text = Dtt[0].copy()
    text[0] = 0.0
    return image, text


def partial_lrp(cam, n_x):
    rti = minmax(f64(cam[f"xt2i.{n_x - 1}"]).mean(0))
    rtt = minmax(f64(cam[f"xlang.{n_x - 1}"]).mean(0))
    rtt[0, 0] = 0.0
    return rti[0].copy(), rtt[0].copy()


def chefer_naive_f32(cam, grad, n_l, n_r, n_x):
    """chefer_literal in float32: R = I + ΔR rounds the small LRP terms away (spec §H)."""
    c32 = {k: np.asarray(v, np.float32) for k, v in cam.items()}
    g32 = {k: np.asarray(v, np.float32) for k, v in grad.items()}
    old = lm.f64
    lm.f64 = lambda x: np.asarray(x, dtype=np.float32)
    try:
        rtt, rti = lm.chefer_literal(c32, g32, n_l, n_r, n_x)
    finally:
        lm.f64 = old
    return lm.readout(rtt, rti)


def lxmert(tensors, meta):
    g = load_file(str(LX / "golden.safetensors"))
    gj = json.loads((LX / "golden.json").read_text())
    cfg = json.loads((LX / "config.json").read_text())
    n_l, n_r, n_x, heads = cfg["l_layers"], cfg["r_layers"], cfg["x_layers"], cfg["num_attention_heads"]
    sd32 = load_file(str(LX / "model.safetensors"))
    sd64 = {k: v.double() for k, v in sd32.items()}
    # Rounding-level perturbations of the weights, to measure how far float32 rounding alone
    # moves each tensor (the add rule divides by sums that can nearly cancel, so LRP is badly
    # conditioned in places): the tests allow max(1e-4, 2 x spread) relative to the maximum.
    runs = spread_runs(sd32, sd64)
    cases = {}
    worst_spread = {}
    for c in ("b1", "b3"):
        ids = torch.tensor(gj["cases"][c]["input_ids"])
        mask = torch.tensor(gj["cases"][c]["attention_mask"])
        pairs = []
        for b in range(ids.shape[0]):
            T = int(mask[b].sum())

            def run(sd, dt):
                feats = g[f"{c}.features"][b:b + 1].to(dt)
                boxes = g[f"{c}.boxes"][b:b + 1].to(dt)
                return lrp_lxmert.forward_and_relprop(sd, ids[b:b + 1, :T], feats, boxes, heads, n_l, n_r, n_x)

            def methods(res):
                _, _, _, grads, cams = res
                # the methods read the stored (float32) tensors, so that a re-implementation fed
                # the same tensors must agree to rounding
                cam_np = {k: v[0].float().double().numpy() for k, v in cams.items()}
                grad_np = {k: v[0].float().double().numpy() for k, v in grads.items()}
                return cam_np, grad_np, {
                    "transformer-attribution": transformer_attribution(cam_np, grad_np, n_l, n_x),
                    "partial-lrp": partial_lrp(cam_np, n_x),
                    "chefer-lrp": lm.readout(*lm.chefer(cam_np, grad_np, n_l, n_r, n_x)),
                }

            ref = run(sd64, torch.float64)
            logits, target, probs, grads, cams = ref
            assert target == int(g[f"{c}.predicted"][b]), (c, b, target)
            d_logit = float((logits[0].float() - g[f"{c}.logits"][b]).abs().max())
            assert d_logit < 1e-4, d_logit
            for key, p in probs.items():
                gold = g[f"{c}.attn.{key}"][b].double()
                kind = key.split(".")[0]
                gold = gold[:, :T, :T] if kind in ("lang", "xlang") else gold[:, :T] if kind == "xt2i" else \
                    gold[:, :, :T] if kind == "xi2t" else gold
                assert float((p[0] - gold).abs().max()) < 1e-5, key
            cam_np, grad_np, out = methods(ref)
            spread = {}

            def widen(name, theirs, ours):
                scale = float(np.abs(ours).max())
                rel = float(np.abs(theirs - ours).max()) / scale if scale > 0 else 0.0
                spread[name] = max(spread.get(name, 0.0), rel)

            for name, (sd, dt) in runs.items():
                if name != "f32":
                    assert run(sd, dt)[1] == target
                other = run(sd, dt)
                cam_o, _, out_o = methods(other)
                for key in cam_np:
                    widen(f"cam.{key}", cam_o[key], cam_np[key])
                for m in out:
                    for side, i in (("image", 0), ("text", 1)):
                        widen(f"{m}.{side}", out_o[m][i], out[m][i])
            for key, cam in cam_np.items():
                tensors[f"lxmert.{c}.cam.{key}.{b}"] = torch.from_numpy(np.ascontiguousarray(cam, np.float32))
                tensors[f"lxmert.{c}.grad.{key}.{b}"] = torch.from_numpy(np.ascontiguousarray(grad_np[key], np.float32))
            out["chefer-lrp.naive-f32"] = chefer_naive_f32(cam_np, grad_np, n_l, n_r, n_x)
            small = {k: v * SMALL for k, v in cam_np.items()}
            out["chefer-lrp.small"] = lm.readout(*lm.chefer(small, grad_np, n_l, n_r, n_x))
            out["chefer-lrp.small.naive-f32"] = chefer_naive_f32(small, grad_np, n_l, n_r, n_x)
            for m, (img, txt) in out.items():
                assert np.all(np.isfinite(img)) and np.all(np.isfinite(txt)), m
                tensors[f"lxmert.{c}.{m}.image.{b}"] = torch.from_numpy(np.ascontiguousarray(img, np.float32))
                tensors[f"lxmert.{c}.{m}.text.{b}"] = torch.from_numpy(np.ascontiguousarray(txt, np.float32))
            for name, v in spread.items():
                tensors[f"lxmert.{c}.spread.{name}.{b}"] = torch.tensor([v], dtype=torch.float32)
                worst_spread[name] = max(worst_spread.get(name, 0.0), v)
            naive_dev = {}
            for case in ("chefer-lrp", "chefer-lrp.small"):
                for side, i in (("image", 0), ("text", 1)):
                    ref_v, naive = out[case][i], out[case + ".naive-f32"][i]
                    naive_dev[f"{case}.{side}"] = float(np.abs(naive - ref_v).max() / np.abs(ref_v).max())
            cam_ranges = {k: [float(v.min()), float(v.max())] for k, v in cam_np.items()}
            pairs.append({"text_len": T, "target": target, "naive_f32_chefer_lrp_rel_dev": naive_dev,
                          "spread": spread, "cam_min_max": cam_ranges})
        cases[c] = pairs
    meta["lxmert"] = {
        "layers": {"l": n_l, "r": n_r, "x": n_x}, "heads": heads,
        "target": "one-hot at the predicted (argmax) answer",
        "cases": cases,
        "spread": "max over a float32 run and %d float64 runs with weights x (1 + %g N(0,1)) of "
        "max|x - x_ref| / max|x_ref|, per tensor; stored as <c>.spread.<name>.<b> [1]" % (PERTURBATIONS, PERTURB),
        "worst_spread": worst_spread,
        "keys": {"lxmert.<c>.cam.<module>.<b>": "[H, Nq, Nk] unpadded",
                 "lxmert.<c>.<method>.{image,text}.<b>": "[regions] / [T]"},
    }
    print("lxmert: worst spread:", {k: f"{v:.1e}" for k, v in worst_spread.items()})
    print("lxmert: naive f32 chefer-lrp deviation:", [p["naive_f32_chefer_lrp_rel_dev"] for c in cases.values() for p in c])


def single_stream_methods(cams, grads, row, image_cols, word_cols, text_len):
    """§A.3 / §C.2 single stream over one sample's real tokens: TA (= chefer with LRP) R = prod_l
    (I + Abar_l), R - I kept apart; partial LRP = minmax(mean_h cam_last) over the whole matrix.
    Returns {method: (image, text)}; text has length text_len with 0 off the word columns."""
    n = cams[0].shape[-1]
    D = np.zeros((n, n))
    for c, g in zip(cams, grads):
        A = rule5(c, g)
        D = D + A @ (np.eye(n) + D)
    P = minmax(f64(cams[-1]).mean(0))

    def read(M):
        text = np.zeros(text_len)
        text[word_cols] = M[row, word_cols]
        return M[row, image_cols].copy(), text

    ta = read(D)
    return {"transformer-attribution": ta, "chefer-lrp": ta, "partial-lrp": read(P)}


def spread_runs(sd32, sd64):
    """A float32 run and float64 runs with rounding-level perturbations of the weights."""
    runs = {"f32": (sd32, torch.float32)}
    for seed in range(PERTURBATIONS):
        gen = torch.Generator().manual_seed(seed)
        runs[f"p{seed}"] = ({k: v * (1 + PERTURB * torch.randn(v.shape, generator=gen, dtype=torch.float64))
                             for k, v in sd64.items()}, torch.float64)
    return runs


def vilt(tensors, meta):
    g = load_file(str(VT / "golden.safetensors"))
    cfg = json.loads((VT / "config.json").read_text())
    heads, layers, eps = cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"]
    sd32 = load_file(str(VT / "model.safetensors"))
    sd64 = {k: v.double() for k, v in sd32.items()}
    runs = spread_runs(sd32, sd64)
    worst_spread, cases = {}, {}
    for c in ("b1", "b3"):
        emb, tmask, amask = g[f"{c}.embeddings"], g[f"{c}.token_mask"], g[f"{c}.attention_mask"]
        pairs = []
        for b in range(emb.shape[0]):
            real = tmask[b].bool()
            text_len = int(amask[b].sum())
            n = int(real.sum())
            image_cols = list(range(text_len + 1, n))
            word_cols = list(range(1, text_len - 1))

            def run(sd, dt):
                return ss.vilt(sd, emb[b:b + 1, real].to(dt), heads, layers, eps)

            def methods(res):
                _, _, _, grads, cams = res
                cam_np = [c_[0].float().double().numpy() for c_ in cams]
                grad_np = [g_[0].float().double().numpy() for g_ in grads]
                return cam_np, grad_np, single_stream_methods(cam_np, grad_np, 0, image_cols, word_cols, text_len)

            ref = run(sd64, torch.float64)
            logits, target, probs, _, _ = ref
            assert target == int(g[f"{c}.predicted"][b]), (c, b, target)
            assert float((logits[0].float() - g[f"{c}.logits"][b]).abs().max()) < 1e-4
            for l, p in enumerate(probs):
                gold = g[f"{c}.attn.{l}"][b][:, real][:, :, real].double()
                assert float((p[0] - gold).abs().max()) < 1e-5, l
            cam_np, grad_np, out = methods(ref)
            spread = {}

            def widen(name, theirs, ours):
                scale = float(np.abs(ours).max())
                rel = float(np.abs(theirs - ours).max()) / scale if scale > 0 else 0.0
                spread[name] = max(spread.get(name, 0.0), rel)

            for name, (sd, dt) in runs.items():
                cam_o, _, out_o = methods(run(sd, dt))
                for l in range(layers):
                    widen(f"cam.{l}", cam_o[l], cam_np[l])
                for m in out:
                    for side, i in (("image", 0), ("text", 1)):
                        widen(f"{m}.{side}", out_o[m][i], out[m][i])
            for l in range(layers):
                tensors[f"vilt.{c}.cam.{l}.{b}"] = torch.from_numpy(np.ascontiguousarray(cam_np[l], np.float32))
                tensors[f"vilt.{c}.grad.{l}.{b}"] = torch.from_numpy(np.ascontiguousarray(grad_np[l], np.float32))
            for m, (img, txt) in out.items():
                tensors[f"vilt.{c}.{m}.image.{b}"] = torch.from_numpy(np.ascontiguousarray(img, np.float32))
                tensors[f"vilt.{c}.{m}.text.{b}"] = torch.from_numpy(np.ascontiguousarray(txt, np.float32))
            for name, v in spread.items():
                tensors[f"vilt.{c}.spread.{name}.{b}"] = torch.tensor([v], dtype=torch.float32)
                worst_spread[name] = max(worst_spread.get(name, 0.0), v)
            pairs.append({"tokens": n, "text_len": text_len, "target": target, "spread": spread})
        cases[c] = pairs
    meta["vilt"] = {"layers": layers, "heads": heads, "target": "one-hot at the predicted answer",
                    "tokens": "each sample's real tokens in sequence order: text, image [CLS], valid patches",
                    "readout": "row 0; image = patch columns; text = word columns, 0 at [CLS]/[SEP]",
                    "cases": cases, "worst_spread": worst_spread}
    print("vilt: worst spread:", {k: f"{v:.1e}" for k, v in worst_spread.items()})


def clip(tensors, meta):
    g = load_file(str(CL / "golden.safetensors"))
    cfg = json.loads((CL / "config.json").read_text())
    vc, tc = cfg["vision_config"], cfg["text_config"]
    heads = {"vision": vc["num_attention_heads"], "text": tc["num_attention_heads"]}
    layers = {"vision": vc["num_hidden_layers"], "text": tc["num_hidden_layers"]}
    acts = {"vision": ss.quick_gelu if vc["hidden_act"] == "quick_gelu" else lrp_lxmert.gelu,
            "text": ss.quick_gelu if tc["hidden_act"] == "quick_gelu" else lrp_lxmert.gelu}
    eps = vc["layer_norm_eps"]
    assert tc["layer_norm_eps"] == eps
    eos_id = tc["eos_token_id"]
    sd32 = load_file(str(CL / "model.safetensors"))
    sd64 = {k: v.double() for k, v in sd32.items()}
    runs = spread_runs(sd32, sd64)
    worst_spread, cases = {}, {}
    for c in ("b1", "b3"):
        ve, te = g[f"{c}.vision.embeddings"], g[f"{c}.text.embeddings"]
        ids, am = g[f"{c}.input_ids"], g[f"{c}.attention_mask"]
        pairs = []
        for b in range(ve.shape[0]):
            L = int(am[b].sum())
            eot = int((ids[b] == eos_id).nonzero()[0])
            nv = ve.shape[1]

            def run(sd, dt):
                return ss.clip(sd, ve[b:b + 1].to(dt), te[b:b + 1, :L].to(dt), eot, heads, layers, eps, acts)

            def methods(res):
                _, towers = res
                out, cams_all, grads_all = {}, {}, {}
                for tower, (_, grads, cams) in towers.items():
                    cam_np = [x[0].float().double().numpy() for x in cams]
                    grad_np = [x[0].float().double().numpy() for x in grads]
                    cams_all[tower], grads_all[tower] = cam_np, grad_np
                    if tower == "vision":
                        m = single_stream_methods(cam_np, grad_np, 0, list(range(1, nv)), [], 0)
                        for k, (img, _) in m.items():
                            out.setdefault(k, [None, None])[0] = img
                    else:
                        m = single_stream_methods(cam_np, grad_np, eot, [], list(range(1, eot)), L)
                        for k, (_, txt) in m.items():
                            out.setdefault(k, [None, None])[1] = txt
                return cams_all, grads_all, out

            ref = run(sd64, torch.float64)
            score = float(ref[0])
            assert abs(score - float(g[f"{c}.pair_scores"][b])) < 1e-4, (score, float(g[f"{c}.pair_scores"][b]))
            for tower in ("vision", "text"):
                for l, p in enumerate(ref[1][tower][0]):
                    gold = g[f"{c}.{tower}.attn.{l}"][b].double()
                    if tower == "text":
                        gold = gold[:, :L, :L]
                    assert float((p[0] - gold).abs().max()) < 1e-5, (tower, l)
            cams, grads, out = methods(ref)
            spread = {}

            def widen(name, theirs, ours):
                scale = float(np.abs(ours).max())
                rel = float(np.abs(theirs - ours).max()) / scale if scale > 0 else 0.0
                spread[name] = max(spread.get(name, 0.0), rel)

            for name, (sd, dt) in runs.items():
                cams_o, _, out_o = methods(run(sd, dt))
                for tower in cams:
                    for l in range(len(cams[tower])):
                        widen(f"{tower}.cam.{l}", cams_o[tower][l], cams[tower][l])
                for m in out:
                    for side, i in (("image", 0), ("text", 1)):
                        widen(f"{m}.{side}", out_o[m][i], out[m][i])
            for tower in cams:
                for l in range(len(cams[tower])):
                    for kind, src in (("cam", cams), ("grad", grads)):
                        tensors[f"clip.{c}.{tower}.{kind}.{l}.{b}"] = torch.from_numpy(
                            np.ascontiguousarray(src[tower][l], np.float32))
            for m, (img, txt) in out.items():
                tensors[f"clip.{c}.{m}.image.{b}"] = torch.from_numpy(np.ascontiguousarray(img, np.float32))
                tensors[f"clip.{c}.{m}.text.{b}"] = torch.from_numpy(np.ascontiguousarray(txt, np.float32))
            for name, v in spread.items():
                tensors[f"clip.{c}.spread.{name}.{b}"] = torch.tensor([v], dtype=torch.float32)
                worst_spread[name] = max(worst_spread.get(name, 0.0), v)
            pairs.append({"text_len": L, "eot": eot, "score": score, "spread": spread})
        cases[c] = pairs
    meta["clip"] = {"layers": layers, "heads": heads, "target": "relevance 1 at each pair's score",
                    "score_rule": ss.clip.__doc__,
                    "readout": "vision: row 0 over the patches; text: the end-of-text row over the words",
                    "cases": cases, "worst_spread": worst_spread}
    print("clip: worst spread:", {k: f"{v:.1e}" for k, v in worst_spread.items()})


def main():
    meta = {
        "description": "golden LRP relevance at the attention maps (attn_cam) and the LRP methods "
        "(tools/reference/make_lrp_goldens.py, lrp_rules.py, lrp_lxmert.py; spec §D, §C.1-§C.3)",
        "rules": lrp_rules.__doc__,
        "methods": METHODS,
        "conservation_rel_err": lrp_rules.conservation(),
        "hand_example": lrp_rules.hand_example(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    families = {"lxmert": (LX, lxmert), "vilt": (VT, vilt), "clip": (CL, clip)}
    only = sys.argv[1:] or list(families)
    for fam in only:
        out_dir, build = families[fam]
        tensors: dict[str, torch.Tensor] = {}
        fmeta = dict(meta)
        build(tensors, fmeta)
        pre = fam + "."
        ts = {k[len(pre):]: v.contiguous() for k, v in sorted(tensors.items())}
        save_file(ts, str(out_dir / "lrp.safetensors"), metadata={"format": "pt"})
        fmeta["tensors"] = {k: list(v.shape) for k, v in ts.items()}
        fmeta["model_safetensors_sha256"] = hashlib.sha256((out_dir / "model.safetensors").read_bytes()).hexdigest()
        (out_dir / "lrp.json").write_text(json.dumps(fmeta, indent=1) + "\n")
        print(f"wrote {out_dir / 'lrp.safetensors'} ({(out_dir / 'lrp.safetensors').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
