//! LXMERT's image input: N regions, each a Faster R-CNN feature vector and a normalised box
//! (spec/methods.md §G "Image features").
//!
//! Two file formats are read:
//! - a features file: safetensors with `features` [N, F] f32 and `boxes` [N, 4] f32, the boxes
//!   already normalised to (x1/W, y1/H, x2/W, y2/H), as the HF FRCNN demo's `roi_features` and
//!   `normalized_boxes` (batch dimension dropped);
//! - LXMERT's "obj36" TSV (`data/mscoco_imgfeat/*_obj36.tsv`), one image per line, as written by
//!   `csv.DictWriter(..., delimiter="\t")` and read by the LXMERT repo's `src/utils.py::load_obj_tsv`
//!   (re-typed in tools/reference/lxmert_tsv.py). Its boxes are absolute pixel corners; they are
//!   normalised in f32 as the LXMERT data loaders do (`boxes[:, (0, 2)] /= img_w`), which is one
//!   correctly rounded f32 division per coordinate, so the result is bit-equal to numpy's.
//!
//! Real obj36 files hold tens of thousands of images (GBs), so the TSV is streamed line by line,
//! only the first column of each line is looked at until the wanted image id, and reading stops
//! there. CSV quoting is not undone: LXMERT's ids and base64 never need it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::InputError;

/// The columns of an obj36 TSV line, in order (LXMERT's `FIELDNAMES`).
pub const OBJ36_COLUMNS: [&str; 10] = [
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
];

/// Numbers per region box: x1/W, y1/H, x2/W, y2/H.
pub const BOX_LEN: usize = 4;

/// Normalised box coordinates may leave [0, 1] by this much (float rounding) before they are
/// rejected. LXMERT's loaders assert a looser 1e-5.
pub const BOX_TOLERANCE: f32 = 1e-6;

/// Region inputs of one image for LXMERT: N regions with a feature vector and a normalised box each.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// [count, dim]
    pub features: Vec<f32>,
    /// [count, 4]: x1/W, y1/H, x2/W, y2/H
    pub boxes: Vec<f32>,
    pub count: usize,
    pub dim: usize,
    /// (height, width) of the source image when the file says (TSV).
    pub image_size: Option<(usize, usize)>,
    /// Where the regions came from, for messages: the file, and `#<image id>` for a TSV.
    pub source: String,
}

impl Regions {
    /// The feature width must equal the model's `visual_feat_dim`.
    pub fn check_dim(&self, expected: usize) -> Result<(), InputError> {
        if self.dim == expected {
            Ok(())
        } else {
            Err(InputError::RegionDim {
                what: self.source.clone(),
                found: self.dim,
                expected,
            })
        }
    }

    /// Value checks shared by both formats: everything finite, boxes inside the image and not
    /// inverted (zero-area boxes are fine: the FRCNN demo pads with all-zero boxes).
    fn validate(&self) -> Result<(), InputError> {
        let bad = |region: usize, field: String, reason: String| InputError::RegionsValue {
            what: self.source.clone(),
            region,
            field,
            reason,
        };
        const CORNERS: [&str; 4] = ["x1", "y1", "x2", "y2"];
        for r in 0..self.count {
            let b = &self.boxes[r * BOX_LEN..(r + 1) * BOX_LEN];
            for (k, &v) in b.iter().enumerate() {
                if !v.is_finite() {
                    return Err(bad(
                        r,
                        format!("box {}", CORNERS[k]),
                        format!("{v} is not finite"),
                    ));
                }
                if !(-BOX_TOLERANCE..=1.0 + BOX_TOLERANCE).contains(&v) {
                    let why = match self.image_size {
                        Some((h, w)) => format!("the box leaves the {w}×{h} image"),
                        None => "boxes must be normalised by the image width and height".into(),
                    };
                    return Err(bad(
                        r,
                        format!("box {}", CORNERS[k]),
                        format!("{v} is outside [0, 1]; {why}"),
                    ));
                }
            }
            for (lo, hi) in [(0, 2), (1, 3)] {
                if b[hi] < b[lo] {
                    return Err(bad(
                        r,
                        "box".into(),
                        format!(
                            "{} = {} is less than {} = {}",
                            CORNERS[hi], b[hi], CORNERS[lo], b[lo]
                        ),
                    ));
                }
            }
            let row = &self.features[r * self.dim..(r + 1) * self.dim];
            if let Some((j, v)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(bad(
                    r,
                    format!("features[{j}]"),
                    format!("{v} is not finite"),
                ));
            }
        }
        Ok(())
    }
}

