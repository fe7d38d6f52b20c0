//! LXMERT region inputs (spec/methods.md §G "Image features"): the fixture's features files and
//! obj36 TSV (tools/reference/make_lxmert_fixture.py `make_regions`, written with
//! tools/reference/lxmert_tsv.py) read back bit-exactly as golden.safetensors `b3.features` /
//! `b3.boxes`, and every malformed input is an error that names the file and the field.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{fixtures, Golden};
use fiedler::input::regions::{
    holds_ids, load_regions, read_features_file, read_obj36_tsv, Obj36Index, Regions,
};
use fiedler::input::InputError;
use safetensors::{Dtype, View};
use serde_json::Value;

fn lxmert_dir() -> PathBuf {
    fixtures().join("lxmert")
}

fn tsv_path() -> PathBuf {
    lxmert_dir().join("regions.tsv")
}

fn features_path(id: &str) -> PathBuf {
    lxmert_dir().join(format!("regions_{id}.safetensors"))
}

fn golden_json() -> Value {
    let text = std::fs::read_to_string(lxmert_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

/// (img_id, img_h, img_w) from golden.json `regions.images`.
fn images() -> Vec<(String, usize, usize)> {
    golden_json()["regions"]["images"]
        .as_array()
        .expect("regions.images")
        .iter()
        .map(|im| {
            (
                im["img_id"].as_str().unwrap().to_string(),
                im["img_h"].as_u64().unwrap() as usize,
                im["img_w"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

/// The image ids of case b3, in batch order.
fn b3_ids() -> Vec<String> {
    golden_json()["cases"]["b3"]["pairs"]
        .as_array()
        .expect("cases.b3.pairs")
        .iter()
        .map(|p| p["img_id"].as_str().unwrap().to_string())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_regions(got: &Regions, want: &Regions) {
    assert_eq!(
        (got.count, got.dim),
        (want.count, want.dim),
        "{}",
        got.source
    );
    assert_eq!(
        bits(&got.features),
        bits(&want.features),
        "{} features",
        got.source
    );
    assert_eq!(bits(&got.boxes), bits(&want.boxes), "{} boxes", got.source);
}

/// A fresh path under the temp dir, unique per process and call; what is written there is
/// removed when the guard drops.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl std::ops::Deref for Temp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Temp {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

fn temp_path(name: &str) -> Temp {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Temp(std::env::temp_dir().join(format!("fiedler_regions_{}_{n}_{name}", std::process::id())))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A tensor to write with safetensors' `serialize`.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn f32_tensor(shape: &[usize], values: &[f32]) -> Raw {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    Raw {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: f32_bytes(values),
    }
}

fn write_safetensors(name: &str, tensors: &[(&str, &Raw)]) -> Temp {
    let path = temp_path(name);
    let bytes =
        safetensors::serialize(tensors.iter().map(|&(n, t)| (n, t)), None).expect("serialize");
    std::fs::write(&path, bytes).expect("write temp safetensors");
    path
}

/// 3 valid regions, 2-wide features: [[0,0,1,1], [0.25,0.5,0.75,1], [0.5,0.5,0.5,0.5]].
fn small_boxes() -> Vec<f32> {
    vec![0.0, 0.0, 1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.5, 0.5]
}

fn small_features() -> Vec<f32> {
    vec![0.0, 1.0, 2.5, 3.0, 0.0, 7.0]
}

/// A features file with the small regions, `edit` applied to (features, boxes) first.
fn small_features_file(edit: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>)) -> Temp {
    let (mut f, mut b) = (small_features(), small_boxes());
    edit(&mut f, &mut b);
    let features = f32_tensor(&[3, 2], &f);
    let boxes = f32_tensor(&[3, 4], &b);
    write_safetensors(
        "small.safetensors",
        &[("features", &features), ("boxes", &boxes)],
    )
}

/// The error's message must contain every piece.
fn assert_message(err: &InputError, pieces: &[&str]) {
    let msg = err.to_string();
    for p in pieces {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

fn features_err(path: &Path) -> InputError {
    match read_features_file(path) {
        Ok(r) => panic!("{} read as {} regions", path.display(), r.count),
        Err(e) => e,
    }
}

fn tsv_err(path: &Path, id: &str) -> InputError {
    match read_obj36_tsv(path, id) {
        Ok(r) => panic!("{}#{id} read as {} regions", path.display(), r.count),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// base64 and TSV writing, as lxmert_tsv.py's `write_obj_tsv` does it

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// One obj36 line's columns (no line end), labels all zero.
fn obj36_columns(id: &str, h: usize, w: usize, boxes_abs: &[f32], features: &[f32]) -> Vec<String> {
    let n = boxes_abs.len() / 4;
    vec![
        id.to_string(),
        h.to_string(),
        w.to_string(),
        b64(&i64_bytes(&vec![0; n])),
        b64(&f32_bytes(&vec![0.5; n])),
        b64(&i64_bytes(&vec![0; n])),
        b64(&f32_bytes(&vec![0.5; n])),
        n.to_string(),
        b64(&f32_bytes(boxes_abs)),
        b64(&f32_bytes(features)),
    ]
}

fn write_tsv(name: &str, rows: &[Vec<String>], line_end: &str) -> Temp {
    let path = temp_path(name);
    let text: String = rows.iter().map(|cols| cols.join("\t") + line_end).collect();
    std::fs::write(&path, text).expect("write temp tsv");
    path
}

/// The fixture TSV's rows, split into columns.
fn fixture_rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(tsv_path()).expect("regions.tsv");
    assert!(text.ends_with("\r\n"), "the fixture is written with CRLF");
    text.split_terminator("\r\n")
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The fixture TSV with one column of the first row (synth_000001) replaced.
fn fixture_with(column: usize, value: &str) -> Temp {
    let mut rows = fixture_rows();
    rows[0][column] = value.to_string();
    write_tsv("edited.tsv", &rows, "\r\n")
}

const ID1: &str = "synth_000001";

// ---------------------------------------------------------------------------------------------
// the fixture, bit-exact

#[test]
fn golden_b3_order_is_synth_000001_to_3() {
    assert_eq!(b3_ids(), ["synth_000001", "synth_000002", "synth_000003"]);
    let ids: Vec<String> = images().into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids, b3_ids());
}

#[test]
fn features_files_equal_golden_b3_inputs() {
    let golden = Golden::open(&lxmert_dir().join("golden.safetensors"));
    assert_eq!(golden.shape("b3.features"), [3, 10, 16]);
    assert_eq!(golden.shape("b3.boxes"), [3, 10, 4]);
    let (features, boxes) = (golden.f32("b3.features"), golden.f32("b3.boxes"));
    for (b, id) in b3_ids().iter().enumerate() {
        let r = read_features_file(&features_path(id)).expect("fixture features file reads");
        assert_eq!((r.count, r.dim, r.image_size), (10, 16, None), "{id}");
        assert_eq!(r.source, features_path(id).display().to_string());
        assert_eq!(
            bits(&r.features),
            bits(&features[b * 160..(b + 1) * 160]),
            "{id} features"
        );
        assert_eq!(
            bits(&r.boxes),
            bits(&boxes[b * 40..(b + 1) * 40]),
            "{id} boxes"
        );
        r.check_dim(16).expect("visual_feat_dim 16");
    }
}

#[test]
fn tsv_rows_equal_features_files() {
    for (id, h, w) in images() {
        let from_tsv = read_obj36_tsv(&tsv_path(), &id).expect("fixture TSV reads");
        let from_st = read_features_file(&features_path(&id)).unwrap();
        assert_same_regions(&from_tsv, &from_st);
        assert_eq!(from_tsv.image_size, Some((h, w)), "{id}");
        assert_eq!(from_tsv.source, format!("{}#{id}", tsv_path().display()));
        // region 0 is the whole image: (0, 0, W, H) normalises to exactly (0, 0, 1, 1)
        assert_eq!(from_tsv.boxes[..4], [0.0, 0.0, 1.0, 1.0], "{id}");
    }
}

#[test]
fn test_base64_encoder_reproduces_the_fixture() {
    // The writer used by the malformed-TSV tests below encodes as Python's b64encode does.
    for (row, (id, _, _)) in fixture_rows().iter().zip(images()) {
        let r = read_obj36_tsv(&tsv_path(), &id).unwrap();
        assert_eq!(row[9], b64(&f32_bytes(&r.features)), "{id}");
    }
}

#[test]
fn tsv_accepts_lf_line_ends_blank_lines_and_no_final_newline() {
    let rows = fixture_rows();
    let lf = write_tsv("lf.tsv", &rows, "\n");
    let mut text = std::fs::read_to_string(&lf).unwrap();
    text.insert(0, '\n');
    text.pop(); // no line end after the last row
    std::fs::write(&lf, text).unwrap();
    for (id, _, _) in images() {
        let got = read_obj36_tsv(&lf, &id).expect("LF TSV reads");
        assert_same_regions(&got, &read_obj36_tsv(&tsv_path(), &id).unwrap());
    }
}

#[test]
fn tsv_stops_at_the_matching_line() {
    let mut rows = fixture_rows();
    rows.truncate(1);
    rows.push(vec!["junk after the match".into()]);
    let path = write_tsv("stops.tsv", &rows, "\r\n");
    read_obj36_tsv(&path, ID1).expect("the malformed line after the match is never read");
    let err = tsv_err(&path, "junk after the match");
    assert!(
        matches!(err, InputError::TsvColumns { found: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn tsv_round_trips_every_base64_padding() {
    // 1 region of D floats = 4·D bytes: D = 1, 2, 3 give "==", "=" and no padding.
    for d in 1..=3 {
        let features: Vec<f32> = (0..d).map(|k| 0.1 + k as f32).collect();
        let boxes_abs = [10.0, 20.0, 30.0, 50.0];
        let cols = obj36_columns("one", 100, 40, &boxes_abs, &features);
        let path = write_tsv("pad.tsv", &[cols], "\r\n");
        let r = read_obj36_tsv(&path, "one").expect("synthetic TSV reads");
        assert_eq!((r.count, r.dim, r.image_size), (1, d, Some((100, 40))));
        assert_eq!(bits(&r.features), bits(&features));
        let want = [10.0f32 / 40.0, 20.0 / 100.0, 30.0 / 40.0, 50.0 / 100.0];
        assert_eq!(bits(&r.boxes), bits(&want));
    }
}

// ---------------------------------------------------------------------------------------------
// features file errors

#[test]
fn missing_features_file() {
    let path = temp_path("absent.safetensors");
    let err = features_err(&path);
    assert!(matches!(err, InputError::RegionsNotFound { .. }), "{err:?}");
    assert_message(&err, &[&path.display().to_string(), "not found"]);
}

#[test]
fn unreadable_features_file() {
    let dir = temp_path("a_directory.safetensors");
    std::fs::create_dir(&dir).unwrap();
    let err = features_err(&dir);
    assert!(matches!(err, InputError::RegionsRead { .. }), "{err:?}");
    assert_message(
        &err,
        &["cannot read region file", &dir.display().to_string()],
    );
}

#[test]
fn not_a_safetensors_file() {
    let path = temp_path("text.safetensors");
    std::fs::write(&path, b"img_id\timg_h\timg_w\n").unwrap();
    let err = features_err(&path);
    assert!(
        matches!(err, InputError::RegionsNotSafetensors { .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "is not a safetensors file: its content is not safetensors",
        ],
    );
    // An image given as regions, an empty file: said in words, not as a header size.
    let image = fixtures().join("images/catdog.png");
    assert_message(
        &features_err(&image),
        &[
            "its content is not safetensors",
            "or an obj36 TSV named .tsv",
        ],
    );
    let empty = temp_path("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert_message(
        &features_err(&empty),
        &["is not a safetensors file: the file is empty"],
    );
}

#[test]
fn missing_features_or_boxes_tensor() {
    let features = f32_tensor(&[3, 2], &small_features());
    let boxes = f32_tensor(&[3, 4], &small_boxes());
    let path = write_safetensors("nofeat.safetensors", &[("boxes", &boxes)]);
    let err = features_err(&path);
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "tensor `features`",
            "missing",
            "[\"boxes\"]",
        ],
    );
    let path = write_safetensors("nobox.safetensors", &[("roi_features", &features)]);
    let err = features_err(&path);
    assert_message(&err, &["tensor `features`", "missing", "roi_features"]);
    let path = write_safetensors("nobox.safetensors", &[("features", &features)]);
    let err = features_err(&path);
    assert!(matches!(err, InputError::RegionsTensor { .. }), "{err:?}");
    assert_message(
        &err,
        &[&path.display().to_string(), "tensor `boxes`", "missing"],
    );
}

#[test]
fn wrong_ranks_and_shapes() {
    let feats = small_features();
    let bxs = small_boxes();
    let cases: [(&str, Raw, Raw, &[&str]); 5] = [
        (
            "batched boxes",
            f32_tensor(&[3, 2], &feats),
            f32_tensor(&[1, 3, 4], &bxs),
            &[
                "tensor `boxes`",
                "[1, 3, 4]",
                "rank 3",
                "[N, 4]",
                "leading batch dimension",
            ],
        ),
        (
            "flat features",
            f32_tensor(&[6], &feats),
            f32_tensor(&[3, 4], &bxs),
            &["tensor `features`", "[6]", "rank 1", "[N, F]"],
        ),
        (
            "3-wide boxes",
            f32_tensor(&[3, 2], &feats),
            f32_tensor(&[4, 3], &bxs),
            &["tensor `boxes`", "[4, 3]", "expected [N, 4]"],
        ),
        (
            "rows differ",
            f32_tensor(&[2, 3], &feats),
            f32_tensor(&[3, 4], &bxs),
            &[
                "`features` has shape [2, 3] and `boxes` [3, 4]",
                "one row per region",
            ],
        ),
        (
            "no regions",
            f32_tensor(&[0, 2], &[]),
            f32_tensor(&[0, 4], &[]),
            &["tensor `features`", "[0, 2]", "no regions"],
        ),
    ];
    for (what, features, boxes, pieces) in cases {
        let path = write_safetensors(
            "shape.safetensors",
            &[("features", &features), ("boxes", &boxes)],
        );
        let err = features_err(&path);
        let mut pieces = pieces.to_vec();
        let name = path.display().to_string();
        pieces.push(&name);
        println!("{what}: {err}");
        assert_message(&err, &pieces);
    }
}

#[test]
fn non_f32_dtypes() {
    let boxes = f32_tensor(&[3, 4], &small_boxes());
    let features = Raw {
        dtype: Dtype::F64,
        shape: vec![3, 2],
        data: small_features()
            .iter()
            .flat_map(|&x| f64::from(x).to_le_bytes())
            .collect(),
    };
    let path = write_safetensors(
        "f64.safetensors",
        &[("features", &features), ("boxes", &boxes)],
    );
    let err = features_err(&path);
    assert!(matches!(err, InputError::RegionsTensor { .. }), "{err:?}");
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "tensor `features`",
            "F64",
            "expected F32",
        ],
    );

    let features = f32_tensor(&[3, 2], &small_features());
    let boxes = Raw {
        dtype: Dtype::F16,
        shape: vec![3, 4],
        data: vec![0; 24],
    };
    let path = write_safetensors(
        "f16.safetensors",
        &[("features", &features), ("boxes", &boxes)],
    );
    assert_message(
        &features_err(&path),
        &["tensor `boxes`", "F16", "expected F32"],
    );
}

#[test]
fn non_finite_values() {
    let path = small_features_file(|f, _| f[3] = f32::NAN);
    let err = features_err(&path);
    assert!(
        matches!(err, InputError::RegionsValue { region: 1, .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "region 1, features[1]",
            "NaN is not finite",
        ],
    );
    let path = small_features_file(|_, b| b[9] = f32::INFINITY);
    assert_message(
        &features_err(&path),
        &[
            &path.display().to_string(),
            "region 2, box y1",
            "inf is not finite",
        ],
    );
}

#[test]
fn boxes_outside_the_unit_square() {
    let path = small_features_file(|_, b| b[6] = 1.01);
    let err = features_err(&path);
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "region 1, box x2",
            "1.01 is outside [0, 1]; boxes must be normalised by the image width and height",
        ],
    );
    let path = small_features_file(|_, b| b[1] = -0.01);
    assert_message(
        &features_err(&path),
        &["region 0, box y1", "-0.01 is outside [0, 1]"],
    );
    // float rounding within 1e-6 is accepted, and the value kept as it is
    let path = small_features_file(|_, b| {
        b[2] = 1.0 + 5e-7;
        b[0] = -5e-7;
    });
    let r = read_features_file(&path).expect("within tolerance");
    assert_eq!(r.boxes[2], 1.0 + 5e-7);
    assert_eq!(r.boxes[0], -5e-7);
    let path = small_features_file(|_, b| b[2] = 1.0 + 3e-6);
    assert_message(
        &features_err(&path),
        &["region 0, box x2", "is outside [0, 1]"],
    );
}

#[test]
fn inverted_boxes() {
    let path = small_features_file(|_, b| b[6] = 0.2);
    let err = features_err(&path);
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "region 1, box",
            "x2 = 0.2 is less than x1 = 0.25",
        ],
    );
    let path = small_features_file(|_, b| b[7] = 0.4);
    assert_message(
        &features_err(&path),
        &["region 1, box", "y2 = 0.4 is less than y1 = 0.5"],
    );
}

// ---------------------------------------------------------------------------------------------
// TSV errors

/// An id the TSV lacks is refused with what its ids look like, whether it is streamed or
/// indexed; a longer file shows its first ids as examples.
#[test]
fn tsv_image_id_not_found() {
    let holds = "it holds 3 images, with ids synth_000001, synth_000002, synth_000003";
    let streamed = tsv_err(&tsv_path(), "synth_000004");
    let indexed = Obj36Index::open(&tsv_path())
        .unwrap()
        .read("synth_000004")
        .unwrap_err();
    for err in [streamed, indexed] {
        assert!(
            matches!(err, InputError::TsvImageNotFound { .. }),
            "{err:?}"
        );
        assert_message(
            &err,
            &[
                "\"synth_000004\" not found",
                &tsv_path().display().to_string(),
                holds,
            ],
        );
    }
    assert_eq!(holds_ids(1, &["a"]), "it holds 1 image, with id a");
    assert_eq!(
        holds_ids(40, &["a", "b", "c"]),
        "it holds 40 images, with ids such as a, b, c"
    );
    assert_eq!(holds_ids(0, &[] as &[&str]), "it holds no image");
    // A binary file named .tsv: its first "ids" are not printed.
    let not_a_tsv = "its lines do not start with an image id and a tab: it does not read as an \
                     obj36 TSV";
    for first in ["\u{fffd}\u{fffd}{\"boxes\"", "a\u{0}b", &"x".repeat(101)] {
        assert_eq!(holds_ids(2, &["synth_1", first]), not_a_tsv, "{first:?}");
    }
    assert_eq!(
        holds_ids(1, &["x".repeat(100)]),
        format!("it holds 1 image, with id {}", "x".repeat(100))
    );
}

#[test]
fn tsv_missing_file() {
    let path = temp_path("absent.tsv");
    let err = tsv_err(&path, ID1);
    assert!(matches!(err, InputError::RegionsNotFound { .. }), "{err:?}");
    assert_message(&err, &[&path.display().to_string(), "not found"]);
}

#[test]
fn tsv_wrong_column_count() {
    let mut rows = fixture_rows();
    rows[1].pop();
    let path = write_tsv("columns.tsv", &rows, "\r\n");
    read_obj36_tsv(&path, ID1).expect("row 1 is fine");
    let err = tsv_err(&path, "synth_000002");
    assert!(
        matches!(
            err,
            InputError::TsvColumns {
                line: 2,
                found: 9,
                ..
            }
        ),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "line 2 (image \"synth_000002\")",
            "9 TAB-separated columns, expected 10",
            "img_id img_h img_w objects_id",
        ],
    );
}

#[test]
fn tsv_bad_base64() {
    let rows = fixture_rows();
    let mut features = rows[0][9].clone();
    features.replace_range(5..6, "#");
    let path = fixture_with(9, &features);
    let err = tsv_err(&path, ID1);
    assert!(matches!(err, InputError::TsvField { .. }), "{err:?}");
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "line 1 (image \"synth_000001\"), column `features`",
            "bad base64: invalid character '#' at offset 5",
        ],
    );
    // a space (Python's b64decode would silently skip it)
    let mut boxes = rows[0][8].clone();
    boxes.replace_range(0..1, " ");
    let path = fixture_with(8, &boxes);
    assert_message(
        &tsv_err(&path, ID1),
        &["column `boxes`", "invalid character ' ' at offset 0"],
    );
    // a non-ASCII byte
    let path = fixture_with(8, &format!("é{}", &rows[0][8][2..]));
    assert_message(
        &tsv_err(&path, ID1),
        &["column `boxes`", "invalid byte 0xc3 at offset 0"],
    );
    // padding missing, misplaced, or too long
    let path = fixture_with(4, "AAAAAAA");
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `objects_conf`",
            "7 characters is not a multiple of 4",
        ],
    );
    let path = fixture_with(4, "AA==AAAA");
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `objects_conf`",
            "`=` padding at offset 2, before the end",
        ],
    );
    let path = fixture_with(4, "AAAAA===");
    assert_message(
        &tsv_err(&path, ID1),
        &["column `objects_conf`", "3 `=` at the end"],
    );
}

