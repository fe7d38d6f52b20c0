//! CPU op checks that the CLIP reference test does not reach on its own: activation values
//! against torch, every backward against central finite differences of its forward
//! (directional derivatives, so one check covers the whole input), the head mean's
//! product with a graph's vector against the head mean and a product on the host, and a
//! single query's attention against its row of the full one.
//!
//! The finite differences run the f32 forward with step h = 1e-2 along a random direction;
//! their truncation and rounding error is well under the 1e-2 relative bound used here, while
//! a wrong term in a backward (a missing factor, a transposed product) is off by O(1).

mod common;

use common::{values, MeanGraphs};
use fiedler::backend::{
    Activation, AttentionShape, Backend, Cpu, HeadMean, MeanGraph, ReadoutRow, RelevanceProduct,
};

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Checks ⟨dy, f(x + h·v) − f(x − h·v)⟩ / 2h against ⟨backward(dy), v⟩.
fn check_directional(
    name: &str,
    x: &[f32],
    dy: &[f32],
    f: impl Fn(&[f32]) -> Vec<f32>,
    grad: &[f32],
) {
    let h = 1e-2f32;
    let v = values(x.len(), 99);
    let shifted =
        |sign: f32| -> Vec<f32> { x.iter().zip(&v).map(|(a, b)| a + sign * h * b).collect() };
    let numeric = (dot(dy, &f(&shifted(1.0))) - dot(dy, &f(&shifted(-1.0)))) / (2.0 * h as f64);
    let analytic = dot(grad, &v);
    let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
    assert!(
        err < 1e-2,
        "{name}: finite difference {numeric:.6} vs backward {analytic:.6} (rel {err:.2e})"
    );
}

#[test]
fn activations_match_torch_values() {
    // torch 2.9.1: F.gelu(x), F.gelu(x, approximate="tanh"), x·sigmoid(1.702x).
    let x = vec![-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5];
    let expected = [
        (
            Activation::Gelu,
            [
                -0.004050225,
                -0.15865526,
                -0.10032342,
                0.0,
                0.34573123,
                0.8413447,
                2.4844759,
            ],
        ),
        (
            Activation::GeluTanh,
            [
                -0.003637433,
                -0.158_808,
                -0.10032465,
                0.0,
                0.345714,
                0.841192,
                2.4849157,
            ],
        ),
        (
            Activation::QuickGelu,
            [
                -0.01807131,
                -0.15420423,
                -0.09880035,
                0.0,
                0.35038844,
                0.84579575,
                2.465014,
            ],
        ),
    ];
    for (act, want) in expected {
        let mut out = vec![0.0; x.len()];
        Cpu.activation(&mut out, &x, act).unwrap();
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() <= 1e-6, "{act:?}: {out:?} vs {want:?}");
        }
    }
}

#[test]
fn activation_backward_matches_finite_differences() {
    let x: Vec<f32> = values(64, 1).iter().map(|v| 3.0 * v).collect();
    let dy = values(64, 2);
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
    ] {
        let mut dx = vec![0.0; 64];
        Cpu.activation_backward(&mut dx, &dy, &x, act).unwrap();
        let f = |x: &[f32]| {
            let mut out = vec![0.0; x.len()];
            Cpu.activation(&mut out, &x.to_vec(), act).unwrap();
            out
        };
        check_directional(&format!("{act:?}"), &x, &dy, f, &dx);
    }
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let (rows, dim) = (5, 37);
    let x: Vec<f32> = values(rows * dim, 3)
        .iter()
        .map(|v| 2.0 * v + 0.5)
        .collect();
    let gamma = values(dim, 4);
    let beta = values(dim, 5);
    let dy = values(rows * dim, 6);
    let f = |x: &[f32]| {
        let (mut out, mut stats) = (vec![0.0; x.len()], vec![0.0; 2 * rows]);
        Cpu.layernorm(&mut out, &mut stats, &x.to_vec(), &gamma, &beta, dim, 1e-5)
            .unwrap();
        out
    };
    let mut stats = vec![0.0; 2 * rows];
    let mut out = vec![0.0; x.len()];
    Cpu.layernorm(&mut out, &mut stats, &x, &gamma, &beta, dim, 1e-5)
        .unwrap();
    let mut dx = vec![0.0; x.len()];
    Cpu.layernorm_backward(&mut dx, &dy, &x, &stats, &gamma, dim, false)
        .unwrap();
    check_directional("layernorm", &x, &dy, f, &dx);
}

