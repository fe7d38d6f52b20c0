//! `--device cpu|cuda|auto`: which backend a command computes on.

use clap::{Args, ValueEnum};
use fiedler::backend::Cpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    /// The first CUDA GPU; an error when there is none or the CUDA libraries are missing.
    Cuda,
    /// CUDA when it works, else the CPU.
    Auto,
}

/// An opened backend. Commands run generic code over `Backend` on whichever it is.
#[allow(clippy::large_enum_variant)] // one per process; boxing would hide the `Backend` impl
pub enum Opened {
    Cpu(Cpu),
    #[cfg(feature = "cuda")]
    Cuda(fiedler::backend::cuda::Cuda),
}

impl Opened {
    /// For people: "cpu (N threads)" or the GPU's name.
    pub fn describe(&self) -> String {
        match self {
            Opened::Cpu(_) => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Opened::Cuda(c) => format!("cuda: {}", c.describe()),
        }
    }

    /// The dense products' precision, as opened with `asked`: "f32", or "tf32" on a GPU (a
    /// CPU that `--device auto` fell back to computes in f32 whatever was asked).
    pub fn precision(&self, asked: Precision) -> &'static str {
        let on_gpu = !matches!(self, Opened::Cpu(_));
        if on_gpu && asked.tf32 {
            "tf32"
        } else {
            "f32"
        }
    }
}

/// How the dense products of a GPU are computed.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct Precision {
    /// CUDA only: run the f32 dense products on TF32 tensor cores (inputs rounded to a
    /// 10-bit mantissa; ~2.1× the explanations/s of ViT-B/16 CLIP at batch 64 on an H200). Traces move by
    /// up to ~2e-3 of their scale, most explanations by ~1e-3 and Grad-CAM by up to 8e-2; see
    /// the README (CUDA).
    #[arg(long)]
    pub tf32: bool,
}

#[cfg(feature = "cuda")]
pub fn open(device: Device, precision: Precision) -> anyhow::Result<Opened> {
    use fiedler::backend::cuda::Cuda;
    let cuda = || {
        let c = Cuda::new()?;
        if precision.tf32 {
            c.with_tf32()
        } else {
            Ok(c)
        }
    };
    let opened = match device {
        Device::Cpu => Opened::Cpu(Cpu),
        Device::Cuda => cuda()
            .map(Opened::Cuda)
            .map_err(|e| anyhow::anyhow!("--device cuda: {e}"))?,
        // --tf32 asks for TF32 where there is a GPU: the CPU it falls back to computes in f32.
        Device::Auto => cuda().map_or_else(
            |e| {
                let tf32 = if precision.tf32 {
                    "; --tf32 does not apply"
                } else {
                    ""
                };
                eprintln!("note: --device auto: using the CPU ({e}){tf32}");
                Opened::Cpu(Cpu)
            },
            Opened::Cuda,
        ),
    };
    if precision.tf32 && device == Device::Cpu {
        anyhow::bail!("--tf32 applies to the GPU; the CPU computes in f32 (drop --tf32)");
    }
    Ok(opened)
}

#[cfg(not(feature = "cuda"))]
pub fn open(device: Device, precision: Precision) -> anyhow::Result<Opened> {
    match device {
        Device::Cuda => anyhow::bail!(
            "--device cuda: this fiedler was built without the `cuda` feature; use --device cpu"
        ),
        Device::Cpu if precision.tf32 => {
            anyhow::bail!("--tf32 applies to the GPU; the CPU computes in f32 (drop --tf32)")
        }
        Device::Cpu | Device::Auto => Ok(Opened::Cpu(Cpu)),
    }
}

/// Runs `$body` with `$be` bound to the opened backend, whatever its type.
macro_rules! with_backend {
    ($opened:expr, $be:ident => $body:expr) => {
        match $opened {
            $crate::cli::device::Opened::Cpu($be) => $body,
            #[cfg(feature = "cuda")]
            $crate::cli::device::Opened::Cuda($be) => $body,
        }
    };
}
pub(crate) use with_backend;
