//! Shared helpers for the reference tests: reading golden tensors written by
//! tools/reference and comparing with explicit tolerances.
#![allow(dead_code)]
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

#[cfg(feature = "cuda")]
pub mod cuda_emulator;

use std::path::{Path, PathBuf};

use fiedler::backend::MeanGraph;
use fiedler::model::clip::{ClipInputs, ClipTrace};
use fiedler::model::lxmert::{LxmertInputs, LxmertTrace};
use fiedler::model::vilt::{ViltInputs, ViltTrace};
use fiedler::trace::TowerTrace;
use safetensors::{Dtype, SafeTensors};

/// A JSON array of numbers as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The repository root: `$FIEDLER_REPO` when set (test executables carried to another
/// machine, see scripts/gpu-check.sh), else where they were built.
pub fn repo() -> PathBuf {
    std::env::var_os("FIEDLER_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// Golden tensors of one safetensors file, kept in memory.
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("golden file parses")
    }

    /// Every tensor's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.view().names().into_iter().map(str::to_owned).collect();
        names.sort();
        names
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view()
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"))
            .shape()
            .to_vec()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden tensor {name} missing"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// Worst |a − b| over the whole tensor, with its index.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .enumerate()
        .fold((0.0, 0), |(m, at), (i, (x, y))| {
            let d = (x - y).abs();
            if d > m || d.is_nan() {
                (d, i)
            } else {
                (m, at)
            }
        })
}

/// max |a − b| / max |b|: errors relative to the tensor's scale.
pub fn max_diff_rel_to_max(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    max_abs_diff(a, b).0 / scale.max(f32::MIN_POSITIVE)
}

/// max over entries of |a − b| / |b|.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(f32::MIN_POSITIVE))
        .fold(0.0, f32::max)
}

impl Golden {
    /// Token ids of a case as the engine takes them, and each text's real length.
    pub fn tokens(&self, case: &str) -> (Vec<u32>, Vec<usize>, usize) {
        let seq_len = self.shape(&format!("{case}.input_ids"))[1];
        let ids = self
            .i64(&format!("{case}.input_ids"))
            .iter()
            .map(|&i| i as u32)
            .collect();
        let mask = self.i64(&format!("{case}.attention_mask"));
        let lengths = mask
            .chunks_exact(seq_len)
            .map(|m| m.iter().filter(|&&v| v == 1).count())
            .collect();
        (ids, lengths, seq_len)
    }

    /// A ViLT case's inputs (golden pixels, pixel mask and token ids).
    pub fn vilt_inputs(&self, case: &str) -> ViltInputs {
        let (ids, lengths, seq_len) = self.tokens(case);
        let pixel_shape = self.shape(&format!("{case}.pixel_values"));
        ViltInputs {
            pixels: self.f32(&format!("{case}.pixel_values")),
            pixel_mask: self
                .i64(&format!("{case}.pixel_mask"))
                .iter()
                .map(|&v| v == 1)
                .collect(),
            height: pixel_shape[2],
            width: pixel_shape[3],
            ids,
            lengths,
            seq_len,
            kept_patches: None,
        }
    }

    /// An LXMERT case's inputs (golden region features, boxes and token ids).
    pub fn lxmert_inputs(&self, case: &str) -> LxmertInputs {
        let (ids, lengths, seq_len) = self.tokens(case);
        LxmertInputs {
            features: self.f32(&format!("{case}.features")),
            boxes: self.f32(&format!("{case}.boxes")),
            regions: self.shape(&format!("{case}.features"))[1],
            region_counts: None,
            ids,
            lengths,
            seq_len,
        }
    }
}

/// Appends a failure when max|ours − theirs| exceeds `tol` × the largest |theirs| (NaN fails);
/// returns that deviation relative to the largest |theirs|.
pub fn check_rel(name: &str, ours: &[f32], theirs: &[f32], tol: f32, bad: &mut Vec<String>) -> f32 {
    let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let (err, at) = max_abs_diff(ours, theirs);
    if !(err <= tol * scale) {
        bad.push(format!(
            "{name}: |Δ| {err:.3e} at {at} (max {scale:.3e}, tol {tol:.1e}): {} vs {}",
            ours[at], theirs[at]
        ));
    }
    if scale > 0.0 {
        err / scale
    } else {
        0.0
    }
}

