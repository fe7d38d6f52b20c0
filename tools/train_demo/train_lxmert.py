"""Trains the bundled LXMERT (models/lxmert-synth/) on the synthetic set's region inputs, CPU only.

A small LxmertForQuestionAnswering (hidden 128; 2 language, 1 vision, 2 cross layers) from random
init, reading the regions features files that `fiedler synth` writes (16-float region features,
normalised boxes — exactly what the Rust engine reads), with a WordPiece vocabulary of the
synthetic language. Cross-entropy over the answer vocabulary; held-out accuracy (a set written
with a seed not used in training) goes into training.json and the model card.

    TRAIN_THREADS=1 tools/reference/.venv/bin/python tools/train_demo/train_lxmert.py [--minutes 50]
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file
from transformers import LxmertConfig, LxmertForQuestionAnswering

import common
from common import ANSWERS, log

MAX_TEXT = 12


def regions(records: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    cache: dict[str, dict] = {}
    feats, boxes = [], []
    for r in records:
        if r["regions"] not in cache:
            cache[r["regions"]] = load_file(r["regions"])
        t = cache[r["regions"]]
        feats.append(t["features"])
        boxes.append(t["boxes"])
    return torch.stack(feats), torch.stack(boxes)


def encode(tok, records):
    enc = tok([r["question"] for r in records], padding="max_length", max_length=MAX_TEXT,
              truncation=True, return_tensors="pt")
    labels = torch.tensor([ANSWERS.index(r["answer"]) for r in records])
    feats, boxes = regions(records)
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], feats, boxes, labels


@torch.no_grad()
def predict(model, ids, mask, types, feats, boxes, batch=512) -> list[str]:
    out = []
    for s in range(0, len(ids), batch):
        sl = slice(s, s + batch)
        logits = model(input_ids=ids[sl], attention_mask=mask[sl], token_type_ids=types[sl],
                       visual_feats=feats[sl], visual_pos=boxes[sl]).question_answering_score
        out += [ANSWERS[i] for i in logits.argmax(-1).tolist()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-images", type=int, default=8000)
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--out", default=str(common.MODELS_DIR / "lxmert-synth"))
    args = ap.parse_args()
    common.threads()
    torch.manual_seed(0)

    train = common.load_vqa(common.synth(common.TRAIN_SEED, args.train_images))
    valid = common.load_vqa(common.synth(common.VALID_SEED, 300))
    held = common.load_vqa(common.synth(common.HELD_OUT_SEED, 300))
    log(f"questions: train {len(train)}, valid {len(valid)}, held-out {len(held)}")

    out = common.Path(args.out)
    common.remove_tree(out)
    tok = common.wordpiece_tokenizer([r["question"] for r in train], out, MAX_TEXT, "LxmertTokenizer")
    data = {name: encode(tok, recs) for name, recs in (("train", train), ("valid", valid), ("held", held))}
    feat_dim = data["train"][3].shape[-1]

    config = LxmertConfig(
        vocab_size=tok.vocab_size, hidden_size=args.hidden, num_attention_heads=4,
        intermediate_size=2 * args.hidden, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, max_position_embeddings=MAX_TEXT, type_vocab_size=2,
        l_layers=2, x_layers=2, r_layers=1, visual_feat_dim=feat_dim, visual_pos_dim=4,
        num_qa_labels=len(ANSWERS), task_matched=False, task_mask_lm=False, task_obj_predict=False,
        task_qa=True, visual_obj_loss=False, visual_attr_loss=False, visual_feat_loss=False,
        pad_token_id=tok.pad_token_id,
        id2label={i: a for i, a in enumerate(ANSWERS)}, label2id={a: i for i, a in enumerate(ANSWERS)})
    model = LxmertForQuestionAnswering._from_config(config, attn_implementation="eager")
    log(f"parameters: {sum(p.numel() for p in model.parameters()):,}")

    ids, mask, types, feats, boxes, labels = data["train"]

    def loss_fn(b):
        logits = model(input_ids=ids[b], attention_mask=mask[b], token_type_ids=types[b],
                       visual_feats=feats[b], visual_pos=boxes[b]).question_answering_score
        return torch.nn.functional.cross_entropy(logits, labels[b])

    def evaluate():
        acc = common.per_type_accuracy(valid, predict(model, *data["valid"][:5]))
        return acc["all"], acc

    def save(run):
        held_acc = common.per_type_accuracy(held, predict(model, *data["held"][:5]))
        log(f"held-out (seed {common.HELD_OUT_SEED}) accuracy {held_acc}")
        model.save_pretrained(str(out), safe_serialization=True)
        common.finish_config(out, answer_probability="softmax")
        common.write_metrics(out, {
            "family": "lxmert", **run, "train_questions": len(train), "train_seed": common.TRAIN_SEED,
            "held_out_seed": common.HELD_OUT_SEED, "held_out_questions": len(held),
            "held_out_accuracy": held_acc, "args": vars(args),
        })

    run = common.fit(model, len(ids), args.batch, loss_fn, evaluate, args.minutes,
                     args.lr, warmup=300, eval_every=500, on_best=save)
    save(run)


if __name__ == "__main__":
    main()