/// Reads a features file: safetensors with `features` [N, F] f32 and `boxes` [N, 4] f32
/// (normalised corners). Other tensors in the file are ignored.
pub fn read_features_file(path: &Path) -> Result<Regions, InputError> {
    // Region files are small (36 × 2048 f32 ≈ 300 KB): read, don't map.
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| InputError::RegionsNotSafetensors {
        path: path.to_path_buf(),
        reason: not_safetensors(&bytes, e),
    })?;
    let tensor_err = |tensor: &str, reason: String| InputError::RegionsTensor {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        reason,
    };
    let get = |name: &str, layout: &str| {
        let t = st.tensor(name).map_err(|_| {
            let mut names = st.names();
            names.sort();
            tensor_err(
                name,
                format!("missing (the file has {names:?}); expected {name} {layout} f32"),
            )
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(tensor_err(
                name,
                format!("dtype {:?}, expected F32", t.dtype()),
            ));
        }
        let shape = t.shape().to_vec();
        if shape.len() != 2 {
            let hint = if shape.len() == 3 && shape[0] == 1 {
                " (drop the leading batch dimension of 1)"
            } else {
                ""
            };
            return Err(tensor_err(
                name,
                format!(
                    "shape {shape:?} has rank {}, expected {layout}{hint}",
                    shape.len()
                ),
            ));
        }
        Ok((shape, le_f32(t.data())))
    };
    let (f_shape, features) = get("features", "[N, F]")?;
    let (b_shape, boxes) = get("boxes", "[N, 4]")?;
    if b_shape[1] != 4 {
        return Err(tensor_err(
            "boxes",
            format!("shape {b_shape:?}, expected [N, 4] (x1, y1, x2, y2)"),
        ));
    }
    if f_shape[0] != b_shape[0] {
        return Err(InputError::RegionsRows {
            path: path.to_path_buf(),
            features: f_shape,
            boxes: b_shape,
        });
    }
    if f_shape[0] == 0 {
        return Err(tensor_err(
            "features",
            format!("shape {f_shape:?} has no regions; an image needs at least one"),
        ));
    }
    if f_shape[1] == 0 {
        return Err(tensor_err(
            "features",
            format!("shape {f_shape:?}: the feature vectors are empty"),
        ));
    }
    let regions = Regions {
        features,
        boxes,
        count: f_shape[0],
        dim: f_shape[1],
        image_size: None,
        source: path.display().to_string(),
    };
    regions.validate()?;
    Ok(regions)
}

/// Reads the regions of `image_id` from an LXMERT obj36 TSV, streaming until its line.
pub fn read_obj36_tsv(path: &Path, image_id: &str) -> Result<Regions, InputError> {
    let mut scanned = 0;
    let mut first = Vec::new();
    let found = scan_obj36(path, |line_no, _, id, line| {
        scanned += 1;
        if first.len() < LISTED_IDS {
            first.push(String::from_utf8_lossy(id).into_owned());
        }
        if id == image_id.as_bytes() {
            ControlFlow::Break(parse_obj36_line(path, line_no, image_id, line))
        } else {
            ControlFlow::Continue(())
        }
    })?;
    found.unwrap_or_else(|| {
        Err(InputError::TsvImageNotFound {
            path: path.to_path_buf(),
            image_id: image_id.into(),
            holds: holds_ids(scanned, &first),
        })
    })
}