#[test]
fn tsv_byte_length_not_a_multiple_of_the_element_size() {
    let path = fixture_with(3, &b64(&[0u8; 12]));
    let err = tsv_err(&path, ID1);
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "column `objects_id`",
            "12 bytes is not a whole number of int64 (8 bytes each)",
        ],
    );
    let path = fixture_with(9, &b64(&[0u8; 6]));
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `features`",
            "6 bytes is not a whole number of float32 (4 bytes each)",
        ],
    );
}

#[test]
fn tsv_num_boxes_inconsistent_with_arrays() {
    let path = fixture_with(7, "9");
    let err = tsv_err(&path, ID1);
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "column `objects_id`",
            "10 int64 values, but num_boxes is 9",
        ],
    );
    let path = fixture_with(8, &b64(&f32_bytes(&[1.0; 36])));
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `boxes`",
            "36 float32 values, but num_boxes 10 needs 40",
        ],
    );
    let path = fixture_with(9, &b64(&f32_bytes(&[1.0; 15])));
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `features`",
            "15 float32 values do not split into num_boxes = 10",
        ],
    );
    let path = fixture_with(9, "");
    assert_message(
        &tsv_err(&path, ID1),
        &["column `features`", "0 float32 values do not split"],
    );
    let path = fixture_with(7, "0");
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `num_boxes`",
            "is 0; an image needs at least one region",
        ],
    );
}

