#!/usr/bin/env python3
"""Build the tiny random-weight LXMERT-VQA fixture, its region inputs, goldens and method vectors.

Writes (tests/fixtures/lxmert/):

  config.json, model.safetensors           transformers.LxmertForQuestionAnswering, float32
  tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
                                           BERT-uncased WordPiece (lxmert_tokenizer.py)
  regions_<img_id>.safetensors             features [10,16] f32, boxes [10,4] f32 = (x1/W, y1/H, x2/W, y2/H)
  regions.tsv                              the same 3 images in LXMERT's obj36 TSV format (lxmert_tsv.py)
  golden.safetensors, golden.json          forward/backward captures (see README.md)
  methods.safetensors, methods.json        explanation-method vectors (lxmert_methods.py)

Run from anywhere:  tools/reference/.venv/bin/python tools/reference/make_lxmert_fixture.py  (~5 s)
Re-running produces byte-identical files (the script prints sha256s).
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
import safetensors
import scipy
import scipy.sparse.linalg
import tokenizers
import torch
import transformers
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file, save_file
from transformers import BertTokenizerFast, LxmertConfig, LxmertForQuestionAnswering, LxmertTokenizer, LxmertTokenizerFast
from transformers.models.lxmert.modeling_lxmert import LxmertAttention

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lxmert_forward  # noqa: E402
import lxmert_methods as lm  # noqa: E402
from lxmert_tokenizer import SPECIALS, build_tokenizer  # noqa: E402
from lxmert_tsv import load_obj_tsv, normalise_boxes, write_obj_tsv  # noqa: E402

SEED = 20240611
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "lxmert"

N_L, N_R, N_X = 3, 2, 2
HIDDEN, HEADS, INTER = 48, 4, 96
FEAT_DIM, POS_DIM = 16, 4
MAX_POS = 32
N_REGIONS = 10
ANSWERS = ["yes", "no", "2", "1", "3", "white", "red", "blue", "dog", "cat", "table", "pizza"]
IMAGES = [("synth_000001", 480, 640), ("synth_000002", 375, 500), ("synth_000003", 640, 427)]  # (id, H, W)

CASES = {
    "b1": [("synth_000001", "what is on the table?")],
    "b3": [
        ("synth_000001", "how many people are standing near the skateboarder?"),
        ("synth_000002", "what color is the cat?"),
        ("synth_000003", "is the dog sleeping on the surfboards?"),
    ],
}
TOKENIZER_TEST_TEXTS = [q for pairs in CASES.values() for _, q in pairs] + [
    "",
    "What is on the TABLE?",
    "is the skateboarder's shirt blue-green?",
    "how many giraffes???  (two, maybe 3)",
    "café naïve résumé Ångström",
    "emoji 🐱🐶 and 日本語 text",
    "tabs\tand\nnewlines\r\n  end  ",
    "[MASK] is a [SEP] token",
    "a" * 120,
    "zzzqx sleeping skateboarding surfboards",
]
MIN_WORDS = 4
SMALL_GAP = 1e-3
BATCH1_TOL = 1e-5
FD_H = 1e-6
MIN_MARGIN = 1e-3  # top-1 minus top-2 logit: the argmax must not depend on float32 rounding
QK_GAIN = 1.5  # query/key weights get this extra factor: sharper (less uniform) attention
RESID_GAIN = 0.3  # the dense layers that write into the residual stream (attention output, FFN output)
POOLER_GAIN = 3.0  # pooler weights x this; pooler bias centres the [CLS] outputs (center_pooler_)
N_OBJECTS = 3  # regions are drawn around this many "object" feature centres (4/3/3 regions)


def log(*a):
    print(*a, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, obj, indent=2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def modules() -> list[str]:
    return ([f"lang.{l}" for l in range(N_L)] + [f"visn.{r}" for r in range(N_R)]
            + [f"{p}.{k}" for k in range(N_X) for p in ("xt2i", "xi2t", "xlang", "xvisn")])


HF_PATH = {
    "lang": "lxmert.encoder.layer.{}.attention.self",
    "visn": "lxmert.encoder.r_layers.{}.attention.self",
    "xt2i": "lxmert.encoder.x_layers.{}.visual_attention.att (1st call: lang queries, visual keys)",
    "xi2t": "lxmert.encoder.x_layers.{}.visual_attention.att (2nd call: visual queries, lang keys)",
    "xlang": "lxmert.encoder.x_layers.{}.lang_self_att.self",
    "xvisn": "lxmert.encoder.x_layers.{}.visn_self_att.self",
}


def no_grad_modules() -> list[str]:
    """B8: the last X-layer's image branch never reaches the answer head."""
    return [f"xi2t.{N_X - 1}", f"xvisn.{N_X - 1}"]


# ----------------------------------------------------------------------------------------------
# tokenizer