/// The LRP goldens' tolerance for a tensor: max(1e-4, 2·spread), `spread` being how far
/// rounding-level changes of the weights move the reference (make_lrp_goldens.py).
pub fn spread_tolerance(reference: &Golden, case: &str, name: &str, b: usize) -> f32 {
    (2.0 * reference.f32(&format!("{case}.spread.{name}.{b}"))[0]).max(1e-4)
}

/// The tensors (`<case>.<name>.<sample>`) of an LRP golden file whose `spread_tolerance`
/// exceeds half their largest value: rounding-level changes of the weights move the
/// reference about as much as it is large, so a comparison with it cannot fail there.
pub fn undetermined_tensors(reference: &Golden) -> Vec<String> {
    reference
        .names()
        .into_iter()
        .filter_map(|name| {
            let (case, rest) = name.split_once(".spread.")?;
            let (key, b) = rest.rsplit_once('.')?;
            let b: usize = b.parse().ok()?;
            (spread_tolerance(reference, case, key, b) > 0.5).then(|| format!("{case}.{rest}"))
        })
        .collect()
}

/// How many samples a method golden file holds for `case`: one more than the largest `<b>`
/// of its `<case>.….image.<b>` tensors (0 when it has none).
pub fn reference_samples(reference: &Golden, case: &str) -> usize {
    reference
        .names()
        .iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(&format!("{case}."))?;
            let (key, b) = rest.rsplit_once('.')?;
            key.ends_with(".image").then(|| b.parse::<usize>().ok())?
        })
        .map(|b| b + 1)
        .max()
        .unwrap_or(0)
}

/// Checks explained[sample][method] against `<case>.<method><suffix>.{image,text}.<sample>`.
pub fn check_vectors(
    explained: &[Vec<fiedler::explain::Explanation>],
    reference: &Golden,
    case: &str,
    suffix: &str,
    tol: impl Fn(&str, usize) -> f32,
    bad: &mut Vec<String>,
) {
    // Every sample the reference holds is explained, each by at least one method: the loops
    // below check only what they are given.
    assert_eq!(
        explained.len(),
        reference_samples(reference, case),
        "{case}: samples explained"
    );
    for (b, sample) in explained.iter().enumerate() {
        assert!(!sample.is_empty(), "{case}: sample {b} has no explanation");
        for e in sample {
            for (side, ours) in [("image", &e.image_relevance), ("text", &e.text_relevance)] {
                let key = format!("{}{suffix}.{side}", e.method.name());
                let name = format!("{case}.{key}.{b}");
                check_rel(&name, ours, &reference.f32(&name), tol(&key, b), bad);
            }
        }
    }
}

/// A CLIP methods case's inputs: pixels from clip/golden.safetensors (b3 holds the same
/// three images as m3, in the same order), token ids from clip/methods.json.
pub fn clip_method_inputs(case: &str) -> ClipInputs {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("clip/methods.json")).unwrap())
            .unwrap();
    let c = &json["cases"][case];
    let rows: Vec<Vec<u32>> = c["batch_input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let lengths = c["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["len"].as_u64().unwrap() as usize)
        .collect();
    let pixels_case = if case == "m3" { "b3" } else { case };
    ClipInputs {
        pixels: Golden::open(&fixtures().join("clip/golden.safetensors"))
            .f32(&format!("{pixels_case}.pixel_values")),
        seq_len: rows[0].len(),
        ids: rows.concat(),
        lengths,
    }
}

/// The relevance at every attention module of an LRP trace, named as in the LRP goldens
/// (`<case>.spread.<name>.<b>`): CLIP's `<tower>.cam.<l>`, ViLT's `cam.<l>`, LXMERT's
/// `cam.<module>.<l>`.
pub type Relevance<'a> = Vec<(String, &'a [f32])>;

