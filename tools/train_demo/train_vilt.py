"""Trains the bundled ViLT (models/vilt-synth/) on the synthetic set, CPU only.

A small ViltForQuestionAnswering (hidden 96, 3 layers, patch 16; `--edge` sets the image size)
from random init with a WordPiece vocabulary of the synthetic language. Images are preprocessed
once by ViltImageProcessor with the saved preprocessor_config.json — the same processing the Rust
engine applies. The answer head is trained with cross-entropy over the answer vocabulary, plus an
auxiliary per-patch colour/shape loss from the scenes' masks (`--aux`; its heads are dropped when
saving). Held-out accuracy (a set written with a seed not used in training) goes into
training.json and the model card.

    TRAIN_THREADS=1 tools/reference/.venv/bin/python tools/train_demo/train_vilt.py [--minutes 45]
"""

from __future__ import annotations

import argparse
import random

import torch
from PIL import Image
from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor

import common
from common import ANSWERS, log

PATCH = 16
MAX_TEXT = 12
# The synthetic scenes' pixel statistics (light background ≈ 0.78 after rescaling, σ ≈ 0.15 over
# the training images): normalising with them maps the background to ≈ 0, so at initialisation
# the patch embeddings of object patches stand out from the background instead of sharing one
# large background component (with ImageNet-style 0.5/0.5 the model stayed at the answer prior).
IMAGE_MEAN = [0.785, 0.772, 0.762]
IMAGE_STD = [0.15, 0.15, 0.15]


def processor(edge: int) -> ViltImageProcessor:
    return ViltImageProcessor(
        do_resize=True, size={"shortest_edge": edge}, size_divisor=PATCH, resample=3,
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD, do_pad=True)


def pixels(ip: ViltImageProcessor, records: list[dict]) -> tuple[torch.Tensor, list[int]]:
    """One preprocessed image per distinct file (float16 to save memory) and each record's index."""
    files = sorted({r["image"] for r in records})
    index = {f: i for i, f in enumerate(files)}
    edge = ip.size["shortest_edge"]
    # Cached beside the set (target/synth-data): preprocessing thousands of images is slow.
    cache = common.Path(files[0]).parents[1] / f"vilt-pixels-{edge}-mean{ip.image_mean[0]}-std{ip.image_std[0]}.pt"
    if cache.is_file():
        out = torch.load(cache)
    else:
        out = torch.empty(len(files), 3, edge, edge, dtype=torch.float16)
        for i, f in enumerate(files):
            pv = ip(images=Image.open(f).convert("RGB"), return_tensors="pt")["pixel_values"][0]
            assert pv.shape == out.shape[1:], pv.shape  # square scenes: no padding
            out[i] = pv.half()
        torch.save(out, cache)
    return out, [index[r["image"]] for r in records]


def encode(tok, records):
    enc = tok([r["question"] for r in records], padding="max_length", max_length=MAX_TEXT,
              truncation=True, return_tensors="pt")
    labels = torch.tensor([ANSWERS.index(r["answer"]) for r in records])
    return enc["input_ids"], enc["attention_mask"], labels


