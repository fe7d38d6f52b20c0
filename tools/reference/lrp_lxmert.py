"""LRP through LXMERT-VQA (spec §D, model wiring of §A.1) with the rules of lrp_rules.py.

A written-out forward (same arithmetic as lxmert_forward.py, checked against it) keeps what each
rule needs; `relprop` then walks it backwards from a one-hot at the target answer:

    answer head: Linear (rule) <- LN, GELU (identity) <- Linear (rule) <- tanh (identity)
                 <- pooler Linear (rule) <- index-select of the text [CLS] (gradient x input)
    image stream starts at 0
    X-layers k = X-1 .. 0: FFNs, then self-attention sublayers, then the cross-attention (image
                 queries first, then text queries); clones merge the fan-outs
    R-layers in reverse on the image stream, L-layers in reverse on the text stream.

Post-LN sublayer LN(x_q + Dense(MHA(x_q, x_kv))) backwards: LN identity; add rule between the
dense output (with its bias) and the residual x_q; linear rule on the dense layer; per head the
matmul rule on probs @ V (both halves / 2; the probs part is attn_cam); softmax identity; the
matmul rule on Q @ K^T (unscaled scores; both / 2); linear rules on q, k, v; clone(x_kv; k, v).
Self-attention: clone(x; q, clone(x; k, v), residual). Cross: clone(x_q; q, residual) and the
context clone(x_kv; k, v); the X-layer's clones merge each stream's two uses.
FFN LN(x + W2 gelu(W1 x)): LN identity, add rule (W2 output vs x), linear W2, GELU identity,
linear W1, clone(x; W1 branch, residual).
The pass stops at the first layer's input: nothing below it reaches an attention map.
"""

from __future__ import annotations

import math

import torch

import lrp_rules as lrp
from lxmert_forward import gelu, layer_norm, linear


def _heads(x, heads):
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(x):
    b, h, n, e = x.shape
    return x.transpose(1, 2).reshape(b, n, h * e)


class Sublayer:
    """One post-LN attention sublayer's forward, kept for relprop."""

    def __init__(self, sd, p_att, p_out, xq, xkv, mask_add, heads):
        self.sd, self.p_att, self.p_out, self.heads = sd, p_att, p_out, heads
        self.xq, self.xkv = xq, xkv
        self.q = _heads(linear(xq, sd, p_att + ".query"), heads)
        self.k = _heads(linear(xkv, sd, p_att + ".key"), heads)
        self.v = _heads(linear(xkv, sd, p_att + ".value"), heads)
        s = self.q @ self.k.transpose(-1, -2) / math.sqrt(self.q.shape[-1])
        if mask_add is not None:
            s = s + mask_add[:, None, None, :]
        self.probs = torch.softmax(s, dim=-1)
        self.ctx = _merge(self.probs @ self.v)
        self.dense = linear(self.ctx, sd, p_out + ".dense")
        self.out = layer_norm(self.dense + xq, sd, p_out + ".LayerNorm")

    def relprop(self, r):
        """Returns (attn_cam, R at x_q via the query, R at x_q via the residual, R at x_kv)."""
        sd = self.sd
        r_dense, r_res = lrp.add(self.dense, self.xq, r)
        r_ctx = lrp.linear(self.ctx, sd[self.p_out + ".dense.weight"], r_dense)
        r_p, r_v = lrp.matmul(self.probs, self.v, _heads(r_ctx, self.heads))
        r_p, r_v = r_p / 2, r_v / 2
        r_q, r_kt = lrp.matmul(self.q, self.k.transpose(-1, -2), r_p)
        r_q, r_k = r_q / 2, r_kt.transpose(-1, -2) / 2
        w = lambda n: sd[f"{self.p_att}.{n}.weight"]  # noqa: E731
        rq = lrp.linear(self.xq, w("query"), _merge(r_q))
        rk = lrp.linear(self.xkv, w("key"), _merge(r_k))
        rv = lrp.linear(self.xkv, w("value"), _merge(r_v))
        return r_p, rq, r_res, lrp.clone(self.xkv, [rk, rv])


class Ffn:
    def __init__(self, sd, p_inter, p_out, x):
        self.sd, self.p_inter, self.p_out, self.x = sd, p_inter, p_out, x
        self.pre = linear(x, sd, p_inter + ".dense")
        self.act = gelu(self.pre)
        self.down = linear(self.act, sd, p_out + ".dense")
        self.out = layer_norm(self.down + x, sd, p_out + ".LayerNorm")

    def relprop(self, r):
        r_down, r_res = lrp.add(self.down, self.x, r)
        r_act = lrp.linear(self.act, self.sd[self.p_out + ".dense.weight"], r_down)
        r_x = lrp.linear(self.x, self.sd[self.p_inter + ".dense.weight"], r_act)
        return lrp.clone(self.x, [r_x, r_res])


def self_layer_relprop(att: Sublayer, r):
    cam, rq, r_res, r_kv = att.relprop(r)
    return cam, lrp.clone(att.xq, [rq, r_kv, r_res])