/// How many image ids an error about a TSV lists, to show what its ids look like.
const LISTED_IDS: usize = 3;

/// The longest first column read as an image id when an error lists them (COCO's are 6–27
/// characters).
const ID_CHARS: usize = 100;

/// "it holds 12 images, with ids such as a, b, c": what a TSV's ids look like, from the
/// first of them in file order. A first column that cannot be an id (control characters,
/// bytes that are not UTF-8, or very long: a binary file named .tsv) is not printed; the file
/// is said not to read as an obj36 TSV instead.
pub fn holds_ids<S: AsRef<str>>(count: usize, first: &[S]) -> String {
    let first: Vec<&str> = first.iter().take(LISTED_IDS).map(AsRef::as_ref).collect();
    let readable = |id: &&str| {
        id.chars().count() <= ID_CHARS
            && !id
                .chars()
                .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
    };
    if !first.iter().all(readable) {
        return "its lines do not start with an image id and a tab: it does not read as an \
                obj36 TSV"
            .into();
    }
    match count {
        0 => "it holds no image".into(),
        1 => format!("it holds 1 image, with id {}", first.join("")),
        _ if count <= first.len() => {
            format!("it holds {count} images, with ids {}", first.join(", "))
        }
        _ => format!(
            "it holds {count} images, with ids such as {}",
            first.join(", ")
        ),
    }
}

/// Visits the non-blank lines of an obj36 TSV (Python's csv reader skips blank lines too):
/// line number, byte offset, image id (first column) and the line without its ending, until
/// `visit` breaks.
fn scan_obj36<T>(
    path: &Path,
    mut visit: impl FnMut(usize, u64, &[u8], &[u8]) -> ControlFlow<T>,
) -> Result<Option<T>, InputError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    // Real lines are ~400 KB of base64 (36 × 2048 f32); a large buffer keeps reads few.
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let (mut line_no, mut offset) = (0, 0u64);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok(None);
        }
        line_no += 1;
        let line = strip_line_end(&buf);
        if !line.is_empty() {
            let id = line.split(|&c| c == b'\t').next().unwrap_or(line);
            if let ControlFlow::Break(t) = visit(line_no, offset, id, line) {
                return Ok(Some(t));
            }
        }
        offset += n as u64;
    }
}

/// Where each image's line is in an obj36 TSV: one pass over the file, then each image is
/// read with one seek — for runs over many images of a large file.
pub struct Obj36Index {
    path: PathBuf,
    /// Image id → (line number, byte offset).
    lines: HashMap<String, (usize, u64)>,
}

impl Obj36Index {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let mut lines = HashMap::new();
        scan_obj36::<()>(path, |line_no, offset, id, _| {
            let id = String::from_utf8_lossy(id).into_owned();
            // The first line of an id wins, as a streaming read would find it.
            lines.entry(id).or_insert((line_no, offset));
            ControlFlow::Continue(())
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            lines,
        })
    }

    /// Whether the file has a line for `image_id`.
    pub fn contains(&self, image_id: &str) -> bool {
        self.lines.contains_key(image_id)
    }

    /// What the file's ids look like (see [`holds_ids`]).
    pub fn holds(&self) -> String {
        let mut by_line: Vec<(&usize, &str)> = self
            .lines
            .iter()
            .map(|(id, (line_no, _))| (line_no, id.as_str()))
            .collect();
        by_line.sort_unstable();
        let first: Vec<&str> = by_line.iter().take(LISTED_IDS).map(|&(_, id)| id).collect();
        holds_ids(self.lines.len(), &first)
    }

    pub fn read(&self, image_id: &str) -> Result<Regions, InputError> {
        let path = &self.path;
        let &(line_no, offset) =
            self.lines
                .get(image_id)
                .ok_or_else(|| InputError::TsvImageNotFound {
                    path: path.clone(),
                    image_id: image_id.into(),
                    holds: self.holds(),
                })?;
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(path, e))?;
        let mut buf = Vec::new();
        BufReader::with_capacity(1 << 20, file)
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_error(path, e))?;
        parse_obj36_line(path, line_no, image_id, strip_line_end(&buf))
    }
}

