//! The kernels of kernels/*.cu: loaded from the fatbins nvcc built at build time, or compiled
//! here with NVRTC (PTX cached on disk) when the build had no nvcc.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::CudaError;
use crate::hash::fnv1a;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Every kernel the host code launches, by file (stem of kernels/NAME.cu).
pub const KERNELS: &[(&str, &[&str])] = &[
    ("activation", &["activation_fwd", "activation_bwd"]),
    (
        "attention",
        &[
            "softmax_fwd",
            "softmax_bwd",
            "head_mean",
            "head_mean_matvec",
            "head_rows",
        ],
    ),
    ("elementwise", &["add", "add_assign", "add_row_vector"]),
    (
        "embed",
        &[
            "patchify",
            "prepend_class_add_positions",
            "concat_sequences",
            "embed_tokens",
            "gather_rows",
            "gather_rows_bwd",
        ],
    ),
    ("head", &["cosine_fwd", "cosine_bwd"]),
    (
        "lrp",
        &[
            "lrp_abs",
            "lrp_sdiv",
            "lrp_half_product",
            "lrp_linear_ratio",
            "lrp_linear_combine",
            "lrp_add",
            "lrp_clone_term",
        ],
    ),
    ("norm", &["layernorm_fwd", "layernorm_bwd"]),
    ("relevance", &["product_row_sums", "product_row_step"]),
    (
        "spectral",
        &[
            "fiedler_rows",
            "fiedler_graphs",
            "fiedler_graphs_small",
            "fiedler_graphs_shared",
        ],
    ),
];

/// Whether the kernels were compiled by nvcc at build time (else NVRTC at run time).
pub fn prebuilt() -> bool {
    !embedded::FATBIN.is_empty()
}

/// Whether to load the nvcc fatbins: they exist and `FIEDLER_KERNELS=nvrtc` does not ask for
/// the run-time compiler instead (which lets one build check both paths on a GPU).
fn use_fatbin() -> bool {
    prebuilt() && std::env::var("FIEDLER_KERNELS").map_or(true, |v| v != "nvrtc")
}

/// The embedded kernel files: (stem, source as written).
pub fn sources() -> &'static [(&'static str, &'static str)] {
    embedded::SOURCES
}

/// A kernel file with our own headers inlined: NVRTC gets no include path for them.
pub fn source_with_headers(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 4096);
    for line in src.lines() {
        let included = line
            .trim()
            .strip_prefix("#include \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|name| embedded::HEADERS.iter().find(|(h, _)| *h == name));
        match included {
            Some((_, header)) => out.push_str(header),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// NVRTC's target for a compute capability; `compute_XY` (PTX the driver JIT-compiles) for
/// capabilities this table does not name.
pub fn nvrtc_arch(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        (m, _) if m >= 9 => "compute_90",
        _ => "compute_75",
    }
}

/// Whether libnvrtc can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one kernel file to PTX text with NVRTC. Needs libnvrtc (see `nvrtc_present`),
/// not a GPU.
pub fn compile_ptx(name: &'static str, src: &str, arch: &'static str) -> Result<String, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::MissingLibrary {
            library: "libnvrtc.so.13 (NVRTC)",
            needed: "compile the CUDA kernels (this build has no nvcc-compiled kernels)",
        });
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["-std=c++17".into(), "--dopt=on".into()],
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let code = source_with_headers(src);
    let compiled = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&code, opts))
        .map_err(|_| CudaError::Panic("NVRTC".into()))?;
    match compiled {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            file: name,
            arch,
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            file: name,
            arch,
            log: e.to_string(),
        }),
    }
}

/// Loaded kernels by name.
pub struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
    /// How they were obtained, for `fiedler` to report.
    pub origin: &'static str,
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self, CudaError> {
        let mut functions = HashMap::new();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| CudaError::driver("reading the compute capability", e))?;
        let arch = nvrtc_arch(major, minor);
        for &(file, names) in KERNELS {
            let module = if use_fatbin() {
                let fatbin = embedded::FATBIN
                    .iter()
                    .find(|(f, _)| *f == file)
                    .map(|(_, bytes)| bytes.to_vec())
                    .ok_or(CudaError::MissingKernel {
                        file,
                        kernel: "(fatbin)",
                    })?;
                load_module(ctx, Ptx::from_binary(fatbin), file)?
            } else {
                let ptx = cached_ptx(file, arch)?;
                load_module(ctx, Ptx::from_src(ptx), file)?
            };
            for &name in names {
                let f = module
                    .load_function(name)
                    .map_err(|_| CudaError::MissingKernel { file, kernel: name })?;
                functions.insert(name, f);
            }
        }
        Ok(Self {
            functions,
            origin: if use_fatbin() {
                "nvcc fatbin (sm_80, sm_90, compute_80 PTX)"
            } else {
                "NVRTC at run time"
            },
        })
    }

    pub fn get(&self, name: &'static str) -> Result<&CudaFunction, CudaError> {
        self.functions.get(name).ok_or(CudaError::MissingKernel {
            file: "?",
            kernel: name,
        })
    }
}

fn load_module(
    ctx: &Arc<CudaContext>,
    ptx: Ptx,
    file: &'static str,
) -> Result<Arc<CudaModule>, CudaError> {
    ctx.load_module(ptx).map_err(|e| CudaError::Driver {
        during: format!("loading kernels/{file}.cu (a PTX newer than the driver is refused: CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"),
        error: e.to_string(),
    })
}

fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked by the caller) and writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

/// `$XDG_CACHE_HOME/fiedler` or `~/.cache/fiedler`.
fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("fiedler"))
}

/// NVRTC's PTX for one kernel file, from the disk cache when the source, the target and the
/// NVRTC version are unchanged. The cache is an optimisation: failing to use it is not an
/// error.
fn cached_ptx(file: &'static str, arch: &'static str) -> Result<String, CudaError> {
    let src = sources()
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, s)| *s)
        .ok_or(CudaError::MissingKernel {
            file,
            kernel: "(source)",
        })?;
    if !nvrtc_present() {
        return compile_ptx(file, src, arch);
    }
    let (major, minor) = nvrtc_version();
    let version = format!("{major}.{minor}");
    let key = fnv1a(&[
        source_with_headers(src).as_bytes(),
        arch.as_bytes(),
        version.as_bytes(),
    ]);
    let path = cache_dir().map(|d| d.join(format!("{file}-{arch}-{key:016x}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(ptx);
    }
    let ptx = compile_ptx(file, src, arch)?;
    if let Some(p) = &path {
        let _ = p.parent().map(std::fs::create_dir_all);
        let _ = std::fs::write(p, &ptx);
    }
    Ok(ptx)
}
