//! The CUDA path on a machine without a GPU: tests/cuda_emulator builds a `libcuda.so` and a
//! `libcublas.so` that run kernels/*.cu on the CPU (see the header of each file there). Where
//! no NVIDIA driver is installed, `driver()` compiles them with the host's C++ compiler (once
//! per source version, under target/tmp) and loads them into this process, so the backend's
//! own dlopen of "libcuda.so" and "libcublas.so" finds them by their soname. A child process
//! gets them through `LD_LIBRARY_PATH` (`emulate_in`).
//!
//! This checks the host code and the kernels' logic against the CPU backend, not a GPU's
//! timing, memory model or rounding of its math library: scripts/gpu-check.sh does that.
//! `FIEDLER_CUDA_EMULATOR=off` keeps it out (the CUDA tests then skip), and so does
//! `FIEDLER_REQUIRE_CUDA=1` (the tests then fail without a GPU).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::repo;

/// Which CUDA driver the tests in this process get.
pub enum Driver {
    /// The NVIDIA driver is installed (there may still be no usable GPU).
    Real,
    /// The emulator, loaded from this directory.
    Emulated(PathBuf),
    /// Neither, and why there is no emulator.
    Missing(String),
}

pub fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return Driver::Real;
        }
        if std::env::var_os("FIEDLER_CUDA_EMULATOR").is_some_and(|v| v == "off") {
            return Driver::Missing("FIEDLER_CUDA_EMULATOR=off".into());
        }
        // scripts/gpu-check.sh asks for a GPU: the emulator must not stand in for it.
        if std::env::var_os("FIEDLER_REQUIRE_CUDA").is_some_and(|v| v == "1") {
            return Driver::Missing("FIEDLER_REQUIRE_CUDA=1 wants the NVIDIA driver".into());
        }
        match build() {
            Ok(dir) => {
                load(&dir);
                Driver::Emulated(dir)
            }
            Err(why) => Driver::Missing(format!("no CUDA emulator: {why}")),
        }
    })
}

/// Lets a child process (the `fiedler` binary) find the emulator, when this process uses it.
pub fn emulate_in(cmd: &mut Command) -> &mut Command {
    if let Driver::Emulated(dir) = driver() {
        let mut paths = vec![dir.clone()];
        paths.extend(
            std::env::var_os("LD_LIBRARY_PATH")
                .iter()
                .flat_map(std::env::split_paths),
        );
        cmd.env(
            "LD_LIBRARY_PATH",
            std::env::join_paths(paths).expect("paths without ':'"),
        );
    }
    cmd
}

const SOURCES: &[&str] = &[
    "device.h",
    "registry.h",
    "runtime.h",
    "runtime.cpp",
    "memory.h",
    "memory.cpp",
    "driver.cpp",
    "cublas.cpp",
    "selftest.cu",
    "spectral_probe.cu",
];

/// Flags for every file. Nothing is contracted into an FMA, so every product rounds as
/// written (what `__fmul_rn` asks of nvcc); only the CUDA API is exported, not the kernels.
const FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-shared",
    "-ffp-contract=off",
    "-fvisibility=hidden",
];

