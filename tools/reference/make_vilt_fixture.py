#!/usr/bin/env python3
"""Build the tiny random-weight ViLT (ViltForQuestionAnswering) fixture, its goldens and the
explanation-method goldens.

Writes (paths relative to the repository root), all under tests/fixtures/vilt/:

  config.json, model.safetensors       HF ViltForQuestionAnswering, float32, save_pretrained
  tokenizer.json, vocab.txt,           BERT-uncased-style WordPiece tokenizer (vilt_tokenizer.py)
  tokenizer_config.json, special_tokens_map.json
  preprocessor_config.json             ViltImageProcessor: shortest_edge 64, size_divisor 16, bicubic,
                                       mean/std 0.5, do_pad
  golden.safetensors, golden.json      forward/backward goldens (raster patch order, see README)
  methods.safetensors, methods.json    relevance vectors of the explanation methods (vilt_methods.py)

Reads tests/fixtures/images/{catdog.png, coco_127510.jpg, odd.png, tall.png} (made by
make_clip_fixture.py; not modified here).

Run from anywhere:  tools/reference/.venv/bin/python tools/reference/make_vilt_fixture.py   (~15 s)
Re-running produces byte-identical files (the script prints their sha256).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import safetensors
import scipy
import tokenizers
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    BertTokenizer,
    BertTokenizerFast,
    ViltForQuestionAnswering,
    ViltImageProcessor,
    ViltProcessor,
)
from transformers.image_utils import ChannelDimension, to_numpy_array

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vilt_methods as vm  # noqa: E402
from make_clip_methods import check_spectral_core  # noqa: E402
from pil_resize_reference import pil_bicubic_resize  # noqa: E402
from vilt_model import (  # noqa: E402
    RESIZE_FORMULA,
    SoftmaxProbe,
    make_config,
    raster_patch_order,
    record_multinomial,
    reinit_,
    resize_arithmetic,
)
from vilt_tokenizer import SPECIALS, build_tokenizer, vocab_txt  # noqa: E402

SEED = 20240611
N_NEW_TOKENS = 220  # -> vocab 5 specials + 68 single chars + 36 "##" chars + 220 = 329
SHORTEST_EDGE = 64
SIZE_DIVISOR = 16
REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
VILT_DIR = FIX / "vilt"
IMG_DIR = FIX / "images"

IMAGES = ["catdog.png", "coco_127510.jpg", "odd.png", "tall.png"]
CASES = {
    "b1": [("catdog.png", "what animal is on the left?")],
    "b3": [
        ("catdog.png", "is there a dog?"),
        ("coco_127510.jpg", "how many people are in the picture?"),
        ("tall.png", "what color is the cat?"),
    ],
}
TOKENIZER_TEST_TEXTS = [
    "what animal is on the left?",
    "is there a dog?",
    "how many people are in the picture?",
    "what color is the cat?",
    "",
    "What COLOR is the Café's UMBRELLA??",
    "how many 12-year-old kids (and dogs) are there...",
    "xylophone\tand\nnewlines\r\n  end  ",
    "naïve résumé Ångström",
    "emoji 🐱 and 日本語 text",
    "x[SEP]y [MASK] z",
    "supercalifragilisticexpialidocious" * 3,
]
MIN_LOGIT_MARGIN = 1e-3
SMALL_GAP = 1e-3
BATCH1_TOL = 1e-5
OUTPUT_NAMES = [
    "config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
    "special_tokens_map.json", "preprocessor_config.json", "golden.safetensors", "golden.json",
    "methods.safetensors", "methods.json",
]


def log(*a):
    print(*a, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj, indent=2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "PIL": PIL.__version__,
        "safetensors": safetensors.__version__,
    }


# ----------------------------------------------------------------------------------------------
# tokenizer, image processor, model


def make_tokenizer() -> dict:
    raw, words = build_tokenizer(N_NEW_TOKENS)
    tok_path = VILT_DIR / "tokenizer.json"
    raw.save(str(tok_path), pretty=True)
    (VILT_DIR / "vocab.txt").write_text(vocab_txt(raw), encoding="utf-8")

    fast = BertTokenizerFast(vocab_file=str(VILT_DIR / "vocab.txt"), tokenizer_file=str(tok_path),
                             do_lower_case=True, model_max_length=24)
    with tempfile.TemporaryDirectory() as td:
        fast.save_pretrained(td)
        written = sorted(os.listdir(td))
        log(f"tokenizer: BertTokenizerFast.save_pretrained writes {written}")
        same = Path(td, "tokenizer.json").read_bytes() == tok_path.read_bytes()
        log(f"tokenizer: its tokenizer.json identical to the raw Tokenizer.save: {same}")
        if not same:
            shutil.copyfile(Path(td, "tokenizer.json"), tok_path)
        assert Path(td, "vocab.txt").read_bytes() == (VILT_DIR / "vocab.txt").read_bytes()
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            write_json(VILT_DIR / name, json.loads(Path(td, name).read_text()))

    raw = tokenizers.Tokenizer.from_file(str(tok_path))
    # one test text is longer than model_max_length (24): silence transformers' length warning
    transformers.utils.logging.set_verbosity_error()
    fast = BertTokenizerFast.from_pretrained(str(VILT_DIR))
    fast_file = BertTokenizerFast(tokenizer_file=str(tok_path))
    slow = BertTokenizer.from_pretrained(str(VILT_DIR))
    slow_diff = []
    for t in TOKENIZER_TEST_TEXTS:
        a = raw.encode(t).ids
        assert fast(t)["input_ids"] == a, (t, a, fast(t)["input_ids"])
        assert fast_file(t)["input_ids"] == a, t
        assert fast(t)["token_type_ids"] == raw.encode(t).type_ids
        if slow(t)["input_ids"] != a:
            slow_diff.append(t)
    batch_raw = [e.ids for e in raw.encode_batch(TOKENIZER_TEST_TEXTS)]
    assert batch_raw == fast(TOKENIZER_TEST_TEXTS)["input_ids"]
    transformers.utils.logging.set_verbosity_warning()
    log(f"tokenizer: raw Tokenizer == BertTokenizerFast(tokenizer_file) == from_pretrained on "
        f"{len(TOKENIZER_TEST_TEXTS)} texts; slow BertTokenizer differs on {slow_diff}")
    ids = {t: raw.token_to_id(t) for t in SPECIALS}
    log(f"tokenizer: vocab {raw.get_vocab_size()}, corpus words {len(words)}, specials {ids}")
    return {
        "vocab_size": raw.get_vocab_size(),
        "special_ids": ids,
        "corpus_distinct_words": len(words),
        "test_texts": {t: {"ids": raw.encode(t).ids, "tokens": raw.encode(t).tokens} for t in TOKENIZER_TEST_TEXTS},
        "slow_BertTokenizer_differs_on": slow_diff,
    }


def make_image_processor() -> ViltImageProcessor:
    ip = ViltImageProcessor(
        do_resize=True,
        size={"shortest_edge": SHORTEST_EDGE},
        size_divisor=SIZE_DIVISOR,
        resample=3,  # PIL bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pad=True,
    )
    ip.save_pretrained(str(VILT_DIR))
    return ip


def make_model(vocab_size: int, pad_id: int) -> None:
    torch.manual_seed(SEED)
    model = ViltForQuestionAnswering._from_config(make_config(vocab_size, pad_id), attn_implementation="eager")
    reinit_(model, SEED)
    model.eval()
    model.save_pretrained(str(VILT_DIR), safe_serialization=True)
    path = VILT_DIR / "config.json"
    cfg = json.loads(path.read_text())
    assert cfg.get("dtype") == "float32", cfg.get("dtype")
    cfg["torch_dtype"] = "float32"  # legacy key, like the CLIP fixture
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load():
    processor = ViltProcessor.from_pretrained(str(VILT_DIR))
    assert type(processor.image_processor).__name__ == "ViltImageProcessor", type(processor.image_processor)
    assert isinstance(processor.tokenizer, BertTokenizerFast), type(processor.tokenizer)
    model = ViltForQuestionAnswering.from_pretrained(str(VILT_DIR), attn_implementation="eager").eval()
    assert model.dtype == torch.float32
    return processor, model


# ----------------------------------------------------------------------------------------------
# preprocessing


def preprocess_goldens(ip: ViltImageProcessor, tensors: dict, meta: dict) -> None:
    meta["preprocess"] = {"formula": RESIZE_FORMULA}
    for name in IMAGES:
        stem = Path(name).stem
        img = Image.open(IMG_DIR / name)
        assert img.mode == "RGB", (name, img.mode)
        enc = ip(images=img, return_tensors="pt")
        pv, pm = enc["pixel_values"][0], enc["pixel_mask"][0]
        arr = to_numpy_array(img)
        h, w = arr.shape[:2]
        ar = resize_arithmetic(h, w, SHORTEST_EDGE, SIZE_DIVISOR)
        rh, rw = ar["output_hw"]
        resized = ip.resize(arr, size=ip.size, size_divisor=ip.size_divisor, resample=ip.resample,
                            input_data_format=ChannelDimension.LAST)
        assert resized.dtype == np.uint8 and resized.shape[:2] == (rh, rw), (resized.shape, ar)
        assert np.array_equal(pil_bicubic_resize(arr, rh, rw), resized), "resize reference mismatch"
        vertical_first = (h - rh) > 0 and (h - rh) > 2 * (w - rw)
        x = resized.astype(np.float64) * (1 / 255)
        x = x.astype(np.float32)
        x = (x - np.float32(0.5)) / np.float32(0.5)
        replay = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        assert replay.dtype == torch.float32 and torch.equal(replay, pv), name
        assert pm.dtype == torch.int64 and bool(torch.all(pm == 1)) and tuple(pm.shape) == (rh, rw)
        tensors[f"preprocess.{stem}.pixel_values"] = pv.contiguous()
        tensors[f"preprocess.{stem}.pixel_mask"] = pm.contiguous()
        tensors[f"preprocess.{stem}.resized_u8"] = torch.from_numpy(np.ascontiguousarray(resized))
        meta["preprocess"][stem] = {
            "file": name,
            "decoded_hw": [h, w],
            "decoded_rgb_sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            "resize": ar,
            "resize_first_pass": "vertical" if vertical_first else "horizontal",
        }
        log(f"preprocess: {name} {w}x{h} -> {rw}x{rh} (w x h; {ar['after_cap_hw']} before rounding, "
            f"{'vertical' if vertical_first else 'horizontal'} pass first), patch grid {ar['patch_grid']}")


# ----------------------------------------------------------------------------------------------
# forward / backward


def case_inputs(processor, pairs):
    images = [Image.open(IMG_DIR / f) for f, _ in pairs]
    texts = [t for _, t in pairs]
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def forward(model, inputs, output_attentions=True):
    return model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        token_type_ids=inputs["token_type_ids"],
        pixel_values=inputs["pixel_values"],
        pixel_mask=inputs["pixel_mask"],
        output_attentions=output_attentions,
        output_hidden_states=True,
    )


def capture(model, inputs):
    """Raster-order forward + one backward of y = sum_b logits[b, argmax_b]."""
    calls: list = []
    with raster_patch_order(calls):
        out = forward(model, inputs)
    logits = out.logits
    pred = logits.detach().argmax(-1)
    y = logits.gather(1, pred[:, None]).sum()
    grads = torch.autograd.grad(y, list(out.attentions))
    return out, pred, y, grads, calls


def layout(inputs, patch: int) -> dict:
    """Token layout of the padded batch sequence [text (T) ; image [CLS] ; max_len image tokens]."""
    am = inputs["attention_mask"]
    pm = inputs["pixel_mask"]
    B, T = am.shape
    H, W = pm.shape[1:]
    gh, gw = H // patch, W // patch
    pmask = pm[:, ::patch, ::patch][:, :gh, :gw]  # nearest interpolation == top-left pixel of each patch
    rows = pmask[:, :, 0].sum(1).tolist()
    cols = pmask[:, 0, :].sum(1).tolist()
    max_len = max(r * c for r, c in zip(rows, cols))
    N = T + 1 + max_len
    samples = []
    for b in range(B):
        ln = int(am[b].sum())
        assert torch.all(am[b, :ln] == 1) and torch.all(am[b, ln:] == 0)
        r, c = rows[b], cols[b]
        rect = torch.zeros(gh, gw, dtype=pmask.dtype)
        rect[:r, :c] = 1
        assert torch.equal(pmask[b], rect), "valid patches must form the top-left rectangle"
        nv = r * c
        npad = max_len - nv
        non_valid = [(i, j) for i in range(gh) for j in range(gw) if not (i < r and j < c)]
        samples.append({
            "text_len": ln,
            "text_indices": list(range(ln)),
            "text_cls_index": 0,
            "text_sep_index": ln - 1,
            "word_indices": list(range(1, ln - 1)),
            "text_pad_indices": list(range(ln, T)),
            "image_cls_index": T,
            "patch_indices": list(range(T + 1, T + 1 + nv)),
            "patch_grid": [r, c],
            "patch_rc": [[k // c, k % c] for k in range(nv)],
            "image_pad_indices": list(range(T + 1 + nv, N)),
            "image_pad_source_rc": non_valid[:npad],
            "padding_indices": list(range(ln, T)) + list(range(T + 1 + nv, N)),
            "real_indices": list(range(ln)) + list(range(T, T + 1 + nv)),
            "token_mask": [1] * ln + [0] * (T - ln) + [1] * (1 + nv) + [0] * npad,
        })
    return {"B": B, "T": T, "N": N, "max_image_len": max_len, "padded_hw": [H, W],
            "padded_patch_grid": [gh, gw], "samples": samples}


def interp_align_corners(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear, align_corners=True: [g, g, D] -> [h, w, D] (float64, written out by hand)."""
    gi, gj = grid.shape[:2]

    def axis(n_in, n_out):
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out) * s
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis(gi, h)
    c0, c1, fc = axis(gj, w)
    out = np.empty((h, w, grid.shape[2]))
    for i in range(h):
        top = grid[r0[i], c0] * (1 - fc[:, None]) + grid[r0[i], c1] * fc[:, None]
        bot = grid[r1[i], c0] * (1 - fc[:, None]) + grid[r1[i], c1] * fc[:, None]
        out[i] = top * (1 - fr[i]) + bot * fr[i]
    return out


