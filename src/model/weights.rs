//! Memory-mapped weights of a Hugging Face model directory.
//!
//! Layouts, in the order `transformers.PreTrainedModel.from_pretrained` prefers them: a single
//! `model.safetensors`, or `model.safetensors.index.json` whose `weight_map` sends each tensor
//! name to a shard file in the same directory; then the same two in PyTorch's pickle format
//! (`pytorch_model.bin`, `pytorch_model.bin.index.json`), which older repositories ship alone
//! (read by `torch_pickle`, which runs nothing from the file). Tensors are looked up by their
//! exact Hugging Face name; F32, F16, BF16 and F64 storage is converted to f32 on [`Weights::get`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::torch_pickle;
use crate::hash::fnv1a_words;

/// Single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// The same two in PyTorch's format.
pub const TORCH_WEIGHTS_FILE: &str = "pytorch_model.bin";
pub const TORCH_WEIGHTS_INDEX_FILE: &str = "pytorch_model.bin.index.json";

/// Bytes of the little-endian u64 header-length prefix of a safetensors file.
const LEN_PREFIX: usize = 8;

/// Opening weights or reading a tensor failed; every message names the file (and tensor).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "no weights in {dir}: looked for {WEIGHTS_FILE}, {WEIGHTS_INDEX_FILE}, \
         {TORCH_WEIGHTS_FILE} and {TORCH_WEIGHTS_INDEX_FILE}"
    )]
    NoWeights { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is not a readable PyTorch state dict: {reason}")]
    Torch { path: PathBuf, reason: String },
    #[error("invalid weights index {path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("shard {shard} named in {index} is missing")]
    MissingShard { index: PathBuf, shard: PathBuf },
    #[error("tensor {name} not found in {searched}")]
    MissingTensor { name: String, searched: String },
    #[error("tensor {name} in {file} cannot be loaded: {reason}")]
    TensorSize {
        name: String,
        file: PathBuf,
        reason: String,
    },
    #[error("tensor {name} in {file}: expected shape {expected:?}, found {found:?}")]
    Shape {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "tensor {name} in {file}: expected a float dtype (F32, F16, BF16 or F64), found {found}"
    )]
    Dtype {
        name: String,
        file: PathBuf,
        found: String,
    },
    #[error(
        "config.json says {field} = {configured}, but {searched} holds {found} layers under \
         {prefix}: the config does not belong to these weights (only the first {configured} \
         would be used, and the answers would be wrong)"
    )]
    LayerCount {
        field: &'static str,
        configured: usize,
        found: usize,
        prefix: &'static str,
        searched: String,
    },
    #[error(
        "config.json names {configured} answers (id2label), but {projection}.weight in {searched} \
         has {found} outputs: the config does not belong to these weights (without an id2label, a \
         config names 2)"
    )]
    AnswerCount {
        configured: usize,
        found: usize,
        projection: &'static str,
        searched: String,
    },
}

/// How many answers a config names, as `Weights::check_answers` compares them.
#[derive(Debug, Clone, Copy)]
pub struct AnswerCount {
    /// The answer head's output projection, e.g. "classifier.3" (its weight is read).
    pub projection: &'static str,
    pub answers: usize,
}

/// A stack of numbered layers: tensors `{prefix}.{k}.…`, as many as the config's `field` says.
#[derive(Debug, Clone, Copy)]
pub struct LayerStack {
    pub prefix: &'static str,
    pub field: &'static str,
    pub layers: usize,
}

/// All tensors of a model directory, memory-mapped, addressed by name.
#[derive(Debug)]
pub struct Weights {
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    location: HashMap<String, usize>,
    /// What a missing-tensor message says was searched: the weights file or the index.
    searched: String,
}

/// One weights file: its map and where each tensor lies in it.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, Stored>,
}

/// A tensor in a shard's map: element (i, j, …) at byte
/// `start + (i·strides[0] + j·strides[1] + …)·size`. safetensors stores every tensor
/// contiguously; a PyTorch file may hold views (a transpose, a slice of a shared storage).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// In elements.
    pub strides: Vec<usize>,
    pub start: usize,
}