def make_tokenizer() -> LxmertTokenizerFast:
    raw = build_tokenizer(SEED, [q for pairs in CASES.values() for _, q in pairs])
    tok_path = OUT / "tokenizer.json"
    raw.save(str(tok_path), pretty=True)
    raw = tokenizers.Tokenizer.from_file(str(tok_path))

    bert = BertTokenizerFast(tokenizer_file=str(tok_path), model_max_length=MAX_POS)
    fast = LxmertTokenizerFast(tokenizer_file=str(tok_path), model_max_length=MAX_POS)
    with tempfile.TemporaryDirectory() as td:
        fast.save_pretrained(td)
        written = sorted(os.listdir(td))
        log(f"tokenizer: LxmertTokenizerFast.save_pretrained writes {written}")
        same = Path(td, "tokenizer.json").read_bytes() == tok_path.read_bytes()
        log(f"tokenizer: its tokenizer.json identical to the raw Tokenizer.save: {same}")
        if not same:
            shutil.copyfile(Path(td, "tokenizer.json"), tok_path)
        shutil.copyfile(Path(td, "vocab.txt"), OUT / "vocab.txt")
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            write_json(OUT / name, json.loads(Path(td, name).read_text()))

    loaded = LxmertTokenizerFast.from_pretrained(str(OUT))
    slow = LxmertTokenizer(vocab_file=str(OUT / "vocab.txt"), model_max_length=MAX_POS)
    raw = tokenizers.Tokenizer.from_file(str(tok_path))
    slow_diff = []
    for t in TOKENIZER_TEST_TEXTS:
        a = raw.encode(t).ids
        for name, tk in (("BertTokenizerFast", bert), ("LxmertTokenizerFast", fast), ("from_pretrained", loaded)):
            b = tk(t)["input_ids"]
            assert a == b, (name, t, a, b)
        s = slow(t)["input_ids"]
        if s != a:
            slow_diff.append({"text": t, "fast": a, "slow": s})
    enc = [e.ids for e in raw.encode_batch(TOKENIZER_TEST_TEXTS)]
    assert enc == loaded(TOKENIZER_TEST_TEXTS)["input_ids"]
    log(f"tokenizer: raw == BertTokenizerFast == LxmertTokenizerFast(.from_pretrained) on {len(TOKENIZER_TEST_TEXTS)} texts;"
        f" slow LxmertTokenizer(vocab.txt) differs on {len(slow_diff)}")
    for d in slow_diff:
        log(f"  slow differs: {d}")
    assert [raw.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    assert loaded.pad_token_id == 0 and loaded.cls_token_id == 2 and loaded.sep_token_id == 3
    log(f"tokenizer: vocab {raw.get_vocab_size()}")
    make_tokenizer.slow_diff = slow_diff
    return loaded


# ----------------------------------------------------------------------------------------------
# regions


def make_regions() -> dict[str, dict]:
    """Per image: absolute float32 boxes, features, VG labels; written as safetensors + obj36 TSV."""
    rng = np.random.default_rng(SEED + 1)
    items = []
    for img_id, H, W in IMAGES:
        n = N_REGIONS
        x1 = rng.uniform(0, 0.7 * W, n)
        y1 = rng.uniform(0, 0.7 * H, n)
        x2 = np.minimum(x1 + rng.uniform(0.1 * W, 0.6 * W, n), W)
        y2 = np.minimum(y1 + rng.uniform(0.1 * H, 0.6 * H, n), H)
        boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        boxes[0] = [0.0, 0.0, W, H]  # one whole-image box: normalises to exactly (0, 0, 1, 1)
        # Faster R-CNN pool5 features are non-negative (post-ReLU averages) and often exactly 0;
        # regions of the same object look alike: N_OBJECTS centres, regions scattered around them
        centres = np.maximum(rng.normal(0.3, 1.0, (N_OBJECTS, FEAT_DIM)), 0.0) * 2.0
        label = rng.permutation(np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2]))
        feats = np.maximum(centres[label] + rng.normal(0.0, 0.4, (n, FEAT_DIM)), 0.0).astype(np.float32)
        conf = np.sort(rng.uniform(0.2, 1.0, n))[::-1].astype(np.float32)
        items.append({
            "img_id": img_id, "img_h": H, "img_w": W,
            "objects_id": rng.integers(0, 1600, N_OBJECTS).astype(np.int64)[label],
            "objects_conf": conf,
            "attrs_id": rng.integers(0, 400, n).astype(np.int64),
            "attrs_conf": rng.uniform(0.0, 1.0, n).astype(np.float32),
            "boxes": boxes, "features": feats,
        })
    tsv = OUT / "regions.tsv"
    write_obj_tsv(tsv, items)
    back = load_obj_tsv(tsv)
    assert [b["img_id"] for b in back] == [it["img_id"] for it in items]
    regions = {}
    for it, b in zip(items, back):
        for k in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features"):
            assert b[k].dtype == it[k].dtype and np.array_equal(b[k], it[k]), k
        assert (b["img_h"], b["img_w"], b["num_boxes"]) == (it["img_h"], it["img_w"], N_REGIONS)
        nb = normalise_boxes(b)
        assert nb.dtype == np.float32
        # the same numbers by plain float32 division (what a reader in another language computes)
        W32, H32 = np.float32(it["img_w"]), np.float32(it["img_h"])
        alt = np.stack([it["boxes"][:, 0] / W32, it["boxes"][:, 1] / H32, it["boxes"][:, 2] / W32,
                        it["boxes"][:, 3] / H32], axis=1)
        assert alt.dtype == np.float32 and np.array_equal(alt, nb)
        assert np.array_equal(nb[0], np.array([0, 0, 1, 1], np.float32))
        path = OUT / f"regions_{it['img_id']}.safetensors"
        np_save_file({"features": np.ascontiguousarray(b["features"]), "boxes": np.ascontiguousarray(nb)},
                     str(path), metadata={"format": "np"})
        rt = np_load_file(str(path))
        assert np.array_equal(rt["boxes"], nb) and np.array_equal(rt["features"], b["features"])
        regions[it["img_id"]] = {"features": np.array(b["features"]), "boxes": nb, "img_h": it["img_h"], "img_w": it["img_w"],
                                 "boxes_abs": np.array(it["boxes"])}
    raw = tsv.read_bytes()
    crlf = raw.count(b"\r\n")
    assert crlf == len(items) and raw.count(b"\n") == crlf and raw.endswith(b"\r\n")
    log(f"regions: {len(items)} images x {N_REGIONS} regions; regions.tsv {len(raw)} bytes, {crlf} CRLF lines")
    return regions


# ----------------------------------------------------------------------------------------------
# model


def make_config(vocab_size: int) -> LxmertConfig:
    return LxmertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        intermediate_size=INTER,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=MAX_POS,
        type_vocab_size=2,
        l_layers=N_L,
        r_layers=N_R,
        x_layers=N_X,
        visual_feat_dim=FEAT_DIM,
        visual_pos_dim=POS_DIM,
        num_qa_labels=len(ANSWERS),
        id2label={i: a for i, a in enumerate(ANSWERS)},
        label2id={a: i for i, a in enumerate(ANSWERS)},
        pad_token_id=0,
    )


