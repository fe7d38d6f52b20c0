//! Feed-forward activations and their derivatives. Computed in f64 and rounded once, so the
//! result is within an ulp of torch's f32 kernels.

use crate::backend::Activation;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const QUICK_GELU_ALPHA: f64 = 1.702;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn forward(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::QuickGelu => x * sigmoid(QUICK_GELU_ALPHA * x),
        Activation::Tanh => x.tanh(),
    }
}

fn derivative(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            cdf + x * pdf
        }
        Activation::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            let t = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        }
        Activation::QuickGelu => {
            let s = sigmoid(QUICK_GELU_ALPHA * x);
            s + QUICK_GELU_ALPHA * x * s * (1.0 - s)
        }
        Activation::Tanh => 1.0 - x.tanh().powi(2),
    }
}

pub(crate) fn activation(out: &mut [f32], x: &[f32], act: Activation) {
    out.par_iter_mut()
        .zip(x.par_iter())
        .for_each(|(y, &x)| *y = forward(act, x as f64) as f32);
}

pub(crate) fn activation_backward(dx: &mut [f32], dy: &[f32], x: &[f32], act: Activation) {
    dx.par_iter_mut()
        .zip(dy.par_iter().zip(x.par_iter()))
        .for_each(|(dx, (&dy, &x))| *dx = (dy as f64 * derivative(act, x as f64)) as f32);
}