#[test]
fn attention_backward_matches_finite_differences() {
    // Self-attention (plain, causal with padding, padded keys) and cross-attention, where 4
    // query rows attend to 7 key rows.
    let cases = [
        (7, 7, false, None),
        (7, 7, true, Some(AttentionShape::prefix_mask(&[7, 4], 7))),
        (7, 7, false, Some(AttentionShape::prefix_mask(&[3, 7], 7))),
        (4, 7, false, Some(AttentionShape::prefix_mask(&[7, 5], 7))),
        // Padding in mid-sequence, as ViLT has between its text and image tokens.
        (
            7,
            7,
            false,
            Some([[true, true, false, false, true, true, false], [true; 7]].concat()),
        ),
    ];
    for (queries, keys, causal, key_mask) in cases {
        let s = AttentionShape {
            batch: 2,
            heads: 3,
            queries,
            keys,
            head_dim: 5,
            causal,
            key_mask,
        };
        let (q_len, kv_len) = (
            s.batch * queries * s.width(),
            s.batch * keys * 2 * s.width(),
        );
        // One input vector holding q then kv, so one directional check covers both gradients.
        let input = values(q_len + kv_len, 7);
        let dctx = values(q_len, 8);
        let f = |x: &[f32]| {
            let (mut probs, mut ctx) = (vec![0.0; s.probs_len()], vec![0.0; q_len]);
            Cpu.attention(
                &mut probs,
                &mut ctx,
                &x[..q_len].to_vec(),
                &x[q_len..].to_vec(),
                &s,
            )
            .unwrap();
            ctx
        };
        let (q, kv) = (input[..q_len].to_vec(), input[q_len..].to_vec());
        let mut probs = vec![0.0; s.probs_len()];
        let mut ctx = vec![0.0; q_len];
        Cpu.attention(&mut probs, &mut ctx, &q, &kv, &s).unwrap();
        let mut dprobs = vec![0.0; s.probs_len()];
        let (mut dq, mut dkv) = (vec![0.0; q_len], vec![0.0; kv_len]);
        Cpu.attention_backward(&mut dprobs, &mut dq, &mut dkv, &dctx, &q, &kv, &probs, &s)
            .unwrap();
        let grad: Vec<f32> = dq.iter().chain(&dkv).copied().collect();
        check_directional(
            &format!("attention {queries}x{keys} causal={causal}"),
            &input,
            &dctx,
            f,
            &grad,
        );

        // Masked probabilities are exactly zero and every row sums to one.
        for (bh, block) in probs.chunks_exact(queries * keys).enumerate() {
            for (i, row) in block.chunks_exact(keys).enumerate() {
                for (j, &p) in row.iter().enumerate() {
                    assert!(s.visible(bh / s.heads, i, j) || p == 0.0);
                }
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
    }
}

/// One query per sample attending as it does in the full attention (`single_query`, what the
/// scoring forwards run in their last layer): the same probabilities and context as that
/// query's row of the full op, under causal and padding masks, at a row that is not the
/// last real one (so causality hides keys the padding mask does not).
#[test]
fn a_single_query_attends_as_its_row_of_the_full_attention() {
    let full = AttentionShape {
        batch: 2,
        heads: 3,
        queries: 7,
        keys: 7,
        head_dim: 5,
        causal: true,
        key_mask: Some(AttentionShape::prefix_mask(&[7, 5], 7)),
    };
    let (d, n) = (full.width(), full.queries);
    let q = values(full.batch * n * d, 11);
    let kv = values(full.batch * n * 2 * d, 12);
    let (mut probs, mut ctx) = (vec![0.0; full.probs_len()], vec![0.0; q.len()]);
    Cpu.attention(&mut probs, &mut ctx, &q, &kv, &full).unwrap();
    let positions = [2, 4];
    let one = full.single_query(&positions);
    let rows: Vec<usize> = positions
        .iter()
        .enumerate()
        .map(|(b, &i)| b * n + i)
        .collect();
    let q_rows: Vec<f32> = rows
        .iter()
        .flat_map(|&r| q[r * d..(r + 1) * d].to_vec())
        .collect();
    let (mut p1, mut c1) = (vec![0.0; one.probs_len()], vec![0.0; q_rows.len()]);
    Cpu.attention(&mut p1, &mut c1, &q_rows, &kv, &one).unwrap();
    for (b, (&i, &r)) in positions.iter().zip(&rows).enumerate() {
        for h in 0..full.heads {
            let row = ((b * full.heads + h) * n + i) * n;
            let single = (b * full.heads + h) * n;
            assert_eq!(
                probs[row..row + n],
                p1[single..single + n],
                "sample {b}, head {h}: probabilities"
            );
        }
        let (full_ctx, one_ctx) = (&ctx[r * d..(r + 1) * d], &c1[b * d..(b + 1) * d]);
        for (x, y) in full_ctx.iter().zip(one_ctx) {
            assert!(
                (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                "sample {b}: context {x} vs {y}"
            );
        }
    }
}

#[test]
fn cosine_head_backward_matches_finite_differences() {
    let (batch, dim) = (3, 11);
    let a = values(batch * dim, 9);
    let b = values(batch * dim, 10);
    let ds = vec![1.0, -0.5, 2.0];
    let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    Cpu.cosine_scores_backward(&mut da, &mut db, &ds, &a, &b, 14.3, dim)
        .unwrap();
    let score = |a: &[f32], b: &[f32]| {
        let mut s = vec![0.0; batch];
        Cpu.cosine_scores(&mut s, &a.to_vec(), &b.to_vec(), 14.3, dim)
            .unwrap();
        s
    };
    check_directional("cosine a", &a, &ds, |a| score(a, &b), &da);
    check_directional("cosine b", &b, &ds, |b| score(&a, b), &db);
}

#[test]
fn linear_and_gather_backward_match_finite_differences() {
    let (m, k, n) = (6, 9, 4);
    let x = values(m * k, 11);
    let w = Cpu.upload_weight(&values(n * k, 12), n, k).unwrap();
    let dy = values(m * n, 13);
    let mut dx = vec![0.0; m * k];
    Cpu.linear_backward(&mut dx, &dy, &w, m, k, n, false)
        .unwrap();
    let f = |x: &[f32]| {
        let mut out = vec![0.0; m * n];
        Cpu.linear(&mut out, &x.to_vec(), &w, None, m, k, n)
            .unwrap();
        out
    };
    check_directional("linear", &x, &dy, f, &dx);

    let rows = [4usize, 0, 4];
    let dg = values(rows.len() * k, 14);
    let mut dx = vec![1.0; m * k];
    Cpu.gather_rows_backward(&mut dx, &dg, &rows, k).unwrap();
    let f = |x: &[f32]| {
        let mut out = vec![0.0; rows.len() * k];
        Cpu.gather_rows(&mut out, &x.to_vec(), &rows, k).unwrap();
        out
    };
    check_directional("gather_rows", &x, &dg, f, &dx);
}

/// x·Wᵀ + b and dy·W against f64 sums, at shapes that cross the CPU backend's weight panels
/// (64 features, a short last one) and token blocks (384 rows), and at tiny ones (one call).
#[test]
fn linear_products_match_f64_sums_across_panels_and_token_blocks() {
    for (m, k, n) in [(773, 70, 130), (5, 200, 3), (1, 64, 64), (400, 1, 65)] {
        let (x, w, b, dy) = (
            values(m * k, 21),
            values(n * k, 22),
            values(n, 23),
            values(m * n, 24),
        );
        let packed = Cpu.upload_weight(&w, n, k).unwrap();
        let close = |what: &str, got: f32, want: f64, scale: f64| {
            assert!(
                (got as f64 - want).abs() <= 1e-5 * scale,
                "{what} at {m}×{k}×{n}: {got} vs {want}"
            );
        };

        let mut out = vec![f32::NAN; m * n];
        Cpu.linear(&mut out, &x, &packed, Some(&b), m, k, n)
            .unwrap();
        for (t, f) in (0..m).flat_map(|t| (0..n).map(move |f| (t, f))) {
            let terms = (0..k).map(|d| x[t * k + d] as f64 * w[f * k + d] as f64);
            let scale = terms.clone().map(f64::abs).sum::<f64>() + b[f].abs() as f64;
            close(
                "linear",
                out[t * n + f],
                terms.sum::<f64>() + b[f] as f64,
                scale,
            );
        }

        for accumulate in [false, true] {
            let start = values(m * k, 25);
            let mut dx = if accumulate {
                start.clone()
            } else {
                vec![f32::NAN; m * k]
            };
            Cpu.linear_backward(&mut dx, &dy, &packed, m, k, n, accumulate)
                .unwrap();
            for (t, d) in (0..m).flat_map(|t| (0..k).map(move |d| (t, d))) {
                let base = if accumulate {
                    start[t * k + d] as f64
                } else {
                    0.0
                };
                let terms = (0..n).map(|f| dy[t * n + f] as f64 * w[f * k + d] as f64);
                let scale = terms.clone().map(f64::abs).sum::<f64>() + base.abs();
                close(
                    "linear_backward",
                    dx[t * k + d],
                    terms.sum::<f64>() + base,
                    scale,
                );
            }
        }
    }
}

#[test]
fn ops_reject_mismatched_buffers() {
    let mut out = vec![0.0; 5];
    let err = Cpu
        .linear(&mut out, &vec![0.0; 6], &vec![0.0; 6], None, 2, 3, 2)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("linear: buffer `out` has 5 elements, expected 4"),
        "{err}"
    );
    let s = AttentionShape {
        key_mask: Some(vec![true; 4]),
        ..AttentionShape::self_attention(1, 1, 3, 2)
    };
    let err = Cpu
        .attention(
            &mut vec![0.0; 9],
            &mut vec![0.0; 6],
            &vec![0.0; 6],
            &vec![0.0; 12],
            &s,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("key mask has 4 entries for 1 samples of 3 keys"),
        "{err}"
    );
    let err = Cpu
        .embed_tokens(
            &mut vec![0.0; 4],
            &[0, 9],
            &vec![0.0; 8],
            &vec![0.0; 4],
            2,
            2,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("token id 9 is outside the vocabulary of 4"),
        "{err}"
    );
}

/// `head_mean_matvec` gives, bit for bit, what the spectral methods computed from a whole
/// head mean: `head_mean`, the graph's rows and columns, and an f32 sum in order; on a
/// whole graph, one with gaps and out of order, one token and none, for every kind. Graphs
/// that point outside the maps are errors.
#[test]
fn head_mean_products_match_the_mean_then_the_product() {
    let (samples, heads, n) = (3usize, 5usize, 37usize);
    let len = samples * heads * n * n;
    let (x, g) = (values(len, 31), values(len, 32));
    let graphs = MeanGraphs::new(
        vec![
            (0, (0..n).collect()),
            (2, vec![3, 10, 11, 36, 4]),
            (1, vec![5]),
            (1, vec![]),
        ],
        40,
    );
    let mean_graphs = graphs.get();
    for kind in HeadMean::ALL {
        let products = Cpu
            .head_mean_matvec(kind, &x, Some(&g), heads, n, &mean_graphs)
            .unwrap();
        let mut mean = vec![0.0; samples * n * n];
        Cpu.head_mean(&mut mean, kind, &x, Some(&g), heads, n * n)
            .unwrap();
        for ((sample, tokens), (vector, product)) in graphs
            .graphs
            .iter()
            .zip(graphs.vectors.iter().zip(&products))
        {
            let m = &mean[sample * n * n..(sample + 1) * n * n];
            let expected: Vec<u32> = tokens
                .iter()
                .map(|&i| {
                    let row: f32 = tokens
                        .iter()
                        .zip(vector)
                        .map(|(&j, &v)| m[i * n + j] * v)
                        .sum();
                    row.to_bits()
                })
                .collect();
            let got: Vec<u32> = product.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                got, expected,
                "{kind:?}, sample {sample}, tokens {tokens:?}"
            );
        }
    }
    let bad = |graph: MeanGraph| {
        Cpu.head_mean_matvec(HeadMean::PositiveGradient, &x, Some(&g), heads, n, &[graph])
            .unwrap_err()
            .to_string()
    };
    let v = [1.0f32; 2];
    let err = bad(MeanGraph {
        sample: 3,
        tokens: &[0, 1],
        vector: &v,
    });
    assert!(err.contains("graph 0: sample 3 of 3"), "{err}");
    let err = bad(MeanGraph {
        sample: 0,
        tokens: &[0, 37],
        vector: &v,
    });
    assert!(err.contains("token 37 of 37"), "{err}");
    let err = bad(MeanGraph {
        sample: 0,
        tokens: &[0],
        vector: &v,
    });
    assert!(err.contains("a vector of 2 values for 1 tokens"), "{err}");
    let err = Cpu
        .head_mean_matvec(HeadMean::PositiveGradient, &x, None, heads, n, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("reads ∇A, and none was given"), "{err}");
}

/// Row specs of `relevance_rows` as (sample, query, token positions).
type Rows = Vec<(usize, usize, Vec<usize>)>;

fn product_rows(rows: &Rows) -> Vec<ReadoutRow<'_>> {
    rows.iter()
        .map(|(sample, query, tokens)| ReadoutRow {
            sample: *sample,
            query: *query,
            tokens,
        })
        .collect()
}