def reinit_(model: LxmertForQuestionAnswering, seed: int) -> None:
    """Seeded re-initialisation (make_clip_fixture.py's recipe) with two gains, see README.md:
    query/key weights x QK_GAIN (sharper attention) and the attention-output / FFN-output dense
    weights x RESID_GAIN (otherwise the random stack drives all tokens to cosine >= 0.97 and every
    normalised-Laplacian eigenvalue crowds near 1, gaps ~1e-3). Every row of every embedding
    (also the padding_idx rows 0) is drawn, so a re-implementation that forgot the position or
    token-type embedding would not match."""
    rng = np.random.default_rng(seed)
    done = set()

    def put(name, p, arr):
        assert tuple(arr.shape) == tuple(p.shape), name
        with torch.no_grad():
            p.copy_(torch.from_numpy(arr.astype(np.float32)))
        done.add(name)

    for mname, m in sorted(model.named_modules(), key=lambda kv: kv[0]):
        if isinstance(m, torch.nn.Linear):
            fan_in = m.weight.shape[1]
            gain = 1.0
            if mname.endswith((".query", ".key")):
                gain = QK_GAIN
            elif mname.endswith((".output.dense", "lang_output.dense", "visn_output.dense")):
                gain = RESID_GAIN
            put(f"{mname}.weight", m.weight, gain * rng.standard_normal(m.weight.shape) / math.sqrt(fan_in))
            if m.bias is not None:
                put(f"{mname}.bias", m.bias, rng.uniform(-0.1, 0.1, m.bias.shape))
        elif isinstance(m, torch.nn.Embedding):
            put(f"{mname}.weight", m.weight, 0.5 * rng.standard_normal(m.weight.shape))
        elif isinstance(m, torch.nn.LayerNorm):
            put(f"{mname}.weight", m.weight, 1.0 + 0.1 * rng.standard_normal(m.weight.shape))
            put(f"{mname}.bias", m.bias, 0.05 * rng.standard_normal(m.bias.shape))
    left = {n for n, _ in model.named_parameters()} - done
    assert not left, left


def center_pooler_(model: LxmertForQuestionAnswering, tok, regions) -> dict:
    """Data-dependent pooler, standing in for training: W <- POOLER_GAIN * W and b <- -W mu, rounded
    to 1e-4, with mu the mean [CLS] output of the last X-layer over every corpus question x every
    region set (computed with a float64 copy, so the rounded bias does not depend on float32
    summation order). Without it the random [CLS] outputs share a large common part, and the
    argmax answer is the same ("1") for every question and image."""
    from lxmert_tokenizer import corpus

    m64 = copy.deepcopy(model).double().eval()
    qs = sorted(set(corpus(SEED)))
    cls = []
    for img_id, _, _ in IMAGES:
        inp = model_inputs(tok, regions, [(img_id, q) for q in qs], dtype=torch.float64)
        with torch.no_grad():
            out = m64(**inp, output_hidden_states=True, return_dict=True)
        cls.append(out.language_hidden_states[-1][:, 0])
    mu = torch.cat(cls).mean(0)
    dense = model.lxmert.pooler.dense
    with torch.no_grad():
        W = dense.weight.double() * POOLER_GAIN
        b = np.round((-(W @ mu)).numpy(), 4)
        dense.weight.copy_(W.float())
        dense.bias.copy_(torch.from_numpy(b).float())
    return {"questions": len(qs), "region_sets": len(IMAGES), "mean_cls_norm": round(float(mu.norm()), 6)}


def make_model(vocab_size: int, tok, regions) -> LxmertForQuestionAnswering:
    torch.manual_seed(SEED)
    model = LxmertForQuestionAnswering(make_config(vocab_size))
    reinit_(model, SEED)
    model.eval()
    make_model.pooler = center_pooler_(model, tok, regions)
    model.save_pretrained(str(OUT), safe_serialization=True)
    cfg = json.loads((OUT / "config.json").read_text())
    assert cfg.get("dtype") == "float32", cfg.get("dtype")
    cfg["torch_dtype"] = "float32"
    (OUT / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    back = LxmertForQuestionAnswering.from_pretrained(str(OUT)).eval()
    ref = model.state_dict()
    sd = back.state_dict()
    assert set(sd) == set(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k]), f"{k} changed by save/load"
    n_params = sum(p.numel() for p in back.parameters())
    log(f"model: {n_params} parameters, save_pretrained/from_pretrained round trip exact")
    return back


# ----------------------------------------------------------------------------------------------
# capture


class Capture:
    """Wraps torch.nn.functional.softmax (which LxmertAttention calls as nn.functional.softmax) to
    record, per attention call, the exact probability tensor that is then multiplied with V
    (dropout is the identity in eval mode), and optionally to add +h to one entry of one call.
    The two calls of x_layers[k].visual_attention.att are told apart by their order inside the
    X-layer forward: 1st = xt2i.k (language queries), 2nd = xi2t.k (visual queries)."""

    def __init__(self, model):
        self.orig = torch.nn.functional.softmax
        self.current = None
        self.probs: dict[str, torch.Tensor] = {}
        self.target = None  # (key, index tuple, h)
        self.calls: dict[str, int] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, LxmertAttention):
                self.handles.append(m.register_forward_pre_hook(self._enter(self._key(name))))
                self.handles.append(m.register_forward_hook(self._leave()))
        self.handles.append(model.register_forward_pre_hook(self._reset))
        self.emb = {}
        self.handles.append(model.lxmert.embeddings.register_forward_hook(self._keep("lang")))
        self.handles.append(model.lxmert.encoder.visn_fc.register_forward_hook(self._keep("visn")))
        self.handles.append(model.lxmert.pooler.register_forward_hook(self._keep("pooled")))

    @staticmethod
    def _key(name: str) -> str:
        p = name.split(".")
        assert p[0] == "lxmert" and p[1] == "encoder", name
        if p[2] == "layer":
            return f"lang.{p[3]}"
        if p[2] == "r_layers":
            return f"visn.{p[3]}"
        assert p[2] == "x_layers", name
        return {"visual_attention": "cross", "lang_self_att": "xlang", "visn_self_att": "xvisn"}[p[4]] + f".{p[3]}"

    def _reset(self, module, args, kwargs=None):
        self.probs = {}
        self.calls = {}
        self.emb = {}

    def _enter(self, key):
        def hook(module, args):
            if key.startswith("cross."):
                k = key.split(".")[1]
                n = self.calls.get(key, 0)
                self.calls[key] = n + 1
                assert n < 2, key
                self.current = ("xt2i." if n == 0 else "xi2t.") + k
            else:
                self.current = key

        return hook

    def _leave(self):
        def hook(module, args, output):
            self.current = None

        return hook

    def _keep(self, name):
        def hook(module, args, output):
            self.emb[name] = output

        return hook

    def softmax(self, input, dim=None, _stacklevel=3, dtype=None):
        assert self.current is not None and dtype is None
        p = self.orig(input, dim=dim)
        if self.target is not None and self.target[0] == self.current:
            p = p.clone()
            p[self.target[1]] += self.target[2]
        assert self.current not in self.probs, self.current
        self.probs[self.current] = p
        return p

    def __enter__(self):
        torch.nn.functional.softmax = self.softmax
        return self

    def __exit__(self, *exc):
        torch.nn.functional.softmax = self.orig
        for h in self.handles:
            h.remove()


