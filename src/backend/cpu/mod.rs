//! The CPU backend: f32 buffers in host memory, rayon threads, blocked GEMM. It is the oracle
//! every other backend is tested against.

mod activation;
mod attention;
mod embed;
mod head;
mod lrp;
pub(crate) mod matmul;
mod norm;

use super::{Activation, AttentionShape, Backend, BackendError, PatchGeometry, Result};

#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

fn check(op: &'static str, buffer: &'static str, buf: &[f32], expected: usize) -> Result<()> {
    if buf.len() == expected {
        Ok(())
    } else {
        Err(BackendError::Length {
            op,
            buffer,
            expected,
            found: buf.len(),
        })
    }
}

fn check_rows(op: &'static str, buffer: &'static str, buf: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 || buf.len() % dim != 0 {
        return Err(BackendError::Invalid {
            op,
            message: format!(
                "buffer `{buffer}` of {} elements is not made of rows of {dim}",
                buf.len()
            ),
        });
    }
    Ok(buf.len() / dim)
}

fn check_attention(op: &'static str, s: &AttentionShape) -> Result<()> {
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
    Ok(())
}

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    /// Stored twice, `[in, out]` then `[out, in]`: the gemm crate runs a product 3–10× faster
    /// when its right operand is row-major and few tokens are in flight (the weight is then
    /// streamed without repacking), and the forward (x·Wᵀ) and the backward (dy·W) each want
    /// one of the two orders. Measured on the 2-core dev machine at 50×768×3072: forward
    /// 2.7 ms either way round with `[in, out]`, backward 9.5 ms from `[in, out]` against
    /// ~1.5 ms from `[out, in]`. Weights take twice the memory; activations dominate anyway.
    fn upload_weight(&self, w: &[f32], out: usize, input: usize) -> Result<Vec<f32>> {
        check("upload_weight", "w", w, out * input)?;
        let mut both = vec![0.0; 2 * w.len()];
        for (o, row) in w.chunks_exact(input).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                both[i * out + o] = v;
            }
        }
        both[w.len()..].copy_from_slice(w);
        Ok(both)
    }

    fn copy(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn linear(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        check("linear", "out", out, m * n)?;
        check("linear", "x", x, m * k)?;
        check("linear", "weight", w, 2 * n * k)?;
        if let Some(b) = bias {
            check("linear", "bias", b, n)?;
        }
        matmul::linear(out, x, &w[..n * k], bias.map(|b| b.as_slice()), m, k, n);
        Ok(())
    }

    fn linear_backward(
        &self,
        dx: &mut Vec<f32>,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        check("linear_backward", "dx", dx, m * k)?;
        check("linear_backward", "dy", dy, m * n)?;
        check("linear_backward", "weight", w, 2 * n * k)?;
        matmul::linear_backward(dx, dy, &w[n * k..], m, k, n, accumulate);
        Ok(())
    }

    fn layernorm(
        &self,
        out: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let rows = check_rows("layernorm", "x", x, dim)?;
        check("layernorm", "out", out, x.len())?;
        check("layernorm", "stats", stats, 2 * rows)?;
        check("layernorm", "gamma", gamma, dim)?;
        check("layernorm", "beta", beta, dim)?;
        norm::layernorm(out, stats, x, gamma, beta, dim, eps);
        Ok(())
    }

    fn layernorm_backward(
        &self,
        dx: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        stats: &Vec<f32>,
        gamma: &Vec<f32>,
        dim: usize,
        accumulate: bool,
    ) -> Result<()> {
        let rows = check_rows("layernorm_backward", "x", x, dim)?;
        check("layernorm_backward", "dx", dx, x.len())?;
        check("layernorm_backward", "dy", dy, x.len())?;
        check("layernorm_backward", "stats", stats, 2 * rows)?;
        check("layernorm_backward", "gamma", gamma, dim)?;
        norm::layernorm_backward(dx, dy, x, stats, gamma, dim, accumulate);
        Ok(())
    }

    fn activation(&self, out: &mut Vec<f32>, x: &Vec<f32>, act: Activation) -> Result<()> {
        check("activation", "out", out, x.len())?;
        activation::activation(out, x, act);
        Ok(())
    }

    fn activation_backward(
        &self,
        dx: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        act: Activation,
    ) -> Result<()> {
        check("activation_backward", "dx", dx, x.len())?;
        check("activation_backward", "dy", dy, x.len())?;
        activation::activation_backward(dx, dy, x, act);
        Ok(())
    }

    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>) -> Result<()> {
        check("add", "out", out, a.len())?;
        check("add", "b", b, a.len())?;
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
        Ok(())
    }

    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<()> {
        check("add_assign", "src", src, dst.len())?;
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
        Ok(())
    }

    fn attention(
        &self,
        probs: &mut Vec<f32>,
        ctx: &mut Vec<f32>,
        q: &Vec<f32>,
        kv: &Vec<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        check_attention("attention", s)?;
        check("attention", "q", q, s.batch * s.queries * s.width())?;
        check("attention", "kv", kv, s.batch * s.keys * 2 * s.width())?;
        check("attention", "ctx", ctx, s.batch * s.queries * s.width())?;
        check("attention", "probs", probs, s.probs_len())?;
        attention::attention(probs, ctx, q, kv, s);
        Ok(())
    }

    fn attention_backward(
        &self,
        dprobs: &mut Vec<f32>,
        dq: &mut Vec<f32>,
        dkv: &mut Vec<f32>,
        dctx: &Vec<f32>,
        q: &Vec<f32>,
        kv: &Vec<f32>,
        probs: &Vec<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        check_attention("attention_backward", s)?;
        let (q_len, kv_len) = (
            s.batch * s.queries * s.width(),
            s.batch * s.keys * 2 * s.width(),
        );
        check("attention_backward", "q", q, q_len)?;
        check("attention_backward", "dq", dq, q_len)?;
        check("attention_backward", "kv", kv, kv_len)?;
        check("attention_backward", "dkv", dkv, kv_len)?;
        check("attention_backward", "dctx", dctx, q_len)?;
        check("attention_backward", "probs", probs, s.probs_len())?;
        check("attention_backward", "dprobs", dprobs, s.probs_len())?;
        attention::attention_backward(dprobs, dq, dkv, dctx, q, kv, probs, s);
        Ok(())
    }

    fn patchify(&self, out: &mut Vec<f32>, pixels: &Vec<f32>, g: PatchGeometry) -> Result<()> {
        if g.patch == 0 || g.height % g.patch != 0 || g.width % g.patch != 0 {
            return Err(BackendError::Invalid {
                op: "patchify",
                message: format!(
                    "{}×{} image is not a whole number of {} px patches",
                    g.height, g.width, g.patch
                ),
            });
        }
        check(
            "patchify",
            "pixels",
            pixels,
            g.batch * g.channels * g.height * g.width,
        )?;
        check(
            "patchify",
            "out",
            out,
            g.batch * g.patches() * g.patch_len(),
        )?;
        embed::patchify(out, pixels, g);
        Ok(())
    }

    fn prepend_class_add_positions(
        &self,
        out: &mut Vec<f32>,
        patches: &Vec<f32>,
        class: &Vec<f32>,
        pos: &Vec<f32>,
        batch: usize,
        tokens: usize,
        dim: usize,
    ) -> Result<()> {
        const OP: &str = "prepend_class_add_positions";
        if tokens == 0 || (pos.len() != tokens * dim && pos.len() != batch * tokens * dim) {
            return Err(BackendError::Invalid {
                op: OP,
                message: format!(
                    "positions hold {} values; expected {tokens}×{dim} or {batch}×{tokens}×{dim}",
                    pos.len()
                ),
            });
        }
        check(OP, "class", class, dim)?;
        check(OP, "patches", patches, batch * (tokens - 1) * dim)?;
        check(OP, "out", out, batch * tokens * dim)?;
        embed::prepend_class_add_positions(out, patches, class, pos, tokens, dim);
        Ok(())
    }

    fn concat_sequences(
        &self,
        out: &mut Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        batch: usize,
        a_tokens: usize,
        b_tokens: usize,
        dim: usize,
    ) -> Result<()> {
        check("concat_sequences", "a", a, batch * a_tokens * dim)?;
        check("concat_sequences", "b", b, batch * b_tokens * dim)?;
        check(
            "concat_sequences",
            "out",
            out,
            batch * (a_tokens + b_tokens) * dim,
        )?;
        embed::concat_sequences(out, a, b, a_tokens, b_tokens, dim);
        Ok(())
    }

    fn add_row_vector(&self, x: &mut Vec<f32>, v: &Vec<f32>) -> Result<()> {
        check_rows("add_row_vector", "x", x, v.len())?;
        for row in x.chunks_exact_mut(v.len()) {
            row.iter_mut().zip(v).for_each(|(x, v)| *x += v);
        }
        Ok(())
    }

    fn embed_tokens(
        &self,
        out: &mut Vec<f32>,
        ids: &[u32],
        table: &Vec<f32>,
        pos: &Vec<f32>,
        seq: usize,
        dim: usize,
    ) -> Result<()> {
        let vocab = check_rows("embed_tokens", "table", table, dim)?;
        let positions = check_rows("embed_tokens", "pos", pos, dim)?;
        check("embed_tokens", "out", out, ids.len() * dim)?;
        if seq == 0 || ids.len() % seq != 0 || seq > positions {
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
        embed::embed_tokens(out, ids, table, pos, seq, dim);
        Ok(())
    }

    fn gather_rows(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        let n = check_rows("gather_rows", "x", x, dim)?;
        check("gather_rows", "out", out, rows.len() * dim)?;
        check_row_indices("gather_rows", rows, n)?;
        embed::gather_rows(out, x, rows, dim);
        Ok(())
    }

    fn gather_rows_backward(
        &self,
        dx: &mut Vec<f32>,
        dy: &Vec<f32>,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        let n = check_rows("gather_rows_backward", "dx", dx, dim)?;
        check("gather_rows_backward", "dy", dy, rows.len() * dim)?;
        check_row_indices("gather_rows_backward", rows, n)?;
        embed::gather_rows_backward(dx, dy, rows, dim);
        Ok(())
    }

    fn cosine_scores(
        &self,
        scores: &mut Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        scale: f32,
        dim: usize,
    ) -> Result<()> {
        let rows = check_rows("cosine_scores", "a", a, dim)?;
        check("cosine_scores", "b", b, a.len())?;
        check("cosine_scores", "scores", scores, rows)?;
        head::cosine_scores(scores, a, b, scale, dim);
        Ok(())
    }

    fn cosine_scores_backward(
        &self,
        da: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dscores: &Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        scale: f32,
        dim: usize,
    ) -> Result<()> {
        let rows = check_rows("cosine_scores_backward", "a", a, dim)?;
        for (name, buf) in [("b", &*b), ("da", &*da), ("db", &*db)] {
            check("cosine_scores_backward", name, buf, a.len())?;
        }
        check("cosine_scores_backward", "dscores", dscores, rows)?;
        head::cosine_scores_backward(da, db, dscores, a, b, scale, dim);
        Ok(())
    }

    fn abs_weight(&self, w: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(w.iter().map(|v| v.abs()).collect())
    }

    fn lrp_linear(
        &self,
        rx: &mut Vec<f32>,
        r: &Vec<f32>,
        x: &Vec<f32>,
        forward: Option<(&Vec<f32>, &Vec<f32>)>,
        w: &Vec<f32>,
        w_abs: &Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        if let Some((out, bias)) = forward {
            check("lrp_linear", "forward output", out, m * n)?;
            check("lrp_linear", "bias", bias, n)?;
        }
        check("lrp_linear", "rx", rx, m * k)?;
        check("lrp_linear", "x", x, m * k)?;
        check("lrp_linear", "r", r, m * n)?;
        check("lrp_linear", "weight", w, 2 * n * k)?;
        check("lrp_linear", "abs weight", w_abs, 2 * n * k)?;
        let (wt, w) = w.split_at(n * k);
        let forward = forward.map(|(o, b)| (o.as_slice(), b.as_slice()));
        lrp::lrp_linear(
            rx,
            r,
            x,
            forward,
            (wt, w),
            w_abs.split_at(n * k),
            m,
            k,
            n,
            accumulate,
        );
        Ok(())
    }

    fn lrp_attention(
        &self,
        cam: &mut Vec<f32>,
        rq: &mut Vec<f32>,
        rkv: &mut Vec<f32>,
        rctx: &Vec<f32>,
        q: &Vec<f32>,
        kv: &Vec<f32>,
        probs: &Vec<f32>,
        ctx: &Vec<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        const OP: &str = "lrp_attention";
        check_attention(OP, s)?;
        let (q_len, kv_len) = (
            s.batch * s.queries * s.width(),
            s.batch * s.keys * 2 * s.width(),
        );
        for (name, buf) in [("q", q), ("rq", &*rq), ("rctx", rctx), ("ctx", ctx)] {
            check(OP, name, buf, q_len)?;
        }
        check(OP, "kv", kv, kv_len)?;
        check(OP, "rkv", rkv, kv_len)?;
        check(OP, "probs", probs, s.probs_len())?;
        check(OP, "cam", cam, s.probs_len())?;
        lrp::lrp_attention(cam, rq, rkv, rctx, q, kv, probs, ctx, s);
        Ok(())
    }

    fn lrp_add(
        &self,
        ra: &mut Vec<f32>,
        rb: &mut Vec<f32>,
        r: &Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        samples: usize,
    ) -> Result<()> {
        for (name, buf) in [("ra", &*ra), ("rb", &*rb), ("a", a), ("b", b)] {
            check("lrp_add", name, buf, r.len())?;
        }
        check_samples("lrp_add", r.len(), samples)?;
        lrp::lrp_add(ra, rb, r, a, b, samples);
        Ok(())
    }

    fn lrp_clone(&self, rx: &mut Vec<f32>, x: &Vec<f32>, rs: &[&Vec<f32>]) -> Result<()> {
        check("lrp_clone", "rx", rx, x.len())?;
        for r in rs {
            check("lrp_clone", "relevance", r, x.len())?;
        }
        let rs: Vec<&[f32]> = rs.iter().map(|r| r.as_slice()).collect();
        lrp::lrp_clone(rx, x, &rs);
        Ok(())
    }
}

fn check_samples(op: &'static str, len: usize, samples: usize) -> Result<()> {
    if samples == 0 || !len.is_multiple_of(samples) {
        return Err(BackendError::Invalid {
            op,
            message: format!("{len} values do not split into {samples} samples"),
        });
    }
    Ok(())
}

fn check_row_indices(op: &'static str, rows: &[usize], n: usize) -> Result<()> {
    match rows.iter().find(|&&r| r >= n) {
        Some(r) => Err(BackendError::Invalid {
            op,
            message: format!("row {r} is outside 0..{n}"),
        }),
        None => Ok(()),
    }
}
