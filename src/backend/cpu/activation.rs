//! Feed-forward activations and their derivatives.
//!
//! In f32 with branch-free approximations, so that the compiler vectorises them (`simd`): through
//! scalar f64 `erf` the exact GELU took an eighth of an LXMERT explanation. The error
//! against the f64 functions is a few f32 ulps (pinned by the tests below); torch's own CPU
//! `erf` (Abramowitz–Stegun 7.1.26) is good to 1.5e-7. `tanh`, which the poolers apply to a
//! single row, stays in f64: its small outputs need relative accuracy.

use super::simd::vectorised;
use crate::backend::Activation;
use rayon::prelude::*;

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
const QUICK_GELU_ALPHA: f32 = 1.702;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_CUBIC: f32 = 0.044_715;

/// 1.5·2²³: adding it to a float of magnitude below 2²² rounds it to an integer, held in the
/// low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Elements per rayon task: large enough to amortise the split, small enough for two cores
/// to share a 320-row activation evenly.
const CHUNK: usize = 16 * 1024;

/// eˣ within 2 ulps. Below −87.33 it returns 0 (the true value is subnormal there) and
/// above 88 infinity (e⁸⁸ is 1.7e38, half of f32's largest); NaN stays NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    exp_sum(x, 0.0)
}

/// e^(hi + lo) for an exponent held in two parts, |lo| ≲ 2: Cody–Waite reduction by ln 2
/// and the degree-5 minimax polynomial of Cephes' `expf`. n·ln 2 comes off `hi` before `lo`
/// is added, so the bits `lo` carries below hi's ulp still count.
#[inline(always)]
fn exp_sum(hi: f32, lo: f32) -> f32 {
    let x = hi + lo;
    let k = x.clamp(-87.33, 88.0) * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = k - ROUND_MAGIC;
    // ln 2 in two parts; n·0.693359375 is exact.
    let r = ((hi - n * 0.693_359_4) + lo) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let er = p * (r * r) + r + 1.0;
    // 2ⁿ from n's bits in k: exponent field n + 127, n in [−126, 127] after the clamp.
    let two_n = f32::from_bits(k.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    let y = er * two_n;
    if x < -87.33 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else {
        y
    }
}

/// −x²/2 as hi + lo with hi exact: x split into its top 12 significant bits s and the rest,
/// x² = s² + (x − s)(x + s). Rounding −x²/2 to one f32 would cost Φ and φ up to 30 ulps of
/// relative accuracy in GELU's lower tail.
#[inline(always)]
fn minus_half_square(x: f32) -> (f32, f32) {
    let s = f32::from_bits(x.to_bits() & 0xFFFF_F000);
    let lo = -0.5 * ((x - s) * (x + s));
    // x = ±∞ gives ∞ − ∞ in lo; hi alone (−∞) is then the answer. A NaN x stays in hi.
    (-0.5 * (s * s), if lo.is_nan() { 0.0 } else { lo })
}

/// Φ(x) and φ(x), the standard normal CDF and density, from one split of −x²/2. Φ is
/// ½·erfc(−x/√2) with the Chebyshev fit of Numerical Recipes' `erfcc` (relative error below
/// 1.2e-7 for every argument): accurate in the lower tail, where GELU's output is x·Φ(x) of
/// a tiny Φ. (Where only Φ is used, the inlined φ is dropped as dead code.)
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let (hi, lo) = minus_half_square(x);
    let half_erfc = 0.5 * t * exp_sum(hi, lo + poly);
    let cdf = if x < 0.0 { half_erfc } else { 1.0 - half_erfc };
    (cdf, FRAC_1_SQRT_2PI * exp_sum(hi, lo))
}

/// σ(x) and σ(x)·(1 − σ(x)). With e = e⁻ˣ, 1 − σ = e·σ: computed so where σ is near 1
/// (1 − σ would cancel), and as 1 − σ where e is large (e·σ would be ∞·0).
#[inline(always)]
fn sigmoid_and_slope(x: f32) -> (f32, f32) {
    let e = exp(-x);
    let s = 1.0 / (1.0 + e);
    let complement = if e > 1.0 { 1.0 - s } else { e * s };
    (s, s * complement)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * normal_cdf_pdf(x).0
}

#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    let (cdf, pdf) = normal_cdf_pdf(x);
    cdf + x * pdf
}

/// 2u of GELU's tanh form: 0.5·x·(1 + tanh u) = x·σ(2u), which keeps its relative accuracy
/// where tanh u is near −1 (1 + tanh u would cancel).
#[inline(always)]
fn gelu_tanh_arg(x: f32) -> f32 {
    2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    x * sigmoid_and_slope(gelu_tanh_arg(x)).0
}