def model_inputs(tok, regions, pairs, dtype=torch.float32):
    texts = [q for _, q in pairs]
    enc = tok(texts, padding=True, return_tensors="pt")
    feats = torch.from_numpy(np.stack([regions[i]["features"] for i, _ in pairs])).to(dtype)
    boxes = torch.from_numpy(np.stack([regions[i]["boxes"] for i, _ in pairs])).to(dtype)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": enc["token_type_ids"], "visual_feats": feats, "visual_pos": boxes}


def forward(model, cap: Capture, inputs, predicted=None):
    """One forward with captures; y = sum_b logit_b[pred_b] and y_sum = sum of all logits."""
    out = model(**inputs, output_attentions=True, output_hidden_states=True, return_dict=True)
    logits = out.question_answering_score
    pred = logits.detach().argmax(-1) if predicted is None else predicted
    y = logits[torch.arange(logits.shape[0]), pred].sum()
    return out, logits, pred, y, logits.sum()


def grads_of(y, probs: dict, retain: bool) -> dict:
    keys = modules()
    gs = torch.autograd.grad(y, [probs[k] for k in keys], retain_graph=retain, allow_unused=True)
    res = {}
    for k, g in zip(keys, gs):
        if g is None:
            assert k in no_grad_modules(), f"no gradient reaches {k}"
            g = torch.zeros_like(probs[k])
        else:
            assert k not in no_grad_modules(), f"unexpected gradient at {k}"
        res[k] = g.detach()
    return res


def capture_case(model, tok, regions, pairs):
    inputs = model_inputs(tok, regions, pairs)
    with Capture(model) as cap:
        out, logits, pred, y, y_sum = forward(model, cap, inputs)
        probs = dict(cap.probs)
        emb = {k: v.detach() for k, v in cap.emb.items()}
    assert set(probs) == set(modules()), sorted(probs)
    # the captured tensors are the ones transformers returns with output_attentions=True
    for l in range(N_L):
        assert torch.equal(probs[f"lang.{l}"], out.language_attentions[l])
    for r in range(N_R):
        assert torch.equal(probs[f"visn.{r}"], out.vision_attentions[r])
    for k in range(N_X):
        assert torch.equal(probs[f"xt2i.{k}"], out.cross_encoder_attentions[k])
    g = grads_of(y, probs, retain=True)
    gs = grads_of(y_sum, probs, retain=False)
    lang_h, visn_h = out.language_hidden_states, out.vision_hidden_states
    assert len(lang_h) == N_L + N_X and len(visn_h) == N_R + N_X
    B, T = inputs["input_ids"].shape
    for k, v in probs.items():
        nq = {"lang": T, "visn": N_REGIONS, "xt2i": T, "xi2t": N_REGIONS, "xlang": T, "xvisn": N_REGIONS}[k.split(".")[0]]
        nk = {"lang": T, "visn": N_REGIONS, "xt2i": N_REGIONS, "xi2t": T, "xlang": T, "xvisn": N_REGIONS}[k.split(".")[0]]
        assert tuple(v.shape) == (B, HEADS, nq, nk), (k, v.shape)
    pooled = emb["pooled"]
    assert torch.allclose(pooled, torch.tanh(model.lxmert.pooler.dense(lang_h[-1][:, 0])), atol=0, rtol=0)
    return {
        "inputs": inputs,
        "logits": logits.detach(),
        "predicted": pred,
        "y": float(y.detach()),
        "y_sum": float(y_sum.detach()),
        "attn": {k: v.detach() for k, v in probs.items()},
        "grad": g,
        "grad_sum": gs,
        "lang": [h.detach() for h in lang_h[:N_L]],
        "xlang": [h.detach() for h in lang_h[N_L:]],
        "visn": [h.detach() for h in visn_h[:N_R]],
        "xvisn": [h.detach() for h in visn_h[N_R:]],
        "emb_lang": emb["lang"],
        "emb_visn": emb["visn"],
        "pooled": pooled,
    }


# ----------------------------------------------------------------------------------------------
# grad check


def grad_check(model, tok, regions, cap32) -> dict:
    m64 = copy.deepcopy(model).double().eval()
    inputs = model_inputs(tok, regions, CASES["b3"], dtype=torch.float64)
    pred32 = cap32["predicted"]
    report = {"case": "b3", "h": FD_H, "target": "y = sum_b logit_b[predicted_b] (predicted from the f32 run)",
              "entries": []}
    with Capture(m64) as cap:
        out, logits, pred, y, _ = forward(m64, cap, inputs, predicted=pred32)
        assert torch.equal(logits.argmax(-1), pred32), "f64 argmax differs"
        probs = dict(cap.probs)
        g64 = grads_of(y, probs, retain=False)
        rel = {}
        for k in modules():
            ref = g64[k]
            den = float(ref.abs().max())
            rel[k] = float((cap32["grad"][k].double() - ref).abs().max() / den) if den > 0 else 0.0
        report["f32_vs_f64_autograd_max_rel_per_module"] = rel

        def y_of(target):
            cap.target = target
            with torch.no_grad():
                o = m64(**inputs, return_dict=True)
            cap.target = None
            lg = o.question_answering_score
            return float(lg[torch.arange(lg.shape[0]), pred32].sum())

        am = inputs["attention_mask"]
        short = int(am.sum(1).argmin())
        ln = int(am[short].sum())
        T = am.shape[1]
        assert ln < T
        picks = []
        for k in ("lang.0", "lang.2", "visn.0", "visn.1", "xt2i.0", "xi2t.0", "xlang.0", "xvisn.0", "xt2i.1",
                  "xlang.1"):
            g = g64[k]
            idx = tuple(int(i) for i in np.unravel_index(int(g.abs().argmax()), g.shape))
            picks.append((k, idx, "largest |grad|"))
        picks.append(("xi2t.1", (0, 1, 3, 2), "last X-layer image branch (no gradient, B8)"))
        picks.append(("xvisn.1", (2, 0, 4, 5), "last X-layer image branch (no gradient, B8)"))
        picks.append(("lang.1", (short, 2, 1, T - 1), "padding key column (A=0)"))
        picks.append(("xi2t.0", (short, 3, 4, T - 1), "padding text key seen by an image query (A=0)"))
        picks.append(("xlang.0", (short, 1, T - 1, 2), "padding query row"))
        picks.append(("xt2i.1", (0, 0, 3, 7), "last X-layer cross, non-CLS text query row"))
        picks.append(("xlang.1", (0, 2, 3, 1), "last X-layer lang self, non-CLS query row (no gradient)"))
        for k, idx, why in picks:
            fd = (y_of((k, idx, FD_H)) - y_of((k, idx, -FD_H))) / (2 * FD_H)
            ga = float(g64[k][idx])
            g32 = float(cap32["grad"][k][idx])
            err = abs(fd - ga) / abs(ga) if ga != 0 else abs(fd)
            report["entries"].append({"module": k, "index_b_h_q_k": list(idx), "why": why,
                                      "finite_difference_f64": fd, "autograd_f64": ga, "golden_f32": g32,
                                      "rel_err_fd_vs_autograd" if ga != 0 else "abs_fd": err})
            log(f"  grad-check {k} {idx} [{why}]: FD64 {fd:+.9e} autograd64 {ga:+.9e} golden32 {g32:+.9e} "
                f"{'rel' if ga != 0 else 'abs'} err {err:.2e}")
            if ga == 0:
                assert abs(fd) < 1e-9, (k, idx, fd)
            else:
                assert err < 1e-6, (k, idx, fd, ga)
    worst = max(rel.values())
    report["f32_vs_f64_autograd_max_rel"] = worst
    log(f"  golden f32 vs f64 autograd: max |diff| / max |grad| over modules {worst:.2e}")
    return report