#[test]
fn tsv_zero_or_bad_image_size() {
    let path = fixture_with(1, "0");
    let err = tsv_err(&path, ID1);
    assert!(
        matches!(err, InputError::TsvField { line: 1, .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &path.display().to_string(),
            "column `img_h`",
            "is 0; the image size must be positive",
        ],
    );
    let path = fixture_with(2, "0");
    assert_message(&tsv_err(&path, ID1), &["column `img_w`", "is 0"]);
    let path = fixture_with(2, "640.0");
    assert_message(
        &tsv_err(&path, ID1),
        &[
            "column `img_w`",
            "\"640.0\" is not a non-negative decimal integer",
        ],
    );
}

#[test]
fn tsv_values_checked_after_normalisation() {
    // boxes of the fixture reach x = 640 px: against img_w 320 they leave the image
    let path = fixture_with(2, "320");
    let err = tsv_err(&path, ID1);
    assert!(
        matches!(err, InputError::RegionsValue { region: 0, .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &format!("{}#{ID1}", path.display()),
            "region 0, box x2",
            "2 is outside [0, 1]; the box leaves the 320×480 image",
        ],
    );
    let cols = obj36_columns(
        "nan",
        10,
        10,
        &[0.0, 0.0, 5.0, 5.0, 1.0, 1.0, 2.0, 2.0],
        &[1.0, f32::NAN],
    );
    let path = write_tsv("nan.tsv", &[cols], "\n");
    assert_message(
        &tsv_err(&path, "nan"),
        &[
            &format!("{}#nan", path.display()),
            "region 1, features[0]",
            "NaN is not finite",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// load_regions and check_dim

#[test]
fn load_regions_dispatches_by_extension() {
    for (id, _, _) in images() {
        let tsv = load_regions(&tsv_path(), Some(&id)).expect("TSV by extension");
        assert_same_regions(&tsv, &read_obj36_tsv(&tsv_path(), &id).unwrap());
        assert!(tsv.image_size.is_some());
        let st = load_regions(&features_path(&id), None).expect("features file");
        assert_same_regions(&st, &tsv);
        assert_eq!(st.image_size, None);
        // one image per features file: an image id does not change what is read
        let st_id = load_regions(&features_path(&id), Some("ignored")).unwrap();
        assert_same_regions(&st_id, &st);
    }
    // the extension is matched without case; anything else is read as safetensors
    let upper = temp_path("REGIONS.TSV");
    std::fs::copy(tsv_path(), &upper).unwrap();
    let r = load_regions(&upper, Some(ID1)).expect(".TSV is a TSV");
    assert_same_regions(&r, &read_features_file(&features_path(ID1)).unwrap());
    let other = temp_path("regions.bin");
    std::fs::copy(features_path(ID1), &other).unwrap();
    assert_same_regions(&load_regions(&other, None).unwrap(), &r);
    // a TSV under another extension is not sniffed: it is read as safetensors and rejected
    let txt = temp_path("regions.txt");
    std::fs::copy(tsv_path(), &txt).unwrap();
    let err = load_regions(&txt, Some(ID1)).expect_err("not safetensors");
    assert!(
        matches!(err, InputError::RegionsNotSafetensors { .. }),
        "{err:?}"
    );
}

#[test]
fn load_regions_tsv_needs_an_image_id() {
    let err = load_regions(&tsv_path(), None).expect_err("no image id");
    assert!(matches!(err, InputError::ImageIdRequired { .. }), "{err:?}");
    assert_message(
        &err,
        &[
            &tsv_path().display().to_string(),
            "choose one by its image id (--image-id",
        ],
    );
}

#[test]
fn check_dim_names_the_source_and_both_widths() {
    let r = load_regions(&tsv_path(), Some(ID1)).unwrap();
    r.check_dim(16).expect("fixture width");
    let err = r.check_dim(2048).expect_err("LXMERT's real width");
    assert!(
        matches!(
            err,
            InputError::RegionDim {
                found: 16,
                expected: 2048,
                ..
            }
        ),
        "{err:?}"
    );
    assert_message(
        &err,
        &[
            &format!("{}#{ID1}", tsv_path().display()),
            "16-wide",
            "visual_feat_dim is 2048",
        ],
    );
}
