//! The CUDA backend on a device without memory pools, where cudarc allocates through
//! `cuMemAlloc`, which refuses 0 bytes. The CUDA emulator plays one
//! (`FIEDLER_CUDA_EMULATOR_POOLS=0`, read when it loads): this file sets it first, so it holds
//! one test, and it checks the emulator's device only (a GPU has what it has).
#![cfg(feature = "cuda")]

mod common;

use common::cuda_emulator::{driver, Driver};
use fiedler::backend::cuda::Cuda;
use fiedler::backend::{Backend, Cpu};

#[test]
fn buffers_empty_or_not_work_without_memory_pools() {
    std::env::set_var("FIEDLER_CUDA_EMULATOR_POOLS", "0");
    if !matches!(driver(), Driver::Emulated(_)) {
        println!("skipped: plays a device without memory pools on the CUDA emulator, not in use");
        return;
    }
    // The emulator runs the kernels, but without nvcc's fatbins they need NVRTC.
    let cuda = match Cuda::new() {
        Ok(cuda) => cuda,
        Err(e) if std::env::var_os("FIEDLER_REQUIRE_CUDA").is_some_and(|v| v == "1") => {
            panic!("FIEDLER_REQUIRE_CUDA is set but CUDA fails: {e}")
        }
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let empty = cuda.upload(&[]).unwrap();
    assert_eq!(cuda.len(&empty), 0);
    assert_eq!(cuda.download(&empty).unwrap(), Vec::<f32>::new());
    assert_eq!(cuda.len(&cuda.zeros(0).unwrap()), 0);
    assert_eq!(cuda.len(&cuda.uninit(0).unwrap()), 0);
    // A product over no rows, then one over some, as on the CPU.
    let (k, n) = (3, 4);
    let w: Vec<f32> = (0..n * k).map(|i| i as f32 / 7.0 - 0.5).collect();
    let x: Vec<f32> = (0..2 * k).map(|i| 0.25 * i as f32).collect();
    let dw = cuda.upload_weight(&w, n, k).unwrap();
    let mut none = cuda.uninit(0).unwrap();
    cuda.linear(&mut none, &empty, &dw, None, 0, k, n).unwrap();
    let mut y = cuda.uninit(2 * n).unwrap();
    cuda.linear(&mut y, &cuda.upload(&x).unwrap(), &dw, None, 2, k, n)
        .unwrap();
    let mut want = vec![0.0; 2 * n];
    Cpu.linear(
        &mut want,
        &x,
        &Cpu.upload_weight(&w, n, k).unwrap(),
        None,
        2,
        k,
        n,
    )
    .unwrap();
    let got = cuda.download(&y).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}
