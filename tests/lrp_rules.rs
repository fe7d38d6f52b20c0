//! The LRP rules of spec §D as backend ops: relevance conservation on every rule (what
//! enters an op equals what leaves it, per sample, up to the 1e-9 stabiliser), masked keys
//! receiving nothing, bad buffers rejected, and the hand-worked examples of
//! tools/reference/lrp_rules.py (`hand_example`).

mod common;

// The same values as before: x/2²⁴·2 − 1 and x/2²³ − 1 round alike (powers of two).
use common::values;
use fiedler::backend::{AttentionShape, Backend, Cpu};

fn sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

/// Conservation within f32 rounding: 1e-5 of `scale`, the total magnitude of what flows in
/// (the terms of a sum can cancel, so |Σ| alone is no measure of the rounding).
fn assert_close(what: &str, a: f64, b: f64, scale: f64) {
    assert!(
        (a - b).abs() <= 1e-5 * scale,
        "{what}: {a} vs {b} (not conserved)"
    );
}

fn abs_sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| v.abs() as f64).sum()
}

fn linear_relprop(x: &[f32], w: &[f32], r: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let be = Cpu;
    let w = be.upload_weight(w, n, k).unwrap();
    let abs = be.abs_weight(&w).unwrap();
    let mut rx = vec![0.0; m * k];
    be.lrp_linear(
        &mut rx,
        &r.to_vec(),
        &x.to_vec(),
        None,
        &w,
        &abs,
        m,
        k,
        n,
        false,
    )
    .unwrap();
    rx
}

#[test]
fn linear_rule_conserves_relevance_per_row() {
    let (m, k, n) = (5, 24, 16);
    let (x, w, r) = (values(m * k, 1), values(n * k, 2), values(m * n, 3));
    let rx = linear_relprop(&x, &w, &r, m, k, n);
    for i in 0..m {
        assert_close(
            &format!("row {i}"),
            sum(&rx[i * k..(i + 1) * k]),
            sum(&r[i * n..(i + 1) * n]),
            abs_sum(&r[i * n..(i + 1) * n]),
        );
    }
}

/// The hand example: x = (1, −2), W1 = [[1, 2], [−1, 1]], W2 = [[2, −1]], one-hot at y.
/// Layer 2 has one positive contribution, (−1)·(−3), so h₂ gets all of R = 1; unit h₂ has no
/// positive contribution in layer 1 (Z = 0), so its relevance is lost there (known leak).
#[test]
fn linear_rule_matches_the_hand_example() {
    let h = [-3.0, -3.0];
    let r_h = linear_relprop(&h, &[2.0, -1.0], &[1.0], 1, 2, 1);
    assert!(
        (r_h[0]).abs() < 1e-7 && (r_h[1] - 1.0).abs() < 1e-7,
        "{r_h:?}"
    );
    let r_x = linear_relprop(&[1.0, -2.0], &[1.0, 2.0, -1.0, 1.0], &r_h, 1, 2, 2);
    assert_eq!(r_x, vec![0.0, 0.0]);
}

#[test]
fn add_rule_conserves_relevance_per_sample() {
    let be = Cpu;
    let (samples, len) = (3, 40);
    let (a, b, r) = (
        values(samples * len, 4),
        values(samples * len, 5),
        values(samples * len, 6),
    );
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; a.len()]);
    be.lrp_add(&mut ra, &mut rb, &r, &a, &b, samples).unwrap();
    for s in 0..samples {
        let span = s * len..(s + 1) * len;
        assert_close(
            &format!("sample {s}"),
            sum(&ra[span.clone()]) + sum(&rb[span.clone()]),
            sum(&r[span.clone()]),
            abs_sum(&r[span]),
        );
    }
    assert!(be.lrp_add(&mut ra, &mut rb, &r, &a, &b, 7).is_err());
}

/// u = (1, 3), v = (1, −1), R = (2, 2): u's share |Σa| / (|Σa| + |Σb|) = 4/4 takes all.
#[test]
fn add_rule_matches_the_hand_example() {
    let (mut ra, mut rb) = (vec![0.0; 2], vec![0.0; 2]);
    Cpu.lrp_add(
        &mut ra,
        &mut rb,
        &vec![2.0, 2.0],
        &vec![1.0, 3.0],
        &vec![1.0, -1.0],
        1,
    )
    .unwrap();
    assert!(
        (ra[0] - 1.0).abs() < 1e-6 && (ra[1] - 3.0).abs() < 1e-6,
        "{ra:?}"
    );
    assert_eq!(rb, vec![0.0, 0.0]);
}

#[test]
fn clone_rule_sums_the_consumers() {
    let x = values(30, 7);
    let (r1, r2, r3) = (values(30, 8), values(30, 9), values(30, 10));
    let mut rx = vec![0.0; 30];
    Cpu.lrp_clone(&mut rx, &x, &[&r1, &r2, &r3]).unwrap();
    let total = abs_sum(&r1) + abs_sum(&r2) + abs_sum(&r3);
    assert_close("clone", sum(&rx), sum(&r1) + sum(&r2) + sum(&r3), total);
    assert!(Cpu.lrp_clone(&mut rx, &x, &[&vec![0.0; 3]]).is_err());
}