@torch.no_grad()
def predict(model, px, idx, ids, mask, batch=256) -> list[str]:
    out = []
    for s in range(0, len(idx), batch):
        sl = slice(s, s + batch)
        pv = px[torch.tensor(idx[sl])].float()
        logits = model(input_ids=ids[sl], attention_mask=mask[sl], pixel_values=pv,
                       pixel_mask=torch.ones(pv.shape[0], pv.shape[2], pv.shape[3], dtype=torch.long)).logits
        out += [ANSWERS[i] for i in logits.argmax(-1).tolist()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--edge", type=int, default=96, help="shortest_edge of the image processor (a multiple of 16)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--aux", type=float, default=1.0,
                    help="weight of the auxiliary per-patch colour/shape loss (0: answers only)")
    ap.add_argument("--init", default=None,
                    help="continue training from this vilt-synth directory (same config and vocabulary)")
    ap.add_argument("--out", default=str(common.MODELS_DIR / "vilt-synth"))
    args = ap.parse_args()
    common.threads()
    torch.manual_seed(0)
    random.seed(0)

    train = common.load_vqa(common.synth(common.TRAIN_SEED, args.train_images))
    valid = common.load_vqa(common.synth(common.VALID_SEED, 300))
    held = common.load_vqa(common.synth(common.HELD_OUT_SEED, 300))
    log(f"questions: train {len(train)}, valid {len(valid)}, held-out {len(held)}")

    out = common.Path(args.out)
    earlier, model = common.continue_from(args.init, ViltForQuestionAnswering)
    common.remove_tree(out)
    tok = common.wordpiece_tokenizer([r["question"] for r in train], out, MAX_TEXT, "BertTokenizer")
    ip = processor(args.edge)
    ip.save_pretrained(str(out))
    data = {}
    for name, recs in (("train", train), ("valid", valid), ("held", held)):
        px, idx = pixels(ip, recs)
        data[name] = (px, idx, *encode(tok, recs))
        log(f"{name}: {px.shape[0]} images preprocessed")

    config = ViltConfig(
        vocab_size=tok.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, intermediate_size=2 * args.hidden, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=MAX_TEXT,
        image_size=args.edge, patch_size=PATCH, num_channels=3, qkv_bias=True, max_image_length=-1,
        num_images=-1, modality_type_vocab_size=2, type_vocab_size=2, pad_token_id=tok.pad_token_id,
        id2label={i: a for i, a in enumerate(ANSWERS)}, label2id={a: i for i, a in enumerate(ANSWERS)})
    if args.init:
        assert model.config.to_dict()["vocab_size"] == config.vocab_size, "--init has another vocabulary"
    else:
        model = ViltForQuestionAnswering._from_config(config, attn_implementation="eager")
    log(f"parameters: {sum(p.numel() for p in model.parameters()):,}")

    px, idx, ids, mask, labels = data["train"]
    idx_t = torch.tensor(idx)
    # Auxiliary heads (not saved): each output image token predicts its patch's colour and shape
    # from the scene's ground truth. Answers alone give a weak, late signal for finding small
    # objects in pixels (the answers-only model stayed near the answer prior); the dense per-patch
    # signal teaches the image tokens what LXMERT's region features are given for free.
    train_folder = common.Path(train[0]["image"]).parents[1]
    aux_labels = common.patch_labels(train_folder, sorted({r["image"] for r in train}), args.edge, PATCH)
    aux_heads = common.add_patch_heads(model, args.hidden)
    grid2 = (args.edge // PATCH) ** 2
    # ViltEmbeddings.visual_embed keeps all patches (max_image_length −1) but in an order drawn
    # by torch.multinomial; the identity order lets the image tokens line up with the targets.
    # The model is permutation-equivariant over image tokens, so nothing else changes.
    multinomial = torch.multinomial

    def in_order(input, num_samples, replacement=False, **kw):
        if not replacement and num_samples == input.shape[-1]:
            return torch.arange(num_samples)
        return multinomial(input, num_samples, replacement, **kw)

    torch.multinomial = in_order

    def loss_fn(b):
        pv = px[idx_t[b]].float()
        out = model.vilt(input_ids=ids[b], attention_mask=mask[b], pixel_values=pv,
                         pixel_mask=torch.ones(pv.shape[0], pv.shape[2], pv.shape[3], dtype=torch.long))
        loss = torch.nn.functional.cross_entropy(model.classifier(out.pooler_output), labels[b])
        if args.aux > 0:
            tokens = out.last_hidden_state[:, MAX_TEXT + 1:MAX_TEXT + 1 + grid2]  # after the image [CLS]
            loss = loss + args.aux * common.patch_loss(aux_heads, tokens, aux_labels[idx_t[b]])
        return loss

    def evaluate():
        acc = common.per_type_accuracy(valid, predict(model, *data["valid"][:4]))
        return acc["all"], acc

    def save(run):
        held_acc = common.per_type_accuracy(held, predict(model, *data["held"][:4]))
        log(f"held-out (seed {common.HELD_OUT_SEED}) accuracy {held_acc}")
        with common.saved_without(model):
            model.save_pretrained(str(out), safe_serialization=True)
        common.finish_config(out, answer_probability="softmax")
        common.write_metrics(out, {
            "family": "vilt", **run, "train_questions": len(train), "train_seed": common.TRAIN_SEED,
            "held_out_seed": common.HELD_OUT_SEED, "held_out_questions": len(held),
            "held_out_accuracy": held_acc, "args": vars(args), "continued_from": earlier,
        })

    run = common.fit(model, len(idx), args.batch, loss_fn, evaluate, args.minutes,
                     args.lr, warmup=args.warmup, eval_every=500, on_best=save)
    save(run)


if __name__ == "__main__":
    main()