fn recorded(r: &Option<Vec<f32>>) -> &[f32] {
    r.as_deref().expect("the LRP pass records every module")
}

fn tower_relevance<'a>(prefix: &str, t: &'a TowerTrace<Vec<f32>>) -> Relevance<'a> {
    t.layers
        .iter()
        .enumerate()
        .map(|(l, layer)| (format!("{prefix}cam.{l}"), recorded(&layer.relevance)))
        .collect()
}

pub fn clip_relevance(tr: &ClipTrace<Vec<f32>>) -> Relevance<'_> {
    let mut out = tower_relevance("vision.", &tr.vision);
    out.extend(tower_relevance("text.", &tr.text));
    out
}

pub fn vilt_relevance(tr: &ViltTrace<Vec<f32>>) -> Relevance<'_> {
    tower_relevance("", &tr.joint)
}

pub fn lxmert_relevance(tr: &LxmertTrace<Vec<f32>>) -> Relevance<'_> {
    let mut out = Vec::new();
    for (stack, layers) in [("lang", &tr.lang), ("visn", &tr.visn)] {
        for (l, layer) in layers.iter().enumerate() {
            out.push((format!("cam.{stack}.{l}"), recorded(&layer.relevance)));
        }
    }
    for (k, x) in tr.cross.iter().enumerate() {
        let image = x
            .image
            .as_ref()
            .expect("a full trace keeps every image branch");
        for (name, m) in [
            ("xt2i", &x.text_to_image),
            ("xi2t", &image.image_to_text),
            ("xlang", &x.lang_self),
            ("xvisn", &image.visn_self),
        ] {
            out.push((format!("cam.{name}.{k}"), recorded(&m.relevance)));
        }
    }
    out
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Graphs of `head_mean_matvec` as (sample, token positions), each with a vector of
/// `values` (seeds from `seed` on).
pub struct MeanGraphs {
    pub graphs: Vec<(usize, Vec<usize>)>,
    pub vectors: Vec<Vec<f32>>,
}

impl MeanGraphs {
    pub fn new(graphs: Vec<(usize, Vec<usize>)>, seed: u64) -> Self {
        let vectors = graphs
            .iter()
            .enumerate()
            .map(|(i, (_, t))| values(t.len(), seed + i as u64))
            .collect();
        Self { graphs, vectors }
    }

    pub fn get(&self) -> Vec<MeanGraph<'_>> {
        self.graphs
            .iter()
            .zip(&self.vectors)
            .map(|((sample, tokens), vector)| MeanGraph {
                sample: *sample,
                tokens,
                vector,
            })
            .collect()
    }
}

/// A JPEG of `width` × `height` carrying an EXIF block whose only tag is Orientation = `value`.
pub fn jpeg_with_orientation(width: u32, height: u32, value: u16) -> Vec<u8> {
    use image::ImageEncoder;
    // Big-endian TIFF header, one IFD of one SHORT entry (tag 0x0112), no next IFD.
    let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend_from_slice(&value.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let pixels: Vec<u8> = (0..width * height * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
    encoder.set_exif_metadata(exif).unwrap();
    encoder
        .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    bytes
}

/// A copy of fixture `model` (named `name`, unique per test process) whose config.json has
/// `edit` applied: the other files linked, not copied.
pub fn edited_fixture(
    model: &str,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    edited_fixture_file(model, name, "config.json", edit)
}

/// The same for any of its JSON files.
pub fn edited_fixture_file(
    model: &str,
    name: &str,
    file: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fiedler-edited-{model}-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixtures().join(model)).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let path = dir.join(file);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, json.to_string()).unwrap();
    dir
}

/// Sends Ctrl-C (SIGINT) to `child` and waits for it: its stderr when it stopped as Ctrl-C
/// stops the work (exit status 130), `None` when it ended otherwise (it finished first, or
/// the signal came before it was caught).
#[cfg(unix)]
pub fn interrupt(child: std::process::Child) -> Option<String> {
    // SAFETY: sends SIGINT to the child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    (out.status.code() == Some(130)).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}