# ----------------------------------------------------------------------------------------------
# written-out forward (lxmert_forward.py) against transformers


def reference_forward_check(model, tok, regions, cap32) -> dict:
    """lxmert_forward.forward vs transformers on case b3: in float64 (must agree to rounding) and in
    float32 against the golden captures (shows the size of float32 summation-order differences)."""
    res = {}
    for name, dt in (("float64_vs_transformers_float64", torch.float64), ("float32_vs_golden_float32", torch.float32)):
        m = copy.deepcopy(model).to(dt).eval()
        sd = {k: v.detach() for k, v in m.state_dict().items()}
        inputs = model_inputs(tok, regions, CASES["b3"], dtype=dt)
        if dt == torch.float64:
            with Capture(m) as cap:
                out = m(**inputs, output_hidden_states=True, return_dict=True)
                ref = {"logits": out.question_answering_score, "attn": dict(cap.probs), "pooled": cap.emb["pooled"],
                       "emb_lang": cap.emb["lang"], "emb_visn": cap.emb["visn"],
                       "lang": out.language_hidden_states[:N_L], "xlang": out.language_hidden_states[N_L:],
                       "visn": out.vision_hidden_states[:N_R], "xvisn": out.vision_hidden_states[N_R:]}
        else:
            ref = {"logits": cap32["logits"], "attn": cap32["attn"], "pooled": cap32["pooled"],
                   "emb_lang": cap32["emb_lang"], "emb_visn": cap32["emb_visn"], "lang": cap32["lang"],
                   "xlang": cap32["xlang"], "visn": cap32["visn"], "xvisn": cap32["xvisn"]}
        with torch.no_grad():
            got = lxmert_forward.forward(sd, inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"],
                                         inputs["visual_feats"], inputs["visual_pos"], HEADS, N_L, N_R, N_X)
        am = inputs["attention_mask"].bool()
        diffs = {}

        def d(key, a, b, text_rows=False):
            a, b = a.detach().double(), b.detach().double()
            if text_rows:  # padded text rows are not compared (they are never read)
                a, b = a[am], b[am]
            diffs[key] = max(diffs.get(key, 0.0), float((a - b).abs().max()))

        d("logits", got["logits"], ref["logits"])
        d("pooled", got["pooled"], ref["pooled"])
        d("emb_lang", got["emb_lang"], ref["emb_lang"])
        d("emb_visn", got["emb_visn"], ref["emb_visn"])
        for kind in ("lang", "xlang"):
            for a, b in zip(got[kind], ref[kind]):
                d("hidden_text", a, b)
        for kind in ("visn", "xvisn"):
            for a, b in zip(got[kind], ref[kind]):
                d("hidden_image", a, b)
        for k in modules():
            d("attn", got["attn"][k], ref["attn"][k])
        res[name] = diffs
        log(f"  reference forward {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        if dt == torch.float64:
            assert max(diffs.values()) < 1e-12, diffs
        else:
            assert max(diffs.values()) < 1e-4, diffs
    return res


# ----------------------------------------------------------------------------------------------
# methods


def pair_inputs(cap, b: int):
    """Unpadded per-pair arrays for lxmert_methods (text axes sliced to [0:T_b])."""
    T = int(cap["inputs"]["attention_mask"][b].sum())
    am = cap["inputs"]["attention_mask"][b]
    assert torch.all(am[:T] == 1) and torch.all(am[T:] == 0)
    assert int(cap["inputs"]["input_ids"][b, T - 1]) == 3 and int(cap["inputs"]["input_ids"][b, 0]) == 2

    def cut(k, x):
        x = x[b].numpy()
        kind = k.split(".")[0]
        if kind in ("lang", "xlang"):
            return x[:, :T, :T]
        if kind == "xt2i":
            return x[:, :T, :]
        if kind == "xi2t":
            return x[:, :, :T]
        return x

    attn = {k: cut(k, v) for k, v in cap["attn"].items()}
    grad = {k: cut(k, v) for k, v in cap["grad"].items()}
    grad_sum = {k: cut(k, v) for k, v in cap["grad_sum"].items()}
    xlang = [h[b, :T].numpy() for h in cap["xlang"]]
    xvisn = [h[b].numpy() for h in cap["xvisn"]]
    return T, attn, grad, grad_sum, xlang, xvisn


def explain_pair(cap, b: int):
    T, attn, grad, grad_sum, xlang, xvisn = pair_inputs(cap, b)
    assert T - 2 >= MIN_WORDS
    out, spec = lm.explain(attn, grad, grad_sum, xlang, xvisn, N_L, N_R, N_X)
    lit = lm.readout(*lm.chefer_literal(attn, grad, N_L, N_R, N_X))
    for a, b in zip(out["chefer"], lit):
        assert np.abs(a - b).max() <= 1e-12 * max(1.0, np.abs(b).max()), np.abs(a - b).max()
    for m, (img, txt) in out.items():
        assert img.shape == (N_REGIONS,) and txt.shape == (T,), m
        assert np.all(np.isfinite(img)) and np.all(np.isfinite(txt)), m
        assert txt[0] == 0.0, m
    return T, out, spec


def pair_tensors(c: str, b: int, out, spec) -> dict[str, np.ndarray]:
    t = {}
    for m, (img, txt) in out.items():
        t[f"{c}.{m}.image.{b}"] = img
        t[f"{c}.{m}.text.{b}"] = txt
    fi, lam_i, ft, lam_t = spec
    for k in range(N_X):
        t[f"{c}.fiedler.image.{k}.{b}"] = fi[k]
        t[f"{c}.fiedler.text.{k}.{b}"] = ft[k]
    t[f"{c}.lambda.image.{b}"] = lam_i
    t[f"{c}.lambda.text.{b}"] = lam_t
    return t


def check_spectral_core(feats: np.ndarray) -> dict:
    """lm.fiedler against the seed's call: float32 ARPACK shift-invert around -0.5 with M = D (section B)."""
    f, lam2, _ = lm.fiedler(feats)
    F = feats.astype(np.float64)
    F = F / np.linalg.norm(F, axis=1, keepdims=True)
    W = F @ F.T
    W[W < 0] = 0
    W /= W.max()
    d = W.sum(1)
    D = np.diag(d)
    L = D - W
    n = F.shape[0]
    k = 5 if 5 < n - 1 else n - 2
    ws, vs = scipy.sparse.linalg.eigs(L.astype(np.float32), k=k, which="LM", sigma=-0.5, M=D.astype(np.float32),
                                      v0=np.ones(n, dtype=np.float32))
    i2 = np.argsort(ws.real)[1]
    return {"n": n, "k": k, "lambda2_eigh_f64": lam2, "lambda2_eigs_f32": float(ws.real[i2]),
            "fiedler_eigh_f64_vs_eigs_f32_max_abs": float(np.abs(f - np.abs(vs[:, i2].real)).max())}


# ----------------------------------------------------------------------------------------------
# main


def versions() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "safetensors": safetensors.__version__}