def forward_and_relprop(sd, input_ids, feats, boxes, heads, n_l, n_r, n_x, target=None):
    """One unpadded pair (batch 1). Returns (logits, target, probs{key}, grads{key}, cams{key}).

    grads: d logit_target / d probs by autograd; cams: attn_cam of every module (key names as in
    golden.safetensors: lang.l, visn.r, xt2i.k, xi2t.k, xlang.k, xvisn.k)."""
    B, T = input_ids.shape
    E = "lxmert.embeddings."
    t = (sd[E + "word_embeddings.weight"][input_ids] + sd[E + "position_embeddings.weight"][torch.arange(T)][None]
         + sd[E + "token_type_embeddings.weight"][torch.zeros_like(input_ids)])
    t = layer_norm(t, sd, E + "LayerNorm")
    V = "lxmert.encoder.visn_fc."
    v = (layer_norm(linear(feats, sd, V + "visn_fc"), sd, V + "visn_layer_norm")
         + layer_norm(linear(boxes, sd, V + "box_fc"), sd, V + "box_layer_norm")) / 2
    # leaves, so that autograd reaches every attention map
    t, v = t.detach().requires_grad_(), v.detach().requires_grad_()
    mods = {}
    lang, visn, cross = [], [], []
    for l in range(n_l):
        p = f"lxmert.encoder.layer.{l}"
        a = Sublayer(sd, p + ".attention.self", p + ".attention.output", t, t, None, heads)
        f = Ffn(sd, p + ".intermediate", p + ".output", a.out)
        lang.append((a, f))
        mods[f"lang.{l}"] = a
        t = f.out
    for r in range(n_r):
        p = f"lxmert.encoder.r_layers.{r}"
        a = Sublayer(sd, p + ".attention.self", p + ".attention.output", v, v, None, heads)
        f = Ffn(sd, p + ".intermediate", p + ".output", a.out)
        visn.append((a, f))
        mods[f"visn.{r}"] = a
        v = f.out
    for k in range(n_x):
        X = f"lxmert.encoder.x_layers.{k}."
        t2i = Sublayer(sd, X + "visual_attention.att", X + "visual_attention.output", t, v, None, heads)
        i2t = Sublayer(sd, X + "visual_attention.att", X + "visual_attention.output", v, t, None, heads)
        ls = Sublayer(sd, X + "lang_self_att.self", X + "lang_self_att.output", t2i.out, t2i.out, None, heads)
        vs = Sublayer(sd, X + "visn_self_att.self", X + "visn_self_att.output", i2t.out, i2t.out, None, heads)
        lf = Ffn(sd, X + "lang_inter", X + "lang_output", ls.out)
        vf = Ffn(sd, X + "visn_inter", X + "visn_output", vs.out)
        cross.append((t, v, t2i, i2t, ls, vs, lf, vf))
        mods.update({f"xt2i.{k}": t2i, f"xi2t.{k}": i2t, f"xlang.{k}": ls, f"xvisn.{k}": vs})
        t, v = lf.out, vf.out
    cls = t[:, 0]
    pooled_pre = linear(cls, sd, "lxmert.pooler.dense")
    pooled = torch.tanh(pooled_pre)
    hidden = linear(pooled, sd, "answer_head.logit_fc.0")
    normed = layer_norm(gelu(hidden), sd, "answer_head.logit_fc.2")
    logits = linear(normed, sd, "answer_head.logit_fc.3")
    if target is None:
        target = int(logits[0].argmax())
    keys = list(mods)
    probs = [mods[k].probs for k in keys]
    gs = torch.autograd.grad(logits[0, target], probs, allow_unused=True)
    grads = {k: (g if g is not None else torch.zeros_like(p)).detach() for k, g, p in zip(keys, gs, probs)}

    with torch.no_grad():
        one_hot = torch.zeros_like(logits)
        one_hot[0, target] = 1.0
        r = lrp.linear(normed, sd["answer_head.logit_fc.3.weight"], one_hot)
        r = lrp.linear(pooled, sd["answer_head.logit_fc.0.weight"], r)
        r = lrp.linear(cls, sd["lxmert.pooler.dense.weight"], r)
        # index-select of row 0 (gradient x input): x * scatter(sdiv(R, x[0]))
        r_t = torch.zeros_like(t)
        r_t[:, 0] = cls * lrp.sdiv(r, cls)
        r_v = torch.zeros_like(v)
        cams = {}
        for k in reversed(range(n_x)):
            t_in, v_in, t2i, i2t, ls, vs, lf, vf = cross[k]
            r_v, r_t = vf.relprop(r_v), lf.relprop(r_t)
            cams[f"xvisn.{k}"], r_v = self_layer_relprop(vs, r_v)
            cams[f"xlang.{k}"], r_t = self_layer_relprop(ls, r_t)
            cams[f"xi2t.{k}"], rq_v, rres_v, r_kv_t = i2t.relprop(r_v)
            cams[f"xt2i.{k}"], rq_t, rres_t, r_kv_v = t2i.relprop(r_t)
            r_v = lrp.clone(v_in, [lrp.clone(v_in, [rq_v, rres_v]), r_kv_v])
            r_t = lrp.clone(t_in, [lrp.clone(t_in, [rq_t, rres_t]), r_kv_t])
        for r_i in reversed(range(n_r)):
            a, f = visn[r_i]
            cams[f"visn.{r_i}"], r_v = self_layer_relprop(a, f.relprop(r_v))
        for l in reversed(range(n_l)):
            a, f = lang[l]
            cams[f"lang.{l}"], r_t = self_layer_relprop(a, f.relprop(r_t))
    return (logits.detach(), target, {k: p.detach() for k, p in zip(keys, probs)}, grads,
            {k: c.detach() for k, c in cams.items()})