/// Why `bytes` are no safetensors file, for a reader: an empty file, or content that does not
/// start as one (a safetensors file opens with its header's length and then `{`), or else
/// what the parser found.
fn not_safetensors(bytes: &[u8], e: safetensors::SafeTensorError) -> String {
    if bytes.is_empty() {
        "the file is empty".into()
    } else if bytes.get(8) != Some(&b'{') {
        "its content is not safetensors (region features are a safetensors file with `features` and `boxes`, or an obj36 TSV named .tsv)".into()
    } else {
        e.to_string()
    }
}

/// Whether `load_regions` reads `path` as an obj36 TSV (many images, one picked by id) rather
/// than a features file of one image: by its extension, `.tsv` in any case.
pub fn is_obj36_tsv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
}

/// Reads regions from `path`: an obj36 TSV (by its `.tsv` extension), which needs `image_id`,
/// or else a safetensors features file, which holds one image (`image_id` is not used).
pub fn load_regions(path: &Path, image_id: Option<&str>) -> Result<Regions, InputError> {
    if is_obj36_tsv(path) {
        match image_id {
            Some(id) => read_obj36_tsv(path, id),
            None => Err(InputError::ImageIdRequired {
                path: path.to_path_buf(),
            }),
        }
    } else {
        read_features_file(path)
    }
}

