"""Shared pieces of the demo-model trainers: the synthetic set (written by `fiedler synth`),
tokenizers for the synthetic language, the answer vocabulary, evaluation and saving.

Everything is CPU-only and seeded; see README.md for the commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "reference"))

import vilt_tokenizer  # noqa: E402  (WordPiece pipeline of the fixtures)
import clip_tokenizer  # noqa: E402  (byte-level BPE pipeline of the fixtures)

from tokenizers import AddedToken, processors  # noqa: E402

# Seeds of the sets. The held-out seed is the one tests/synth_models.rs regenerates; the
# training seed is never used for evaluation.
TRAIN_SEED = 1
VALID_SEED = 2
HELD_OUT_SEED = 9001
DATA_DIR = REPO / "target" / "synth-data"
MODELS_DIR = REPO / "models"

# The answer vocabulary, in a fixed order (ids = positions).
ANSWERS = ["yes", "no", "0", "1", "2", "3", "4", "5", "6",
           "red", "green", "blue", "yellow", "purple", "orange",
           "circle", "square", "triangle", "cross"]


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def threads() -> None:
    n = int(os.environ.get("TRAIN_THREADS", "1"))
    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)


def synth(seed: int, images: int) -> Path:
    """Writes (once) the synthetic set for `seed` with the release binary; returns its folder."""
    out = DATA_DIR / f"seed{seed}-n{images}"
    if (out / "captions.json").is_file():
        return out
    binary = REPO / "target" / "release" / "fiedler"
    if not binary.is_file():
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    subprocess.run([str(binary), "synth", "--out", str(out), "--images", str(images),
                    "--seed", str(seed)], check=True)
    return out


def load_vqa(folder: Path) -> list[dict]:
    """Question records: image file, regions file, question, answer, question_type."""
    q = json.loads((folder / "questions.json").read_text())["questions"]
    a = {x["question_id"]: x for x in json.loads((folder / "annotations.json").read_text())["annotations"]}
    gt = json.loads((folder / "ground_truth.json").read_text())
    images = {im["image_id"]: im for im in gt["images"]}
    out = []
    for x in q:
        ann = a[x["question_id"]]
        im = images[x["image_id"]]
        out.append({
            "question_id": x["question_id"],
            "image_id": x["image_id"],
            "image": str(folder / im["file"]),
            "regions": str(folder / im["regions_file"]),
            "question": x["question"],
            "answer": ann["multiple_choice_answer"],
            "question_type": ann["question_type"],
        })
    return out


def load_captions(folder: Path) -> list[dict]:
    sets = json.loads((folder / "captions.json").read_text())
    for s in sets:
        s["image"] = str(folder / s["file"])
    return sets


# ----------------------------------------------------------------------------------------------
# tokenizers


def corpus_words(texts: list[str]) -> list[str]:
    words: Counter = Counter()
    for t in texts:
        words.update(vilt_tokenizer.pretokenize(t))
    return sorted(words)


def wordpiece_tokenizer(texts: list[str], out_dir: Path, max_length: int, tokenizer_class: str):
    """BERT-uncased-style WordPiece (the fixtures' pipeline) whose vocabulary is the specials,
    every word of the synthetic language whole, then single characters and ## continuations so
    that any other text still encodes. Writes tokenizer.json, vocab.txt, tokenizer_config.json,
    special_tokens_map.json (through BertTokenizerFast.save_pretrained)."""
    from transformers import BertTokenizerFast

    import string
    singles = sorted(set(string.punctuation) | set(string.digits) | set(string.ascii_lowercase))
    conts = ["##" + c for c in sorted(set(string.digits) | set(string.ascii_lowercase))]
    vocab: dict[str, int] = {}
    for t in vilt_tokenizer.SPECIALS + corpus_words(texts) + singles + conts:
        if t not in vocab:
            vocab[t] = len(vocab)
    tok = vilt_tokenizer._pipeline(vocab)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in vilt_tokenizer.SPECIALS])
    cls, sep = vilt_tokenizer.CLS, vilt_tokenizer.SEP
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tok.save(str(Path(td) / "raw.json"))
        (Path(td) / "vocab.txt").write_text(vilt_tokenizer.vocab_txt(tok), encoding="utf-8")
        fast = BertTokenizerFast(vocab_file=str(Path(td) / "vocab.txt"), tokenizer_file=str(Path(td) / "raw.json"),
                                 do_lower_case=True, model_max_length=max_length)
        fast.save_pretrained(str(out_dir))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = tokenizer_class
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return BertTokenizerFast.from_pretrained(str(out_dir))


def clip_bpe_tokenizer(texts: list[str], out_dir: Path, max_length: int, n_merges: int = 400):
    """CLIP byte-level BPE (the fixture's pipeline) with merges learned on the captions, so every
    caption word is one token. Writes tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    from transformers import CLIPTokenizerFast

    ct = clip_tokenizer
    b2u = ct.bytes_to_unicode()
    base = list(b2u.values())
    probe = ct._pipeline_tokenizer({ct.EOT: 0}, [])
    words: Counter = Counter()
    for t in texts:
        words.update(ct._pretokenize(probe, t))
    merges = ct.train_bpe(words, n_merges)
    vocab: dict[str, int] = {}
    for s in base:
        vocab[s] = len(vocab)
    for s in base:
        vocab[s + ct.EOW] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab[ct.SOT] = len(vocab)
    vocab[ct.EOT] = len(vocab)
    tok = ct._pipeline_tokenizer(vocab, merges)
    tok.add_special_tokens([ct.SOT, ct.EOT])
    tok.post_processor = processors.RobertaProcessing(
        sep=(ct.EOT, vocab[ct.EOT]), cls=(ct.SOT, vocab[ct.SOT]), add_prefix_space=False, trim_offsets=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tok.save(str(Path(td) / "tokenizer.json"))
        fast = CLIPTokenizerFast(tokenizer_file=str(Path(td) / "tokenizer.json"), model_max_length=max_length)
        fast.save_pretrained(str(out_dir))
    for name in ("vocab.json", "merges.txt"):
        (out_dir / name).unlink(missing_ok=True)
    return CLIPTokenizerFast.from_pretrained(str(out_dir)), vocab[ct.SOT], vocab[ct.EOT]


# ----------------------------------------------------------------------------------------------
# saving


def finish_config(out_dir: Path, answer_probability: str | None = None) -> None:
    """Sorted keys and the legacy torch_dtype, like the fixtures. VQA heads trained here with
    cross-entropy say so with fiedler's `answer_probability` key ("softmax"), so that fiedler
    reads their logits as a softmax rather than the published heads' per-answer sigmoid."""
    path = out_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = "float32"
    if answer_probability is not None:
        cfg["answer_probability"] = answer_probability
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def write_metrics(out_dir: Path, metrics: dict) -> None:
    (out_dir / "training.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def per_type_accuracy(records: list[dict], predictions: list[str]) -> dict:
    by: dict[str, list[int]] = {}
    for r, p in zip(records, predictions):
        by.setdefault(r["question_type"], []).append(int(p == r["answer"]))
    out = {k: sum(v) / len(v) for k, v in sorted(by.items())}
    out["all"] = sum(int(p == r["answer"]) for r, p in zip(records, predictions)) / len(records)
    return out


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


# ----------------------------------------------------------------------------------------------
# training loop


def fit(model, n: int, batch: int, loss_fn, evaluate, minutes: float, lr: float,
        warmup: int, eval_every: int, log_every: int = 100, on_best=None) -> dict:
    """AdamW (weight decay 0.01, gradient norm clipped at 1) over random batches of the n
    training samples for a wall-clock budget, learning rate warmed up linearly over `warmup`
    steps then cosine-decayed over the budget. `loss_fn(indices)` returns a batch's loss;
    `evaluate()` returns (score, details) on the validation set, run every `eval_every` steps and
    at the end. Loads the best-scoring weights into `model` and returns the run's record.
    `on_best(record)` is called with the run so far whenever validation improves (the trainers
    save the model there, so a run stopped early still leaves its best model)."""
    import math
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    budget = minutes * 60
    t0 = time.time()
    step, best, best_state, history = 0, -1.0, None, []
    model.train()
    while True:
        perm = torch.randperm(n)
        for s in range(0, n - batch + 1, batch):
            elapsed = time.time() - t0
            frac = min(elapsed / budget, 1.0)
            rate = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = rate
            loss = loss_fn(perm[s:s + batch])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % log_every == 0:
                log(f"step {step} loss {loss.item():.4f} lr {rate:.2e} ({elapsed / 60:.1f} min)")
            if step % eval_every == 0 or elapsed >= budget:
                model.eval()
                with torch.no_grad():
                    score, details = evaluate()
                model.train()
                history.append({"step": step, "minutes": elapsed / 60, "valid": details})
                log(f"valid {details}")
                if score > best:
                    best = score
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
                    if on_best is not None:
                        model.eval()
                        on_best({"steps": step, "minutes": elapsed / 60, "valid_best": best,
                                 "history": history, "torch_threads": torch.get_num_threads()})
                        model.train()
            if elapsed >= budget:
                model.load_state_dict(best_state)
                model.eval()
                return {"steps": step, "minutes": elapsed / 60, "valid_best": best, "history": history,
                        "torch_threads": torch.get_num_threads()}


COLORS = ANSWERS[9:15]
SHAPES = ANSWERS[15:19]


def patch_labels(folder: Path, files: list[str], edge: int, patch: int) -> torch.Tensor:
    """[images, 2, grid²] auxiliary targets per `patch`-px patch (row-major) of square images
    resized to `edge`: the colour (1–6) and shape (1–4) of the object covering most of the patch
    if it covers ≥ 15% of it, else 0 (background). Read from the set's instance masks and
    ground_truth.json; used only as a training signal."""
    gt = json.loads((folder / "ground_truth.json").read_text())
    by_file = {str(folder / im["file"]): im for im in gt["images"]}
    grid = edge // patch
    out = torch.zeros(len(files), 2, grid * grid, dtype=torch.long)
    for i, f in enumerate(files):
        im = by_file[f]
        mask = Image.open(folder / im["mask_file"]).resize((edge, edge), Image.NEAREST)
        m = torch.from_numpy(np.array(mask, dtype=np.int64))
        onehot = torch.nn.functional.one_hot(m, len(im["objects"]) + 1).permute(2, 0, 1).float()
        frac = torch.nn.functional.avg_pool2d(onehot[None], patch)[0, 1:].flatten(1)  # [objects, grid²]
        best, obj = frac.max(0)
        for k, o in enumerate(im["objects"]):
            on = (obj == k) & (best >= 0.15)
            out[i, 0, on] = COLORS.index(o["color"]) + 1
            out[i, 1, on] = SHAPES.index(o["shape"]) + 1
    return out


def add_patch_heads(model: torch.nn.Module, hidden: int) -> torch.nn.ModuleList:
    """Auxiliary colour and shape classifiers over `hidden`-wide image tokens, registered on
    `model` (so that fit()'s optimiser trains them) as `aux_heads`; `saved_without` drops them
    from what is saved."""
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, len(COLORS) + 1),
                                 torch.nn.Linear(hidden, len(SHAPES) + 1)])
    model.add_module("aux_heads", heads)
    return heads


def patch_loss(heads: torch.nn.ModuleList, tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each head over image tokens [batch, grid², hidden] against the
    `patch_labels` rows [batch, 2, grid²], summed over the two heads."""
    return sum(torch.nn.functional.cross_entropy(head(tokens).flatten(0, 1), target[:, k].flatten())
               for k, head in enumerate(heads))


@contextmanager
def saved_without(model: torch.nn.Module, name: str = "aux_heads"):
    """Detaches the training-only module `name` while the model is saved (saved models are the
    plain transformers class)."""
    module = model._modules.pop(name)
    try:
        yield
    finally:
        model.add_module(name, module)


def continue_from(init: str | None, model_class):
    """(the earlier run's training.json without its history, its model) for `--init`, else
    (None, None): a continued run keeps the earlier run's record in its own training.json."""
    if not init:
        return None, None
    earlier = json.loads((Path(init) / "training.json").read_text())
    earlier.pop("history", None)
    return earlier, model_class.from_pretrained(init, attn_implementation="eager")