/// How a weights file is written, known from the name transformers gives it.
#[derive(Debug, Clone, Copy)]
enum Format {
    SafeTensors,
    Torch,
}

impl Weights {
    /// Opens `dir/model.safetensors`, or else the shards listed by
    /// `dir/model.safetensors.index.json`, and checks every header.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        for format in [Format::SafeTensors, Format::Torch] {
            let (single, index) = match format {
                Format::SafeTensors => (WEIGHTS_FILE, WEIGHTS_INDEX_FILE),
                Format::Torch => (TORCH_WEIGHTS_FILE, TORCH_WEIGHTS_INDEX_FILE),
            };
            let (single, index) = (dir.join(single), dir.join(index));
            if single.is_file() {
                let shard = Shard::open(single, format)?;
                let location = shard.tensors.keys().map(|n| (n.clone(), 0)).collect();
                let searched = shard.path.display().to_string();
                return Ok(Self {
                    shards: vec![shard],
                    location,
                    searched,
                });
            }
            if index.is_file() {
                return Self::open_sharded(dir, &index, format);
            }
        }
        Err(LoadError::NoWeights {
            dir: dir.to_path_buf(),
        })
    }

    fn open_sharded(dir: &Path, index: &Path, format: Format) -> Result<Self, LoadError> {
        let index_error = |reason: String| LoadError::Index {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(|source| LoadError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| index_error(format!("not valid JSON: {e}")))?;
        let weight_map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| index_error("no \"weight_map\" object".into()))?;

        // Sorted so that shards open in a stable order and errors are reproducible.
        let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, file) in weight_map {
            let file = file.as_str().ok_or_else(|| {
                index_error(format!(
                    "weight_map[{name:?}] is {file}, expected a file name"
                ))
            })?;
            by_file.entry(file).or_default().push(name);
        }

        let mut shards = Vec::with_capacity(by_file.len());
        let mut location = HashMap::with_capacity(weight_map.len());
        for (file, names) in by_file {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(LoadError::MissingShard {
                    index: index.to_path_buf(),
                    shard: path,
                });
            }
            let shard = Shard::open(path, format)?;
            for name in names {
                if !shard.tensors.contains_key(name) {
                    return Err(index_error(format!(
                        "weight_map puts tensor {name} in {file}, which does not contain it"
                    )));
                }
                location.insert(name.to_string(), shards.len());
            }
            shards.push(shard);
        }
        Ok(Self {
            shards,
            location,
            searched: format!("{} (weight_map)", index.display()),
        })
    }

    /// The tensor `name` as f32, after checking that it has exactly `shape` and a float dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        self.get_optional(name, shape)?
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
                searched: self.searched.clone(),
            })
    }

    /// Like [`Weights::get`], but an absent tensor is `Ok(None)` (e.g. optional biases).
    pub fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, LoadError> {
        let Some((shard, info)) = self.lookup(name) else {
            return Ok(None);
        };
        if info.shape != shape {
            return Err(LoadError::Shape {
                name: name.to_string(),
                file: shard.path.clone(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        let decode: fn(&[u8]) -> Vec<f32> = match info.dtype {
            Dtype::F32 => |b| convert(b, f32::from_le_bytes),
            Dtype::F16 => |b| convert(b, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => |b| convert(b, |b| half::bf16::from_le_bytes(b).to_f32()),
            // Rounded to f32 as transformers does when it loads a float64 checkpoint.
            Dtype::F64 => |b| convert(b, |b| f64::from_le_bytes(b) as f32),
            other => {
                return Err(LoadError::Dtype {
                    name: name.to_string(),
                    file: shard.path.clone(),
                    found: other.to_string(),
                })
            }
        };
        // A strided tensor may repeat its elements (stride 0): its size is not bounded by the
        // file's, and is checked against memory before it is gathered (found by fuzzing).
        let bytes = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize() / 8, |b, &n| b.checked_mul(n));
        let fits = bytes
            .ok_or_else(|| "its size overflows".to_string())
            .and_then(|bytes| {
                crate::backend::cpu::memory::check_fits("loading weights", bytes.saturating_mul(2))
                    .map_err(|e| e.to_string())
            });
        if let Err(reason) = fits {
            return Err(LoadError::TensorSize {
                name: name.to_string(),
                file: shard.path.clone(),
                reason,
            });
        }
        let values = decode(&shard.bytes(info));
        Ok(Some(values))
    }

    /// Refuses weights that hold more layers in a stack than the config says. Fewer fail at
    /// the first missing tensor; more would load the first ones and silently leave the rest,
    /// so a config.json from another model (or edited) would give wrong answers.
    pub fn check_depth(&self, stacks: &[LayerStack]) -> Result<(), LoadError> {
        for stack in stacks {
            let found = self.depth(stack.prefix);
            if found > stack.layers {
                return Err(LoadError::LayerCount {
                    field: stack.field,
                    configured: stack.layers,
                    found,
                    prefix: stack.prefix,
                    searched: self.searched.clone(),
                });
            }
        }
        Ok(())
    }

    /// Refuses an answer head whose outputs are not the config's answers, before the shape
    /// check of the tensor itself would say only "expected [2, 768], found [3129, 768]".
    /// A head that is missing is left to that check.
    pub fn check_answers(&self, head: AnswerCount) -> Result<(), LoadError> {
        match self.shape(&format!("{}.weight", head.projection)) {
            Some(&[found, ..]) if found != head.answers => Err(LoadError::AnswerCount {
                configured: head.answers,
                found,
                projection: head.projection,
                searched: self.searched.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// One more than the largest k of the tensors `{prefix}.{k}.…` (0 when there are none).
    fn depth(&self, prefix: &str) -> usize {
        self.location
            .keys()
            .filter_map(|name| name.strip_prefix(prefix)?.strip_prefix('.'))
            .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
            .map(|k| k + 1)
            .max()
            .unwrap_or(0)
    }

    /// A fingerprint of the stored bytes, to tell whether a results file was written with
    /// these weights: a hash of every byte of every file (its header included), at about
    /// memory speed.
    pub fn fingerprint(&self) -> String {
        let files: Vec<&[u8]> = self.shards.iter().map(|s| &s.mmap[..]).collect();
        format!("fnv1a64w:{:016x}", fnv1a_words(&files))
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.lookup(name).map(|(_, info)| info.shape.as_slice())
    }

    /// Total number of stored elements over the float tensors: the parameters, as
    /// transformers' `num_parameters()` counts them, without integer buffers such as BERT's
    /// `position_ids` that older checkpoints hold.
    pub fn param_count(&self) -> usize {
        self.location
            .keys()
            .filter_map(|name| self.lookup(name))
            .filter(|(_, info)| is_float(info.dtype))
            .map(|(_, info)| info.shape.iter().product::<usize>())
            .sum()
    }

    /// How many tensors are stored in each dtype ("F32", "F16", …), sorted by dtype name.
    pub fn stored_dtypes(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for name in self.location.keys() {
            if let Some((_, info)) = self.lookup(name) {
                *counts.entry(info.dtype.to_string()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    fn lookup(&self, name: &str) -> Option<(&Shard, &Stored)> {
        let shard = &self.shards[*self.location.get(name)?];
        shard.tensors.get(name).map(|info| (shard, info))
    }
}

impl Shard {
    fn open(path: PathBuf, format: Format) -> Result<Self, LoadError> {
        let file = File::open(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        // Checked before the map, which an empty file cannot have.
        match format {
            Format::SafeTensors if file_len < LEN_PREFIX as u64 => {
                return Err(LoadError::Corrupt {
                    path,
                    reason: format!(
                        "the file is {file_len} bytes, shorter than the {LEN_PREFIX}-byte \
                         header length"
                    ),
                })
            }
            Format::Torch if file_len == 0 => {
                return Err(LoadError::Torch {
                    path,
                    reason: "the file is empty".into(),
                })
            }
            _ => {}
        }
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // or rewriting the file while it is mapped would invalidate the bytes; like every
        // safetensors loader we accept that, since copying multi-GB weights is not an option.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let tensors = match format {
            Format::SafeTensors => safetensors_layout(&mmap, file_len, &path),
            Format::Torch => torch_layout(&mmap, &path),
        }?;
        Ok(Self {
            path,
            mmap,
            tensors,
        })
    }

    /// A tensor's little-endian bytes in row-major order: borrowed from the map when the
    /// tensor is contiguous (every safetensors tensor), gathered otherwise. The layout
    /// functions have checked that every element lies in the file.
    fn bytes(&self, info: &Stored) -> Cow<'_, [u8]> {
        // Only the float dtypes `get_optional` decodes reach here: whole bytes.
        let size = info.dtype.bitsize() / 8;
        let count: usize = info.shape.iter().product();
        if is_contiguous(&info.shape, &info.strides) {
            return Cow::Borrowed(&self.mmap[info.start..info.start + count * size]);
        }
        let mut out = Vec::with_capacity(count * size);
        let mut index = vec![0usize; info.shape.len()];
        for _ in 0..count {
            let at: usize = index.iter().zip(&info.strides).map(|(i, s)| i * s).sum();
            let byte = info.start + at * size;
            out.extend_from_slice(&self.mmap[byte..byte + size]);
            // The next index in row-major order.
            for (i, &n) in index.iter_mut().zip(&info.shape).rev() {
                *i += 1;
                if *i < n {
                    break;
                }
                *i = 0;
            }
        }
        Cow::Owned(out)
    }
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Row-major strides, in elements. Saturating: only an empty tensor, whose strides address
/// nothing, can have a product of trailing sizes past usize::MAX (a fuzzed [0, 2⁴⁰, 2⁴⁰]).
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1].saturating_mul(shape[k + 1]);
    }
    strides
}

/// Whether elements lie one after the other in row-major order; the stride of a dimension
/// of size 1 does not matter (PyTorch leaves it arbitrary).
fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1;
    for (&n, &stride) in shape.iter().zip(strides).rev() {
        if n != 1 && stride != expected {
            return false;
        }
        // Saturating: only an empty tensor's trailing sizes can overflow (a fuzzed
        // [0, 2⁴⁰, 2⁴⁰]), and its strides address nothing.
        expected = n.saturating_mul(expected);
    }
    true
}

fn torch_layout(mmap: &[u8], path: &Path) -> Result<HashMap<String, Stored>, LoadError> {
    let tensors = torch_pickle::state_dict(mmap).map_err(|reason| LoadError::Torch {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(tensors.into_iter().collect())
}

/// Where each tensor of a safetensors file lies; `Shard::open` has checked that the file holds
/// the length prefix.
fn safetensors_layout(
    mmap: &[u8],
    file_len: u64,
    path: &Path,
) -> Result<HashMap<String, Stored>, LoadError> {
    let corrupt = |reason: String| LoadError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // Checked here as well as in safetensors, to say by how much the file falls short.
    let mut prefix = [0u8; LEN_PREFIX];
    prefix.copy_from_slice(&mmap[..LEN_PREFIX]);
    let header_len = u64::from_le_bytes(prefix);
    if header_len > file_len - LEN_PREFIX as u64 {
        return Err(corrupt(format!(
            "the header length prefix says {header_len} bytes, but only {} bytes follow it \
             (truncated file, or not safetensors)",
            file_len - LEN_PREFIX as u64
        )));
    }
    let (header_len, metadata) = SafeTensors::read_metadata(mmap).map_err(|e| {
        corrupt(match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                format!("{e} (the tensor data does not match the header: truncated file?)")
            }
            _ => e.to_string(),
        })
    })?;
    // Byte offset of the tensor data (after the length prefix and the JSON header);
    // `read_metadata` has checked that every tensor lies in the file.
    let data_start = LEN_PREFIX + header_len;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let stored = Stored {
                dtype: info.dtype,
                strides: contiguous_strides(&info.shape),
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
            };
            (name, stored)
        })
        .collect())
}

/// Decodes little-endian elements of `N` bytes; the data may be unaligned in the map.
fn convert<const N: usize>(bytes: &[u8], decode: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            decode(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_of_an_empty_tensor_saturate() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        // Fuzzed: a safetensors shape of [0, 2⁴⁰, 2⁴⁰] wrapped its first stride.
        let empty = [0, 1 << 40, 1 << 40];
        let strides = contiguous_strides(&empty);
        assert_eq!(strides, [usize::MAX, 1 << 40, 1]);
        assert!(is_contiguous(&empty, &strides));
    }
}