#[inline(always)]
fn gelu_tanh_derivative(x: f32) -> f32 {
    // Beyond ±10 the derivative is 1 or 0 to f32 precision; the clamp keeps x³ finite.
    let x = x.clamp(-10.0, 10.0);
    let (s, slope) = sigmoid_and_slope(gelu_tanh_arg(x));
    let d_arg = 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x);
    s + x * slope * d_arg
}

#[inline(always)]
fn quick_gelu(x: f32) -> f32 {
    x * sigmoid_and_slope(QUICK_GELU_ALPHA * x).0
}

#[inline(always)]
fn quick_gelu_derivative(x: f32) -> f32 {
    let (s, slope) = sigmoid_and_slope(QUICK_GELU_ALPHA * x);
    s + QUICK_GELU_ALPHA * x * slope
}

fn tanh(x: f32) -> f32 {
    (x as f64).tanh() as f32
}

fn tanh_derivative(x: f32) -> f32 {
    (1.0 - (x as f64).tanh().powi(2)) as f32
}

/// One chunk of a pass: `out[i] = f(x[i])` forward, `out[i] = dy[i]·f'(x[i])` backward.
struct Chunk<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    dy: Option<&'a [f32]>,
}

#[inline(always)]
fn apply(c: Chunk, f: fn(f32) -> f32) {
    match c.dy {
        None => c.out.iter_mut().zip(c.x).for_each(|(y, &x)| *y = f(x)),
        Some(dy) => c
            .out
            .iter_mut()
            .zip(c.x.iter().zip(dy))
            .for_each(|(dx, (&x, &dy))| *dx = dy * f(x)),
    }
}

#[inline(always)]
fn run(c: Chunk, act: Activation) {
    let backward = c.dy.is_some();
    match (act, backward) {
        (Activation::Gelu, false) => apply(c, gelu),
        (Activation::Gelu, true) => apply(c, gelu_derivative),
        (Activation::GeluTanh, false) => apply(c, gelu_tanh),
        (Activation::GeluTanh, true) => apply(c, gelu_tanh_derivative),
        (Activation::QuickGelu, false) => apply(c, quick_gelu),
        (Activation::QuickGelu, true) => apply(c, quick_gelu_derivative),
        (Activation::Tanh, false) => apply(c, tanh),
        (Activation::Tanh, true) => apply(c, tanh_derivative),
    }
}

vectorised!(fn run_vectorised(c: Chunk, act: Activation) => run);

pub(crate) fn activation(out: &mut [f32], x: &[f32], act: Activation) {
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| run_vectorised(Chunk { out, x, dy: None }, act));
}

