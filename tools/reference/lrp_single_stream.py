"""LRP through a pre-LN transformer encoder (ViLT's joint encoder; CLIP's towers) with the rules
of lrp_rules.py (spec §D, wired as Chefer's CVPR'21 ViT blocks), and the ViLT-VQA head.

Layer h = x + Dense(MHA(LN1(x))), y = h + W2 act(W1 LN2(h)) backwards:
    add rule (h vs the MLP output with its bias) -> linear W2 -> act identity -> linear W1 ->
    LN2 identity -> clone(h; residual, MLP branch) -> add rule (x vs the attention output with
    its bias) -> linear Dense -> per head matmul rule on probs @ V (both / 2; the probs part is
    attn_cam) -> softmax identity -> matmul rule on Q @ K^T (unscaled, both / 2) -> linear q, k,
    v -> clone(LN1(x); q, k, v) -> LN1 identity -> clone(x; residual, attention branch).
ViLT head: final LN on the [CLS] row (identity), index-select (gradient x input), tanh pooler,
Linear -> LN -> GELU -> Linear, from a one-hot at the target answer.
The pass stops at the first layer's input (nothing below it reaches an attention map).
"""

from __future__ import annotations

import math

import torch

import lrp_rules as lrp
from lxmert_forward import gelu, layer_norm, linear


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Layer:
    def __init__(self, sd, names: dict, x, heads, eps, act, mask_add=None):
        self.sd, self.n, self.x, self.heads = sd, names, x, heads
        self.ln1 = layer_norm(x, sd, names["ln1"], eps)
        b, t, d = x.shape
        split = lambda y: y.view(b, t, heads, d // heads).transpose(1, 2)  # noqa: E731
        self.q = split(linear(self.ln1, sd, names["q"]))
        self.k = split(linear(self.ln1, sd, names["k"]))
        self.v = split(linear(self.ln1, sd, names["v"]))
        s = self.q @ self.k.transpose(-1, -2) / math.sqrt(d // heads)
        if mask_add is not None:
            s = s + mask_add
        self.probs = torch.softmax(s, dim=-1)
        self.ctx = (self.probs @ self.v).transpose(1, 2).reshape(b, t, d)
        self.attn = linear(self.ctx, sd, names["o"])
        self.h = x + self.attn
        self.ln2 = layer_norm(self.h, sd, names["ln2"], eps)
        self.act = act(linear(self.ln2, sd, names["fc1"]))
        self.mlp = linear(self.act, sd, names["fc2"])
        self.out = self.h + self.mlp

    def relprop(self, r):
        sd, n, heads = self.sd, self.n, self.heads
        w = lambda k: sd[n[k] + ".weight"]  # noqa: E731
        b, t, d = self.x.shape
        split = lambda y: y.view(b, t, heads, d // heads).transpose(1, 2)  # noqa: E731
        merge = lambda y: y.transpose(1, 2).reshape(b, t, d)  # noqa: E731
        r_h_res, r_mlp = lrp.add(self.h, self.mlp, r)
        r_act = lrp.linear(self.act, w("fc2"), r_mlp)
        r_ln2 = lrp.linear(self.ln2, w("fc1"), r_act)
        r_h = lrp.clone(self.h, [r_h_res, r_ln2])
        r_x_res, r_attn = lrp.add(self.x, self.attn, r_h)
        r_ctx = lrp.linear(self.ctx, w("o"), r_attn)
        r_p, r_v = lrp.matmul(self.probs, self.v, split(r_ctx))
        r_p, r_v = r_p / 2, r_v / 2
        r_q, r_kt = lrp.matmul(self.q, self.k.transpose(-1, -2), r_p)
        r_q, r_k = r_q / 2, r_kt.transpose(-1, -2) / 2
        r_ln1 = lrp.clone(self.ln1, [lrp.linear(self.ln1, w("q"), merge(r_q)),
                                     lrp.linear(self.ln1, w("k"), merge(r_k)),
                                     lrp.linear(self.ln1, w("v"), merge(r_v))])
        return r_p, lrp.clone(self.x, [r_x_res, r_ln1])


def encoder(sd, prefix, names, layers, x, heads, eps, act, mask_add=None):
    out = []
    for i in range(layers):
        full = {k: f"{prefix}.{i}.{v}" for k, v in names.items()}
        out.append(Layer(sd, full, x, heads, eps, act, mask_add))
        x = out[-1].out
    return out


def encoder_relprop(stack, r):
    cams = [None] * len(stack)
    for i in reversed(range(len(stack))):
        cams[i], r = stack[i].relprop(r)
    return cams


VILT_NAMES = {"ln1": "layernorm_before", "q": "attention.attention.query", "k": "attention.attention.key",
              "v": "attention.attention.value", "o": "attention.output.dense", "ln2": "layernorm_after",
              "fc1": "intermediate.dense", "fc2": "output.dense"}


def vilt(sd, embeddings, heads, layers, eps, target=None):
    """One sample's real tokens (embeddings [1, N, d], padding removed). Returns (logits, target,
    probs[l], grads[l], cams[l]) with grads by autograd and cams by relprop."""
    x = embeddings.detach().requires_grad_()
    stack = encoder(sd, "vilt.encoder.layer", VILT_NAMES, layers, x, heads, eps, gelu)
    last = stack[-1].out
    cls = last[:, 0]
    normed = layer_norm(cls, sd, "vilt.layernorm", eps)
    pooled = torch.tanh(linear(normed, sd, "vilt.pooler.dense"))
    hidden = linear(pooled, sd, "classifier.0")
    mid = gelu(layer_norm(hidden, sd, "classifier.1", 1e-5))
    logits = linear(mid, sd, "classifier.3")
    if target is None:
        target = int(logits[0].argmax())
    grads = torch.autograd.grad(logits[0, target], [s.probs for s in stack])
    with torch.no_grad():
        one_hot = torch.zeros_like(logits)
        one_hot[0, target] = 1.0
        r = lrp.linear(mid, sd["classifier.3.weight"], one_hot)
        r = lrp.linear(pooled, sd["classifier.0.weight"], r)
        r = lrp.linear(normed, sd["vilt.pooler.dense.weight"], r)
        r_last = torch.zeros_like(last)
        r_last[:, 0] = cls * lrp.sdiv(r, cls)
        cams = encoder_relprop(stack, r_last)
    return (logits.detach(), target, [s.probs.detach() for s in stack], [g.detach() for g in grads],
            [c.detach() for c in cams])


CLIP_NAMES = {"ln1": "layer_norm1", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
              "o": "self_attn.out_proj", "ln2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def clip(sd, vision_emb, text_emb, eot, heads, layers, eps, acts):
    """One (image, text) pair: vision embeddings [1, Nv, dv] (after pre_layrnorm), the text's real
    tokens [1, L, dt] and its end-of-text position. Relevance 1 at the pair score s = scale cos(a, b)
    enters each tower by the gradient x input rule of the product of the normalised embeddings
    (R_a = a_hat * b_hat * scale * sdiv(1, s)); the L2 normalisation and the final LayerNorms pass
    relevance on; the projections take the linear rule; the pooled row the index-select rule.
    Returns (score, {tower: (probs, grads, cams)})."""
    L = text_emb.shape[1]
    causal = torch.full((L, L), float("-inf"), dtype=text_emb.dtype).triu(1)
    xv = vision_emb.detach().requires_grad_()
    xt = text_emb.detach().requires_grad_()
    sv = encoder(sd, "vision_model.encoder.layers", CLIP_NAMES, layers["vision"], xv, heads["vision"], eps,
                 acts["vision"])
    st = encoder(sd, "text_model.encoder.layers", CLIP_NAMES, layers["text"], xt, heads["text"], eps,
                 acts["text"], causal)
    cls, eos = sv[-1].out[:, 0], st[-1].out[:, eot]
    nv = layer_norm(cls, sd, "vision_model.post_layernorm", eps)
    nt = layer_norm(eos, sd, "text_model.final_layer_norm", eps)
    a = nv @ sd["visual_projection.weight"].T
    b = nt @ sd["text_projection.weight"].T
    ah, bh = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    scale = sd["logit_scale"].exp()
    s = scale * (ah * bh).sum()
    probs = [x.probs for x in sv + st]
    grads = torch.autograd.grad(s, probs)
    out = {}
    with torch.no_grad():
        r_share = lrp.sdiv(torch.ones_like(s), s) * scale
        for tower, stack, own, other, pooled, normed, last, w, row in (
                ("vision", sv, ah, bh, cls, nv, sv[-1].out, "visual_projection.weight", 0),
                ("text", st, bh, ah, eos, nt, st[-1].out, "text_projection.weight", eot)):
            r = lrp.linear(normed, sd[w], own * other * r_share)
            r_last = torch.zeros_like(last)
            r_last[:, row] = pooled * lrp.sdiv(r, pooled)
            cams = encoder_relprop(stack, r_last)
            n = len(stack)
            g = grads[:n] if tower == "vision" else grads[len(sv):]
            out[tower] = ([x.probs.detach() for x in stack], [x.detach() for x in g], [c.detach() for c in cams])
    return s.detach(), out