def manual_embeddings(model, inputs, lay) -> np.ndarray:
    """hidden_states[0] rebuilt from the weights with the documented formula (float64)."""
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    ids = inputs["input_ids"].numpy()
    tt = inputs["token_type_ids"].numpy()
    pv = inputs["pixel_values"].double().numpy()
    B, T = ids.shape
    D = cfg.hidden_size
    p = cfg.patch_size
    g = cfg.image_size // p

    def ln(x, w, b, eps):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    e = "vilt.embeddings."
    out = np.zeros((B, lay["N"], D))
    txt = sd[e + "text_embeddings.word_embeddings.weight"][ids] + sd[e + "text_embeddings.token_type_embeddings.weight"][tt] \
        + sd[e + "text_embeddings.position_embeddings.weight"][np.arange(T)][None]
    out[:, :T] = ln(txt, sd[e + "text_embeddings.LayerNorm.weight"], sd[e + "text_embeddings.LayerNorm.bias"],
                    cfg.layer_norm_eps) + sd[e + "token_type_embeddings.weight"][0]
    conv_w = sd[e + "patch_embeddings.projection.weight"].reshape(D, -1)
    conv_b = sd[e + "patch_embeddings.projection.bias"]
    pos = sd[e + "position_embeddings"][0]  # [1 + g*g, D]
    grid = pos[1:].reshape(g, g, D)
    mod1 = sd[e + "token_type_embeddings.weight"][1]
    for b, s in enumerate(lay["samples"]):
        r, c = s["patch_grid"]
        ip = interp_align_corners(grid, r, c)
        out[b, T] = sd[e + "cls_token"][0, 0] + pos[0] + mod1
        for k, (i, j) in enumerate(s["patch_rc"]):
            patch = pv[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
            out[b, s["patch_indices"][k]] = conv_w @ patch + conv_b + ip[i, j] + mod1
        for idx, (i, j) in zip(s["image_pad_indices"], s["image_pad_source_rc"]):
            patch = pv[b, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)
            assert not patch.any()
            out[b, idx] = conv_b + mod1  # zero pixels, zero-padded position embedding
    return out


def manual_head(model, last_hidden: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """final LayerNorm -> pooler(token 0) -> classifier, float64 by hand."""
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    x = last_hidden.detach().double().numpy()[:, 0]

    def ln(x, w, b, eps):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    from scipy.special import erf
    x = ln(x, sd["vilt.layernorm.weight"], sd["vilt.layernorm.bias"], model.config.layer_norm_eps)
    pooled = np.tanh(x @ sd["vilt.pooler.dense.weight"].T + sd["vilt.pooler.dense.bias"])
    z = pooled @ sd["classifier.0.weight"].T + sd["classifier.0.bias"]
    assert model.classifier[1].eps == 1e-5
    z = ln(z, sd["classifier.1.weight"], sd["classifier.1.bias"], 1e-5)
    z = 0.5 * z * (1 + erf(z / np.sqrt(2)))
    logits = z @ sd["classifier.3.weight"].T + sd["classifier.3.bias"]
    return pooled, logits


def check_vs_unpatched(model, inputs, out, lay) -> dict:
    """The stock visual_embed (random patch order) must give the same logits and, after undoing
    the recorded permutation, the same hidden states / attention (up to float summation order)."""
    calls: list = []
    torch.manual_seed(12345)
    with record_multinomial(calls), torch.no_grad():
        ref = forward(model, inputs)
    T = lay["T"]
    N = lay["N"]
    perms = []
    samples = [s for s in lay["samples"]]
    assert len(calls) == len(samples)
    permuted_any = False
    for s, (n, k, repl, res) in zip(samples, calls):
        nv = len(s["patch_indices"])
        perm = list(range(N))  # perm[j] = index in OUR (raster) sequence of the stock token j
        if not repl:
            assert n == k == nv
            for j, src in enumerate(res.tolist()):
                perm[T + 1 + j] = T + 1 + src
            permuted_any |= res.tolist() != list(range(nv))
        perms.append(perm)
    worst = {"logits": float((ref.logits - out.logits.detach()).abs().max()), "hidden": 0.0, "attn": 0.0}
    for b, perm in enumerate(perms):
        pidx = torch.tensor(perm)
        for l in range(len(ref.attentions)):
            h_ours = out.hidden_states[l + 1].detach()[b, pidx]
            worst["hidden"] = max(worst["hidden"], float((ref.hidden_states[l + 1][b] - h_ours).abs().max()))
            a_ours = out.attentions[l].detach()[b][:, pidx][:, :, pidx]
            worst["attn"] = max(worst["attn"], float((ref.attentions[l][b] - a_ours).abs().max()))
    assert permuted_any, "expected the stock sampling to permute at least one sample"
    assert worst["logits"] < 1e-5 and worst["hidden"] < 1e-4 and worst["attn"] < 1e-5, worst
    worst["stock_multinomial_calls"] = [
        {"n": n, "num_samples": k, "replacement": repl, "result": res.tolist()} for n, k, repl, res in calls]
    return worst


def grad_check(model, inputs, grads32, lay) -> dict:
    m64 = copy.deepcopy(model).double().eval()
    inp = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    report = {"case": "b3", "h": 1e-6, "entries": []}
    with SoftmaxProbe(m64) as sp:
        with torch.enable_grad():
            out, pred, y, g64, _ = capture(m64, inp)
        pred_list = pred.tolist()
        report["f32_vs_f64_autograd_max_abs_over_max_abs"] = max(
            float((a.double() - b).abs().max() / b.abs().max()) for a, b in zip(grads32, g64))

        def y_of(target):
            sp.target = target
            with torch.no_grad(), raster_patch_order():
                lg = forward(m64, inp, output_attentions=False).logits
            sp.target = None
            return float(lg[torch.arange(lg.shape[0]), torch.tensor(pred_list)].sum())

        T = lay["T"]
        s0, s2 = lay["samples"][0], lay["samples"][2]
        picks = []
        for l in range(len(g64)):
            g = g64[l]
            idx = tuple(int(i) for i in np.unravel_index(int(g.abs().argmax()), g.shape))
            picks.append((l, idx, "largest |grad|"))
        picks += [
            (1, (0, 1, 0, s0["text_pad_indices"][0]), "text padding key column from text [CLS] (A=0)"),
            (1, (0, 2, 3, s0["image_pad_indices"][0]), "image padding key column (A=0)"),
            (0, (0, 0, s0["text_pad_indices"][0], 0), "text padding query row"),
            (0, (0, 3, s0["image_pad_indices"][0], T), "image padding query row"),
            (1, (2, 1, s2["patch_indices"][3], s2["patch_indices"][5]), "patch -> patch (image block)"),
            (0, (2, 2, s2["word_indices"][1], s2["word_indices"][3]), "word -> word (text block)"),
        ]
        h = report["h"]
        for l, idx, why in picks:
            mod = f"vilt.encoder.layer.{l}.attention.attention"
            fd = (y_of((mod, idx, h)) - y_of((mod, idx, -h))) / (2 * h)
            ga = float(g64[l][idx])
            g32 = float(grads32[l][idx])
            a = float(out.attentions[l].detach()[idx])
            err = abs(fd - ga) / abs(ga) if ga != 0 else abs(fd)
            report["entries"].append({"layer": l, "index_bhqk": list(idx), "why": why, "attention": a,
                                      "finite_difference_f64": fd, "autograd_f64": ga, "golden_f32": g32})
            log(f"  grad-check L{l} {idx} [{why}]: A {a:.3e}  FD64 {fd:+.9e}  autograd64 {ga:+.9e}  "
                f"golden32 {g32:+.9e}  err {err:.2e}")
            if ga == 0:
                assert abs(fd) < 1e-8, (l, idx, fd)
            else:
                assert err < 1e-6, (l, idx, fd, ga)
    log(f"  golden f32 vs f64 autograd: max |diff| / max |grad| = {report['f32_vs_f64_autograd_max_abs_over_max_abs']:.2e}")
    return report


def attention_stats(attns, lay) -> list:
    res = []
    for l, a in enumerate(attns):
        a = a.detach()
        vals = []
        for b, s in enumerate(lay["samples"]):
            real = torch.tensor(s["real_indices"])
            vals.append(a[b][:, real].max(dim=-1).values.flatten())
        mx = torch.cat(vals)
        res.append(float(mx.mean()))
        log(f"  layer {l}: row max prob over real rows mean {mx.mean():.3f} min {mx.min():.3f} max {mx.max():.3f}")
    return res


# ----------------------------------------------------------------------------------------------
# methods


def explain_case(cap_attn, cap_grad, cap_hid, lay, b):
    s = lay["samples"][b]
    smp = vm.Sample([a[b] for a in cap_attn], [g[b] for g in cap_grad], [h[b] for h in cap_hid],
                    s["real_indices"], s["text_len"], len(s["patch_indices"]))
    return vm.explain(smp)


def method_tensors(c, b, res) -> dict:
    out, spec = res
    t = {}
    for m in vm.METHODS:
        t[f"{c}.{m}.image.{b}"] = out[m][0]
        t[f"{c}.{m}.text.{b}"] = out[m][1]
    for mod in ("image", "text"):
        fs, lam = spec[mod]
        for l, f in enumerate(fs):
            t[f"{c}.fiedler.{mod}.{l}.{b}"] = f
        t[f"{c}.lambda.{mod}.{b}"] = lam
    return t


def to_np(xs):
    return [x.detach().to(torch.float32).numpy().copy() for x in xs]


# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    VILT_DIR.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        assert (IMG_DIR / name).is_file(), f"{IMG_DIR / name} missing (make_clip_fixture.py makes it)"

    tok_meta = make_tokenizer()
    make_image_processor()
    make_model(tok_meta["vocab_size"], tok_meta["special_ids"]["[PAD]"])
    processor, model = load()
    ip, tok = processor.image_processor, processor.tokenizer
    cfg = model.config

    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {
        "description": "golden outputs of the tiny random ViltForQuestionAnswering in tests/fixtures/vilt "
        "(tools/reference/make_vilt_fixture.py); patches in RASTER order (see patch_order)",
        "seed": SEED,
        "versions": versions(),
        "tokenizer": tok_meta,
        "answers": [cfg.id2label[i] for i in range(cfg.num_labels)],
        "model": {
            "hidden_size": cfg.hidden_size, "heads": cfg.num_attention_heads, "layers": cfg.num_hidden_layers,
            "intermediate_size": cfg.intermediate_size, "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps, "classifier_layer_norm_eps": model.classifier[1].eps,
            "patch_size": cfg.patch_size, "image_size": cfg.image_size,
            "position_grid": [cfg.image_size // cfg.patch_size] * 2,
            "max_position_embeddings": cfg.max_position_embeddings, "max_image_length": cfg.max_image_length,
            "model_safetensors_sha256": sha256(VILT_DIR / "model.safetensors"),
        },
        "target": "y = sum_b logits[b, predicted_b] with predicted_b = argmax_j logits[b, j]; "
        "grad_attn.l = dy / d(attention probabilities of layer l), torch.autograd.grad on the returned tensors",
        "patch_order": "torch.multinomial is replaced by arange(k) while visual_embed runs "
        "(vilt_model.raster_patch_order): valid patches in raster order of the resized image's patch grid, "
        "then the first p_b non-valid patches of the padded grid. Checked against the stock random order "
        "(see checks.stock_vs_raster).",
        "embedding_formula": {
            "text": "LayerNorm_eps1e-12(word_embeddings[id] + text token_type_embeddings[token_type_id] + "
            "text position_embeddings[i]) + modality token_type_embeddings[0]",
            "image_cls": "cls_token + position_embeddings[0, 0] + modality token_type_embeddings[1]",
            "patch (r, c)": "Conv2d(16x16, stride 16)(pixel patch) + interp(position_embeddings[0, 1:] as 4x4 grid "
            "-> (rows, cols), bilinear, align_corners=True)[r, c] + modality token_type_embeddings[1]; no LayerNorm",
            "image padding": "conv bias + modality token_type_embeddings[1] (zero pixels, zero-padded position "
            "embedding); identical for every padding token",
            "checked": "rebuilt by hand in float64 (make_vilt_fixture.manual_embeddings), see checks",
        },
        "head": "last_hidden_state = LayerNorm_eps1e-12(hidden_states[L]) (vilt.layernorm); pooled = "
        "tanh(pooler.dense(last_hidden_state[:, 0])); logits = classifier.3(GELU_erf(LayerNorm_eps1e-5("
        "classifier.0(pooled))))",
        "attention_mask": "extended = (1 - token_mask)[:, None, None, :] * finfo(float32).min added to the "
        "scores of every query row (keys only); token_mask = [text attention_mask ; 1 (image [CLS]) ; "
        "1 for valid patches, 0 for image padding]; masked probabilities are exactly 0",
    }
    preprocess_goldens(ip, tensors, meta)

    # interpolated position-embedding grids for every patch grid used by the fixture images
    meta["position_interpolation"] = {}
    pos = model.vilt.embeddings.position_embeddings.detach()
    g = cfg.image_size // cfg.patch_size
    spatial = pos[:, 1:, :].transpose(1, 2).reshape(1, cfg.hidden_size, g, g)
    for stem, info in meta["preprocess"].items():
        if stem == "formula":
            continue
        r, c = info["resize"]["patch_grid"]
        ip_t = torch.nn.functional.interpolate(spatial, size=(r, c), mode="bilinear", align_corners=True)
        ip_t = ip_t.flatten(2).transpose(1, 2)[0].contiguous()  # [r*c, D] raster order
        key = f"posinterp.{r}x{c}"
        tensors[key] = ip_t
        hand = interp_align_corners(pos[0, 1:].double().numpy().reshape(g, g, -1), r, c).reshape(r * c, -1)
        meta["position_interpolation"][key] = {
            "grid": [r, c], "used_by": stem, "hand_written_f64_vs_torch_f32_max_abs": float(np.abs(hand - ip_t.numpy()).max())}
        if (r, c) == (g, g):
            assert torch.equal(ip_t, pos[0, 1:]), "same-size align_corners interpolation must be the identity"

    meta["cases"] = {}
    meta["checks"] = {}
    captures = {}
    for cname, pairs in CASES.items():
        inputs = case_inputs(processor, pairs)
        tin = tok([t for _, t in pairs], padding=True, return_tensors="pt")
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(tin[k], inputs[k]) and inputs[k].dtype == torch.int64, k
        iin = ip([Image.open(IMG_DIR / f) for f, _ in pairs], return_tensors="pt")
        assert torch.equal(iin["pixel_values"], inputs["pixel_values"])
        assert torch.equal(iin["pixel_mask"], inputs["pixel_mask"])
        for b, (f, _) in enumerate(pairs):
            single = tensors[f"preprocess.{Path(f).stem}.pixel_values"]
            h, w = single.shape[1:]
            assert torch.equal(inputs["pixel_values"][b, :, :h, :w], single)
            assert not inputs["pixel_values"][b, :, h:, :].any() and not inputs["pixel_values"][b, :, :, w:].any()
        lay = layout(inputs, cfg.patch_size)
        log(f"case {cname}: input_ids {inputs['input_ids'].tolist()}; pixel_values {list(inputs['pixel_values'].shape)}; "
            f"T {lay['T']} max image len {lay['max_image_len']} N {lay['N']}")

        out, pred, y, grads, calls = capture(model, inputs)
        B, N = inputs["input_ids"].shape[0], lay["N"]
        assert out.hidden_states[0].shape == (B, N, cfg.hidden_size)
        logits = out.logits.detach()
        top2 = logits.topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        assert min(margins) > MIN_LOGIT_MARGIN, margins
        token_mask = torch.tensor([s["token_mask"] for s in lay["samples"]], dtype=torch.int64)

        # independent checks of the documented formulas
        emb_hand = manual_embeddings(model, inputs, lay)
        emb_err = float(np.abs(emb_hand - out.hidden_states[0].detach().double().numpy()).max())
        pooled_hand, logits_hand = manual_head(model, out.hidden_states[-1])
        with torch.no_grad():
            pooled = model.vilt.pooler(model.vilt.layernorm(out.hidden_states[-1]))
        head_err = max(float(np.abs(pooled_hand - pooled.double().numpy()).max()),
                       float(np.abs(logits_hand - logits.double().numpy()).max()))
        assert emb_err < 1e-5 and head_err < 1e-5, (emb_err, head_err)
        for l, a in enumerate(out.attentions):  # masked keys get exactly 0
            km = token_mask[:, None, None, :].expand_as(a)
            assert bool(torch.all(a.detach()[km == 0] == 0)), l
        stock = check_vs_unpatched(model, inputs, out, lay)
        meta["checks"][cname] = {
            "embeddings_by_hand_f64_max_abs": emb_err,
            "pooled_and_logits_by_hand_f64_max_abs": head_err,
            "stock_vs_raster": stock,
            "raster_multinomial_calls": [{"n": n, "num_samples": k, "replacement": r} for n, k, r in calls],
        }
        log(f"  logits {[[round(v, 4) for v in r] for r in logits.tolist()]}")
        log(f"  predicted {pred.tolist()} ({[cfg.id2label[i] for i in pred.tolist()]}), top-2 margins {margins}")
        log(f"  by-hand embeddings err {emb_err:.2e}, pooler/classifier err {head_err:.2e}; stock random order: "
            f"logits {stock['logits']:.2e} hidden {stock['hidden']:.2e} attn {stock['attn']:.2e}")
        stats = attention_stats(out.attentions, lay)
        log(f"  |grad_attn| max per layer: {[f'{float(g.abs().max()):.3e}' for g in grads]}")

        for k in ("pixel_values", "pixel_mask", "input_ids", "attention_mask", "token_type_ids"):
            tensors[f"{cname}.{k}"] = inputs[k].contiguous()
        tensors[f"{cname}.token_mask"] = token_mask
        tensors[f"{cname}.logits"] = logits.contiguous()
        tensors[f"{cname}.predicted"] = pred.to(torch.int64).contiguous()
        tensors[f"{cname}.embeddings"] = out.hidden_states[0].detach().contiguous()
        tensors[f"{cname}.pooled"] = pooled.detach().contiguous()
        with torch.no_grad():
            tensors[f"{cname}.last_hidden_state"] = model.vilt.layernorm(out.hidden_states[-1]).detach().contiguous()
        for l in range(cfg.num_hidden_layers):
            tensors[f"{cname}.attn.{l}"] = out.attentions[l].detach().contiguous()
            tensors[f"{cname}.hidden.{l}"] = out.hidden_states[l + 1].detach().contiguous()
            tensors[f"{cname}.grad_attn.{l}"] = grads[l].contiguous()
        ids = inputs["input_ids"]
        for b, s in enumerate(lay["samples"]):
            s["text_tokens"] = tok.convert_ids_to_tokens(ids[b, : s["text_len"]].tolist())
        meta["cases"][cname] = {
            "pairs": [{"image": f, "text": t} for f, t in pairs],
            "input_ids": ids.tolist(),
            "tokens": [tok.convert_ids_to_tokens(r) for r in ids.tolist()],
            "logits": logits.tolist(),
            "predicted": pred.tolist(),
            "predicted_answers": [cfg.id2label[i] for i in pred.tolist()],
            "top2_margin": margins,
            "y": float(y.detach()),
            "attention_row_max_mean_per_layer": stats,
            "layout": lay,
        }
        captures[cname] = (inputs, out, grads, lay)

    log("grad check (float64 finite differences through HF's own attention code), case b3:")
    b3_inputs, _, b3_grads, b3_lay = captures["b3"]
    meta["grad_check"] = grad_check(model, b3_inputs, b3_grads, b3_lay)

    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64, torch.uint8), (k, v.dtype)
    tensors = {k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, str(VILT_DIR / "golden.safetensors"), metadata={"format": "pt"})  # one key: hash order
    meta["tensors"] = {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)}
                       for k, v in tensors.items()}
    write_json(VILT_DIR / "golden.json", meta)
    back = load_file(str(VILT_DIR / "golden.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)

    make_methods(model, processor, captures)

    for name in OUTPUT_NAMES:
        os.chmod(VILT_DIR / name, 0o644)
    extra = sorted(p.name for p in VILT_DIR.iterdir())
    assert extra == sorted(OUTPUT_NAMES), extra
    log("files written (size, sha256):")
    total = 0
    for name in OUTPUT_NAMES:
        f = VILT_DIR / name
        total += f.stat().st_size
        log(f"  {str(f.relative_to(REPO)):<45} {f.stat().st_size:>8}  {sha256(f)}")
    log(f"  total {total} bytes")


def make_methods(model, processor, captures) -> None:
    tensors: dict[str, np.ndarray] = {}
    meta_cases = {}
    lambda_table = []
    batch1_max = 0.0
    spectral_check = None
    L = model.config.num_hidden_layers
    for c, pairs in CASES.items():
        inputs, out, grads, lay = captures[c]
        A, G, Hs = to_np(out.attentions), to_np(grads), to_np(out.hidden_states[1:])
        pair_meta = []
        for b, (img, text) in enumerate(pairs):
            s = lay["samples"][b]
            res = explain_case(A, G, Hs, lay, b)
            pt = method_tensors(c, b, res)
            # the same pair alone (batch of 1: no text or image padding)
            alone_in = case_inputs(processor, [(img, text)])
            o1, p1, _, g1, _ = capture(model, alone_in)
            lay1 = layout(alone_in, model.config.patch_size)
            assert not lay1["samples"][0]["padding_indices"]
            assert int(p1[0]) == int(out.logits[b].argmax())
            assert float((o1.logits[0] - out.logits[b]).detach().abs().max()) < 1e-5
            pt1 = method_tensors(c, b, explain_case(to_np(o1.attentions), to_np(g1), to_np(o1.hidden_states[1:]), lay1, 0))
            assert set(pt1) == set(pt)
            for k in pt:
                d = float(np.abs(pt[k] - pt1[k]).max())
                batch1_max = max(batch1_max, d)
                assert d <= BATCH1_TOL, (k, d)
            for mod in ("image", "text"):
                lam = res[1][mod][1]
                for l in range(L):
                    lambda_table.append({"case": c, "pair": b, "modality": mod, "layer": l,
                                         "lambda2": float(lam[l, 0]), "gap": float(lam[l, 1]),
                                         "small_gap": bool(lam[l, 1] < SMALL_GAP)})
            if spectral_check is None:
                real = np.asarray(s["real_indices"])
                hl = Hs[-1][b][real]
                ln = s["text_len"]
                spectral_check = {
                    "image_last_layer": check_spectral_core(hl[ln + 1:]),
                    "text_last_layer": check_spectral_core(hl[1:ln - 1]),
                }
            tensors.update(pt)
            pair_meta.append({
                "image": img, "text": text, "tokens": s["text_tokens"], "text_len": s["text_len"],
                "words": [1, s["text_len"] - 2], "patch_grid": s["patch_grid"],
                "n_patches": len(s["patch_indices"]),
                "predicted": int(out.logits[b].argmax()),
                "target_logit": float(out.logits[b].detach().max()),
            })
        meta_cases[c] = {"pairs": pair_meta}

    ranges = {}
    for m in vm.METHODS:
        ranges[m] = {}
        for side in ("image", "text"):
            vals = []
            for c, info in meta_cases.items():
                for b, p in enumerate(info["pairs"]):
                    v = tensors[f"{c}.{m}.{side}.{b}"]
                    vals.append(v[1: p["text_len"] - 1] if side == "text" else v)
            v = np.concatenate(vals)
            ranges[m][side] = {"min": float(v.min()), "max": float(v.max()), "max_abs": float(np.abs(v).max())}
    small = []
    for r in lambda_table:
        if r["small_gap"]:
            side = r["modality"]
            affected = [f"fiedler.{side}.{r['layer']}", f"dsmi-grad.{side}", f"dsmi-grad-attn.{side}"]
            if r["layer"] == L - 1:
                affected.append(f"dsmi.{side}")
            small.append({k: r[k] for k in ("case", "pair", "modality", "layer", "lambda2", "gap")}
                         | {"affected": affected})

    out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sorted(tensors.items())}
    st = VILT_DIR / "methods.safetensors"
    save_file(out, str(st), metadata={"format": "pt"})
    back = load_file(str(st))
    assert set(back) == set(out) and all(torch.equal(back[k], out[k]) for k in out)
    meta = {
        "description": "golden relevance vectors of the explanation methods for the tiny random ViLT in "
        "tests/fixtures/vilt (tools/reference/make_vilt_fixture.py, vilt_methods.py; building blocks from "
        "clip_methods.py)",
        "versions": versions(),
        "model": {"dir": "tests/fixtures/vilt", "model_safetensors_sha256": sha256(VILT_DIR / "model.safetensors"),
                  "layers": L, "dtype": "float32"},
        "target": "y_b = logits[b, argmax_j logits[b, j]] (predicted answer); one backward of sum_b y_b over the "
        "padded batch (samples are independent); dA = dy/d(attention probabilities); raster patch order",
        "restriction": "per sample, every [H, N, N] matrix and every [N, D] feature matrix is first restricted to "
        "the real tokens in the order text 0..len-1, image [CLS], valid patches (raster); golden.json "
        "cases.<c>.layout.samples[b].real_indices gives these indices in the padded sequence",
        "readout": "row 0 (text [CLS], read by the pooler); image = columns of the valid patches (raster order, "
        "image [CLS] excluded), length rows*cols; text = length len, values at word columns 1..len-2, 0 at "
        "[CLS] (0) and [SEP] (len-1)",
        "precision": "captured in float32 (CPU, 1 thread); method arithmetic in float64; stored float32",
        "methods": vm.METHOD_DEFINITIONS,
        "spectral": vm.SPECTRAL_DEFINITION,
        "graph_tokens": {"image": "valid patch rows of hidden_states[l+1], raster order",
                         "text": "word rows 1..len-2 of hidden_states[l+1]"},
        "layers": {"raw-attn/grad-cam": "last", "rollout/chefer": "all (start 0)", "chefer-last": "last only",
                   "dsmi": "last layer output", "dsmi-grad/dsmi-grad-attn": "sum over all layers"},
        "tensor_names": {
            "<case>.<method>.image.<pair>": "[rows*cols]",
            "<case>.<method>.text.<pair>": "[len]",
            "<case>.fiedler.image.<layer>.<pair>": "[rows*cols]",
            "<case>.fiedler.text.<layer>.<pair>": "[len - 2] (words only)",
            "<case>.lambda.image.<pair>": "[layers, 2] = (lambda2, lambda3 - lambda2)",
            "<case>.lambda.text.<pair>": "[layers, 2]",
        },
        "cases": meta_cases,
        "lambdas": lambda_table,
        "small_gap_threshold": SMALL_GAP,
        "small_gap": small,
        "value_ranges": ranges,
        "checks": {
            "batch1_vs_batched_max_abs": batch1_max,
            "batch1_tolerance": BATCH1_TOL,
            "spectral_core_b1_pair0": spectral_check,
        },
        "tensors": {k: list(v.shape) for k, v in out.items()},
    }
    (VILT_DIR / "methods.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log("lambda2 / gap:")
    for r in lambda_table:
        flag = "  <-- small gap" if r["small_gap"] else ""
        log(f"  {r['case']} pair {r['pair']} {r['modality']:5s} layer {r['layer']}: lambda2 {r['lambda2']:.6f} "
            f"gap {r['gap']:.6f}{flag}")
    log("value ranges (text: words only):")
    for m, rr in ranges.items():
        log(f"  {m:15s} image [{rr['image']['min']:+.4e}, {rr['image']['max']:+.4e}]  "
            f"text [{rr['text']['min']:+.4e}, {rr['text']['max']:+.4e}]")
    log(f"batch-1 vs batched max |diff|: {batch1_max:.3e}")
    log(f"spectral core check: {json.dumps(spectral_check)}")


if __name__ == "__main__":
    main()