/// Runs the attention rule on random q, kv with the forward's own probabilities and context.
fn attention_relprop(shape: &AttentionShape, seed: u64) -> [Vec<f32>; 4] {
    let be = Cpu;
    let w = shape.width();
    let q = values(shape.batch * shape.queries * w, seed);
    let kv = values(shape.batch * shape.keys * 2 * w, seed + 1);
    let (mut probs, mut ctx) = (
        vec![0.0; shape.probs_len()],
        vec![0.0; shape.batch * shape.queries * w],
    );
    be.attention(&mut probs, &mut ctx, &q, &kv, shape).unwrap();
    let rctx = values(ctx.len(), seed + 2);
    let mut cam = vec![0.0; probs.len()];
    let (mut rq, mut rkv) = (vec![0.0; q.len()], vec![0.0; kv.len()]);
    be.lrp_attention(
        &mut cam, &mut rq, &mut rkv, &rctx, &q, &kv, &probs, &ctx, shape,
    )
    .unwrap();
    [rctx, cam, rq, rkv]
}

/// Per sample and head: Σ R_P = Σ R_V = Σ R_ctx / 2, and Σ R_Q = Σ R_K = Σ R_P / 2.
#[test]
fn attention_rule_conserves_relevance_per_head() {
    let shape = AttentionShape {
        key_mask: Some(AttentionShape::prefix_mask(&[6, 4], 6)),
        queries: 5,
        ..AttentionShape::self_attention(2, 3, 6, 8)
    };
    let [rctx, cam, rq, rkv] = attention_relprop(&shape, 11);
    let (w, hd) = (shape.width(), shape.head_dim);
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let cols = |buf: &[f32], rows: usize, stride: usize, offset: usize| -> f64 {
                (0..rows)
                    .map(|i| {
                        let start = (b * rows + i) * stride + offset + h * hd;
                        sum(&buf[start..start + hd])
                    })
                    .sum()
            };
            let block = (b * shape.heads + h) * shape.queries * shape.keys;
            let r_p = sum(&cam[block..block + shape.queries * shape.keys]);
            let scale = abs_sum(&rctx);
            let what = format!("sample {b} head {h}");
            assert_close(&what, r_p, cols(&rctx, shape.queries, w, 0) / 2.0, scale);
            assert_close(&what, cols(&rkv, shape.keys, 2 * w, w), r_p, scale);
            assert_close(&what, cols(&rq, shape.queries, w, 0), r_p / 2.0, scale);
            assert_close(&what, cols(&rkv, shape.keys, 2 * w, 0), r_p / 2.0, scale);
        }
    }
    // Masked keys (sample 1, keys 4 and 5) receive no relevance.
    for h in 0..shape.heads {
        for i in 0..shape.queries {
            let row = ((shape.heads + h) * shape.queries + i) * shape.keys;
            assert_eq!(&cam[row + 4..row + 6], &[0.0, 0.0]);
        }
    }
    assert!(rkv[(shape.keys + 4) * 2 * w..].iter().all(|&v| v == 0.0));
}

/// P = (0.25, 0.75), V = (2, 4), ctx = 3.5, R = 7: S = 2, R_P = (1, 6)/2, R_V = (1, 6)/2;
/// with q = 1, k = (1, 2): S' = R_P / (q·k) = (0.5, 1.5), R_Q = 1·(0.5 + 3)/2 = 1.75,
/// R_K = (1·0.5, 2·1.5)/2 = (0.25, 1.5).
#[test]
fn attention_rule_matches_the_hand_example() {
    let shape = AttentionShape {
        queries: 1,
        keys: 2,
        ..AttentionShape::self_attention(1, 1, 1, 1)
    };
    let kv = vec![1.0, 2.0, 2.0, 4.0];
    let mut cam = vec![0.0; 2];
    let (mut rq, mut rkv) = (vec![0.0; 1], vec![0.0; 4]);
    Cpu.lrp_attention(
        &mut cam,
        &mut rq,
        &mut rkv,
        &vec![7.0],
        &vec![1.0],
        &kv,
        &vec![0.25, 0.75],
        &vec![3.5],
        &shape,
    )
    .unwrap();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-6);
    assert!(close(&cam, &[0.5, 3.0]), "{cam:?}");
    assert!(close(&rq, &[1.75]), "{rq:?}");
    assert!(close(&rkv, &[0.25, 0.5, 1.5, 3.0]), "{rkv:?}");
}

/// §D's clone rule by hand, R_x = x ⊙ Σ_i sdiv(R_i, x), where it is not just Σ_i R_i: a unit
/// with x = 0 gets nothing (sdiv(·, 0) = 0), x = ε = 1e-9 gets half (x/(x + ε)), and
/// x = −ε, where x + ε = 0, divides by ε alone (−ΣR).
#[test]
fn clone_rule_matches_the_hand_example() {
    let x = vec![0.0, 1e-9, -1e-9, 2.0];
    let (r1, r2) = (vec![1.0; 4], vec![3.0; 4]);
    let mut rx = vec![9.0; 4];
    Cpu.lrp_clone(&mut rx, &x, &[&r1, &r2]).unwrap();
    // 2 + ε rounds to 2 in f32: the last unit gets R₁ + R₂ = 4.
    let expected = [0.0, 2.0, -4.0, 4.0];
    for (i, (a, b)) in rx.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "unit {i}: {rx:?} vs {expected:?}"
        );
    }
}
