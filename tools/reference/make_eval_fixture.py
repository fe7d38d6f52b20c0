#!/usr/bin/env python3
"""Goldens for the perturbation benchmark's model-side deletions (spec §E), from transformers.

Writes tests/fixtures/eval/deletion.json (and deletion.safetensors: ViLT's pixel values, so that
the test pins the model, not preprocessing): answer logits of the random-weight fixtures
(tests/fixtures/vilt, tests/fixtures/lxmert) when

  ViLT    image patches are deleted from the sequence: transformers' visual_embed, with its
          patch sampling replaced by raster order (vilt_model.raster_patch_order), then the image
          class token and the kept patches sliced out -- each kept patch keeps its own
          (interpolated) position embedding;
  LXMERT  regions are kept in a given (top-k) order, down to none (visual_feats [1, 0, 16]: the
          text's cross-attention then sees no key and its context is 0);
  both    words are deleted from the question (the kept ids, contiguous positions).

The question files of tests/fixtures/eval (lxmert-valid.json, vilt-*.json) are written by hand.

Run from anywhere:  tools/reference/.venv/bin/python tools/reference/make_eval_fixture.py   (~5 s)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.numpy import load_file, save_file
from transformers import (LxmertForQuestionAnswering, LxmertTokenizerFast, ViltForQuestionAnswering,
                          ViltProcessor)

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vilt_model import raster_patch_order  # noqa: E402

VILT_QUESTION = "what color is the car?"
VILT_KEPT = [[0, 5, 7, 11, 12], [3], []]
LXMERT_QUESTION = "what color is the dog?"
LXMERT_ORDERS = [[7, 2, 9, 0], [4], []]
KEPT_WORDS = [0, 2, 4]  # positions of [CLS] … [SEP] to keep, plus the last ([SEP]) added below


def vilt_cases() -> dict:
    model = ViltForQuestionAnswering.from_pretrained(FIX / "vilt").eval()
    processor = ViltProcessor.from_pretrained(FIX / "vilt")
    image = Image.open(FIX / "images" / "coco_127510.jpg").convert("RGB")
    inputs = processor(images=[image], text=[VILT_QUESTION], return_tensors="pt")
    emb = model.vilt.embeddings
    orig = emb.visual_embed
    save_file({"vilt.pixel_values": inputs["pixel_values"][0].numpy()},
              FIX / "eval" / "deletion.safetensors")
    out = {"question": VILT_QUESTION, "image": "coco_127510.jpg",
           "ids": inputs["input_ids"][0].tolist(), "cases": []}

    def run(kept, ids=None):
        def visual_embed(pixel_values, pixel_mask, max_image_length=200):
            with raster_patch_order():
                x, mask, (index, size) = orig(pixel_values, pixel_mask, max_image_length=-1)
            if kept is None:
                return x, mask, (index, size)
            rows = torch.tensor([0] + [1 + k for k in kept], dtype=torch.long)
            return x[:, rows], mask[:, rows], (index[:, torch.tensor(kept, dtype=torch.long)], size)

        emb.visual_embed = visual_embed
        try:
            x = dict(inputs)
            if ids is not None:
                x["input_ids"] = torch.tensor([ids])
                x["attention_mask"] = torch.ones_like(x["input_ids"])
                x["token_type_ids"] = torch.zeros_like(x["input_ids"])
            with torch.no_grad():
                return model(**x).logits[0].tolist()
        finally:
            emb.visual_embed = orig

    out["cases"].append({"kept_patches": None, "logits": run(None)})
    for kept in VILT_KEPT:
        out["cases"].append({"kept_patches": kept, "logits": run(kept)})
    words = KEPT_WORDS + [len(out["ids"]) - 1]
    out["cases"].append({"kept_words": words, "logits": run(None, [out["ids"][p] for p in words])})
    return out


def lxmert_cases() -> dict:
    model = LxmertForQuestionAnswering.from_pretrained(FIX / "lxmert").eval()
    tok = LxmertTokenizerFast.from_pretrained(FIX / "lxmert")
    regions = load_file(FIX / "lxmert" / "regions_synth_000001.safetensors")
    feats, boxes = torch.from_numpy(regions["features"]), torch.from_numpy(regions["boxes"])
    enc = tok([LXMERT_QUESTION], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    out = {"question": LXMERT_QUESTION, "regions": "regions_synth_000001.safetensors", "ids": ids,
           "cases": []}

    def run(order, kept_ids=None):
        idx = torch.tensor(order if order is not None else list(range(feats.shape[0])), dtype=torch.long)
        x_ids = torch.tensor([kept_ids if kept_ids is not None else ids])
        with torch.no_grad():
            return model(input_ids=x_ids, attention_mask=torch.ones_like(x_ids),
                         token_type_ids=torch.zeros_like(x_ids), visual_feats=feats[idx][None],
                         visual_pos=boxes[idx][None]).question_answering_score[0].tolist()

    out["cases"].append({"regions": None, "logits": run(None)})
    for order in LXMERT_ORDERS:
        out["cases"].append({"regions": order, "logits": run(order)})
    words = KEPT_WORDS + [len(ids) - 1]
    out["cases"].append({"kept_words": words, "logits": run(None, [ids[p] for p in words])})
    return out


def main() -> None:
    torch.manual_seed(0)
    golden = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
              "vilt": vilt_cases(), "lxmert": lxmert_cases()}
    path = FIX / "eval" / "deletion.json"
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