/// The checks [`load_regions`] makes before reading any feature: that the file exists and
/// can be read (a folder cannot), and that an obj36 TSV comes with the image id to read from
/// it. Sessions make them for every request before the first batch.
pub fn check_regions_file(path: &Path, image_id: Option<&str>) -> Result<(), InputError> {
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut [0u8; 1]))
        .map_err(|e| io_error(path, e))?;
    if is_obj36_tsv(path) && image_id.is_none() {
        return Err(InputError::ImageIdRequired {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> InputError {
    if e.kind() == ErrorKind::NotFound {
        InputError::RegionsNotFound {
            path: path.to_path_buf(),
        }
    } else {
        InputError::RegionsRead {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Decodes little-endian f32; safetensors data may be unaligned in the buffer.
fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// One obj36 line, columns in [`OBJ36_COLUMNS`] order, checked as `load_obj_tsv`'s reshapes
/// would check it: every array holds exactly `num_boxes` rows.
fn parse_obj36_line(
    path: &Path,
    line_no: usize,
    image_id: &str,
    line: &[u8],
) -> Result<Regions, InputError> {
    let columns: Vec<&[u8]> = line.split(|&c| c == b'\t').collect();
    if columns.len() != OBJ36_COLUMNS.len() {
        return Err(InputError::TsvColumns {
            path: path.to_path_buf(),
            line: line_no,
            image_id: image_id.into(),
            found: columns.len(),
            expected: OBJ36_COLUMNS.len(),
        });
    }
    let field_err = |col: usize, reason: String| InputError::TsvField {
        path: path.to_path_buf(),
        line: line_no,
        image_id: image_id.into(),
        column: OBJ36_COLUMNS[col].into(),
        reason,
    };
    let integer = |col: usize| -> Result<usize, InputError> {
        let text = String::from_utf8_lossy(columns[col]);
        text.trim().parse::<usize>().map_err(|_| {
            field_err(
                col,
                format!("{text:?} is not a non-negative decimal integer"),
            )
        })
    };
    // Decoded bytes of an array column, with the count of `elem`-byte elements.
    let array = |col: usize, elem: usize, dtype: &str| -> Result<(Vec<u8>, usize), InputError> {
        let bytes = decode_base64(columns[col])
            .map_err(|reason| field_err(col, format!("bad base64: {reason}")))?;
        if !bytes.len().is_multiple_of(elem) {
            return Err(field_err(
                col,
                format!(
                    "{} bytes is not a whole number of {dtype} ({elem} bytes each)",
                    bytes.len()
                ),
            ));
        }
        let n = bytes.len() / elem;
        Ok((bytes, n))
    };
    const IMG_H: usize = 1;
    const IMG_W: usize = 2;
    const NUM_BOXES: usize = 7;
    const BOXES: usize = 8;
    const FEATURES: usize = 9;

    let img_h = integer(IMG_H)?;
    let img_w = integer(IMG_W)?;
    for (col, v) in [(IMG_H, img_h), (IMG_W, img_w)] {
        if v == 0 {
            return Err(field_err(
                col,
                "is 0; the image size must be positive".into(),
            ));
        }
    }
    let num_boxes = integer(NUM_BOXES)?;
    if num_boxes == 0 {
        return Err(field_err(
            NUM_BOXES,
            "is 0; an image needs at least one region".into(),
        ));
    }
    // The label columns are not used, but a row whose arrays disagree is corrupt.
    for (col, elem, dtype) in [
        (3, 8, "int64"),
        (4, 4, "float32"),
        (5, 8, "int64"),
        (6, 4, "float32"),
    ] {
        let (_, n) = array(col, elem, dtype)?;
        if n != num_boxes {
            return Err(field_err(
                col,
                format!("{n} {dtype} values, but num_boxes is {num_boxes}"),
            ));
        }
    }
    let (box_bytes, n) = array(BOXES, 4, "float32")?;
    if n != num_boxes * 4 {
        return Err(field_err(
            BOXES,
            format!(
                "{n} float32 values, but num_boxes {num_boxes} needs {} ([num_boxes, 4])",
                num_boxes * 4
            ),
        ));
    }
    let (feat_bytes, n) = array(FEATURES, 4, "float32")?;
    if n == 0 || !n.is_multiple_of(num_boxes) {
        return Err(field_err(
            FEATURES,
            format!("{n} float32 values do not split into num_boxes = {num_boxes} non-empty rows"),
        ));
    }
    let (w, h) = (img_w as f32, img_h as f32);
    let boxes = le_f32(&box_bytes)
        .chunks_exact(4)
        .flat_map(|b| [b[0] / w, b[1] / h, b[2] / w, b[3] / h])
        .collect();
    let regions = Regions {
        features: le_f32(&feat_bytes),
        boxes,
        count: num_boxes,
        dim: n / num_boxes,
        image_size: Some((img_h, img_w)),
        source: format!("{}#{image_id}", path.display()),
    };
    regions.validate()?;
    Ok(regions)
}

/// Standard base64 (RFC 4648 §4: `+` and `/`, `=` padding required, no line breaks), as Python's
/// `base64.b64encode` writes it. Unlike `b64decode`'s default, characters outside the alphabet
/// are an error, not skipped. Non-zero bits left over before the padding are ignored, as Python
/// ignores them.
fn decode_base64(text: &[u8]) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "{} characters is not a multiple of 4 (missing `=` padding?)",
            text.len()
        ));
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (q, quad) in text.chunks_exact(4).enumerate() {
        let pad = if q + 1 == quads {
            quad.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(format!("{pad} `=` at the end; base64 pads with at most 2"));
        }
        let mut acc = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            let offset = q * 4 + i;
            let v = sextet(c).ok_or_else(|| match c {
                b'=' => format!("`=` padding at offset {offset}, before the end"),
                0x20..=0x7e => format!("invalid character {:?} at offset {offset}", c as char),
                _ => format!("invalid byte 0x{c:02x} at offset {offset}"),
            })?;
            acc |= v << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}
