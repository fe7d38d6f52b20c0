//! The dense products of the linear layers and the attention, as strided-batched GEMM calls
//! on device addresses. Pure functions: the tests below run the very same calls through a
//! host emulation of cuBLAS's column-major SGEMM and hold the results to the CPU backend,
//! so the operand bookkeeping (offsets, leading dimensions, transposes, batch strides) is
//! checked on machines without a GPU.
//!
//! Layouts (see `backend`): activations row-major; a linear weight `[out, in]`; queries
//! (and ctx, dq) `[batch·queries, width]` with head h at columns h·head_dim; keys and values
//! in `[batch·keys, 2·width]` rows, keys first; probabilities `[batch, heads, queries, keys]`.
//! Attention products loop over heads and batch over samples, or the other way round,
//! whichever makes fewer calls (one uniform stride each way).

use crate::backend::AttentionShape;

/// A device address (`CUdeviceptr`).
pub type Addr = u64;

/// One row-major operand: address (+ element offset), leading dimension, whether the
/// product reads it transposed, and the element stride between batch entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operand {
    pub ptr: Addr,
    pub ld: usize,
    pub transposed: bool,
    pub batch_stride: usize,
}

impl Operand {
    pub fn rows(ptr: Addr, offset: usize, ld: usize) -> Self {
        Self {
            ptr: ptr + 4 * offset as u64,
            ld,
            transposed: false,
            batch_stride: 0,
        }
    }

    pub fn t(self) -> Self {
        Self {
            transposed: true,
            ..self
        }
    }

    pub fn stride(self, batch_stride: usize) -> Self {
        Self {
            batch_stride,
            ..self
        }
    }
}

/// c[m, n] (row-major) = alpha·op(a)[m, k]·op(b)[k, n] + beta·c, `batch` times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// (m, n, k).
    pub shape: (usize, usize, usize),
    pub alpha: f32,
    pub a: Operand,
    pub b: Operand,
    pub beta: f32,
    pub c: Operand,
    pub batch: usize,
}

/// out[m, n] = x[m, k] · w[n, k]ᵀ.
pub fn linear(x: Addr, w: Addr, out: Addr, m: usize, k: usize, n: usize) -> Gemm {
    Gemm {
        shape: (m, n, k),
        alpha: 1.0,
        a: Operand::rows(x, 0, k),
        b: Operand::rows(w, 0, k).t(),
        beta: 0.0,
        c: Operand::rows(out, 0, n),
        batch: 1,
    }
}

/// dx[m, k] (+)= dy[m, n] · w[n, k].
pub fn linear_backward(
    dy: Addr,
    w: Addr,
    dx: Addr,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Gemm {
    Gemm {
        shape: (m, k, n),
        alpha: 1.0,
        a: Operand::rows(dy, 0, n),
        b: Operand::rows(w, 0, k),
        beta: if accumulate { 1.0 } else { 0.0 },
        c: Operand::rows(dx, 0, k),
        batch: 1,
    }
}

/// One call's view of the attention buffers. A product runs either once per head, batched
/// over samples, or once per sample, batched over heads: both strides are uniform in every
/// buffer, and `split` takes whichever makes fewer calls (at batch 1, one call instead of
/// one per head).
struct Blocks<'a> {
    s: &'a AttentionShape,
    /// Sample `index`, batched over heads; else head `index`, batched over samples.
    by_sample: bool,
    index: usize,
}