pub(crate) fn activation_backward(dx: &mut [f32], dy: &[f32], x: &[f32], act: Activation) {
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(out, (x, dy))| {
            run_vectorised(
                Chunk {
                    out,
                    x,
                    dy: Some(dy),
                },
                act,
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::{PI, SQRT_2};

    fn cdf64(x: f64) -> f64 {
        // erfc, not 1 + erf: the lower tail would cancel to nothing in f64 too.
        0.5 * libm::erfc(-x / SQRT_2)
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The f64 definitions the approximations stand for: value and derivative.
    fn reference(act: Activation, x: f64) -> (f64, f64) {
        match act {
            Activation::Gelu => {
                let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
                (x * cdf64(x), cdf64(x) + x * pdf)
            }
            Activation::GeluTanh => {
                let c = (2.0 / PI).sqrt();
                let t = (c * (x + 0.044715 * x * x * x)).tanh();
                let du = c * (1.0 + 3.0 * 0.044715 * x * x);
                (
                    0.5 * x * (1.0 + t),
                    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
                )
            }
            Activation::QuickGelu => {
                let s = sigmoid64(1.702 * x);
                (x * s, s + 1.702 * x * s * (1.0 - s))
            }
            Activation::Tanh => (x.tanh(), 1.0 - x.tanh().powi(2)),
        }
    }

    /// Every f32 from −12 to 12 in steps of 2⁻¹⁰ (and the same near 0, 2⁻²⁰), plus
    /// magnitudes out to 1e30.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (-12 * 1024..=12 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        xs.extend((-1024..=1024).map(|i| i as f32 / (1 << 20) as f32));
        for e in -30..=30 {
            let m = 10f32.powi(e);
            xs.extend([m, -m, 1.3 * m, -1.7 * m]);
        }
        xs
    }

    /// Largest error over the sweep's x in `range`, in units of `scale(reference)`.
    fn worst(
        act: Activation,
        backward: bool,
        range: std::ops::RangeInclusive<f32>,
        scale: impl Fn(f64) -> f64,
    ) -> (f64, f32) {
        let xs: Vec<f32> = sweep().into_iter().filter(|x| range.contains(x)).collect();
        let ones = vec![1.0f32; xs.len()];
        let mut out = vec![0.0f32; xs.len()];
        if backward {
            activation_backward(&mut out, &ones, &xs, act);
        } else {
            activation(&mut out, &xs, act);
        }
        let mut worst = (0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&out) {
            let (v, d) = reference(act, x as f64);
            let r = if backward { d } else { v };
            let err = (y as f64 - r).abs() / scale(r);
            assert!(!err.is_nan(), "{act:?} at {x}: {y} against {r}");
            if err > worst.0 {
                worst = (err, x);
            }
        }
        worst
    }

    const ULP: f64 = f32::EPSILON as f64;
    const FORMS: [Activation; 3] = [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
    ];

    #[test]
    fn gelu_forms_are_within_a_few_ulps_of_their_f64_definitions() {
        // The exact GELU keeps its relative accuracy everywhere. The others down to x = −3
        // (values ≥ 4e-3 in magnitude); below, their exponent, rounded to f32, costs
        // relative accuracy on values that tend to 0: bound the error in ulps of 1e-3.
        let (err, at) = worst(Activation::Gelu, false, f32::MIN..=f32::MAX, |r| {
            r.abs().max(1e-38) * ULP
        });
        assert!(err <= 4.0, "GELU: {err:.2} ulps at x = {at}");
        for act in FORMS {
            let (err, at) = worst(act, false, -3.0..=f32::MAX, |r| r.abs().max(1e-38) * ULP);
            assert!(err <= 8.0, "{act:?}: {err:.2} ulps at x = {at}");
            let (err, at) = worst(act, false, f32::MIN..=-3.0, |r| r.abs().max(1e-3) * ULP);
            assert!(err <= 8.0, "{act:?}: {err:.2} ulps of 1e-3 at x = {at}");
        }
    }

    #[test]
    fn derivatives_are_within_a_few_ulps_of_the_larger_of_the_value_and_one() {
        // The derivatives cross 0 and vanish in the lower tail: the products downstream see
        // their absolute error, next to values of order 1.
        for act in FORMS {
            let (err, at) = worst(act, true, f32::MIN..=f32::MAX, |r| r.abs().max(1.0) * ULP);
            assert!(err <= 8.0, "{act:?} derivative: {err:.2} ulps at x = {at}");
        }
    }

    #[test]
    fn tanh_is_correctly_rounded_f64() {
        let (err, at) = worst(Activation::Tanh, false, f32::MIN..=f32::MAX, |r| {
            r.abs().max(1e-38) * ULP
        });
        assert!(err <= 0.5, "tanh: {err:.2} ulps at x = {at}");
    }

    #[test]
    fn special_values_behave_as_the_functions_do() {
        let xs = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -200.0,
            200.0,
        ];
        let mut out = vec![0.0; xs.len()];
        for act in FORMS {
            activation(&mut out, &xs, act);
            assert!(out[0].is_nan(), "{act:?}");
            assert_eq!(out[1], f32::INFINITY, "{act:?}");
            assert!(
                out[2].is_nan(),
                "{act:?}: −∞·Φ(−∞) = −∞·0, as in the f64 forms"
            );
            assert_eq!(&out[3..], &[0.0, 0.0, 0.0, 200.0], "{act:?}");
        }
    }

    #[test]
    fn every_lane_of_a_long_buffer_matches_the_scalar_form() {
        // 3·CHUNK + 7 elements: rayon chunks, vector bodies and remainders all take part, and
        // the vectorised code must round exactly as the scalar code (no contraction).
        let xs: Vec<f32> = (0..3 * CHUNK + 7)
            .map(|i| ((i * 7919) % 20011) as f32 / 1000.0 - 10.0)
            .collect();
        let (mut out, mut back) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        activation(&mut out, &xs, Activation::Gelu);
        activation_backward(&mut back, &xs, &xs, Activation::Gelu);
        for ((&x, &y), &d) in xs.iter().zip(&out).zip(&back) {
            assert_eq!(y.to_bits(), gelu(x).to_bits(), "at {x}");
            assert_eq!(d.to_bits(), (x * gelu_derivative(x)).to_bits(), "at {x}");
        }
    }
}
