#!/usr/bin/env python3
"""Build the tiny random-weight CLIP fixture and its golden outputs.

Writes (paths relative to the repository root):

  tests/fixtures/images/         catdog.png, coco_127510.jpg (byte copies), odd.png, tall.png (derived)
  tests/fixtures/clip/           HF CLIPModel (config.json, model.safetensors f32), tokenizer.json
                                 (+ tokenizer_config.json, special_tokens_map.json),
                                 preprocessor_config.json, golden.safetensors, golden.json
  tests/fixtures/clip-f16-sharded/  the same weights in float16, two safetensors shards + index

Run from anywhere:  tools/reference/.venv/bin/python tools/reference/make_clip_fixture.py
Re-running produces byte-identical files (checked with sha256, see README.md).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import tokenizers
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizerFast,
)
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import ChannelDimension, to_numpy_array
from transformers.models.clip.modeling_clip import CLIPAttention

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_tokenizer import EOT, SOT, build_tokenizer  # noqa: E402
from pil_resize_reference import pil_bicubic_resize  # noqa: E402

SEED = 20240607
N_MERGES = 300  # -> vocab 512 + 300 + 2 = 814
REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
CLIP_DIR = FIX / "clip"
F16_DIR = FIX / "clip-f16-sharded"
IMG_DIR = FIX / "images"
DEFAULT_SOURCE_IMAGES = Path("/work/shared/data/images")
OUTPUTS: list[Path] = []

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

IMAGES = ["catdog.png", "coco_127510.jpg", "odd.png", "tall.png"]  # tall.png: preprocessing only
CASES = {
    "b1": [("catdog.png", "a photo of a cat")],
    "b3": [
        ("catdog.png", "a photo of a dog and a cat sitting together"),
        ("coco_127510.jpg", "two people"),
        ("odd.png", "a bird"),
    ],
}
TOKENIZER_TEST_TEXTS = [
    "a photo of a cat",
    "a photo of a dog and a cat sitting together",
    "two people",
    "a bird",
    "",
    "A Photo   of\tTHE  Zebra!!",
    "it's a dog's life, isn't it? they're here; we'll see.",
    "photo #42: 3 cats, 12 dogs & 1,000 birds...",
    "café naïve résumé Ångström",
    "emoji 🐱🐶 and 日本語 text",
    "x<|endoftext|>y",
    "tabs\tand\nnewlines\r\n  end  ",
]


def outputs() -> list[Path]:
    names = [IMG_DIR / n for n in IMAGES]
    names += [CLIP_DIR / n for n in (
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "preprocessor_config.json", "golden.safetensors", "golden.json")]
    names += [F16_DIR / n for n in (
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "preprocessor_config.json")]
    return names


def log(*a):
    print(*a, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# images


def make_images(source: Path) -> None:
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        for name in IMAGES:
            if not (IMG_DIR / name).is_file():
                raise SystemExit(f"source image dir {source} missing and {IMG_DIR / name} absent")
        log(f"images: {source} not found, keeping existing tests/fixtures/images/*")
        return
    shutil.copyfile(source / "catdog.png", IMG_DIR / "catdog.png")
    shutil.copyfile(source / "COCO_val2014_000000127510.jpg", IMG_DIR / "coco_127510.jpg")
    # odd.png: dogbird.png is only 224x224, so take a 224x129 band (the aspect ratio of 301x173)
    # and upscale it with bicubic resampling to exactly 301x173 (odd width and height).
    src = Image.open(source / "dogbird.png").convert("RGB")
    band = src.crop((0, 40, 224, 169))
    odd = band.resize((301, 173), resample=Image.Resampling.BICUBIC)
    odd.save(IMG_DIR / "odd.png", format="PNG", optimize=False, compress_level=9)
    # tall.png: a plain 61x197 crop of catdog.png. Portrait with aspect > 2, so PIL's resize to
    # 48x155 runs the vertical pass first (see pil_resize_reference.py); preprocessing goldens only.
    tall = Image.open(source / "catdog.png").convert("RGB").crop((80, 10, 141, 207))
    tall.save(IMG_DIR / "tall.png", format="PNG", optimize=False, compress_level=9)
    for name in IMAGES:
        im = Image.open(IMG_DIR / name)
        log(f"images: {name} {im.mode} {im.size} {(IMG_DIR / name).stat().st_size} bytes")


# ----------------------------------------------------------------------------------------------
# tokenizer + image processor


def make_tokenizer() -> tuple[tokenizers.Tokenizer, CLIPTokenizerFast]:
    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    raw = build_tokenizer(SEED, N_MERGES)
    tok_path = CLIP_DIR / "tokenizer.json"
    raw.save(str(tok_path), pretty=True)

    fast = CLIPTokenizerFast(tokenizer_file=str(tok_path), model_max_length=32)
    with tempfile.TemporaryDirectory() as td:
        fast.save_pretrained(td, legacy_format=False)
        written = sorted(os.listdir(td))
        log(f"tokenizer: CLIPTokenizerFast.save_pretrained writes {written}")
        same = Path(td, "tokenizer.json").read_bytes() == tok_path.read_bytes()
        log(f"tokenizer: its tokenizer.json identical to the raw Tokenizer.save: {same}")
        if not same:
            # keep the wrapper's version (what from_pretrained round-trips), re-check below
            shutil.copyfile(Path(td, "tokenizer.json"), tok_path)
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            cfg = json.loads(Path(td, name).read_text())
            write_json(CLIP_DIR / name, cfg)

    raw = tokenizers.Tokenizer.from_file(str(tok_path))
    fast = CLIPTokenizerFast.from_pretrained(str(CLIP_DIR))
    for t in TOKENIZER_TEST_TEXTS:
        a = raw.encode(t).ids
        b = fast(t)["input_ids"]
        assert a == b, (t, a, b)
    batch_raw = [e.ids for e in raw.encode_batch(TOKENIZER_TEST_TEXTS)]
    assert batch_raw == fast(TOKENIZER_TEST_TEXTS)["input_ids"]
    log(f"tokenizer: raw tokenizers.Tokenizer == CLIPTokenizerFast on {len(TOKENIZER_TEST_TEXTS)} texts")
    log(
        f"tokenizer: vocab {raw.get_vocab_size()}, {SOT}={raw.token_to_id(SOT)}, "
        f"{EOT}={raw.token_to_id(EOT)}, pad={fast.pad_token_id}, unk={fast.unk_token_id}"
    )
    return raw, fast


def make_image_processor() -> CLIPImageProcessor:
    ip = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": 48},
        resample=3,  # PIL bicubic
        do_center_crop=True,
        crop_size={"height": 48, "width": 48},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_convert_rgb=True,
    )
    ip.save_pretrained(str(CLIP_DIR))
    return ip


# ----------------------------------------------------------------------------------------------
# model


def make_config(vocab_size: int, sot_id: int, eot_id: int) -> CLIPConfig:
    text = dict(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        projection_dim=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=32,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        bos_token_id=sot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        projection_dim=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_channels=3,
        image_size=48,
        patch_size=8,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
    )
    return CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=40,
        logit_scale_init_value=2.6592,
    )


def reinit_(model: CLIPModel, seed: int) -> None:
    """Seeded re-initialisation that gives non-trivial attention (see README)."""
    rng = np.random.default_rng(seed)
    done = set()

    def put(name: str, p: torch.nn.Parameter, arr: np.ndarray) -> None:
        assert tuple(arr.shape) == tuple(p.shape), name
        with torch.no_grad():
            p.copy_(torch.from_numpy(arr.astype(np.float32)))
        done.add(name)

    for mname, m in sorted(model.named_modules(), key=lambda kv: kv[0]):
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            w = m.weight
            fan_in = int(np.prod(w.shape[1:]))
            put(f"{mname}.weight", w, rng.standard_normal(w.shape) / math.sqrt(fan_in))
            if m.bias is not None:
                put(f"{mname}.bias", m.bias, rng.uniform(-0.1, 0.1, m.bias.shape))
        elif isinstance(m, torch.nn.Embedding):
            put(f"{mname}.weight", m.weight, 0.5 * rng.standard_normal(m.weight.shape))
        elif isinstance(m, torch.nn.LayerNorm):
            put(f"{mname}.weight", m.weight, 1.0 + 0.1 * rng.standard_normal(m.weight.shape))
            put(f"{mname}.bias", m.bias, 0.05 * rng.standard_normal(m.bias.shape))
    ce = model.vision_model.embeddings.class_embedding
    put("vision_model.embeddings.class_embedding", ce, 0.5 * rng.standard_normal(ce.shape))
    left = {n for n, _ in model.named_parameters()} - done
    assert left == {"logit_scale"}, left


def patch_config_json(path: Path, dtype: str) -> None:
    """transformers 4.57 writes "dtype"; also write the legacy "torch_dtype" key."""
    cfg = json.loads(path.read_text())
    assert cfg.get("dtype") == dtype, cfg.get("dtype")
    cfg["torch_dtype"] = dtype
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def make_model(vocab_size: int, sot_id: int, eot_id: int) -> CLIPModel:
    torch.manual_seed(SEED)
    config = make_config(vocab_size, sot_id, eot_id)
    model = CLIPModel._from_config(config, attn_implementation="eager")
    reinit_(model, SEED)
    model.eval()
    model.save_pretrained(str(CLIP_DIR), safe_serialization=True)
    patch_config_json(CLIP_DIR / "config.json", "float32")
    return model


def make_f16(model: CLIPModel) -> None:
    half = copy.deepcopy(model).half()
    total = sum(p.numel() * p.element_size() for p in half.state_dict().values())
    if F16_DIR.exists():
        shutil.rmtree(F16_DIR)
    for frac in (0.55, 0.6, 0.65, 0.7, 0.8):
        with tempfile.TemporaryDirectory() as td:
            half.save_pretrained(td, safe_serialization=True, max_shard_size=int(total * frac))
            shards = sorted(f for f in os.listdir(td) if f.endswith(".safetensors"))
            if shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
                shutil.copytree(td, F16_DIR)
                break
    else:
        raise SystemExit("could not produce exactly two f16 shards")
    patch_config_json(F16_DIR / "config.json", "float16")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        shutil.copyfile(CLIP_DIR / name, F16_DIR / name)
    index = json.loads((F16_DIR / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total, (index["metadata"], total)
    assert set(index["weight_map"]) == set(half.state_dict()), "index must list every tensor"
    log(f"f16: {total} bytes in 2 shards: " + ", ".join(
        f"{f}={(F16_DIR / f).stat().st_size}" for f in sorted(os.listdir(F16_DIR)) if f.endswith(".safetensors")
    ))


# ----------------------------------------------------------------------------------------------
# goldens


def preprocess_goldens(ip: CLIPImageProcessor, tensors: dict, meta: dict) -> None:
    """Per-image pixel values, plus the PIL-resized uint8 image before cropping."""
    meta["preprocess"] = {}
    for name in IMAGES:
        stem = Path(name).stem
        img = Image.open(IMG_DIR / name)
        pv = ip(images=img, return_tensors="pt")["pixel_values"][0]
        # replay the slow processor step by step to expose the intermediate resize result
        arr = to_numpy_array(convert_to_rgb(img))
        h, w = arr.shape[:2]
        resized = ip.resize(arr, size=ip.size, resample=ip.resample, input_data_format=ChannelDimension.LAST)
        rh, rw = resized.shape[:2]
        assert resized.dtype == np.uint8
        assert np.array_equal(pil_bicubic_resize(arr, rh, rw), resized), "resize reference mismatch"
        top, left = (rh - 48) // 2, (rw - 48) // 2
        vertical_first = (h - rh) > 0 and (h - rh) > 2 * (w - rw)
        crop = resized[top : top + 48, left : left + 48]
        x = ip.rescale(crop, scale=ip.rescale_factor, input_data_format=ChannelDimension.LAST)
        x = ip.normalize(x, mean=ip.image_mean, std=ip.image_std, input_data_format=ChannelDimension.LAST)
        replay = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        assert replay.dtype == torch.float32 and torch.equal(replay, pv), name
        tensors[f"preprocess.{stem}.pixel_values"] = pv.contiguous()
        tensors[f"preprocess.{stem}.resized_u8"] = torch.from_numpy(np.ascontiguousarray(resized))
        meta["preprocess"][stem] = {
            "file": name,
            "decoded_hw": [h, w],
            "decoded_rgb_sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
            "resized_hw": [rh, rw],
            "resize_first_pass": "vertical" if vertical_first else "horizontal",
            "crop_top_left": [top, left],
        }
        log(
            f"preprocess: {name} {w}x{h} -> resize {rw}x{rh} ({'vertical' if vertical_first else 'horizontal'}"
            f" pass first) -> crop at (top={top}, left={left})"
        )


def case_inputs(processor: CLIPProcessor, pairs):
    images = [Image.open(IMG_DIR / f) for f, _ in pairs]
    texts = [t for _, t in pairs]
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def forward_with_grads(model: CLIPModel, inputs):
    out = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=inputs["pixel_values"],
        output_attentions=True,
        output_hidden_states=True,
    )
    y = out.logits_per_image.diagonal().sum()
    va = list(out.vision_model_output.attentions)
    ta = list(out.text_model_output.attentions)
    grads = torch.autograd.grad(y, va + ta)
    return out, y, grads[: len(va)], grads[len(va) :]


def attention_stats(name: str, attns, mask=None) -> None:
    for l, a in enumerate(attns):
        a = a.detach()
        n = a.shape[-1]
        mx = a.max(dim=-1).values  # [B,H,N]
        if mask is not None:  # text: rows of real tokens only, uniform over the causal prefix
            valid = mask.bool()[:, None, :].expand_as(mx)
            mx = mx[valid]
        log(
            f"  {name} layer {l}: row max prob mean {mx.mean():.3f} min {mx.min():.3f} max {mx.max():.3f}"
            f" (uniform would be {1.0 / n:.3f})"
        )


class SoftmaxPatch:
    """Temporarily replaces torch.nn.functional.softmax (which CLIP's eager attention calls) to
    (a) keep float64 models in float64 (HF computes the softmax in float32 and casts back), and
    (b) add +h to one attention probability of one attention module.  The rest of HF's code
    (dropout, the A @ V product, output_attentions) runs unchanged, so a finite difference
    through it measures d y / d A for the A that really multiplies V."""

    def __init__(self, model: CLIPModel):
        self.orig = torch.nn.functional.softmax
        self.current = None
        self.target = None  # (module name, index tuple, h)
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, CLIPAttention):
                self.handles.append(m.register_forward_pre_hook(self._enter(name)))
                self.handles.append(m.register_forward_hook(self._leave()))

    def _enter(self, name):
        def hook(module, args):
            self.current = name

        return hook

    def _leave(self):
        def hook(module, args, output):
            self.current = None

        return hook

    def softmax(self, input, dim=None, _stacklevel=3, dtype=None):
        if input.dtype == torch.float64:
            p = self.orig(input, dim=dim)
        else:
            p = self.orig(input, dim=dim, dtype=dtype)
        if self.target is not None and self.current == self.target[0]:
            p = p.clone()
            p[self.target[1]] += self.target[2]
        return p

    def __enter__(self):
        torch.nn.functional.softmax = self.softmax
        return self

    def __exit__(self, *exc):
        torch.nn.functional.softmax = self.orig
        for h in self.handles:
            h.remove()


def grad_check(model: CLIPModel, inputs, g32_vision, g32_text) -> dict:
    """Finite differences in float64 against autograd's d y / d A (and the f32 golden)."""
    m64 = copy.deepcopy(model).double().eval()
    inp = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    report = {"case": "b3", "h": 1e-6, "entries": []}
    # HF builds the causal mask with torch.full(..., finfo(float64).min) in the default dtype
    torch.set_default_dtype(torch.float64)
    try:
        return _grad_check(m64, inp, report, g32_vision, g32_text)
    finally:
        torch.set_default_dtype(torch.float32)


def _grad_check(m64, inp, report, g32_vision, g32_text) -> dict:
    with SoftmaxPatch(m64) as sp:
        with torch.enable_grad():
            _, _, gv, gt = forward_with_grads(m64, inp)
        rel = lambda a, b: float((a.double() - b).abs().max() / b.abs().max())  # noqa: E731
        report["f32_vs_f64_autograd_max_rel"] = {
            "vision": max(rel(a, b) for a, b in zip(g32_vision, gv)),
            "text": max(rel(a, b) for a, b in zip(g32_text, gt)),
        }

        def y_of(target):
            sp.target = target
            with torch.no_grad():
                out = m64(**inp)
            sp.target = None
            return float(out.logits_per_image.diagonal().sum())

        mask = inp["attention_mask"]
        picks = []
        for tower, grads in (("vision", gv), ("text", gt)):
            for l in (0, len(grads) - 1):
                g = grads[l]
                idx = tuple(int(i) for i in np.unravel_index(int(g.abs().argmax()), g.shape))
                picks.append((tower, l, idx, "largest |grad|"))
        # a causally masked entry (A = 0 there, but d y / d A = dO . V is not 0)
        picks.append(("text", 1, (0, 2, 1, 4), "causally masked key (A=0)"))
        # a padding row of the shortest text: nothing downstream reads it
        short = int(mask.sum(1).argmin())
        T = mask.shape[1]
        picks.append(("text", 1, (short, 0, T - 1, 0), "padding query row"))
        # a padding key column of the shortest text seen from its EOT row
        eot_pos = int(mask[short].sum()) - 1
        picks.append(("text", 2, (short, 3, eot_pos, T - 1), "padding key column (A=0)"))

        h = report["h"]
        for tower, l, idx, why in picks:
            mod = f"{tower}_model.encoder.layers.{l}.self_attn"
            fd = (y_of((mod, idx, h)) - y_of((mod, idx, -h))) / (2 * h)
            g64 = float((gv if tower == "vision" else gt)[l][idx])
            g32 = float((g32_vision if tower == "vision" else g32_text)[l][idx])
            err = abs(fd - g64) / max(abs(g64), 1e-12) if g64 != 0 else abs(fd)
            report["entries"].append(
                {"tower": tower, "layer": l, "index": list(idx), "why": why,
                 "finite_difference_f64": fd, "autograd_f64": g64, "golden_f32": g32}
            )
            log(
                f"  grad-check {tower} L{l} {idx} [{why}]: FD64 {fd:+.9e}  autograd64 {g64:+.9e}"
                f"  golden32 {g32:+.9e}  rel.err(FD vs autograd) {err:.2e}"
            )
            if g64 == 0:
                assert abs(fd) < 1e-8, (tower, l, idx, fd)
            else:
                assert err < 1e-6, (tower, l, idx, fd, g64)
    log(f"  golden f32 vs f64 autograd, max |diff| / max |grad| per tower: {report['f32_vs_f64_autograd_max_rel']}")
    return report


def make_goldens(source_note: str) -> None:
    ip = CLIPImageProcessor.from_pretrained(str(CLIP_DIR))
    tok = CLIPTokenizerFast.from_pretrained(str(CLIP_DIR))
    processor = CLIPProcessor(image_processor=ip, tokenizer=tok)
    model = CLIPModel.from_pretrained(str(CLIP_DIR), attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    assert model.dtype == torch.float32

    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {
        "description": "golden outputs of the tiny random CLIP in tests/fixtures/clip "
        "(tools/reference/make_clip_fixture.py)",
        "seed": SEED,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "PIL": PIL.__version__,
            "safetensors": __import__("safetensors").__version__,
        },
        "special_tokens": {
            "vocab_size": tok.backend_tokenizer.get_vocab_size(),
            SOT: tok.bos_token_id,
            EOT: tok.eos_token_id,
            "pad": tok.pad_token_id,
        },
        "logit_scale": model.logit_scale.item(),
        "exp_logit_scale": model.logit_scale.exp().item(),
        "target": "y = sum_b logits_per_image[b, b]; grad_attn = d y / d (attention probabilities)",
        "images_source": source_note,
    }
    preprocess_goldens(ip, tensors, meta)

    meta["cases"] = {}
    b3_inputs = b3_grads = None
    for cname, pairs in CASES.items():
        inputs = case_inputs(processor, pairs)
        # the processor must agree with the separate tokenizer / image processor calls
        tin = tok([t for _, t in pairs], padding=True, return_tensors="pt")
        assert torch.equal(tin["input_ids"], inputs["input_ids"])
        assert torch.equal(tin["attention_mask"], inputs["attention_mask"])
        for b, (f, _) in enumerate(pairs):
            assert torch.equal(inputs["pixel_values"][b], tensors[f"preprocess.{Path(f).stem}.pixel_values"])
        ids, am = inputs["input_ids"], inputs["attention_mask"]
        assert ids.dtype == torch.int64 and am.dtype == torch.int64
        log(f"case {cname}: input_ids {ids.tolist()} attention_mask {am.tolist()}")

        out, y, gv, gt = forward_with_grads(model, inputs)
        B = ids.shape[0]
        lpi = out.logits_per_image.detach()
        ps = lpi.diagonal().clone()
        # pair score = exp(logit_scale) * cos(image_b, text_b)
        cos = (out.image_embeds * out.text_embeds).sum(-1)
        assert torch.allclose(ps, model.logit_scale.exp() * cos, rtol=1e-6, atol=1e-6)
        tensors[f"{cname}.pixel_values"] = inputs["pixel_values"].contiguous()
        tensors[f"{cname}.input_ids"] = ids.contiguous()
        tensors[f"{cname}.attention_mask"] = am.contiguous()
        tensors[f"{cname}.logits_per_image"] = lpi.contiguous()
        tensors[f"{cname}.pair_scores"] = ps.contiguous()
        tensors[f"{cname}.image_embeds"] = out.image_embeds.detach().contiguous()
        tensors[f"{cname}.text_embeds"] = out.text_embeds.detach().contiguous()
        vo, to = out.vision_model_output, out.text_model_output
        tensors[f"{cname}.vision.embeddings"] = vo.hidden_states[0].detach().contiguous()
        tensors[f"{cname}.text.embeddings"] = to.hidden_states[0].detach().contiguous()
        for l in range(3):
            tensors[f"{cname}.vision.attn.{l}"] = vo.attentions[l].detach().contiguous()
            tensors[f"{cname}.text.attn.{l}"] = to.attentions[l].detach().contiguous()
            tensors[f"{cname}.vision.hidden.{l}"] = vo.hidden_states[l + 1].detach().contiguous()
            tensors[f"{cname}.text.hidden.{l}"] = to.hidden_states[l + 1].detach().contiguous()
            tensors[f"{cname}.vision.grad_attn.{l}"] = gv[l].contiguous()
            tensors[f"{cname}.text.grad_attn.{l}"] = gt[l].contiguous()
        eot_pos = (ids == tok.eos_token_id).int().argmax(-1)
        assert torch.equal(
            model.text_projection(to.pooler_output),
            model.text_projection(model.text_model.final_layer_norm(to.hidden_states[-1])[torch.arange(B), eot_pos]),
        )
        meta["cases"][cname] = {
            "pairs": [{"image": f, "text": t} for f, t in pairs],
            "input_ids": ids.tolist(),
            "attention_mask": am.tolist(),
            "tokens": [tok.convert_ids_to_tokens(r) for r in ids.tolist()],
            "pooled_text_index": eot_pos.tolist(),
            "pair_scores": ps.tolist(),
            "y": float(y),
        }
        log(f"case {cname}: pair_scores {ps.tolist()}  logits_per_image {lpi.tolist()}")
        attention_stats("vision", vo.attentions)
        attention_stats("text", to.attentions, am)
        for tower, gs in (("vision", gv), ("text", gt)):
            log(f"  {tower} |grad_attn| max per layer: {[f'{float(g.abs().max()):.3e}' for g in gs]}")
        if cname == "b3":
            b3_inputs, b3_grads = inputs, (gv, gt)

    log("grad check (float64 finite differences through HF's own attention code):")
    meta["grad_check"] = grad_check(model, b3_inputs, *b3_grads)

    # f16 sharded variant, upcast to f32
    m16 = CLIPModel.from_pretrained(str(F16_DIR), attn_implementation="eager", dtype=torch.float16).eval()
    assert m16.dtype == torch.float16
    m16 = m16.float()
    ref = model.state_dict()
    for k, v in m16.state_dict().items():
        assert torch.equal(v, ref[k].half().float()), k
    meta["f16"] = {}
    for cname, pairs in CASES.items():
        inputs = case_inputs(processor, pairs)
        with torch.no_grad():
            out = m16(**inputs)
        ps = out.logits_per_image.diagonal().clone().contiguous()
        tensors[f"f16.{cname}.pair_scores"] = ps
        meta["f16"][cname] = {"pair_scores": ps.tolist()}
        log(f"f16 case {cname}: pair_scores {ps.tolist()} (f32: {tensors[f'{cname}.pair_scores'].tolist()})")

    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64, torch.uint8), (k, v.dtype)
    tensors = {k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, str(CLIP_DIR / "golden.safetensors"), metadata={"format": "pt"})  # one key: several are written in hash order
    meta["tensors"] = {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()}
    write_json(CLIP_DIR / "golden.json", meta)
    back = load_file(str(CLIP_DIR / "golden.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-images", type=Path, default=DEFAULT_SOURCE_IMAGES,
                    help="folder with catdog.png, COCO_val2014_000000127510.jpg, dogbird.png "
                    "(if absent, the images already in tests/fixtures/images are used)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    make_images(args.source_images)
    raw, fast = make_tokenizer()
    make_image_processor()
    model = make_model(raw.get_vocab_size(), raw.token_to_id(SOT), raw.token_to_id(EOT))
    make_f16(model)
    make_goldens("copied/derived from /work/shared/data/images (see README)")
    global OUTPUTS
    OUTPUTS = outputs()
    if F16_DIR.exists():
        extra = sorted(set(F16_DIR.iterdir()) - set(OUTPUTS))
        assert not extra, f"unexpected files in {F16_DIR}: {extra}"

    # safetensors and tempfile create 0600/0700; make the outputs ordinary 0644/0755
    os.chmod(F16_DIR, 0o755)
    for f in OUTPUTS:
        os.chmod(f, 0o644)
    log("files written (size, sha256):")
    for f in OUTPUTS:
        log(f"  {str(f.relative_to(REPO)):<62} {f.stat().st_size:>8}  {sha256(f)}")


if __name__ == "__main__":
    main()