/// The emulator's directory, built unless this version of the sources already was; an error
/// only where it cannot be built at all. A build that fails panics: that is a defect.
fn build() -> Result<PathBuf, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("it switches fibers with x86-64 code".into());
    }
    let root = repo();
    let sources = root.join("tests/cuda_emulator");
    let kernel_dir = root.join("kernels");
    let mut kernel_files: Vec<PathBuf> = std::fs::read_dir(&kernel_dir)
        .expect("kernels/")
        .map(|e| e.expect("kernels/").path())
        .collect();
    kernel_files.sort();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    // This file too: it rewrites the kernels' sources (`fresh_shared`) and sets the flags.
    for path in SOURCES
        .iter()
        .map(|s| sources.join(s))
        .chain(kernel_files.iter().cloned())
        .chain([root.join("tests/common/cuda_emulator.rs")])
    {
        inputs.push(path.to_string_lossy().into_owned().into_bytes());
        inputs.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    let parts: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cuda-emulator-{:016x}",
        fiedler::hash::fnv1a(&parts)
    ));
    if dir.join("libcuda.so").is_file() && dir.join("libcublas.so").is_file() {
        return Ok(dir);
    }
    // Built beside, then renamed: another test process may be building the same version.
    let work = dir.with_extension(format!("building-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("target/tmp is writable");
    let mut units = Vec::new();
    let probes = ["selftest.cu", "spectral_probe.cu"].map(|f| sources.join(f));
    for file in kernel_files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .chain(&probes)
    {
        let unit = work.join(file.file_stem().unwrap()).with_extension("cpp");
        std::fs::write(&unit, registering(file)).expect("target/tmp is writable");
        units.push(unit);
    }
    compile(&work, "libcuda.so", |cmd| {
        cmd.arg("-I").arg(&sources).arg("-I").arg(&kernel_dir);
        cmd.arg("-include").arg(sources.join("device.h"));
        cmd.args(["-Wno-unused-function", "-Wno-unknown-pragmas"]);
        cmd.args(&units);
        cmd.args(["runtime.cpp", "memory.cpp", "driver.cpp"].map(|f| sources.join(f)));
    })?;
    compile(&work, "libcublas.so", |cmd| {
        // -O3: the products' loops over rows vectorise.
        cmd.arg("-O3").arg(sources.join("cublas.cpp"));
        // It asks the driver whether the context is lost (the libcuda.so beside it).
        cmd.arg("-L")
            .arg(&work)
            .args(["-l:libcuda.so", "-Wl,-rpath,$ORIGIN"]);
    })?;
    if std::fs::rename(&work, &dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&work);
    }
    // Earlier versions are of no more use.
    for old in std::fs::read_dir(dir.parent().unwrap())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = old.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("cuda-emulator-") && !name.contains("building") && old.path() != dir {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    Ok(dir)
}

/// An error only when there is no C++ compiler (`$CXX`, else `c++`).
fn compile(dir: &Path, library: &str, inputs: impl FnOnce(&mut Command)) -> Result<(), String> {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cmd = Command::new(&compiler);
    cmd.args(FLAGS).arg("-Wall");
    inputs(&mut cmd);
    cmd.arg("-o")
        .arg(dir.join(library))
        .arg(format!("-Wl,-soname,{library}"));
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no C++ compiler ({compiler}; set CXX)"));
        }
        Err(e) => panic!("{compiler}: {e}"),
    };
    assert!(
        out.status.success(),
        "the CUDA emulator's {library} does not build ({compiler}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A translation unit of one kernel file (its static shared variables filled afresh per
/// block, `fresh_shared`) followed by a registration of each of its kernels
/// (`KERNEL void [__launch_bounds__(…)] name(`), so the driver finds them by name.
fn registering(file: &Path) -> String {
    let src = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut unit = format!(
        "#line 1 \"{}\"\n{}\n#include \"registry.h\"\nstatic const emu::Registrar registrations[] = {{\n",
        file.display(),
        fresh_shared(&src)
    );
    for (at, _) in src.match_indices("KERNEL void") {
        let mut rest = src[at + "KERNEL void".len()..].trim_start();
        if let Some(bounds) = rest.strip_prefix("__launch_bounds__") {
            rest = bounds[bounds.find(')').expect("closed __launch_bounds__") + 1..].trim_start();
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !name.is_empty(),
            "{}: a KERNEL without a name",
            file.display()
        );
        unit.push_str(&format!("    {{\"{name}\", {name}}},\n"));
    }
    unit.push_str("};\n");
    unit
}

/// `src` with a call after each static `__shared__` declaration (`__shared__ T name[…];`, one
/// per line) that fills the variable with NaN bytes when a block first reaches it: a GPU
/// leaves shared memory undefined when a block starts, and the emulator's variables would
/// otherwise hold what the previous block left. Lines keep their numbers.
fn fresh_shared(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or_default();
        match (code.find("__shared__"), code.find(';')) {
            (Some(at), Some(end)) if !code[..at].contains("extern") => {
                let declarator = &code[at + "__shared__".len()..end];
                let name = declarator[..declarator.find('[').unwrap_or(declarator.len())]
                    .trim_end()
                    .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| panic!("a __shared__ declaration without a name: {line}"));
                out.push_str(&line[..=end]);
                out.push_str(&format!(" emu::fresh_shared(&{name}, sizeof({name}));"));
                out.push_str(&line[end + 1..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Loads both libraries for good (the backend keeps calling into them).
fn load(dir: &Path) {
    for library in ["libcuda.so", "libcublas.so"] {
        let path = dir.join(library);
        // SAFETY: the emulator's libraries run no code at load time beyond registering the
        // kernels in their own table.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(&path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::mem::forget(lib);
    }
}
