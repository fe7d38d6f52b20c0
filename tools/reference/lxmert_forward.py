"""An independent, written-out LxmertForQuestionAnswering forward pass (plain torch ops on the state
dict, no transformers modules). make_lxmert_fixture.py runs it in float64 next to transformers'
own code and asserts that logits, every attention probability tensor and every layer output agree,
so this file is an executable statement of the behaviour a re-implementation has to match.

Conventions (transformers 4.57.6, modeling_lxmert.py, eval mode, dropout = identity):
- every LayerNorm has eps = 1e-12 (hard-coded in modeling_lxmert.py; config.layer_norm_eps is unused),
  biased variance (mean of squared deviations);
- GELU is the exact erf form 0.5 x (1 + erf(x / sqrt 2)) everywhere (config hidden_act "gelu", and
  the answer head's GeLU module);
- attention: per head scores = q k^T / sqrt(head_dim) + mask, softmax over keys, context = A v,
  heads concatenated in head order; q, k, v are Linear layers with bias;
- text mask: additive (1 - attention_mask) * finfo(dtype).min on key columns, used by every attention
  whose KEYS are text (text self, x-layer lang_self_att, and the image->text cross call); there is
  no visual mask (all regions valid) and no causal mask.
"""

from __future__ import annotations

import math

import torch


def layer_norm(x, sd, p, eps=1e-12):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[p + ".weight"] + sd[p + ".bias"]


def linear(x, sd, p):
    return x @ sd[p + ".weight"].T + sd[p + ".bias"]


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attention(sd, p, xq, xkv, mask_add, heads):
    """Returns (context [B, Nq, D], probabilities [B, H, Nq, Nk])."""
    B, Nq, D = xq.shape
    Nk = xkv.shape[1]
    dh = D // heads
    q = linear(xq, sd, p + ".query").view(B, Nq, heads, dh).transpose(1, 2)
    k = linear(xkv, sd, p + ".key").view(B, Nk, heads, dh).transpose(1, 2)
    v = linear(xkv, sd, p + ".value").view(B, Nk, heads, dh).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if mask_add is not None:
        s = s + mask_add[:, None, None, :]
    a = torch.softmax(s, dim=-1)
    ctx = (a @ v).transpose(1, 2).reshape(B, Nq, D)
    return ctx, a


def attn_block(sd, p_att, p_out, xq, xkv, mask_add, heads):
    """Attention + output dense + residual + LayerNorm (post-LN)."""
    ctx, a = attention(sd, p_att, xq, xkv, mask_add, heads)
    return layer_norm(linear(ctx, sd, p_out + ".dense") + xq, sd, p_out + ".LayerNorm"), a


def ffn(sd, p_inter, p_out, x):
    h = gelu(linear(x, sd, p_inter + ".dense"))
    return layer_norm(linear(h, sd, p_out + ".dense") + x, sd, p_out + ".LayerNorm")


def bert_layer(sd, p, x, mask_add, heads):
    x, a = attn_block(sd, p + ".attention.self", p + ".attention.output", x, x, mask_add, heads)
    return ffn(sd, p + ".intermediate", p + ".output", x), a


def forward(sd, input_ids, token_type_ids, attention_mask, feats, boxes, heads, n_l, n_r, n_x):
    """Returns dict: logits, pooled, emb_lang, emb_visn, lang[l], visn[r], xlang[k], xvisn[k], attn[key]."""
    dt = feats.dtype
    B, T = input_ids.shape
    E = "lxmert.embeddings."
    pos = torch.arange(T)
    t = (sd[E + "word_embeddings.weight"][input_ids] + sd[E + "position_embeddings.weight"][pos][None]
         + sd[E + "token_type_embeddings.weight"][token_type_ids])
    t = layer_norm(t, sd, E + "LayerNorm")
    V = "lxmert.encoder.visn_fc."
    v = (layer_norm(linear(feats, sd, V + "visn_fc"), sd, V + "visn_layer_norm")
         + layer_norm(linear(boxes, sd, V + "box_fc"), sd, V + "box_layer_norm")) / 2
    out = {"emb_lang": t, "emb_visn": v, "lang": [], "visn": [], "xlang": [], "xvisn": [], "attn": {}}
    tmask = (1.0 - attention_mask.to(dt)) * torch.finfo(dt).min
    for l in range(n_l):
        t, out["attn"][f"lang.{l}"] = bert_layer(sd, f"lxmert.encoder.layer.{l}", t, tmask, heads)
        out["lang"].append(t)
    for r in range(n_r):
        v, out["attn"][f"visn.{r}"] = bert_layer(sd, f"lxmert.encoder.r_layers.{r}", v, None, heads)
        out["visn"].append(v)
    for k in range(n_x):
        X = f"lxmert.encoder.x_layers.{k}."
        # cross attention: ONE weight set, called twice on the same (pre-layer) inputs
        t1, out["attn"][f"xt2i.{k}"] = attn_block(sd, X + "visual_attention.att", X + "visual_attention.output",
                                                  t, v, None, heads)
        v1, out["attn"][f"xi2t.{k}"] = attn_block(sd, X + "visual_attention.att", X + "visual_attention.output",
                                                  v, t, tmask, heads)
        t2, out["attn"][f"xlang.{k}"] = attn_block(sd, X + "lang_self_att.self", X + "lang_self_att.output",
                                                   t1, t1, tmask, heads)
        v2, out["attn"][f"xvisn.{k}"] = attn_block(sd, X + "visn_self_att.self", X + "visn_self_att.output",
                                                   v1, v1, None, heads)
        t = ffn(sd, X + "lang_inter", X + "lang_output", t2)
        v = ffn(sd, X + "visn_inter", X + "visn_output", v2)
        out["xlang"].append(t)
        out["xvisn"].append(v)
    pooled = torch.tanh(linear(t[:, 0], sd, "lxmert.pooler.dense"))
    h = gelu(linear(pooled, sd, "answer_head.logit_fc.0"))
    h = layer_norm(h, sd, "answer_head.logit_fc.2")
    out["pooled"] = pooled
    out["logits"] = linear(h, sd, "answer_head.logit_fc.3")
    return out
