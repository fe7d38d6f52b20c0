"""Trains the bundled CLIP (models/clip-synth/) on the synthetic set's caption sets, CPU only.

A small CLIPModel (vision: 128×128, patch 16, 3 layers; text: 3 layers; width 128) from random
init with a byte-level BPE vocabulary learned on the captions. Images are preprocessed once by
CLIPImageProcessor with the saved preprocessor_config.json (what the Rust engine applies). The
loss is the usual symmetric contrastive loss over the batch plus, per image, cross-entropy over
its caption set (the true caption against its distractors), plus an auxiliary per-patch
colour/shape loss on the vision tower from the scenes' masks (`--aux`; its heads are not saved). Held-out caption retrieval top-1 (a
set written with a seed not used in training) goes into training.json and the model card.

    TRAIN_THREADS=1 tools/reference/.venv/bin/python tools/train_demo/train_clip.py [--minutes 40]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

import common
from common import log

IMAGE = 128
PATCH = 16
MAX_TEXT = 32


def processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": IMAGE}, resample=3, do_center_crop=True,
        crop_size={"height": IMAGE, "width": IMAGE}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True)


def encode(ip, tok, sets):
    px = torch.empty(len(sets), 3, IMAGE, IMAGE, dtype=torch.float16)
    for i, s in enumerate(sets):
        px[i] = ip(images=Image.open(s["image"]).convert("RGB"), return_tensors="pt")["pixel_values"][0].half()
    k = len(sets[0]["captions"])
    assert all(len(s["captions"]) == k and s["correct"] == 0 for s in sets)
    enc = tok([c for s in sets for c in s["captions"]], padding="max_length", max_length=MAX_TEXT,
              truncation=True, return_tensors="pt")
    return px, enc["input_ids"].view(len(sets), k, -1), enc["attention_mask"].view(len(sets), k, -1)


@torch.no_grad()
def retrieval_top1(model, px, ids, mask, batch=128) -> float:
    hits = 0
    for s in range(0, len(px), batch):
        p, i, m = px[s:s + batch].float(), ids[s:s + batch], mask[s:s + batch]
        b, k, t = i.shape
        img = F.normalize(model.get_image_features(pixel_values=p), dim=-1)
        txt = F.normalize(model.get_text_features(input_ids=i.reshape(b * k, t), attention_mask=m.reshape(b * k, t)), dim=-1)
        scores = torch.einsum("bd,bkd->bk", img, txt.view(b, k, -1))
        hits += int((scores.argmax(-1) == 0).sum())
    return hits / len(px)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--aux", type=float, default=1.0,
                    help="weight of the auxiliary per-patch colour/shape loss on the vision tower (0: off)")
    ap.add_argument("--init", default=None,
                    help="continue training from this clip-synth directory (same config and vocabulary)")
    ap.add_argument("--out", default=str(common.MODELS_DIR / "clip-synth"))
    args = ap.parse_args()
    common.threads()
    torch.manual_seed(0)

    # A scene that has every colour and every shape has no distractors (4 in 6000): skipped.
    def full(seed, images):
        return [s for s in common.load_captions(common.synth(seed, images)) if len(s["captions"]) == 5]

    train = full(common.TRAIN_SEED, args.train_images)
    valid = full(common.VALID_SEED, 300)
    held = full(common.HELD_OUT_SEED, 300)
    log(f"caption sets: train {len(train)}, valid {len(valid)}, held-out {len(held)}")

    out = common.Path(args.out)
    earlier, model = common.continue_from(args.init, CLIPModel)
    common.remove_tree(out)
    tok, sot, eot = common.clip_bpe_tokenizer([c for s in train for c in s["captions"]], out, MAX_TEXT)
    ip = processor()
    ip.save_pretrained(str(out))
    data = {name: encode(ip, tok, sets) for name, sets in (("train", train), ("valid", valid), ("held", held))}
    log("images preprocessed")

    h = args.hidden
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok),
                         hidden_size=h, intermediate_size=2 * h, num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=MAX_TEXT, hidden_act="gelu", bos_token_id=sot,
                         eos_token_id=eot, pad_token_id=eot, attention_dropout=0.0),
        vision_config=dict(hidden_size=h, intermediate_size=2 * h, num_hidden_layers=3, num_attention_heads=4,
                           image_size=IMAGE, patch_size=PATCH, hidden_act="quick_gelu", attention_dropout=0.0),
        projection_dim=64)
    if args.init:
        assert model.config.text_config.vocab_size == len(tok), "--init has another vocabulary"
    else:
        model = CLIPModel._from_config(config, attn_implementation="eager")
    log(f"parameters: {sum(p.numel() for p in model.parameters()):,}")

    px, ids, mask = data["train"]
    n, k, t = ids.shape

    # Auxiliary heads (not saved): each output patch token of the vision tower predicts its
    # patch's colour and shape from the scene's ground truth, as for ViLT. The captions tell
    # one object's colour or shape from a distractor's, a sparse signal for a model learning
    # what the objects are from pixels; the dense per-patch one teaches that directly.
    train_folder = common.Path(train[0]["image"]).parents[1]
    aux_labels = common.patch_labels(train_folder, [s["image"] for s in train], IMAGE, PATCH)
    aux_heads = common.add_patch_heads(model, h)

    def loss_fn(b):
        bsz = len(b)
        vision = model.vision_model(pixel_values=px[b].float())
        img = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        txt = F.normalize(model.get_text_features(input_ids=ids[b].reshape(bsz * k, t),
                                                  attention_mask=mask[b].reshape(bsz * k, t)), dim=-1).view(bsz, k, -1)
        scale = model.logit_scale.exp().clamp(max=100)
        # in-batch contrastive loss on the true captions
        logits = scale * img @ txt[:, 0].T
        target = torch.arange(bsz)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        # each image against its own distractors
        own = scale * torch.einsum("bd,bkd->bk", img, txt)
        loss = loss + F.cross_entropy(own, torch.zeros(bsz, dtype=torch.long))
        if args.aux > 0:
            tokens = vision.last_hidden_state[:, 1:]  # the patches, after the class token
            loss = loss + args.aux * common.patch_loss(aux_heads, tokens, aux_labels[b])
        return loss

    def evaluate():
        acc = retrieval_top1(model, *data["valid"])
        return acc, {"top1": acc}

    def save(run):
        held_acc = retrieval_top1(model, *data["held"])
        log(f"held-out (seed {common.HELD_OUT_SEED}) caption retrieval top-1 {held_acc:.4f}")
        with common.saved_without(model):
            model.save_pretrained(str(out), safe_serialization=True)
        common.finish_config(out)
        common.write_metrics(out, {
            "family": "clip", **run, "train_images": len(train), "train_seed": common.TRAIN_SEED,
            "held_out_seed": common.HELD_OUT_SEED, "held_out_images": len(held),
            "held_out_top1": held_acc, "captions_per_set": k, "args": vars(args),
            "continued_from": earlier,
        })

    run = common.fit(model, n, args.batch, loss_fn, evaluate, args.minutes, args.lr,
                     warmup=args.warmup, eval_every=250, log_every=50, on_best=save)
    save(run)


if __name__ == "__main__":
    main()
