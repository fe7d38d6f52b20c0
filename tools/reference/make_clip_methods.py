#!/usr/bin/env python3
"""Golden relevance vectors of the explanation methods for the tiny CLIP fixture.

Reads   tests/fixtures/clip/{config.json, model.safetensors, tokenizer.json, preprocessor_config.json}
        tests/fixtures/images/{catdog.png, coco_127510.jpg, odd.png}
Writes  tests/fixtures/clip/methods.safetensors   (float32 vectors, see below)
        tests/fixtures/clip/methods.json          (cases, tokens, definitions, lambdas, ranges)

Methods (fiedler's defaults, spec section H; implemented in clip_methods.py): raw-attn, grad-cam,
rollout, chefer, chefer-last, dsmi, dsmi-grad, dsmi-grad-attn.  Target per pair b:
y_b = exp(logit_scale) cos(image_b, text_b) = logits_per_image[b, b]; one backward of sum_b y_b.

Each case runs as ONE padded batch (CLIPProcessor, padding=True), like the engine; text matrices
are sliced to the unpadded [0:len_b, 0:len_b] before any method sees them.  The script also runs
every pair alone (batch of 1) and asserts the same vectors (<= 1e-5).

Tensors, per case c, method m, pair b (raw values, not normalised):
    c.m.image.b             [patches]      class-token row, patch columns, raster order
    c.m.text.b              [len_b]        end-of-text row at word columns; 0 at start/end tokens
    c.fiedler.vision.l.b    [patches]      |Fiedler vector| of vision layer-l output (patches)
    c.fiedler.text.l.b      [e_b - 1]      |Fiedler vector| of text layer-l output (words)
    c.lambda.vision.b       [layers, 2]    (lambda2, lambda3 - lambda2) per layer
    c.lambda.text.b         [layers, 2]

Run:  tools/reference/.venv/bin/python tools/reference/make_clip_methods.py
Re-running produces byte-identical files (the script prints their sha256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import PIL
import safetensors
import scipy
import scipy.sparse.linalg
import tokenizers
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clip_methods as cm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLIP_DIR = REPO / "tests" / "fixtures" / "clip"
IMG_DIR = REPO / "tests" / "fixtures" / "images"
OUT_ST = CLIP_DIR / "methods.safetensors"
OUT_JSON = CLIP_DIR / "methods.json"

CASES = {
    "b1": [("catdog.png", "a photo of a cat")],
    "m3": [
        ("catdog.png", "a dog and a cat sitting together"),
        ("coco_127510.jpg", "two people standing in a grassy field"),
        ("odd.png", "a small bird on a branch"),
    ],
}
MIN_WORDS = 4
SMALL_GAP = 1e-3
BATCH1_TOL = 1e-5


def log(*a):
    print(*a, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load():
    ip = CLIPImageProcessor.from_pretrained(str(CLIP_DIR))
    tok = CLIPTokenizerFast.from_pretrained(str(CLIP_DIR))
    processor = CLIPProcessor(image_processor=ip, tokenizer=tok)
    model = CLIPModel.from_pretrained(str(CLIP_DIR), attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    assert model.dtype == torch.float32
    return processor, tok, model


def capture(model: CLIPModel, processor: CLIPProcessor, pairs):
    """One padded batched forward + one backward of sum_b logits_per_image[b, b]."""
    images = [Image.open(IMG_DIR / f) for f, _ in pairs]
    texts = [t for _, t in pairs]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=inputs["pixel_values"],
        output_attentions=True,
        output_hidden_states=True,
    )
    scores = out.logits_per_image.diagonal()
    cos = (out.image_embeds * out.text_embeds).sum(-1)
    assert torch.allclose(scores, model.logit_scale.exp() * cos, rtol=1e-6, atol=1e-6)
    y = scores.sum()
    va = list(out.vision_model_output.attentions)
    ta = list(out.text_model_output.attentions)
    grads = torch.autograd.grad(y, va + ta)
    np32 = lambda x: x.detach().to(torch.float32).numpy().copy()  # noqa: E731
    return {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "scores": scores.detach().numpy().astype(np.float64),
        "v_attn": [np32(a) for a in va],
        "v_grad": [np32(g) for g in grads[: len(va)]],
        "v_hid": [np32(h) for h in out.vision_model_output.hidden_states[1:]],
        "t_attn": [np32(a) for a in ta],
        "t_grad": [np32(g) for g in grads[len(va) :]],
        "t_hid": [np32(h) for h in out.text_model_output.hidden_states[1:]],
    }


def text_layout(ids: torch.Tensor, mask: torch.Tensor, eos_id: int) -> tuple[int, int]:
    """(len_b, e_b) for one padded row; checks the mask is a prefix of ones ending at the EOT."""
    ln = int(mask.sum())
    assert torch.all(mask[:ln] == 1) and torch.all(mask[ln:] == 0), mask
    e = int((ids == eos_id).int().argmax())
    assert ids[e] == eos_id and e == ln - 1, (ids.tolist(), ln, e)
    return ln, e


def explain_pair(cap, b: int, eos_id: int):
    ln, e = text_layout(cap["input_ids"][b], cap["attention_mask"][b], eos_id)
    vis = cm.Tower("vision", [a[b] for a in cap["v_attn"]], [g[b] for g in cap["v_grad"]],
                   [h[b] for h in cap["v_hid"]])
    sl = slice(0, ln)
    txt = cm.Tower("text", [a[b][:, sl, sl] for a in cap["t_attn"]], [g[b][:, sl, sl] for g in cap["t_grad"]],
                   [h[b][sl] for h in cap["t_hid"]], eot=e)
    v_out, v_f, v_lam = cm.explain_tower(vis)
    t_out, t_f, t_lam = cm.explain_tower(txt)
    return {"len": ln, "eot": e, "vision": (v_out, v_f, v_lam), "text": (t_out, t_f, t_lam)}


def pair_tensors(c: str, b: int, res) -> dict[str, np.ndarray]:
    t = {}
    for tower, side in (("vision", "image"), ("text", "text")):
        out, fs, lam = res[tower]
        for m in cm.METHODS:
            t[f"{c}.{m}.{side}.{b}"] = out[m]
        for l, f in enumerate(fs):
            t[f"{c}.fiedler.{tower}.{l}.{b}"] = f
        t[f"{c}.lambda.{tower}.{b}"] = lam
    return t


def check_padded_readouts(cap, b: int, res) -> float:
    """Causal mask + right padding: the end-of-text row never sees padding, so raw-attn, rollout,
    chefer and chefer-last read on the PADDED text matrices must equal the unpadded results.
    (grad-cam differs on purpose: its head weights average dA over the unpadded block only.)"""
    e = res["eot"]
    A = [a[b].astype(np.float64) for a in cap["t_attn"]]
    G = [g[b].astype(np.float64) for g in cap["t_grad"]]
    words = np.arange(1, e)
    got = {
        "raw-attn": cm.head_mean(A[-1])[e, words],
        "rollout": cm.rollout(A, 0)[e, words],
        "chefer": cm.chefer(A, G, 0)[e, words],
        "chefer-last": cm.chefer(A, G, len(A) - 1)[e, words],
    }
    return max(float(np.abs(v - res["text"][0][m][words]).max()) for m, v in got.items())


def check_against_fixture_golden(cap) -> float:
    """b1 captures must match tests/fixtures/clip/golden.safetensors (make_clip_fixture.py)."""
    g = load_file(str(CLIP_DIR / "golden.safetensors"))
    worst = 0.0
    for l in range(len(cap["v_attn"])):
        for ours, theirs in (
            (cap["v_attn"][l], f"b1.vision.attn.{l}"), (cap["v_grad"][l], f"b1.vision.grad_attn.{l}"),
            (cap["v_hid"][l], f"b1.vision.hidden.{l}"), (cap["t_attn"][l], f"b1.text.attn.{l}"),
            (cap["t_grad"][l], f"b1.text.grad_attn.{l}"), (cap["t_hid"][l], f"b1.text.hidden.{l}"),
        ):
            ref = g[theirs].numpy()
            assert ours.shape == ref.shape, (theirs, ours.shape, ref.shape)
            worst = max(worst, float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)))
    return worst


def check_spectral_core(feats: np.ndarray) -> dict:
    """Cross-check cm.fiedler against the seed's call (float32 ARPACK shift-invert, section B)."""
    f, lam2, _ = cm.fiedler(feats)
    F = feats.astype(np.float64)
    F = F / np.linalg.norm(F, axis=1, keepdims=True)
    W = F @ F.T
    W[W < 0] = 0
    W /= W.max()
    d = W.sum(1)
    D = np.diag(d)
    L = D - W
    w, v = scipy.linalg.eigh(L, D)
    res = float(np.abs(L @ v[:, 1] - w[1] * D @ v[:, 1]).max())
    dnorm = float(v[:, 1] @ D @ v[:, 1])
    k = min(5, F.shape[0] - 2)
    ws, vs = scipy.sparse.linalg.eigs(L.astype(np.float32), k=k, which="LM", sigma=-0.5, M=D.astype(np.float32),
                                      v0=np.ones(F.shape[0], dtype=np.float32))  # fixed start: deterministic
    i2 = np.argsort(ws.real)[1]
    f_arpack = np.abs(vs[:, i2].real)
    return {
        "n": int(F.shape[0]),
        "residual_max_abs": res,
        "vTDv": dnorm,
        "lambda2_eigh_f64": lam2,
        "lambda2_eigs_f32": float(ws.real[i2]),
        "fiedler_eigh_f64_vs_eigs_f32_max_abs": float(np.abs(f - f_arpack).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    processor, tok, model = load()
    eos_id = tok.eos_token_id
    n_layers = {"vision": model.config.vision_config.num_hidden_layers,
                "text": model.config.text_config.num_hidden_layers}

    tensors: dict[str, np.ndarray] = {}
    meta_cases = {}
    lambda_table = []
    batch1_max = 0.0
    padded_max = 0.0
    fixture_rel = None
    spectral_check = None
    for c, pairs in CASES.items():
        cap = capture(model, processor, pairs)
        ids, am = cap["input_ids"], cap["attention_mask"]
        log(f"case {c}: padded input_ids {ids.tolist()}")
        if c == "b1":
            fixture_rel = check_against_fixture_golden(cap)
            assert fixture_rel <= 1e-6, fixture_rel
        pair_meta = []
        for b, (img, text) in enumerate(pairs):
            res = explain_pair(cap, b, eos_id)
            ln, e = res["len"], res["eot"]
            row = ids[b, :ln].tolist()
            toks = tok.convert_ids_to_tokens(row)
            n_words = e - 1
            log(f"  pair {b}: {img!r} {text!r}: len {ln}, eot {e}, {n_words} word tokens {toks}")
            assert n_words >= MIN_WORDS, (c, b, toks)
            pt = pair_tensors(c, b, res)
            d = check_padded_readouts(cap, b, res)
            padded_max = max(padded_max, d)
            assert d <= 1e-12, (c, b, d)

            # the same pair alone (batch of 1, no padding) must give the same vectors
            alone = capture(model, processor, [(img, text)])
            assert alone["input_ids"][0].tolist() == row
            pt1 = pair_tensors(c, b, explain_pair(alone, 0, eos_id))
            assert set(pt1) == set(pt)
            for k in pt:
                d = float(np.abs(pt[k] - pt1[k]).max())
                batch1_max = max(batch1_max, d)
                assert d <= BATCH1_TOL, (k, d)
            assert abs(alone["scores"][0] - cap["scores"][b]) <= 1e-5

            for tower in ("vision", "text"):
                lam = res[tower][2]
                for l in range(n_layers[tower]):
                    lambda_table.append({
                        "case": c, "pair": b, "tower": tower, "layer": l,
                        "lambda2": float(lam[l, 0]), "gap": float(lam[l, 1]),
                        "small_gap": bool(lam[l, 1] < SMALL_GAP),
                    })
            if spectral_check is None:
                spectral_check = {
                    "vision_last_layer": check_spectral_core(cap["v_hid"][-1][0][1:]),
                    "text_last_layer": check_spectral_core(cap["t_hid"][-1][0][1:e]),
                }
            tensors.update(pt)
            pair_meta.append({
                "image": img,
                "text": text,
                "input_ids": row,
                "tokens": toks,
                "len": ln,
                "eot": e,
                "words": [1, e - 1],
                "pair_score": float(cap["scores"][b]),
            })
        meta_cases[c] = {
            "pairs": pair_meta,
            "batch_input_ids": ids.tolist(),
            "batch_attention_mask": am.tolist(),
        }

    # value ranges per method (text: word positions only)
    ranges = {}
    for m in cm.METHODS:
        ranges[m] = {}
        for side in ("image", "text"):
            vals = []
            for c, info in meta_cases.items():
                for b, p in enumerate(info["pairs"]):
                    v = tensors[f"{c}.{m}.{side}.{b}"]
                    vals.append(v[1 : p["eot"]] if side == "text" else v)
            v = np.concatenate(vals)
            ranges[m][side] = {"min": float(v.min()), "max": float(v.max()),
                               "max_abs": float(np.abs(v).max())}

    small = []
    for r in lambda_table:
        if r["small_gap"]:
            affected = [f"fiedler.{r['tower']}.{r['layer']}"]
            side = "image" if r["tower"] == "vision" else "text"
            if r["layer"] == n_layers[r["tower"]] - 1:
                affected.append(f"dsmi.{side}")
            affected += [f"dsmi-grad.{side}", f"dsmi-grad-attn.{side}"]
            small.append({k: r[k] for k in ("case", "pair", "tower", "layer", "lambda2", "gap")}
                         | {"affected": affected})

    out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sorted(tensors.items())}
    # one metadata key only: safetensors writes the metadata map in hash order, so two keys can
    # swap places between runs and break byte-identical output
    save_file(out, str(OUT_ST), metadata={"format": "pt"})
    back = load_file(str(OUT_ST))
    assert set(back) == set(out) and all(torch.equal(back[k], out[k]) for k in out)

    meta = {
        "description": "golden relevance vectors of the explanation methods for the tiny random CLIP in "
        "tests/fixtures/clip (tools/reference/make_clip_methods.py, tools/reference/clip_methods.py)",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "PIL": PIL.__version__,
            "safetensors": safetensors.__version__,
        },
        "model": {
            "dir": "tests/fixtures/clip",
            "model_safetensors_sha256": sha256(CLIP_DIR / "model.safetensors"),
            "attn_implementation": "eager",
            "dtype": "float32",
            "layers": n_layers,
            "patches": int(out["b1.dsmi.image.0"].shape[0]),
            "eos_id": eos_id,
            "bos_id": tok.bos_token_id,
            "pad_id": tok.pad_token_id,
        },
        "target": "y_b = exp(logit_scale) * cos(image_embed_b, text_embed_b) = logits_per_image[b, b]; "
        "one backward of sum_b y_b over the padded batch; dA = dy/d(attention probabilities)",
        "unpadding": "text matrices sliced to [0:len_b, 0:len_b], text features to rows [0:len_b], before "
        "every method; len_b = sum(attention_mask[b]); e_b = first position of eos_id (= len_b - 1)",
        "readout": "image: row 0 (class token), columns 1..N-1 (patches, raster order); text: row e_b, "
        "columns 1..e_b-1 (words), stored as a length-len_b vector with 0 at positions 0 and e_b",
        "precision": "captured in float32 (CPU, 1 thread); all method arithmetic in float64; stored float32",
        "methods": cm.METHOD_DEFINITIONS,
        "spectral": cm.SPECTRAL_DEFINITION,
        "graph_tokens": {"vision": "patch rows 1..N-1 of hidden_states[l+1]",
                         "text": "word rows 1..e_b-1 of hidden_states[l+1] (unpadded)"},
        "tensor_names": {
            "<case>.<method>.image.<pair>": "[patches]",
            "<case>.<method>.text.<pair>": "[len_b]",
            "<case>.fiedler.vision.<layer>.<pair>": "[patches]",
            "<case>.fiedler.text.<layer>.<pair>": "[e_b - 1] (words only)",
            "<case>.lambda.vision.<pair>": "[layers, 2] = (lambda2, lambda3 - lambda2)",
            "<case>.lambda.text.<pair>": "[layers, 2]",
        },
        "cases": meta_cases,
        "lambdas": lambda_table,
        "small_gap_threshold": SMALL_GAP,
        "small_gap": small,
        "small_gap_note": "graphs with lambda3 - lambda2 < threshold have an ill-conditioned Fiedler "
        "vector: compare their fiedler vectors and the listed affected method outputs only loosely "
        "(or via lambda2), not entrywise" if small else "no graph has lambda3 - lambda2 below the threshold",
        "value_ranges": ranges,
        "checks": {
            "batch1_vs_batched_max_abs": batch1_max,
            "batch1_tolerance": BATCH1_TOL,
            "padded_vs_unpadded_text_readouts_max_abs (raw-attn, rollout, chefer, chefer-last)": padded_max,
            "b1_captures_vs_golden_safetensors_max_rel": fixture_rel,
            "spectral_core_b1_pair0": spectral_check,
        },
        "tensors": {k: list(v.shape) for k, v in out.items()},
    }
    OUT_JSON.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    log("lambda2 / gap (lambda3 - lambda2):")
    for r in lambda_table:
        flag = "  <-- small gap" if r["small_gap"] else ""
        log(f"  {r['case']} pair {r['pair']} {r['tower']:6s} layer {r['layer']}: "
            f"lambda2 {r['lambda2']:.6f}  gap {r['gap']:.6f}{flag}")
    log("value ranges (text: word positions only):")
    for m, rr in ranges.items():
        log(f"  {m:15s} image [{rr['image']['min']:+.4e}, {rr['image']['max']:+.4e}]  "
            f"text [{rr['text']['min']:+.4e}, {rr['text']['max']:+.4e}]")
    log(f"batch-1 vs batched max |diff|: {batch1_max:.3e}")
    log(f"padded vs unpadded text readouts max |diff|: {padded_max:.3e}")
    log(f"b1 captures vs golden.safetensors max rel diff: {fixture_rel:.3e}")
    log(f"spectral core check: {json.dumps(spectral_check)}")
    for p in (OUT_ST, OUT_JSON):
        log(f"{p.relative_to(REPO)}  {p.stat().st_size} bytes  sha256 {sha256(p)}")


if __name__ == "__main__":
    main()