/// Row q of F_last·…·F_first in f64, each factor formed from `head_mean`'s f32 mean of its
/// layer over the row's tokens: rownorm(M + I) for rollout, I + M for a residual product.
fn product_row_f64(
    product: RelevanceProduct,
    means: &[Vec<f32>],
    n: usize,
    (sample, query, tokens): &(usize, usize, Vec<usize>),
) -> Vec<f64> {
    let m = tokens.len();
    let mut r = vec![0.0f64; m * m];
    (0..m).for_each(|i| r[i * m + i] = 1.0);
    for mean in means {
        let at = |i: usize, j: usize| mean[(sample * n + tokens[i]) * n + tokens[j]] as f64;
        let mut f = vec![0.0f64; m * m];
        for i in 0..m {
            for j in 0..m {
                f[i * m + j] = at(i, j) + if i == j { 1.0 } else { 0.0 };
            }
            if product == RelevanceProduct::Rollout {
                let d: f64 = f[i * m..(i + 1) * m].iter().sum();
                f[i * m..(i + 1) * m].iter_mut().for_each(|x| *x /= d);
            }
        }
        // R ← F·R: this layer's factor to the left of the earlier ones.
        let mut next = vec![0.0f64; m * m];
        for i in 0..m {
            for k in 0..m {
                for j in 0..m {
                    next[i * m + j] += f[i * m + k] * r[k * m + j];
                }
            }
        }
        r = next;
    }
    r[query * m..(query + 1) * m].to_vec()
}

