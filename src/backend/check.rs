//! Argument checks every backend runs before an op, on buffer lengths only, so that a CPU
//! and a CUDA op reject exactly the same calls with the same messages.

use super::{
    AttentionShape, BackendError, HeadMean, MeanGraph, PatchGeometry, ReadoutRow, RelevanceProduct,
    Result,
};

pub(crate) fn len(
    op: &'static str,
    buffer: &'static str,
    found: usize,
    expected: usize,
) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(BackendError::Length {
            op,
            buffer,
            expected,
            found,
        })
    }
}

/// The number of rows of width `dim` in a buffer of `found` elements.
pub(crate) fn rows(
    op: &'static str,
    buffer: &'static str,
    found: usize,
    dim: usize,
) -> Result<usize> {
    if dim == 0 || !found.is_multiple_of(dim) {
        return Err(BackendError::Invalid {
            op,
            message: format!("buffer `{buffer}` of {found} elements is not made of rows of {dim}"),
        });
    }
    Ok(found / dim)
}

pub(crate) fn layernorm(
    op: &'static str,
    x: usize,
    others: &[(&'static str, usize)],
    stats: usize,
    params: &[(&'static str, usize)],
    dim: usize,
) -> Result<usize> {
    let rows = rows(op, "x", x, dim)?;
    for &(name, found) in others {
        len(op, name, found, x)?;
    }
    len(op, "stats", stats, 2 * rows)?;
    for &(name, found) in params {
        len(op, name, found, dim)?;
    }
    Ok(rows)
}

/// Lengths of the buffers of an attention (forward: `dq`, `dkv`, `dprobs` absent).
pub(crate) struct AttentionBuffers {
    pub q: usize,
    pub kv: usize,
    pub ctx: usize,
    pub probs: usize,
    pub grads: Option<(usize, usize, usize)>,
}

pub(crate) fn attention(op: &'static str, s: &AttentionShape, b: AttentionBuffers) -> Result<()> {
    if let Some(mask) = &s.key_mask {
        if mask.len() != s.batch * s.keys {
            return Err(BackendError::Invalid {
                op,
                message: format!(
                    "key mask has {} entries for {} samples of {} keys",
                    mask.len(),
                    s.batch,
                    s.keys
                ),
            });
        }
    }
    let (q_len, kv_len) = (
        s.batch * s.queries * s.width(),
        s.batch * s.keys * 2 * s.width(),
    );
    len(op, "q", b.q, q_len)?;
    len(op, "kv", b.kv, kv_len)?;
    len(
        op,
        if b.grads.is_some() { "dctx" } else { "ctx" },
        b.ctx,
        q_len,
    )?;
    len(op, "probs", b.probs, s.probs_len())?;
    if let Some((dq, dkv, dprobs)) = b.grads {
        len(op, "dq", dq, q_len)?;
        len(op, "dkv", dkv, kv_len)?;
        len(op, "dprobs", dprobs, s.probs_len())?;
    }
    Ok(())
}

pub(crate) fn patchify(out: usize, pixels: usize, g: PatchGeometry) -> Result<()> {
    if g.patch == 0 || !g.height.is_multiple_of(g.patch) || !g.width.is_multiple_of(g.patch) {
        return Err(BackendError::Invalid {
            op: "patchify",
            message: format!(
                "{}×{} image is not a whole number of {} px patches",
                g.height, g.width, g.patch
            ),
        });
    }
    len(
        "patchify",
        "pixels",
        pixels,
        g.batch * g.channels * g.height * g.width,
    )?;
    len(
        "patchify",
        "out",
        out,
        g.batch * g.patches() * g.patch_len(),
    )
}

/// Whether the positions are one table per sample (rather than one shared table).
pub(crate) fn class_positions(
    out: usize,
    patches: usize,
    class: usize,
    pos: usize,
    batch: usize,
    tokens: usize,
    dim: usize,
) -> Result<bool> {
    const OP: &str = "prepend_class_add_positions";
    if tokens == 0 || (pos != tokens * dim && pos != batch * tokens * dim) {
        return Err(BackendError::Invalid {
            op: OP,
            message: format!(
                "positions hold {pos} values; expected {tokens}×{dim} or {batch}×{tokens}×{dim}"
            ),
        });
    }
    len(OP, "class", class, dim)?;
    len(OP, "patches", patches, batch * (tokens - 1) * dim)?;
    len(OP, "out", out, batch * tokens * dim)?;
    Ok(pos != tokens * dim)
}

pub(crate) fn concat(
    out: usize,
    a: usize,
    b: usize,
    batch: usize,
    a_tokens: usize,
    b_tokens: usize,
    dim: usize,
) -> Result<()> {
    len("concat_sequences", "a", a, batch * a_tokens * dim)?;
    len("concat_sequences", "b", b, batch * b_tokens * dim)?;
    len(
        "concat_sequences",
        "out",
        out,
        batch * (a_tokens + b_tokens) * dim,
    )
}

pub(crate) fn embed_tokens(
    out: usize,
    ids: &[u32],
    table: usize,
    pos: usize,
    seq: usize,
    dim: usize,
) -> Result<()> {
    let vocab = rows("embed_tokens", "table", table, dim)?;
    let positions = rows("embed_tokens", "pos", pos, dim)?;
    len("embed_tokens", "out", out, ids.len() * dim)?;
    if seq == 0 || !ids.len().is_multiple_of(seq) || seq > positions {
        return Err(BackendError::Invalid {
            op: "embed_tokens",
            message: format!(
                "{} ids in sequences of {seq} with {positions} positions",
                ids.len()
            ),
        });
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(BackendError::Invalid {
            op: "embed_tokens",
            message: format!("token id {bad} is outside the vocabulary of {vocab}"),
        });
    }
    Ok(())
}

/// `dense` is the buffer of `n` rows that the indices address, `gathered` the other one.
pub(crate) fn gather(
    op: &'static str,
    names: (&'static str, &'static str),
    dense: usize,
    gathered: usize,
    rows: &[usize],
    dim: usize,
) -> Result<()> {
    let n = self::rows(op, names.0, dense, dim)?;
    len(op, names.1, gathered, rows.len() * dim)?;
    match rows.iter().find(|&&r| r >= n) {
        Some(r) => Err(BackendError::Invalid {
            op,
            message: format!("row {r} is outside 0..{n}"),
        }),
        None => Ok(()),
    }
}

/// The number of rows; `same` are buffers as long as `a`.
pub(crate) fn cosine(
    op: &'static str,
    a: usize,
    same: &[(&'static str, usize)],
    scores: (&'static str, usize),
    dim: usize,
) -> Result<usize> {
    let rows = rows(op, "a", a, dim)?;
    for &(name, found) in same {
        len(op, name, found, a)?;
    }
    len(op, scores.0, scores.1, rows)?;
    Ok(rows)
}

pub(crate) fn linear(
    out: usize,
    x: usize,
    bias: Option<usize>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    len("linear", "out", out, m * n)?;
    len("linear", "x", x, m * k)?;
    match bias {
        Some(b) => len("linear", "bias", b, n),
        None => Ok(()),
    }
}

pub(crate) fn linear_backward(dx: usize, dy: usize, m: usize, k: usize, n: usize) -> Result<()> {
    len("linear_backward", "dx", dx, m * k)?;
    len("linear_backward", "dy", dy, m * n)
}

/// `head_mean`: x holds samples × heads × entries, out samples × entries, and ∇A is given
/// where the kind reads it. The number of samples.
pub(crate) fn head_mean(
    kind: HeadMean,
    out: usize,
    x: usize,
    grad: Option<usize>,
    heads: usize,
    entries: usize,
) -> Result<usize> {
    const OP: &str = "head_mean";
    let samples = head_maps(OP, kind, x, grad, heads, entries)?;
    len(OP, "out", out, samples * entries)?;
    Ok(samples)
}

/// `head_mean_matvec`: the maps as `head_mean` takes them, and each graph's sample, token
/// positions and vector inside them.
pub(crate) fn head_mean_matvec(
    kind: HeadMean,
    x: usize,
    grad: Option<usize>,
    heads: usize,
    tokens: usize,
    graphs: &[MeanGraph<'_>],
) -> Result<()> {
    const OP: &str = "head_mean_matvec";
    let samples = head_maps(OP, kind, x, grad, heads, tokens * tokens)?;
    for (i, g) in graphs.iter().enumerate() {
        let problem = if g.sample >= samples {
            Some(format!("sample {} of {samples}", g.sample))
        } else if let Some(t) = g.tokens.iter().find(|&&t| t >= tokens) {
            Some(format!("token {t} of {tokens}"))
        } else if g.vector.len() != g.tokens.len() {
            Some(format!(
                "a vector of {} values for {} tokens",
                g.vector.len(),
                g.tokens.len()
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(BackendError::Invalid {
                op: OP,
                message: format!("graph {i}: {problem}"),
            });
        }
    }
    Ok(())
}

/// `relevance_rows`: at least one layer, every layer's maps as `head_mean` takes them and of
/// the same samples, and each row's sample, token positions and query inside them. The
/// number of samples.
pub(crate) fn relevance_rows(
    product: RelevanceProduct,
    layers: &[(usize, Option<usize>)],
    heads: usize,
    tokens: usize,
    rows: &[ReadoutRow<'_>],
) -> Result<usize> {
    const OP: &str = "relevance_rows";
    let invalid = |message: String| BackendError::Invalid { op: OP, message };
    let kind = product.mean();
    let Some(&(x, grad)) = layers.first() else {
        return Err(invalid("no layers to multiply".into()));
    };
    let samples = head_maps(OP, kind, x, grad, heads, tokens * tokens)?;
    for (l, &(x_l, grad_l)) in layers.iter().enumerate() {
        if head_maps(OP, kind, x_l, grad_l, heads, tokens * tokens)? != samples {
            return Err(invalid(format!(
                "layer {l} holds {x_l} values where layer 0 holds {x}"
            )));
        }
    }
    readout_rows(OP, samples, tokens, rows)?;
    Ok(samples)
}

/// `head_rows`: A and ∇A as `head_mean` takes them, and each row inside them.
pub(crate) fn head_rows(
    x: usize,
    grad: usize,
    heads: usize,
    tokens: usize,
    rows: &[ReadoutRow<'_>],
) -> Result<()> {
    const OP: &str = "head_rows";
    let kind = HeadMean::PositiveGradient;
    let samples = head_maps(OP, kind, x, Some(grad), heads, tokens * tokens)?;
    readout_rows(OP, samples, tokens, rows)
}

/// Each row's sample, token positions and query inside `samples` samples of `tokens` tokens.
fn readout_rows(
    op: &'static str,
    samples: usize,
    tokens: usize,
    rows: &[ReadoutRow<'_>],
) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        let problem = if r.sample >= samples {
            Some(format!("sample {} of {samples}", r.sample))
        } else if let Some(t) = r.tokens.iter().find(|&&t| t >= tokens) {
            Some(format!("token {t} of {tokens}"))
        } else if r.query >= r.tokens.len() {
            Some(format!("query {} of {} tokens", r.query, r.tokens.len()))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(BackendError::Invalid {
                op,
                message: format!("row {i}: {problem}"),
            });
        }
    }
    Ok(())
}

/// Attention-shaped maps of `heads` heads × `entries` entries per sample in x (and ∇A where
/// the kind reads it): the number of samples.
fn head_maps(
    op: &'static str,
    kind: HeadMean,
    x: usize,
    grad: Option<usize>,
    heads: usize,
    entries: usize,
) -> Result<usize> {
    let per_sample = heads * entries;
    if per_sample == 0 || !x.is_multiple_of(per_sample) {
        return Err(BackendError::Invalid {
            op,
            message: format!(
                "{x} values are not whole samples of {heads} heads × {entries} entries"
            ),
        });
    }
    let samples = x / per_sample;
    match (kind.reads_gradient(), grad) {
        (true, None) => Err(BackendError::Invalid {
            op,
            message: format!("{kind:?} reads ∇A, and none was given"),
        }),
        (true, Some(g)) => len(op, "grad", g, x).map(|_| samples),
        (false, _) => Ok(samples),
    }
}

/// `fiedler_rows`: every row index inside its buffer of `dim`-wide rows.
pub(crate) fn graph_rows(dim: usize, graphs: &[(usize, &[usize])]) -> Result<()> {
    const OP: &str = "fiedler_rows";
    for &(len, rows) in graphs {
        let available = self::rows(OP, "features", len, dim)?;
        if let Some(&r) = rows.iter().find(|&&r| r >= available) {
            return Err(BackendError::Invalid {
                op: OP,
                message: format!("row {r} of a buffer of {available} rows"),
            });
        }
    }
    Ok(())
}

/// `lrp_linear`'s activations (the weights' lengths depend on the backend's storage).
/// `forward` is the (output, bias) lengths when given.
pub(crate) fn lrp_linear(
    rx: usize,
    r: usize,
    x: usize,
    forward: Option<(usize, usize)>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    const OP: &str = "lrp_linear";
    if let Some((out, bias)) = forward {
        len(OP, "forward output", out, m * n)?;
        len(OP, "bias", bias, n)?;
    }
    len(OP, "rx", rx, m * k)?;
    len(OP, "x", x, m * k)?;
    len(OP, "r", r, m * n)
}

/// `lrp_attention`: the attention backward's buffers (cam in the place of dprobs), and rctx
/// as long as ctx.
pub(crate) fn lrp_attention(s: &AttentionShape, b: AttentionBuffers, rctx: usize) -> Result<()> {
    const OP: &str = "lrp_attention";
    let ctx = b.ctx;
    attention(OP, s, b)?;
    len(OP, "rctx", rctx, ctx)
}

/// `lrp_add`: every buffer as long as r, which splits into `samples` equal runs.
pub(crate) fn lrp_add(
    ra: usize,
    rb: usize,
    r: usize,
    a: usize,
    b: usize,
    samples: usize,
) -> Result<()> {
    const OP: &str = "lrp_add";
    for (name, found) in [("ra", ra), ("rb", rb), ("a", a), ("b", b)] {
        len(OP, name, found, r)?;
    }
    if samples == 0 || !r.is_multiple_of(samples) {
        return Err(BackendError::Invalid {
            op: OP,
            message: format!("{r} values do not split into {samples} samples"),
        });
    }
    Ok(())
}

/// `lrp_clone`: rx and every relevance as long as x.
pub(crate) fn lrp_clone(rx: usize, x: usize, rs: impl IntoIterator<Item = usize>) -> Result<()> {
    len("lrp_clone", "rx", rx, x)?;
    for r in rs {
        len("lrp_clone", "relevance", r, x)?;
    }
    Ok(())
}
