//! The CPU backend: f32 buffers in host memory, rayon threads, blocked GEMM. It is the oracle
//! every other backend is tested against.

mod activation;
mod attention;
mod embed;
mod head;
pub(crate) mod lrp;
pub(crate) mod matmul;
pub mod memory;
mod norm;
pub mod relevance;
mod simd;

pub use attention::{head_mean, head_mean_matvec, head_rows, head_rows_of};
pub use matmul::matmul_flops;
use matmul::Panels;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::linalg::{fiedler_unmasked, Fiedler, GraphOptions, SpectralError};

use super::{
    check, Activation, AttentionShape, Backend, HeadMean, HeadRows, MeanGraph, PatchGeometry,
    ReadoutRow, RelevanceProduct, Result,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

/// Elements per rayon task of the elementwise ops; shorter buffers stay on one thread.
const PARALLEL_LEN: usize = 1 << 15;

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        memory::check_fits("upload", std::mem::size_of_val(host))?;
        Ok(host.to_vec())
    }

    /// Large buffers are zeroed by every thread: a trace allocates hundreds of megabytes
    /// per batch, and zeroing them on the calling thread alone was 2% of an explanation
    /// with the other threads idle.
    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        memory::check_fits("allocation", len.saturating_mul(4))?;
        if len < PARALLEL_LEN {
            return Ok(vec![0.0; len]);
        }
        let mut buf = Vec::with_capacity(len);
        buf.spare_capacity_mut()[..len]
            .par_chunks_mut(PARALLEL_LEN)
            .for_each(|part| part.fill(MaybeUninit::new(0.0)));
        // SAFETY: the first `len` elements were just written.
        unsafe { buf.set_len(len) };
        Ok(buf)
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        memory::check_fits("download", std::mem::size_of_val(buf.as_slice()))?;
        Ok(buf.clone())
    }

    fn move_to_host(&self, buf: Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf)
    }

    /// Stored twice, in panels of 64 output features and in panels of 64 input features
    /// (`matmul::Panels`): the layouts the gemm crate's microkernel streams for the forward
    /// (x·Wᵀ) and the backward (dy·W), so no product repacks a weight. Weights take twice
    /// the memory; activations dominate anyway.
    fn upload_weight(&self, w: &[f32], out: usize, input: usize) -> Result<Vec<f32>> {
        check::len("upload_weight", "w", w.len(), out * input)?;
        Ok(Panels::pack(w, out, input))
    }

    fn copy(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        memory::check_fits("copy", std::mem::size_of_val(buf.as_slice()))?;
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
        check::linear(out.len(), x.len(), bias.map(|b| b.len()), m, k, n)?;
        check::len("linear", "weight", w.len(), Panels::stored_len(n, k))?;
        matmul::linear(
            out,
            x,
            Panels::of(w, n, k),
            bias.map(|b| b.as_slice()),
            m,
            k,
            n,
        );
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
        check::linear_backward(dx.len(), dy.len(), m, k, n)?;
        check::len(
            "linear_backward",
            "weight",
            w.len(),
            Panels::stored_len(n, k),
        )?;
        matmul::linear_backward(dx, dy, Panels::of(w, n, k), m, k, n, accumulate);
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
        check::layernorm(
            "layernorm",
            x.len(),
            &[("out", out.len())],
            stats.len(),
            &[("gamma", gamma.len()), ("beta", beta.len())],
            dim,
        )?;
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
        check::layernorm(
            "layernorm_backward",
            x.len(),
            &[("dx", dx.len()), ("dy", dy.len())],
            stats.len(),
            &[("gamma", gamma.len())],
            dim,
        )?;
        norm::layernorm_backward(dx, dy, x, stats, gamma, dim, accumulate);
        Ok(())
    }

    fn activation(&self, out: &mut Vec<f32>, x: &Vec<f32>, act: Activation) -> Result<()> {
        check::len("activation", "out", out.len(), x.len())?;
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
        check::len("activation_backward", "dx", dx.len(), x.len())?;
        check::len("activation_backward", "dy", dy.len(), x.len())?;
        activation::activation_backward(dx, dy, x, act);
        Ok(())
    }

    fn add(&self, out: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>) -> Result<()> {
        check::len("add", "out", out.len(), a.len())?;
        check::len("add", "b", b.len(), a.len())?;
        out.par_chunks_mut(PARALLEL_LEN)
            .zip(a.par_chunks(PARALLEL_LEN).zip(b.par_chunks(PARALLEL_LEN)))
            .for_each(|(out, (a, b))| {
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = a + b;
                }
            });
        Ok(())
    }

    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<()> {
        check::len("add_assign", "src", src.len(), dst.len())?;
        dst.par_chunks_mut(PARALLEL_LEN)
            .zip(src.par_chunks(PARALLEL_LEN))
            .for_each(|(dst, src)| dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s));
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
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: ctx.len(),
            probs: probs.len(),
            grads: None,
        };
        check::attention("attention", s, lens)?;
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
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: dctx.len(),
            probs: probs.len(),
            grads: Some((dq.len(), dkv.len(), dprobs.len())),
        };
        check::attention("attention_backward", s, lens)?;
        attention::attention_backward(dprobs, dq, dkv, dctx, q, kv, probs, s);
        Ok(())
    }

    fn fiedler_rows(
        &self,
        graphs: &[(&Vec<f32>, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<std::result::Result<Fiedler, SpectralError>>> {
        let lens: Vec<(usize, &[usize])> = graphs.iter().map(|(b, r)| (b.len(), *r)).collect();
        check::graph_rows(dim, &lens)?;
        let graphs: Vec<(&[f32], &[usize])> =
            graphs.iter().map(|(b, r)| (b.as_slice(), *r)).collect();
        Ok(fiedler_of_rows(&graphs, dim, opts))
    }

    fn head_mean(
        &self,
        out: &mut Vec<f32>,
        kind: HeadMean,
        x: &Vec<f32>,
        grad: Option<&Vec<f32>>,
        heads: usize,
        entries: usize,
    ) -> Result<()> {
        let g = grad.map(Vec::len);
        check::head_mean(kind, out.len(), x.len(), g, heads, entries)?;
        head_mean(out, kind, x, grad.map(Vec::as_slice), heads, entries);
        Ok(())
    }

    fn head_mean_matvec(
        &self,
        kind: HeadMean,
        x: &Vec<f32>,
        grad: Option<&Vec<f32>>,
        heads: usize,
        tokens: usize,
        graphs: &[MeanGraph<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        let g = grad.map(Vec::len);
        check::head_mean_matvec(kind, x.len(), g, heads, tokens, graphs)?;
        let grad = grad.map(Vec::as_slice);
        Ok(head_mean_matvec(kind, x, grad, heads, tokens, graphs))
    }

    fn head_rows(
        &self,
        x: &Vec<f32>,
        grad: &Vec<f32>,
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<HeadRows>> {
        check::head_rows(x.len(), grad.len(), heads, tokens, rows)?;
        Ok(head_rows(x, grad, heads, tokens, rows))
    }

    fn relevance_rows(
        &self,
        product: RelevanceProduct,
        layers: &[(&Vec<f32>, Option<&Vec<f32>>)],
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        let sizes: Vec<_> = layers
            .iter()
            .map(|(x, g)| (x.len(), g.map(|g| g.len())))
            .collect();
        let samples = check::relevance_rows(product, &sizes, heads, tokens, rows)?;
        let entries = tokens * tokens;
        let mut states: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| relevance::row_start(product, r.tokens.len(), r.query))
            .collect();
        let mut mean = vec![0.0; samples * entries];
        for &(x, grad) in layers.iter().rev() {
            head_mean(
                &mut mean,
                product.mean(),
                x,
                grad.map(Vec::as_slice),
                heads,
                entries,
            );
            states.par_iter_mut().zip(rows).for_each(|(state, r)| {
                let padded = &mean[r.sample * entries..(r.sample + 1) * entries];
                let m = relevance::gather_square(padded, tokens, r.tokens);
                relevance::row_step(product, state, &m, r.query);
            });
        }
        Ok(states
            .into_iter()
            .zip(rows)
            .map(|(state, r)| relevance::row_finish(product, state, r.query))
            .collect())
    }

    fn patchify(&self, out: &mut Vec<f32>, pixels: &Vec<f32>, g: PatchGeometry) -> Result<()> {
        check::patchify(out.len(), pixels.len(), g)?;
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
        check::class_positions(
            out.len(),
            patches.len(),
            class.len(),
            pos.len(),
            batch,
            tokens,
            dim,
        )?;
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
        check::concat(out.len(), a.len(), b.len(), batch, a_tokens, b_tokens, dim)?;
        embed::concat_sequences(out, a, b, a_tokens, b_tokens, dim);
        Ok(())
    }

    fn add_row_vector(&self, x: &mut Vec<f32>, v: &Vec<f32>) -> Result<()> {
        check::rows("add_row_vector", "x", x.len(), v.len())?;
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
        check::embed_tokens(out.len(), ids, table.len(), pos.len(), seq, dim)?;
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
        check::gather("gather_rows", ("x", "out"), x.len(), out.len(), rows, dim)?;
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
        let names = ("dx", "dy");
        check::gather("gather_rows_backward", names, dx.len(), dy.len(), rows, dim)?;
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
        let same = [("b", b.len())];
        check::cosine(
            "cosine_scores",
            a.len(),
            &same,
            ("scores", scores.len()),
            dim,
        )?;
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
        let same = [("b", b.len()), ("da", da.len()), ("db", db.len())];
        let scores = ("dscores", dscores.len());
        check::cosine("cosine_scores_backward", a.len(), &same, scores, dim)?;
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
        let forward_lens = forward.map(|(o, b)| (o.len(), b.len()));
        check::lrp_linear(rx.len(), r.len(), x.len(), forward_lens, m, k, n)?;
        // Its temporaries: |x|, c and c_abs (m × k each); z, |z| and s (m × n each).
        let temporaries = (3 * m * n).saturating_add(3 * m * k);
        memory::check_fits("lrp_linear", temporaries.saturating_mul(4))?;
        check::len("lrp_linear", "weight", w.len(), Panels::stored_len(n, k))?;
        check::len(
            "lrp_linear",
            "abs weight",
            w_abs.len(),
            Panels::stored_len(n, k),
        )?;
        let forward = forward.map(|(o, b)| (o.as_slice(), b.as_slice()));
        lrp::lrp_linear(
            rx,
            r,
            x,
            forward,
            Panels::of(w, n, k),
            Panels::of(w_abs, n, k),
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
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: ctx.len(),
            probs: probs.len(),
            grads: Some((rq.len(), rkv.len(), cam.len())),
        };
        check::lrp_attention(s, lens, rctx.len())?;
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
        check::lrp_add(ra.len(), rb.len(), r.len(), a.len(), b.len(), samples)?;
        lrp::lrp_add(ra, rb, r, a, b, samples);
        Ok(())
    }

    fn lrp_clone(&self, rx: &mut Vec<f32>, x: &Vec<f32>, rs: &[&Vec<f32>]) -> Result<()> {
        check::lrp_clone(rx.len(), x.len(), rs.iter().map(|r| r.len()))?;
        let rs: Vec<&[f32]> = rs.iter().map(|r| r.as_slice()).collect();
        lrp::lrp_clone(rx, x, &rs);
        Ok(())
    }
}

/// The Fiedler vector of each graph whose nodes are the rows `rows` of `features`
/// (`dim` wide; rows checked by the caller), on the CPU solvers.
pub(crate) fn fiedler_of_rows(
    graphs: &[(&[f32], &[usize])],
    dim: usize,
    opts: &GraphOptions,
) -> Vec<std::result::Result<Fiedler, SpectralError>> {
    let features: Vec<Vec<f32>> = graphs
        .iter()
        .map(|(buf, rows)| {
            rows.iter()
                .flat_map(|&r| buf[r * dim..(r + 1) * dim].iter().copied())
                .collect()
        })
        .collect();
    let graphs: Vec<(&[f32], usize)> = features
        .iter()
        .zip(graphs)
        .map(|(f, (_, rows))| (&f[..], rows.len()))
        .collect();
    fiedler_unmasked(&graphs, dim, opts)
}