/// `relevance_rows` is row q of its product, R = F_last·…·F_first over each row's tokens,
/// within f32 rounding of the f64 matrix products of the same means (the rows are formed as
/// a chain of vector–matrix products from the last layer, so only rounding differs): rows
/// over every token, over tokens with gaps and out of order with the query inside, over one
/// token. Calls that point outside the maps are errors.
#[test]
fn relevance_rows_are_rows_of_the_products() {
    let (samples, heads, n, layers) = (3usize, 4usize, 11usize, 5u64);
    let len = samples * heads * n * n;
    // Attention-like maps (≥ 0) and signed gradients.
    let maps: Vec<(Vec<f32>, Vec<f32>)> = (0..layers)
        .map(|l| {
            let x = values(len, 70 + l).iter().map(|v| v.abs()).collect();
            (x, values(len, 80 + l))
        })
        .collect();
    let rows: Rows = vec![
        (0, 0, (0..n).collect()),
        (2, 3, vec![3, 9, 1, 10, 4, 0]),
        (1, 0, vec![5]),
    ];
    let specs = product_rows(&rows);
    let layer_refs: Vec<(&Vec<f32>, Option<&Vec<f32>>)> =
        maps.iter().map(|(x, g)| (x, Some(g))).collect();
    for product in [
        RelevanceProduct::Rollout,
        RelevanceProduct::Residual(HeadMean::PositiveGradientTimesAttention),
        RelevanceProduct::Residual(HeadMean::PositiveGradient),
    ] {
        let got = Cpu
            .relevance_rows(product, &layer_refs, heads, n, &specs)
            .unwrap();
        let means: Vec<Vec<f32>> = maps
            .iter()
            .map(|(x, g)| {
                let mut mean = vec![0.0; samples * n * n];
                Cpu.head_mean(&mut mean, product.mean(), x, Some(g), heads, n * n)
                    .unwrap();
                mean
            })
            .collect();
        for (row, got) in rows.iter().zip(&got) {
            let want = product_row_f64(product, &means, n, row);
            let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
            assert!(
                err <= 1e-5 * scale,
                "{product:?}, row {row:?}: err {err:e} of max {scale:e}\n{got:?}\n{want:?}"
            );
        }
    }
    let rollout = RelevanceProduct::Rollout;
    let bad = |layers: &[(&Vec<f32>, Option<&Vec<f32>>)], rows: &Rows| {
        Cpu.relevance_rows(rollout, layers, heads, n, &product_rows(rows))
            .unwrap_err()
            .to_string()
    };
    let err = bad(&layer_refs, &vec![(3, 0, vec![0])]);
    assert!(err.contains("row 0: sample 3 of 3"), "{err}");
    let err = bad(&layer_refs, &vec![(0, 0, vec![0]), (0, 0, vec![2, 11])]);
    assert!(err.contains("row 1: token 11 of 11"), "{err}");
    let err = bad(&layer_refs, &vec![(0, 2, vec![0, 1])]);
    assert!(err.contains("query 2 of 2 tokens"), "{err}");
    let err = bad(&[], &vec![(0, 0, vec![0])]);
    assert!(err.contains("no layers"), "{err}");
    let short = maps[0].0[..len - heads * n * n].to_vec();
    let err = bad(&[layer_refs[0], (&short, None)], &vec![(0, 0, vec![0])]);
    assert!(err.contains("layer 1 holds"), "{err}");
    let err = Cpu
        .relevance_rows(
            RelevanceProduct::Residual(HeadMean::PositiveGradient),
            &[(&maps[0].0, None)],
            heads,
            n,
            &[],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("reads ∇A, and none was given"), "{err}");
}