impl Blocks<'_> {
    /// The operand at `offset` + this call's head or sample, given the element steps from
    /// one head and one sample to the next.
    fn operand(&self, ptr: Addr, offset: usize, ld: usize, head: usize, sample: usize) -> Operand {
        let (at, stride) = if self.by_sample {
            (self.index * sample, head)
        } else {
            (self.index * head, sample)
        };
        Operand::rows(ptr, offset + at, ld).stride(stride)
    }

    fn batch(&self) -> usize {
        if self.by_sample {
            self.s.heads
        } else {
            self.s.batch
        }
    }

    fn q(&self, ptr: Addr) -> Operand {
        let s = self.s;
        self.operand(ptr, 0, s.width(), s.head_dim, s.queries * s.width())
    }

    fn k(&self, ptr: Addr) -> Operand {
        let s = self.s;
        self.operand(ptr, 0, 2 * s.width(), s.head_dim, s.keys * 2 * s.width())
    }

    fn v(&self, ptr: Addr) -> Operand {
        let s = self.s;
        self.operand(
            ptr,
            s.width(),
            2 * s.width(),
            s.head_dim,
            s.keys * 2 * s.width(),
        )
    }

    fn p(&self, ptr: Addr) -> Operand {
        let s = self.s;
        let block = s.queries * s.keys;
        self.operand(ptr, 0, s.keys, block, s.heads * block)
    }
}

/// The products of every call, in order; `call` gives those of one.
fn split<const N: usize>(s: &AttentionShape, call: impl Fn(&Blocks) -> [Gemm; N]) -> Vec<Gemm> {
    let by_sample = s.batch < s.heads;
    let calls = if by_sample { s.batch } else { s.heads };
    (0..calls)
        .flat_map(|index| {
            call(&Blocks {
                s,
                by_sample,
                index,
            })
        })
        .collect()
}

/// probs_h = scale · Q_h · K_hᵀ (the scores, before the softmax).
pub fn attention_scores(s: &AttentionShape, q: Addr, kv: Addr, probs: Addr) -> Vec<Gemm> {
    scores(s, q, kv, probs, s.scale())
}

/// out_h = Q_h · K_hᵀ, unscaled: the denominator of LRP's rule for the scores (spec §D).
pub fn lrp_scores(s: &AttentionShape, q: Addr, kv: Addr, out: Addr) -> Vec<Gemm> {
    scores(s, q, kv, out, 1.0)
}

fn scores(s: &AttentionShape, q: Addr, kv: Addr, out: Addr, alpha: f32) -> Vec<Gemm> {
    split(s, |g| {
        [Gemm {
            shape: (s.queries, s.keys, s.head_dim),
            alpha,
            a: g.q(q),
            b: g.k(kv).t(),
            beta: 0.0,
            c: g.p(out),
            batch: g.batch(),
        }]
    })
}

/// ctx_h = P_h · V_h.
pub fn attention_context(s: &AttentionShape, probs: Addr, kv: Addr, ctx: Addr) -> Vec<Gemm> {
    split(s, |g| {
        [Gemm {
            shape: (s.queries, s.head_dim, s.keys),
            alpha: 1.0,
            a: g.p(probs),
            b: g.v(kv),
            beta: 0.0,
            c: g.q(ctx),
            batch: g.batch(),
        }]
    })
}

/// ∂y/∂A_h = dctx_h · V_hᵀ, over every entry (masked ones included, as autograd).
pub fn attention_dprobs(s: &AttentionShape, dctx: Addr, kv: Addr, dprobs: Addr) -> Vec<Gemm> {
    split(s, |g| {
        [Gemm {
            shape: (s.queries, s.keys, s.head_dim),
            alpha: 1.0,
            a: g.q(dctx),
            b: g.v(kv).t(),
            beta: 0.0,
            c: g.p(dprobs),
            batch: g.batch(),
        }]
    })
}

/// Device addresses of the attention backward's inputs and outputs.
pub struct BackwardAddrs {
    pub q: Addr,
    pub kv: Addr,
    pub probs: Addr,
    pub dctx: Addr,
    /// The scores' gradient dS (softmax backward of dprobs).
    pub ds: Addr,
    pub dq: Addr,
    pub dkv: Addr,
}

/// dQ_h = scale·dS_h·K_h, dK_h = scale·dS_hᵀ·Q_h, dV_h = A_hᵀ·dctx_h.
pub fn attention_inputs(s: &AttentionShape, x: &BackwardAddrs) -> Vec<Gemm> {
    inputs(s, x, s.scale())
}

