//! `fiedler bench`'s GFLOP columns read the CPU backend's product counter: one linear layer
//! of m × k by k × n adds exactly 2·m·k·n. (Its own test binary: no other test runs products
//! in this process meanwhile.)

use fiedler::backend::cpu::matmul_flops;
use fiedler::backend::{Backend, Cpu};

#[test]
fn a_linear_layer_counts_two_flops_per_multiply_add() {
    let (m, k, n) = (7, 33, 5);
    let x = Cpu.upload(&vec![0.5; m * k]).unwrap();
    let w = Cpu.upload_weight(&vec![0.25; n * k], n, k).unwrap();
    let mut out = Cpu.zeros(m * n).unwrap();
    let before = matmul_flops();
    Cpu.linear(&mut out, &x, &w, None, m, k, n).unwrap();
    assert_eq!(matmul_flops() - before, 2 * (m * k * n) as u64);
    assert!(out.iter().all(|&v| (v - 0.125 * k as f32).abs() < 1e-5));
}
