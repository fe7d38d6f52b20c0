"""Checkpoints in PyTorch's pickle formats, as older Hugging Face repositories ship them.

Writes, from the committed safetensors fixtures (run make_lxmert_fixture.py and
make_clip_fixture.py first):

  tests/fixtures/lxmert-torch/   LxmertForQuestionAnswering, `save_pretrained(safe_serialization=
                                 False)`: pytorch_model.bin (torch.save's zip format), config.json,
                                 and the slow tokenizer's files only (vocab.txt,
                                 tokenizer_config.json, special_tokens_map.json; no
                                 tokenizer.json), like unc-nlp/lxmert-vqa-uncased
  tests/fixtures/clip-torch-bf16-sharded/
                                 CLIPModel in bfloat16, `save_pretrained(safe_serialization=False,
                                 max_shard_size="200KB")`: pytorch_model-0000k-of-0000n.bin shards
                                 and pytorch_model.bin.index.json, with the tokenizer and
                                 preprocessor files
  tests/fixtures/torch-pickles/tensors.bin
                                 torch.save(..., _use_new_zipfile_serialization=False) of a small
                                 state dict with every case the reader handles: f32, f16, bf16,
                                 a transposed view, a slice at a storage offset, a shared storage
  tests/fixtures/torch-pickles/tensors.zip.bin
                                 the same dict in the zip format
  tests/fixtures/torch-pickles/tensors.safetensors
                                 the same tensors, contiguous, as the expected values
  tests/fixtures/torch-pickles/checkpoint.bin
                                 a training checkpoint, {"epoch": 3, "model": <state dict>}: not
                                 a state dict
  tests/fixtures/torch-pickles/module.bin
                                 torch.save of a whole torch.nn.Linear(2, 3), not its state dict

Run from the repo root:  tools/reference/.venv/bin/python tools/reference/make_torch_fixtures.py
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPModel, LxmertForQuestionAnswering

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def lxmert() -> None:
    src, out = FIX / "lxmert", fresh(FIX / "lxmert-torch")
    model = LxmertForQuestionAnswering.from_pretrained(src)
    model.save_pretrained(out, safe_serialization=False)
    for name in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(src / name, out / name)


def clip() -> None:
    src, out = FIX / "clip", fresh(FIX / "clip-torch-bf16-sharded")
    model = CLIPModel.from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=False, max_shard_size="200KB")
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "preprocessor_config.json"]:
        shutil.copy(src / name, out / name)


def pickles() -> None:
    out = fresh(FIX / "torch-pickles")
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 4, generator=g)
    long = torch.randn(10, generator=g)
    state = collections.OrderedDict()
    state["f32"] = base
    state["f32.transposed"] = base.t()  # shares base's storage, strides (1, 4)
    state["f16.slice"] = long.half()[2:7]  # storage offset 2
    state["bf16"] = torch.randn(2, 3, generator=g).bfloat16()
    state["scalar"] = torch.tensor(1.5)
    torch.save(state, out / "tensors.bin", _use_new_zipfile_serialization=False)
    torch.save(state, out / "tensors.zip.bin")
    save_file({k: v.contiguous() for k, v in state.items()}, out / "tensors.safetensors")
    torch.save({"epoch": 3, "model": state}, out / "checkpoint.bin")
    torch.save(torch.nn.Linear(2, 3), out / "module.bin")


if __name__ == "__main__":
    torch.manual_seed(0)
    lxmert()
    clip()
    pickles()
    for d in ["lxmert-torch", "clip-torch-bf16-sharded", "torch-pickles"]:
        for f in sorted((FIX / d).iterdir()):
            print(f.relative_to(REPO), f.stat().st_size)
