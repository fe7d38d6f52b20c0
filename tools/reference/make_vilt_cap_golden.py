#!/usr/bin/env python3
"""Golden logits for ViLT with a positive `max_image_length` (spec §A.3), from transformers.

With a cap c > 0, transformers' ViltEmbeddings.visual_embed keeps min(valid_b, c) patches of
sample b: torch.multinomial draws c of its valid patches at random when it has more (a fresh
draw on every call), and pads a sample with fewer with randomly drawn padding patches (masked,
so their values never matter). fiedler keeps the evenly spaced subset k[i * n // c], i < c, of
the n patches in raster order. Here the draw is replaced by exactly that subset, and padding by
the first padding patches (as vilt_model.raster_patch_order does), so the logits are what
transformers computes for fiedler's choice of patches.

Case: the fixture's ragged batch b3 (grids 4x4, 4x6 and 6x2: 16, 24 and 12 patches) with
c = 14, so two samples lose patches and one keeps all of its 12 and is padded.

Writes tests/fixtures/vilt/cap.safetensors (`b3.logits`, `b3.kept.<b>`) and cap.json.
Run: tools/reference/.venv/bin/python tools/reference/make_vilt_cap_golden.py   (~2 s)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.numpy import load_file, save_file
from transformers import ViltForQuestionAnswering

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "vilt"
CAP = 14
CASE = "b3"


def evenly_spaced(n: int, k: int) -> list[int]:
    return [i * n // k for i in range(k)]


@contextlib.contextmanager
def evenly_spaced_draws(kept: list[list[int]]):
    """torch.multinomial over uniform weights: without replacement, the evenly spaced subset
    (recorded in `kept`); with replacement (padding), the first k."""
    orig = torch.multinomial

    def fake(input, num_samples, replacement=False, *, generator=None, out=None):
        assert out is None and generator is None
        assert input.dim() == 1 and bool(torch.all(input == 1)), "only uniform sampling is patched"
        n, k = int(input.shape[0]), int(num_samples)
        if replacement:
            return torch.arange(k, dtype=torch.int64)
        kept.append(evenly_spaced(n, k))
        return torch.tensor(kept[-1], dtype=torch.int64)

    torch.multinomial = fake
    try:
        yield
    finally:
        torch.multinomial = orig


def main() -> None:
    torch.manual_seed(0)
    model = ViltForQuestionAnswering.from_pretrained(str(FIX), attn_implementation="eager").eval()
    model.config.max_image_length = CAP
    g = {k: torch.from_numpy(v) for k, v in load_file(str(FIX / "golden.safetensors")).items()}
    inputs = {k: g[f"{CASE}.{k}"] for k in ("pixel_values", "pixel_mask", "input_ids", "attention_mask",
                                             "token_type_ids") if f"{CASE}.{k}" in g}
    draws: list[list[int]] = []
    with torch.no_grad(), evenly_spaced_draws(draws):
        logits = model(**inputs).logits
    # one draw per sample with more than CAP patches, in batch order: 16 and 24 patches
    assert [len(d) for d in draws] == [CAP, CAP], draws
    kept = [draws[0], draws[1], list(range(12))]
    tensors = {f"{CASE}.logits": logits.numpy()}
    tensors.update({f"{CASE}.kept.{b}": torch.tensor(k, dtype=torch.int64).numpy() for b, k in enumerate(kept)})
    save_file(tensors, str(FIX / "cap.safetensors"))
    (FIX / "cap.json").write_text(json.dumps({
        "description": __doc__.split("\n\n")[0],
        "max_image_length": CAP,
        "case": CASE,
        "kept": kept,
        "logits": logits.tolist(),
    }, indent=1) + "\n")
    print(f"logits {logits.tolist()}\nkept {kept}")


if __name__ == "__main__":
    main()