/// The same products unscaled, for LRP's gradient×input rule (spec §D) before its
/// elementwise halves: with `ds` = S' = sdiv(R_P, Q·Kᵀ) and `dctx` = S = sdiv(R, ctx),
/// dq ← S'_h·K_h, dkv's keys ← S'_hᵀ·Q_h and its values ← P_hᵀ·S_h.
pub fn lrp_inputs(s: &AttentionShape, x: &BackwardAddrs) -> Vec<Gemm> {
    inputs(s, x, 1.0)
}

fn inputs(s: &AttentionShape, x: &BackwardAddrs, scale: f32) -> Vec<Gemm> {
    split(s, |g| {
        [
            Gemm {
                shape: (s.queries, s.head_dim, s.keys),
                alpha: scale,
                a: g.p(x.ds),
                b: g.k(x.kv),
                beta: 0.0,
                c: g.q(x.dq),
                batch: g.batch(),
            },
            Gemm {
                shape: (s.keys, s.head_dim, s.queries),
                alpha: scale,
                a: g.p(x.ds).t(),
                b: g.q(x.q),
                beta: 0.0,
                c: g.k(x.dkv),
                batch: g.batch(),
            },
            Gemm {
                shape: (s.keys, s.head_dim, s.queries),
                alpha: 1.0,
                a: g.p(x.probs).t(),
                b: g.q(x.dctx),
                beta: 0.0,
                c: g.v(x.dkv),
                batch: g.batch(),
            },
        ]
    })
}

/// The arguments of the column-major `cublasSgemmStridedBatched` call that computes a
/// row-major `Gemm`: C = A·B in row-major is Cᵀ = Bᵀ·Aᵀ in column-major, so the operands
/// swap places and each keeps its own transpose flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgemm {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: (Addr, usize, usize),
    pub b: (Addr, usize, usize),
    pub beta: f32,
    pub c: (Addr, usize, usize),
    pub batch: usize,
}

impl Gemm {
    /// The byte ranges of C to zero in place of a product with no terms (k = 0), where
    /// C = β·C: cuBLAS does not promise to write C then (its batched products have returned
    /// without touching it), so the backend does. Empty for β = 1, where C stays; an error
    /// for any other β, which no op makes.
    pub fn termless_zeros(&self) -> Result<Vec<(Addr, usize)>, String> {
        let (m, n, k) = self.shape;
        debug_assert_eq!(k, 0, "a product with terms");
        if self.beta == 1.0 || m == 0 || n == 0 {
            return Ok(Vec::new());
        }
        if self.beta != 0.0 {
            return Err(format!("a product with no terms and β = {}", self.beta));
        }
        let c = self.c;
        let row = |batch: usize, i: usize| c.ptr + 4 * (batch * c.batch_stride + i * c.ld) as u64;
        Ok(match c.ld == n {
            // Each batch entry's rows are one run.
            true => (0..self.batch).map(|b| (row(b, 0), 4 * m * n)).collect(),
            false => (0..self.batch)
                .flat_map(|b| (0..m).map(move |i| (row(b, i), 4 * n)))
                .collect(),
        })
    }

