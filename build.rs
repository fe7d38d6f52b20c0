//! Embeds the CUDA kernels (kernels/*.cu, kernels/*.cuh) into the library.
//!
//! The sources are always embedded (`SOURCES`, `HEADERS` in `$OUT_DIR/kernels.rs`), so a
//! machine without a CUDA toolkit builds and can compile them at run time with NVRTC. When
//! nvcc is found (and the `cuda` feature is on), each kernel file is also compiled here into
//! a fatbin with SASS for sm_80 and sm_90 plus compute_80 PTX (`FATBIN`), which loads without
//! a JIT and without the PTX-newer-than-driver trap. No build dependency; nothing is written
//! into src/.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_ROOT",
        "FIEDLER_CUDA_ARCHS",
        "FIEDLER_NO_NVCC",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-check-cfg=cfg(kernels_prebuilt)");

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    let kernels = root.join("kernels");
    let (sources, headers) = kernel_files(&kernels);

    let mut code = String::new();
    code.push_str(&table("SOURCES", &sources));
    code.push_str(&table("HEADERS", &headers));

    let nvcc = if env::var_os("CARGO_FEATURE_CUDA").is_some()
        && env::var_os("FIEDLER_NO_NVCC").is_none()
    {
        find_nvcc()
    } else {
        None
    };
    let mut fatbins = Vec::new();
    match &nvcc {
        Some(nvcc) => {
            let archs = env::var("FIEDLER_CUDA_ARCHS").unwrap_or_else(|_| "80,90".into());
            for (name, path) in &sources {
                let fatbin = out.join(format!("{name}.fatbin"));
                compile(nvcc, path, &fatbin, &kernels, &archs);
                fatbins.push((name.clone(), fatbin));
            }
            println!("cargo:rustc-cfg=kernels_prebuilt");
        }
        None if env::var_os("CARGO_FEATURE_CUDA").is_some() => println!(
            "cargo:warning=nvcc not found (NVCC, CUDA_HOME/CUDA_PATH/CUDA_ROOT, PATH, \
             /usr/local/cuda): the CUDA kernels will be compiled at run time with NVRTC"
        ),
        None => {}
    }
    code.push_str("/// Kernel files compiled by nvcc at build time: (file stem, fatbin).\n");
    code.push_str("pub const FATBIN: &[(&str, &[u8])] = &[\n");
    for (name, path) in &fatbins {
        code.push_str(&format!("    ({name:?}, include_bytes!({path:?})),\n"));
    }
    code.push_str("];\n");
    fs::write(out.join("kernels.rs"), code).expect("OUT_DIR is writable");
}

/// (stem, path) of every kernels/*.cu and kernels/*.cuh, sorted by name.
type Files = Vec<(String, PathBuf)>;

fn kernel_files(dir: &Path) -> (Files, Files) {
    let mut sources = Vec::new();
    let mut headers = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("kernels/ is readable").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
        match (path.extension().and_then(|e| e.to_str()), stem) {
            (Some("cu"), Some(stem)) => sources.push((stem, path)),
            (Some("cuh"), Some(_)) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("utf-8 name");
                headers.push((name.to_owned(), path));
            }
            _ => {}
        }
    }
    sources.sort();
    headers.sort();
    (sources, headers)
}

fn table(name: &str, files: &Files) -> String {
    let mut s = format!("pub const {name}: &[(&str, &str)] = &[\n");
    for (stem, path) in files {
        s.push_str(&format!("    ({stem:?}, include_str!({path:?})),\n"));
    }
    s.push_str("];\n");
    s
}

/// `$NVCC`, then `$CUDA_HOME`/`$CUDA_PATH`/`$CUDA_ROOT` + bin/nvcc, then PATH, then
/// /usr/local/cuda.
fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC").map(PathBuf::from) {
        return Some(p);
    }
    let from_homes = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"]
        .iter()
        .filter_map(env::var_os)
        .map(|home| PathBuf::from(home).join("bin/nvcc"));
    let from_path = env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .map(|d| d.join("nvcc"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_homes
        .chain(from_path)
        .chain([PathBuf::from("/usr/local/cuda/bin/nvcc")])
        .find(|p| p.is_file())
}

/// A kernel that nvcc rejects (or warns about) is a bug: fail the build with its output.
fn compile(nvcc: &Path, src: &Path, out: &Path, include: &Path, archs: &str) {
    let mut cmd = Command::new(nvcc);
    cmd.args(["-fatbin", "-O3", "-std=c++17", "-Werror", "all-warnings"])
        .arg(format!("-I{}", include.display()));
    for (i, arch) in archs.split(',').map(str::trim).enumerate() {
        // The first (oldest) architecture also carries PTX, which newer GPUs JIT-compile.
        let code = if i == 0 {
            format!("[sm_{arch},compute_{arch}]")
        } else {
            format!("sm_{arch}")
        };
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{arch},code={code}"));
    }
    cmd.arg("-o").arg(out).arg(src);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    if !output.status.success() {
        panic!(
            "nvcc failed on {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
