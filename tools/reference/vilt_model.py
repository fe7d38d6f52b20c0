"""Helpers for the tiny random ViLT fixture (make_vilt_fixture.py): config, seeded weights,
the raster-order patch selection, the float64 softmax probe for the grad check, the
preprocessing arithmetic and the token layout.

Nothing here changes transformers' numerics: the only interventions are
  * `raster_patch_order()`: replaces `torch.multinomial` while ViLT's `visual_embed` runs so that
    the kept patches come out in raster order (see the function), and
  * `SoftmaxProbe`: wraps `torch.nn.functional.softmax` (which ViLT's `nn.Softmax(dim=-1)` module
    calls) to add +-h to one attention probability for finite differences.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from transformers import ViltConfig, ViltForQuestionAnswering
from transformers.models.vilt.modeling_vilt import ViltSelfAttention

ANSWERS = ["yes", "no", "1", "2", "3", "red", "blue", "white", "cat", "dog", "left", "right"]


def make_config(vocab_size: int, pad_id: int) -> ViltConfig:
    return ViltConfig(
        vocab_size=vocab_size,
        type_vocab_size=2,
        modality_type_vocab_size=2,
        max_position_embeddings=24,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        image_size=64,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
        max_image_length=-1,
        num_images=-1,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        num_labels=len(ANSWERS),
        id2label={i: a for i, a in enumerate(ANSWERS)},
        label2id={a: i for i, a in enumerate(ANSWERS)},
    )


def reinit_(model: ViltForQuestionAnswering, seed: int) -> None:
    """Seeded re-initialisation, the recipe of make_clip_fixture.py: modules visited in name order;
    Linear/Conv weight N(0, 1/fan_in), bias U(-0.1, 0.1); Embedding N(0, 0.5^2) (all rows, [PAD]
    included); LayerNorm weight 1 + N(0, 0.1^2), bias N(0, 0.05^2); then the two bare parameters
    vilt.embeddings.cls_token and vilt.embeddings.position_embeddings N(0, 0.5^2)."""
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
    emb = model.vilt.embeddings
    put("vilt.embeddings.cls_token", emb.cls_token, 0.5 * rng.standard_normal(emb.cls_token.shape))
    put("vilt.embeddings.position_embeddings", emb.position_embeddings,
        0.5 * rng.standard_normal(emb.position_embeddings.shape))
    left = {n for n, _ in model.named_parameters()} - done
    assert not left, left


# ----------------------------------------------------------------------------------------------
# patch order


@contextlib.contextmanager
def raster_patch_order(calls: list | None = None):
    """Make ViltEmbeddings.visual_embed keep patches in raster order.

    visual_embed (transformers 4.57.6) selects, per image i, with max_len = max_b(valid_b)
    (config.max_image_length = -1):
      * if valid_i >= max_len: valid_row_idx[i][torch.multinomial(ones(valid_i), max_len)]
        -- without replacement; with valid_i == max_len this is a random PERMUTATION of all
        valid patches;
      * else: cat(valid_row_idx[i], non_valid_row_idx[i][torch.multinomial(ones(nv_i), p_i,
        replacement=True)]) -- the valid patches in raster order, then p_i = max_len - valid_i
        random non-valid (padding) patches.
    valid_row_idx / non_valid_row_idx come from x_mask.nonzero(), i.e. raster order.  Replacing
    torch.multinomial(ones(n), k, ...) by arange(k) therefore gives: all valid patches in raster
    order, then the FIRST p_i non-valid patches of the padded grid in raster order (their values
    are irrelevant: see README, every padding patch embeds to the same vector).

    Only the uniform-weight calls visual_embed makes are accepted.  `calls` (optional) records
    (n, k, replacement) of every call."""
    orig = torch.multinomial

    def fake(input, num_samples, replacement=False, *, generator=None, out=None):
        assert out is None and generator is None
        assert input.dim() == 1 and bool(torch.all(input == 1)), "only uniform sampling is patched"
        n, k = int(input.shape[0]), int(num_samples)
        if not replacement:
            # keeping all of them is the only case visual_embed reaches with max_image_length=-1
            assert k == n, (n, k)
        else:
            assert k <= n, (n, k)
        if calls is not None:
            calls.append((n, k, bool(replacement)))
        return torch.arange(k, dtype=torch.int64)

    torch.multinomial = fake
    try:
        yield
    finally:
        torch.multinomial = orig


@contextlib.contextmanager
def record_multinomial(calls: list):
    """Runs the real torch.multinomial and records (n, k, replacement, result)."""
    orig = torch.multinomial

    def rec(input, num_samples, replacement=False, **kw):
        r = orig(input, num_samples, replacement, **kw)
        calls.append((int(input.shape[0]), int(num_samples), bool(replacement), r.clone()))
        return r

    torch.multinomial = rec
    try:
        yield
    finally:
        torch.multinomial = orig


# ----------------------------------------------------------------------------------------------
# finite-difference probe


class SoftmaxProbe:
    """Temporarily wraps torch.nn.functional.softmax (ViLT's `nn.Softmax(dim=-1)` module calls
    F.softmax) to add +h to one attention probability of one ViltSelfAttention module.  The rest
    of HF's code (dropout, head mask, A @ V, output_attentions) runs unchanged, so a finite
    difference measures dy/dA for the A that really multiplies V.  ViLT's softmax has no dtype
    argument, so a float64 model stays float64."""

    def __init__(self, model):
        self.orig = torch.nn.functional.softmax
        self.current = None
        self.target = None  # (module name, index tuple, h)
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, ViltSelfAttention):
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
        p = self.orig(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)
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


# ----------------------------------------------------------------------------------------------
# preprocessing arithmetic (ViltImageProcessor.resize / get_resize_output_image_size, 4.57.6)


def resize_arithmetic(h: int, w: int, shortest_edge: int, size_divisor: int) -> dict:
    """Replays the size computation step by step in Python floats (IEEE double)."""
    shorter = shortest_edge
    longer = int(1333 / 800 * shorter)
    scale = shorter / min(h, w)
    if h < w:
        nh, nw = float(shorter), scale * w
    else:
        nh, nw = scale * h, float(shorter)
    capped = max(nh, nw) > longer
    nh0, nw0 = nh, nw
    if capped:
        s2 = longer / max(nh, nw)
        nh, nw = s2 * nh, s2 * nw
    rh, rw = int(nh + 0.5), int(nw + 0.5)
    fh, fw = rh // size_divisor * size_divisor, rw // size_divisor * size_divisor
    return {
        "input_hw": [h, w],
        "shorter": shorter,
        "longer": longer,
        "scale": scale,
        "after_shortest_edge_hw": [nh0, nw0],
        "capped_by_longer": capped,
        "after_cap_hw": [nh, nw],
        "rounded_hw": [rh, rw],
        "output_hw": [fh, fw],
        "patch_grid": [fh // 16, fw // 16] if size_divisor == 16 else None,
    }


RESIZE_FORMULA = (
    "ViltImageProcessor.resize (transformers 4.57.6), IEEE double arithmetic in this order: "
    "shorter = size['shortest_edge']; longer = int(1333 / 800 * shorter)  [(1333/800)*shorter, truncated]; "
    "scale = shorter / min(h, w); if h < w: (nh, nw) = (shorter, scale * w) else (nh, nw) = (scale * h, shorter); "
    "if max(nh, nw) > longer: s = longer / max(nh, nw); nh = s * nh; nw = s * nw; "
    "nh = int(nh + 0.5); nw = int(nw + 0.5)  [round half up, truncation]; "
    "nh = nh // size_divisor * size_divisor; nw = nw // size_divisor * size_divisor  [floor to a multiple]. "
    "Then PIL bicubic resize of the uint8 image to (nw, nh) (same PIL path as CLIP, see pil_resize_reference.py), "
    "rescale uint8 * (1/255) in float64 -> float32, normalise (x - 0.5) / 0.5 in float32, HWC -> CHW, "
    "then pad with 0.0 (i.e. AFTER normalisation) at the bottom/right to the batch's max height and max width; "
    "pixel_mask[i, j] = 1 for i < nh_b and j < nw_b, else 0 (int64). No RGB conversion is done by "
    "ViltImageProcessor (the fixture images are RGB)."
)
