//! The CUDA kernels compile, without a GPU: every kernels/*.cu through NVRTC for sm_80 and
//! sm_90 when libnvrtc loads (e.g. LD_LIBRARY_PATH=…/nvidia/cu13/lib from the pinned
//! nvidia-cuda-nvrtc wheel, see README), and the host code names only kernels that exist.
#![cfg(feature = "cuda")]

use fiedler::backend::cuda::kernels::{compile_ptx, nvrtc_present, sources, KERNELS};

/// `KERNEL void name(` (or `KERNEL void __launch_bounds__(…) name(`) declarations of a
/// source file.
fn declared(src: &str) -> Vec<&str> {
    src.match_indices("KERNEL void ")
        .filter_map(|(i, m)| {
            let rest = src[i + m.len()..].trim_start();
            let rest = match rest.strip_prefix("__launch_bounds__(") {
                Some(bounds) => bounds.split_once(')')?.1,
                None => rest,
            };
            rest.split('(').next()
        })
        .map(str::trim)
        .collect()
}

#[test]
fn host_launches_exactly_the_kernels_the_sources_declare() {
    let files: Vec<&str> = sources().iter().map(|(f, _)| *f).collect();
    let listed: Vec<&str> = KERNELS.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files, listed,
        "kernels/*.cu files vs backend::cuda::kernels::KERNELS"
    );
    for ((file, src), (_, names)) in sources().iter().zip(KERNELS) {
        let mut found = declared(src);
        let mut expected = names.to_vec();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "kernels in kernels/{file}.cu");
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc_for_sm80_and_sm90() {
    if !nvrtc_present() {
        // scripts/gpu-check.sh sets FIEDLER_REQUIRE_CUDA=1 and CI (scripts/cuda-compilers.sh)
        // FIEDLER_REQUIRE_NVRTC=1: there a skip would hide a missing library.
        let required = ["FIEDLER_REQUIRE_CUDA", "FIEDLER_REQUIRE_NVRTC"]
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| v == "1"));
        assert!(
            !required,
            "FIEDLER_REQUIRE_CUDA or FIEDLER_REQUIRE_NVRTC is set but libnvrtc.so.13 cannot be loaded"
        );
        println!(
            "skipped: libnvrtc.so.13 not found (set LD_LIBRARY_PATH to the CUDA 13 lib folder)"
        );
        return;
    }
    let mut failures = Vec::new();
    for &(file, src) in sources() {
        for arch in ["sm_80", "sm_90"] {
            match compile_ptx(file, src, arch) {
                Ok(ptx) => {
                    assert!(ptx.contains(".version"), "{file} {arch}: not PTX");
                    let (_, names) = KERNELS.iter().find(|(f, _)| *f == file).unwrap();
                    for name in *names {
                        assert!(
                            ptx.contains(&format!(".entry {name}(")),
                            "{file} {arch}: no entry {name} in the PTX"
                        );
                    }
                    println!("compiled kernels/{file}.cu for {arch}");
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A broken kernel must come back as an error naming the file, with NVRTC's log.
    let broken = "#include \"common.cuh\"\nKERNEL void oops(float* x) { x[0] = undefined_name; }\n";
    let err = compile_ptx("broken", broken, "sm_90").expect_err("a broken kernel compiled");
    let message = err.to_string();
    assert!(
        message.contains("kernels/broken.cu") && message.contains("undefined_name"),
        "{message}"
    );
}