    pub fn column_major(&self) -> Sgemm {
        let (m, n, k) = self.shape;
        let parts = |o: &Operand| (o.ptr, o.ld, o.batch_stride);
        Sgemm {
            transa: self.b.transposed,
            transb: self.a.transposed,
            m: n,
            n: m,
            k,
            alpha: self.alpha,
            a: parts(&self.b),
            b: parts(&self.a),
            beta: self.beta,
            c: parts(&self.c),
            batch: self.batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, Cpu};

    /// cuBLAS's column-major SGEMM on host memory: addresses are byte offsets into `mem`.
    /// beta = 0 ignores C's old contents, as cuBLAS does.
    fn emulate(g: &Gemm, mem: &mut [f32]) {
        let s = g.column_major();
        let at = |(ptr, _, stride): (Addr, usize, usize), batch: usize| {
            ptr as usize / 4 + batch * stride
        };
        for batch in 0..s.batch {
            let (a0, b0, c0) = (at(s.a, batch), at(s.b, batch), at(s.c, batch));
            for j in 0..s.n {
                for i in 0..s.m {
                    let mut sum = 0.0f64;
                    for l in 0..s.k {
                        let a = if s.transa {
                            mem[a0 + l + i * s.a.1]
                        } else {
                            mem[a0 + i + l * s.a.1]
                        };
                        let b = if s.transb {
                            mem[b0 + j + l * s.b.1]
                        } else {
                            mem[b0 + l + j * s.b.1]
                        };
                        sum += a as f64 * b as f64;
                    }
                    let c = &mut mem[c0 + i + j * s.c.1];
                    let old = if s.beta == 0.0 {
                        0.0
                    } else {
                        s.beta as f64 * *c as f64
                    };
                    *c = (s.alpha as f64 * sum + old) as f32;
                }
            }
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Host buffers laid end to end, addressed like device memory.
    struct Arena {
        mem: Vec<f32>,
        starts: Vec<usize>,
    }

    impl Arena {
        fn new(parts: &[&[f32]]) -> Self {
            let mut mem = Vec::new();
            let mut starts = Vec::new();
            for p in parts {
                starts.push(mem.len());
                mem.extend_from_slice(p);
            }
            Self { mem, starts }
        }

        fn addr(&self, i: usize) -> Addr {
            4 * self.starts[i] as u64
        }

        fn get(&self, i: usize, len: usize) -> &[f32] {
            &self.mem[self.starts[i]..self.starts[i] + len]
        }
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-30);
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(err <= 1e-5, "{what}: error/max {err:e}");
    }

    /// With no terms, β = 0 zeroes exactly C's entries (a sample's rows of a strided C, and
    /// nothing between them), β = 1 leaves C as it is.
    #[test]
    fn products_without_terms_zero_exactly_c() {
        let (m, n, batch) = (3, 2, 2);
        let c = Operand::rows(64, 1, 5).stride(20);
        let g = Gemm {
            shape: (m, n, 0),
            alpha: 1.0,
            a: Operand::rows(0, 0, 1),
            b: Operand::rows(0, 0, 1).t(),
            beta: 0.0,
            c,
            batch,
        };
        let mut mem = vec![f32::NAN; 64];
        for (at, bytes) in g.termless_zeros().unwrap() {
            mem[at as usize / 4..(at as usize + bytes) / 4].fill(0.0);
        }
        let zeroed: Vec<usize> = (0..mem.len()).filter(|&i| mem[i] == 0.0).collect();
        let want: Vec<usize> = (0..batch)
            .flat_map(|b| (0..m).flat_map(move |i| (0..n).map(move |j| 17 + 20 * b + 5 * i + j)))
            .collect();
        assert_eq!(zeroed, want);
        let dense = Gemm {
            c: Operand::rows(64, 0, n).stride(m * n),
            ..g
        };
        assert_eq!(dense.termless_zeros().unwrap(), [(64, 24), (88, 24)]);
        let kept = Gemm { beta: 1.0, ..g };
        assert_eq!(kept.termless_zeros().unwrap(), []);
        assert!(Gemm { beta: 0.5, ..g }.termless_zeros().is_err());
    }

    #[test]
    fn linear_products_match_the_cpu_backend() {
        let (m, k, n) = (5, 7, 3);
        let (x, w, dy, prior) = (
            values(m * k, 1),
            values(n * k, 2),
            values(m * n, 3),
            values(m * k, 4),
        );
        let mut arena = Arena::new(&[&x, &w, &vec![0.0; m * n], &dy, &prior]);
        let out = arena.addr(2);
        emulate(
            &linear(arena.addr(0), arena.addr(1), out, m, k, n),
            &mut arena.mem,
        );
        let cpu = Cpu;
        let cw = cpu.upload_weight(&w, n, k).unwrap();
        let mut want = vec![0.0; m * n];
        cpu.linear(&mut want, &x, &cw, None, m, k, n).unwrap();
        close("linear", arena.get(2, m * n), &want);
        let g = linear_backward(arena.addr(3), arena.addr(1), arena.addr(4), m, k, n, true);
        emulate(&g, &mut arena.mem);
        let mut want = prior.clone();
        cpu.linear_backward(&mut want, &dy, &cw, m, k, n, true)
            .unwrap();
        close("linear_backward", arena.get(4, m * k), &want);
    }

    /// Self-attention, cross-attention with a key mask, causal.
    fn shapes() -> [AttentionShape; 3] {
        [
            AttentionShape::self_attention(2, 3, 5, 4),
            AttentionShape {
                batch: 3,
                heads: 2,
                queries: 4,
                keys: 6,
                head_dim: 3,
                causal: false,
                key_mask: Some((0..18).map(|i| i % 6 != 2).collect()),
            },
            AttentionShape {
                causal: true,
                ..AttentionShape::self_attention(2, 2, 4, 2)
            },
        ]
    }

    #[test]
    fn attention_products_match_the_cpu_backend() {
        for s in shapes() {
            let w = s.width();
            let (ql, kvl, pl) = (
                s.batch * s.queries * w,
                s.batch * s.keys * 2 * w,
                s.probs_len(),
            );
            let (q, kv, dctx) = (values(ql, 5), values(kvl, 6), values(ql, 7));
            // q, kv, probs, ctx, dctx, dprobs, ds, dq, dkv
            let zeros = |n| vec![0.0f32; n];
            let mut arena = Arena::new(&[
                &q,
                &kv,
                &zeros(pl),
                &zeros(ql),
                &dctx,
                &zeros(pl),
                &zeros(pl),
                &zeros(ql),
                &zeros(kvl),
            ]);
            let a = |i| arena.addr(i);
            let (scores, context) = (
                attention_scores(&s, a(0), a(1), a(2)),
                attention_context(&s, a(2), a(1), a(3)),
            );
            let dprobs = attention_dprobs(&s, a(4), a(1), a(5));
            let inputs = attention_inputs(
                &s,
                &BackwardAddrs {
                    q: a(0),
                    kv: a(1),
                    probs: a(2),
                    dctx: a(4),
                    ds: a(6),
                    dq: a(7),
                    dkv: a(8),
                },
            );
            // Shapes 0 and 1 take each way of splitting: per sample, per head.
            let calls = s.batch.min(s.heads);
            assert_eq!(
                [scores.len(), context.len(), dprobs.len(), inputs.len()],
                [calls, calls, calls, 3 * calls]
            );
            scores.iter().for_each(|g| emulate(g, &mut arena.mem));
            // The softmax kernel's job, on the host.
            let p0 = arena.starts[2];
            for (r, row) in arena.mem[p0..p0 + pl].chunks_exact_mut(s.keys).enumerate() {
                let (b, i) = (r / s.queries / s.heads, r % s.queries);
                let max = (0..s.keys)
                    .filter(|&j| s.visible(b, i, j))
                    .map(|j| row[j])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if s.visible(b, i, j) {
                        (*v - max).exp()
                    } else {
                        0.0
                    };
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }
            context.iter().for_each(|g| emulate(g, &mut arena.mem));
            dprobs.iter().for_each(|g| emulate(g, &mut arena.mem));
            // The softmax backward kernel's job: dS = A ⊙ (dA − rowsum(A ⊙ dA)).
            for r in 0..pl / s.keys {
                let (p, dp, ds) = (
                    arena.starts[2] + r * s.keys,
                    arena.starts[5] + r * s.keys,
                    arena.starts[6] + r * s.keys,
                );
                let dot: f32 = (0..s.keys)
                    .map(|j| arena.mem[p + j] * arena.mem[dp + j])
                    .sum();
                for j in 0..s.keys {
                    arena.mem[ds + j] = arena.mem[p + j] * (arena.mem[dp + j] - dot);
                }
            }
            inputs.iter().for_each(|g| emulate(g, &mut arena.mem));

            let cpu = Cpu;
            let (mut probs, mut ctx) = (zeros(pl), zeros(ql));
            cpu.attention(&mut probs, &mut ctx, &q, &kv, &s).unwrap();
            let (mut dp, mut dq, mut dkv) = (zeros(pl), zeros(ql), zeros(kvl));
            cpu.attention_backward(&mut dp, &mut dq, &mut dkv, &dctx, &q, &kv, &probs, &s)
                .unwrap();
            close("probs", arena.get(2, pl), &probs);
            close("ctx", arena.get(3, ql), &ctx);
            close("dprobs", arena.get(5, pl), &dp);
            close("dq", arena.get(7, ql), &dq);
            close("dkv", arena.get(8, kvl), &dkv);
        }
    }

    /// The products of the CUDA `lrp_attention` (with its kernels' elementwise steps done
    /// here on the host) against the CPU rule.
    #[test]
    fn lrp_attention_products_match_the_cpu_backend() {
        use crate::backend::cpu::lrp::sdiv;
        for s in shapes() {
            let w = s.width();
            let (ql, kvl, pl) = (
                s.batch * s.queries * w,
                s.batch * s.keys * 2 * w,
                s.probs_len(),
            );
            // Positive q, k, v keep the rule's denominators (ctx, Q·Kᵀ) away from 0, where
            // sdiv would amplify the two sides' different roundings.
            let positive =
                |n, seed| -> Vec<f32> { values(n, seed).iter().map(|v| 1.0 + 0.5 * v).collect() };
            let (q, kv, rctx) = (positive(ql, 8), positive(kvl, 9), values(ql, 10));
            let cpu = Cpu;
            let zeros = |n| vec![0.0f32; n];
            let (mut probs, mut ctx) = (zeros(pl), zeros(ql));
            cpu.attention(&mut probs, &mut ctx, &q, &kv, &s).unwrap();
            let (mut cam, mut rq, mut rkv) = (zeros(pl), zeros(ql), zeros(kvl));
            cpu.lrp_attention(
                &mut cam, &mut rq, &mut rkv, &rctx, &q, &kv, &probs, &ctx, &s,
            )
            .unwrap();

            // q, kv, probs, sc, cam, scores, s2, rq, rkv
            let sc: Vec<f32> = rctx.iter().zip(&ctx).map(|(&r, &c)| sdiv(r, c)).collect();
            let mut arena = Arena::new(&[
                &q,
                &kv,
                &probs,
                &sc,
                &zeros(pl),
                &zeros(pl),
                &zeros(pl),
                &zeros(ql),
                &zeros(kvl),
            ]);
            let a = |i| arena.addr(i);
            let cam_products = attention_dprobs(&s, a(3), a(1), a(4));
            let scores = lrp_scores(&s, a(0), a(1), a(5));
            let inputs = lrp_inputs(
                &s,
                &BackwardAddrs {
                    q: a(0),
                    kv: a(1),
                    probs: a(2),
                    dctx: a(3),
                    ds: a(6),
                    dq: a(7),
                    dkv: a(8),
                },
            );
            // The kernels' jobs, on the host: out = (x/2)·out, and S' = sdiv(cam, Q·Kᵀ).
            let st = arena.starts.clone();
            let mem = &mut arena.mem;
            let half_product = |mem: &mut [f32], out: usize, x: usize, n: usize| {
                for i in 0..n {
                    mem[out + i] *= 0.5 * mem[x + i];
                }
            };
            cam_products.iter().for_each(|g| emulate(g, mem));
            half_product(mem, st[4], st[2], pl);
            scores.iter().for_each(|g| emulate(g, mem));
            for i in 0..pl {
                mem[st[6] + i] = sdiv(mem[st[4] + i], mem[st[5] + i]);
            }
            inputs.iter().for_each(|g| emulate(g, mem));
            half_product(mem, st[7], st[0], ql);
            half_product(mem, st[8], st[1], kvl);
            close("cam", arena.get(4, pl), &cam);
            close("rq", arena.get(7, ql), &rq);
            close("rkv", arena.get(8, kvl), &rkv);
        }
    }
}