def attention_stats(cap, name):
    am = cap["inputs"]["attention_mask"].bool()
    for k in modules():
        a = cap["attn"][k]
        mx = a.max(-1).values  # [B,H,Nq]
        kind = k.split(".")[0]
        if kind in ("lang", "xlang", "xt2i"):
            mx = mx[am[:, None, :].expand_as(mx)]
        nk = a.shape[-1]
        g = cap["grad"][k]
        log(f"  {name} {k:8s} row-max prob mean {float(mx.mean()):.3f} (uniform: 1/{nk} = {1 / nk:.3f})"
            f"  max|grad| {float(g.abs().max()):.3e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    OUT.mkdir(parents=True, exist_ok=True)

    tok = make_tokenizer()
    regions = make_regions()
    model = make_model(tok.backend_tokenizer.get_vocab_size(), tok, regions)

    tensors: dict[str, torch.Tensor] = {}
    cases_meta = {}
    caps = {}
    for c, pairs in CASES.items():
        cap = capture_case(model, tok, regions, pairs)
        caps[c] = cap
        inp = cap["inputs"]
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            assert inp[k].dtype == torch.int64
            tensors[f"{c}.{k}"] = inp[k]
        assert int(inp["token_type_ids"].abs().sum()) == 0
        tensors[f"{c}.features"] = inp["visual_feats"]
        tensors[f"{c}.boxes"] = inp["visual_pos"]
        tensors[f"{c}.logits"] = cap["logits"]
        tensors[f"{c}.predicted"] = cap["predicted"].to(torch.int64)
        tensors[f"{c}.pooled"] = cap["pooled"]
        tensors[f"{c}.embeddings.lang"] = cap["emb_lang"]
        tensors[f"{c}.embeddings.visn"] = cap["emb_visn"]
        for i, h in enumerate(cap["lang"]):
            tensors[f"{c}.lang.{i}"] = h
        for i, h in enumerate(cap["visn"]):
            tensors[f"{c}.visn.{i}"] = h
        for i in range(N_X):
            tensors[f"{c}.xlang.{i}"] = cap["xlang"][i]
            tensors[f"{c}.xvisn.{i}"] = cap["xvisn"][i]
        for k in modules():
            tensors[f"{c}.attn.{k}"] = cap["attn"][k]
            tensors[f"{c}.grad_attn.{k}"] = cap["grad"][k]
            tensors[f"{c}.sum.grad_attn.{k}"] = cap["grad_sum"][k]
        lg = cap["logits"]
        top2 = lg.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).tolist()
        assert min(margin) > MIN_MARGIN, margin
        ids = inp["input_ids"].tolist()
        cases_meta[c] = {
            "pairs": [{"img_id": i, "question": q} for i, q in pairs],
            "input_ids": ids,
            "attention_mask": inp["attention_mask"].tolist(),
            "tokens": [tok.convert_ids_to_tokens(r) for r in ids],
            "text_len": inp["attention_mask"].sum(1).tolist(),
            "predicted": cap["predicted"].tolist(),
            "predicted_answer": [ANSWERS[int(p)] for p in cap["predicted"]],
            "top1_minus_top2_logit": margin,
            "logits": lg.tolist(),
            "y_predicted": cap["y"],
            "y_sum_logits": cap["y_sum"],
        }
        log(f"case {c}: input_ids {ids}")
        log(f"  predicted {cases_meta[c]['predicted_answer']}  margins {[f'{m:.3f}' for m in margin]}")
        attention_stats(cap, c)

    log("grad check (float64 finite differences through transformers' own LXMERT code):")
    gc = grad_check(model, tok, regions, caps["b3"])
    log("written-out forward (lxmert_forward.py):")
    fwd = reference_forward_check(model, tok, regions, caps["b3"])

    # ---------------- golden.safetensors / golden.json
    tensors = {k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    save_file(tensors, str(OUT / "golden.safetensors"), metadata={"format": "pt"})
    back = load_file(str(OUT / "golden.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    golden_meta = {
        "description": "golden outputs of the tiny random LxmertForQuestionAnswering in tests/fixtures/lxmert "
        "(tools/reference/make_lxmert_fixture.py); float32, CPU, eval mode",
        "seed": SEED,
        "versions": versions(),
        "model": {"hidden_size": HIDDEN, "heads": HEADS, "head_dim": HIDDEN // HEADS, "intermediate_size": INTER,
                  "l_layers": N_L, "r_layers": N_R, "x_layers": N_X, "visual_feat_dim": FEAT_DIM,
                  "visual_pos_dim": POS_DIM, "num_qa_labels": len(ANSWERS), "max_position_embeddings": MAX_POS,
                  "vocab_size": tok.backend_tokenizer.get_vocab_size(), "layer_norm_eps": 1e-12,
                  "hidden_act": "gelu (exact, erf)", "answers": ANSWERS},
        "init": {
            "rng": f"numpy.random.default_rng({SEED}), modules in name order",
            "linear": f"weight N(0, 1/fan_in) (query/key x {QK_GAIN}, attention-output and FFN-output dense x "
            f"{RESID_GAIN}), bias U(-0.1, 0.1)",
            "embedding": "N(0, 0.5^2), every row (padding_idx rows 0 of word/position/token-type included)",
            "layer_norm": "weight 1 + N(0, 0.1^2), bias N(0, 0.05^2)",
            "pooler": f"weight x {POOLER_GAIN}; bias = round(-W mu, 4) with mu the mean last-X-layer [CLS] output "
            "over the corpus questions x region sets (float64), so answers depend on the input",
            "pooler_detail": make_model.pooler,
        },
        "regions": {
            "count": N_REGIONS, "feature_dim": FEAT_DIM,
            "images": [{"img_id": i, "img_h": h, "img_w": w} for i, h, w in IMAGES],
            "safetensors": "regions_<img_id>.safetensors: features [N,16] f32, boxes [N,4] f32 = "
            "(x1/W, y1/H, x2/W, y2/H) computed in float32 from the TSV's absolute boxes",
            "tsv": "regions.tsv: LXMERT obj36 format, no header, TAB-separated, CRLF line ends, columns img_id img_h "
            "img_w objects_id objects_conf attrs_id attrs_conf num_boxes boxes features; arrays are base64 of "
            "little-endian int64 (ids) / float32 (conf, boxes [N,4] absolute pixel x1 y1 x2 y2, features [N,D])",
            "generation": f"{N_OBJECTS} non-negative feature centres per image, regions = centre + N(0, 0.4^2), "
            "clipped at 0; region 0 is the whole image (normalised box exactly 0,0,1,1)",
        },
        "tokenizer": {"vocab_size": tok.backend_tokenizer.get_vocab_size(),
                      "special_ids": {s_: i for i, s_ in enumerate(SPECIALS)},
                      "checked": "raw tokenizers.Tokenizer == BertTokenizerFast(tokenizer_file) == LxmertTokenizerFast "
                      "(from_pretrained) == slow LxmertTokenizer(vocab.txt) on the test texts",
                      "test_texts": TOKENIZER_TEST_TEXTS,
                      "test_ids": [e.ids for e in tokenizers.Tokenizer.from_file(str(OUT / "tokenizer.json"))
                                   .encode_batch(TOKENIZER_TEST_TEXTS)],
                      "slow_differences": make_tokenizer.slow_diff},
        "target": "y = sum_b logits[b, predicted_b] (predicted = argmax, before any sigmoid); "
        "grad_attn.<m> = dy/dA; sum.grad_attn.<m> = d(sum_b sum_c logits[b, c])/dA (seed bug B1 target)",
        "zero_gradients": {
            "modules": no_grad_modules(),
            "note": "the last X-layer's image branch (its cross-attention with image queries and visn_self_att) "
            "does not reach the answer head, which reads only the text [CLS] of the last X-layer "
            "(spec A.1, B8): torch.autograd.grad returns None there and these tensors are stored as zeros",
        },
        "modules": {m: {"hf_module": HF_PATH[m.split(".")[0]].format(m.split(".")[1]),
                        "shape": "[B, H, Nq, Nk] with " + {
                            "lang": "Nq = Nk = T", "visn": "Nq = Nk = regions", "xt2i": "Nq = T, Nk = regions",
                            "xi2t": "Nq = regions, Nk = T", "xlang": "Nq = Nk = T",
                            "xvisn": "Nq = Nk = regions"}[m.split(".")[0]]} for m in modules()},
        "tensor_names": {
            "<c>.input_ids / attention_mask / token_type_ids": "int64 [B, T] (right-padded with [PAD] = 0)",
            "<c>.features / <c>.boxes": "float32 [B, regions, 16] / [B, regions, 4] (normalised corners)",
            "<c>.logits": "[B, 12]", "<c>.predicted": "int64 [B]",
            "<c>.pooled": "[B, 48] = tanh(W x_lang_final[:, 0] + b)",
            "<c>.embeddings.lang": "[B, T, 48] LayerNorm(word + position + token_type)",
            "<c>.embeddings.visn": "[B, regions, 48] (LN(visn_fc(f)) + LN(box_fc(b))) / 2",
            "<c>.lang.<l>": "[B, T, 48] output of L-layer l",
            "<c>.visn.<r>": "[B, regions, 48] output of R-layer r",
            "<c>.xlang.<k> / <c>.xvisn.<k>": "outputs t3 / v3 of X-layer k",
            "<c>.attn.<module>": "attention probabilities (the tensor multiplied with V)",
            "<c>.grad_attn.<module>": "dy/dA for the predicted-answer target",
            "<c>.sum.grad_attn.<module>": "dy/dA for the sum-of-all-logits target",
        },
        "padding_note": "text rows/columns beyond text_len are padding: A is exactly 0 in padded key columns, "
        "padded query rows are ordinary softmax rows, dy/dA is 0 in padded query rows but NOT in padded key "
        "columns (dy/dA = dO V^T); slice text axes to [0:text_len] before comparing with a single-pair run",
        "cases": cases_meta,
        "grad_check": gc,
        "reference_forward_check": {"what": "tools/reference/lxmert_forward.py (plain torch ops on the state dict) "
                                    "vs transformers, case b3, max |diff|; hidden = all L/R/X layer outputs "
                                    "(padded text rows included)", **fwd},
        "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()},
    }
    write_json(OUT / "golden.json", golden_meta)

    # ---------------- methods
    mt: dict[str, np.ndarray] = {}
    meth_cases = {}
    lambda_table = []
    batch1_max = 0.0
    spectral_check = None
    for c, pairs in CASES.items():
        cap = caps[c]
        pm = []
        for b, (img_id, q) in enumerate(pairs):
            T, out, spec = explain_pair(cap, b)
            pt = pair_tensors(c, b, out, spec)
            alone = capture_case(model, tok, regions, [(img_id, q)])
            assert alone["inputs"]["input_ids"][0].tolist() == cap["inputs"]["input_ids"][b, :T].tolist()
            assert int(alone["predicted"][0]) == int(cap["predicted"][b])
            d_logit = float((alone["logits"][0] - cap["logits"][b]).abs().max())
            assert d_logit <= 1e-5, d_logit
            T1, out1, spec1 = explain_pair(alone, 0)
            pt1 = pair_tensors(c, b, out1, spec1)
            assert T1 == T and set(pt1) == set(pt)
            for k in pt:
                d = float(np.abs(pt[k] - pt1[k]).max())
                batch1_max = max(batch1_max, d)
                assert d <= BATCH1_TOL, (k, d)
            mt.update(pt)
            fi, lam_i, ft, lam_t = spec
            for side, lam in (("image", lam_i), ("text", lam_t)):
                for k in range(N_X):
                    lambda_table.append({"case": c, "pair": b, "graph": side, "x_layer": k,
                                         "lambda2": float(lam[k, 0]), "gap": float(lam[k, 1]),
                                         "small_gap": bool(lam[k, 1] < SMALL_GAP)})
            if spectral_check is None:
                spectral_check = {
                    "image_xvisn_-2": check_spectral_core(cap["xvisn"][N_X - 2][0].numpy()),
                    "text_xlang_-1": check_spectral_core(cap["xlang"][N_X - 1][0, 1:T - 1].numpy()),
                }
            ids = cap["inputs"]["input_ids"][b, :T].tolist()
            pm.append({"img_id": img_id, "question": q, "input_ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
                       "text_len": T, "words": [1, T - 2], "predicted": int(cap["predicted"][b]),
                       "predicted_answer": ANSWERS[int(cap["predicted"][b])],
                       "logit_predicted": float(cap["logits"][b, cap["predicted"][b]]),
                       "sum_logits": float(cap["logits"][b].sum())})
        meth_cases[c] = {"pairs": pm}
    small = [r for r in lambda_table if r["small_gap"]]

    ranges = {}
    for m in lm.METHODS + lm.SUM_LOGITS_METHODS:
        ranges[m] = {}
        for side in ("image", "text"):
            vals = np.concatenate([mt[f"{c}.{m}.{side}.{b}"] for c in CASES for b in range(len(CASES[c]))])
            ranges[m][side] = {"min": float(vals.min()), "max": float(vals.max())}
    mout = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sorted(mt.items())}
    save_file(mout, str(OUT / "methods.safetensors"), metadata={"format": "pt"})
    mback = load_file(str(OUT / "methods.safetensors"))
    assert set(mback) == set(mout) and all(torch.equal(mback[k], mout[k]) for k in mout)
    methods_meta = {
        "description": "golden relevance vectors of the explanation methods for the tiny random LXMERT in "
        "tests/fixtures/lxmert (tools/reference/make_lxmert_fixture.py, tools/reference/lxmert_methods.py)",
        "versions": versions(),
        "model_safetensors_sha256": sha256(OUT / "model.safetensors"),
        "layers": {"l": N_L, "r": N_R, "x": N_X}, "regions": N_REGIONS,
        "targets": {"default": "logit of the predicted (argmax) answer, per pair",
                    "sum-logits": "sum over all 12 answers of the logits (seed bug B1)"},
        "unpadding": "each case runs as one right-padded batch; every text axis is sliced to [0:T_b] "
        "(T_b = sum(attention_mask[b]), [CLS] at 0, [SEP] at T_b-1) before any method runs",
        "readout": "image = row 0 ([CLS]) of R_ti, length = regions; text = row 0 of R_tt, length T_b "
        "([SEP] included), entry 0 set to 0; spectral text vectors are 0 at [CLS] and [SEP]",
        "precision": "captures float32 (CPU, 1 thread); method arithmetic float64; stored float32",
        "methods": lm.METHOD_DEFINITIONS,
        "spectral": lm.SPECTRAL_DEFINITION,
        "graphs": {"image.<k>": "all regions of xvisn.<k> (output v3 of X-layer k)",
                   "text.<k>": "word rows 1..T_b-2 of xlang.<k> (output t3 of X-layer k)",
                   "used": "dsmi: image.X-2, text.X-1; dsmi-grad*: image.0..X-2, text.0..X-1"},
        "tensor_names": {
            "<c>.<method>.image.<b>": "[regions]",
            "<c>.<method>.text.<b>": "[T_b]",
            "<c>.fiedler.image.<k>.<b>": "[regions] |Fiedler vector|",
            "<c>.fiedler.text.<k>.<b>": "[T_b - 2] |Fiedler vector| over the words",
            "<c>.lambda.image.<b> / <c>.lambda.text.<b>": "[X, 2] = (lambda2, lambda3 - lambda2) per X-layer",
        },
        "cases": meth_cases,
        "lambdas": lambda_table,
        "small_gap_threshold": SMALL_GAP,
        "small_gap": small,
        "value_ranges": ranges,
        "checks": {"batch1_vs_batched_max_abs": batch1_max, "batch1_tolerance": BATCH1_TOL,
                   "spectral_core_b1": spectral_check},
        "tensors": {k: list(v.shape) for k, v in mout.items()},
    }
    write_json(OUT / "methods.json", methods_meta, indent=1)

    log("lambda2 / gap:")
    for r in lambda_table:
        log(f"  {r['case']} pair {r['pair']} {r['graph']:5s} x{r['x_layer']}: lambda2 {r['lambda2']:.6f} "
            f"gap {r['gap']:.6f}{'  <-- small gap' if r['small_gap'] else ''}")
    log("value ranges:")
    for m, rr in ranges.items():
        log(f"  {m:26s} image [{rr['image']['min']:+.4e}, {rr['image']['max']:+.4e}]  "
            f"text [{rr['text']['min']:+.4e}, {rr['text']['max']:+.4e}]")
    log(f"batch-1 vs batched max |diff|: {batch1_max:.3e}")
    log(f"spectral core check: {json.dumps(spectral_check)}")

    files = sorted(p for p in OUT.iterdir())
    expected = {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                "special_tokens_map.json", "regions.tsv", "golden.safetensors", "golden.json",
                "methods.safetensors", "methods.json"} | {f"regions_{i}.safetensors" for i, _, _ in IMAGES}
    expected |= {"lrp.safetensors", "lrp.json"} & {p.name for p in files}  # make_lrp_goldens.py
    assert {p.name for p in files} == expected, sorted(p.name for p in files)
    total = 0
    log("files written (size, sha256):")
    for f in files:
        os.chmod(f, 0o644)
        total += f.stat().st_size
        log(f"  {str(f.relative_to(REPO)):<58} {f.stat().st_size:>8}  {sha256(f)}")
    log(f"  total {total} bytes")


if __name__ == "__main__":
    main()