/// `head_rows` gives, per head, the mean of ∇A over the row's tokens × tokens and row q of A
/// over them: on a whole row, one with gaps and out of order, one token. Rows that point
/// outside the maps, and ∇A of another size, are errors.
#[test]
fn head_rows_are_gradient_means_and_attention_rows() {
    let (samples, heads, n) = (2usize, 3usize, 9usize);
    let len = samples * heads * n * n;
    let (x, g) = (values(len, 101), values(len, 102));
    let rows: Rows = vec![
        (1, 0, (0..n).collect()),
        (0, 2, vec![7, 2, 5, 0]),
        (1, 0, vec![4]),
    ];
    let got = Cpu
        .head_rows(&x, &g, heads, n, &product_rows(&rows))
        .unwrap();
    for ((sample, query, tokens), got) in rows.iter().zip(&got) {
        let at = |h: usize, i: usize, j: usize| ((sample * heads + h) * n + i) * n + j;
        for h in 0..heads {
            let sum: f64 = tokens
                .iter()
                .flat_map(|&i| tokens.iter().map(move |&j| (i, j)))
                .map(|(i, j)| g[at(h, i, j)] as f64)
                .sum();
            let mean = sum / (tokens.len() * tokens.len()) as f64;
            assert!(
                (got.grad_means[h] as f64 - mean).abs() <= 1e-7 * mean.abs().max(1e-3),
                "sample {sample}, head {h}: {} vs {mean}",
                got.grad_means[h]
            );
            let row: Vec<f32> = tokens
                .iter()
                .map(|&j| x[at(h, tokens[*query], j)])
                .collect();
            let m = tokens.len();
            assert_eq!(
                got.rows[h * m..(h + 1) * m],
                row[..],
                "sample {sample}, head {h}"
            );
        }
    }
    let err = Cpu
        .head_rows(&x, &g[1..].to_vec(), heads, n, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("grad"), "{err}");
    let err = Cpu
        .head_rows(&x, &g, heads, n, &product_rows(&vec![(0, 1, vec![9, 0])]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 0: token 9 of 9"), "{err}");
}
