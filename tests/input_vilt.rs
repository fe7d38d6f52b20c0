//! ViLT inputs against transformers: `ViltConfig` from config.json, and `ViltImageProcessor`
//! (resize arithmetic, Pillow bicubic, rescale/normalise, batch padding and `pixel_mask`) against
//! the goldens of tools/reference/make_vilt_fixture.py (golden.json `preprocess`, `cases`).

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, max_abs_diff, Golden};
use fiedler::backend::Activation;
use fiedler::input::image::Resample;
use fiedler::input::vilt::{patch_grid, resize_output_size, ViltPixels, ViltProcessorConfig};
use fiedler::input::InputError;
use fiedler::model::config::{AnswerProbability, ConfigError, ModelFamily, ViltConfig};
use image::RgbImage;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const IMAGES: [(&str, &str); 4] = [
    ("catdog", "catdog.png"),
    ("coco_127510", "coco_127510.jpg"),
    ("odd", "odd.png"),
    ("tall", "tall.png"),
];

/// One 8-bit level after rescale and normalisation with std 0.5: 1/255/0.5 ≈ 0.00784.
const ONE_LEVEL: f32 = 1.0 / 255.0 / 0.5;

fn vilt_dir() -> PathBuf {
    fixtures().join("vilt")
}

fn golden() -> Golden {
    Golden::open(&vilt_dir().join("golden.safetensors"))
}

fn golden_json() -> Value {
    let text = std::fs::read_to_string(vilt_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn image_path(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

fn processor() -> ViltProcessorConfig {
    ViltProcessorConfig::from_dir(&vilt_dir(), 64).expect("fixture preprocessor config parses")
}

fn usize_pair(v: &Value) -> (usize, usize) {
    let n = |i: usize| v[i].as_u64().expect("integer") as usize;
    (n(0), n(1))
}

/// The golden `preprocess.<stem>.resized_u8` (PIL's resize output, HWC).
fn golden_resized(stem: &str) -> (Vec<u8>, Vec<usize>) {
    let bytes = std::fs::read(vilt_dir().join("golden.safetensors")).expect("golden file");
    let st = SafeTensors::deserialize(&bytes).expect("golden parses");
    let t = st
        .tensor(&format!("preprocess.{stem}.resized_u8"))
        .expect("resized_u8 present");
    assert_eq!(t.dtype(), Dtype::U8);
    (t.data().to_vec(), t.shape().to_vec())
}

/// A golden int64 0/1 mask as booleans.
fn golden_mask(golden: &Golden, name: &str) -> Vec<bool> {
    golden
        .i64(name)
        .into_iter()
        .map(|v| {
            assert!(v == 0 || v == 1, "{name}: mask value {v}");
            v == 1
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// config.json: ViltConfig

#[test]
fn fixture_config_values() {
    let config = ViltConfig::from_dir(&vilt_dir()).expect("fixture config parses");
    let answers: Vec<String> = golden_json()["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| a.as_str().expect("string").to_string())
        .collect();
    assert_eq!(
        config,
        ViltConfig {
            vocab_size: 329,
            hidden_size: 48,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            intermediate_size: 96,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 64,
            patch_size: 16,
            num_channels: 3,
            max_position_embeddings: 24,
            type_vocab_size: 2,
            modality_type_vocab_size: 2,
            qkv_bias: true,
            max_image_length: -1,
            num_labels: 12,
            id2label: answers,
            pad_token_id: 0,
            dtype: Some("float32".into()),
            answer_probability: AnswerProbability::Sigmoid,
        }
    );
    let grid = &golden_json()["model"]["position_grid"];
    assert_eq!(
        (config.grid_size(), config.grid_size()),
        usize_pair(grid),
        "position-embedding grid"
    );
}

/// A fresh, empty directory under the system temp dir, unique to this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fiedler-input-vilt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn config_with(name: &str, json: &str) -> Result<ViltConfig, ConfigError> {
    let dir = scratch(name);
    std::fs::write(dir.join("config.json"), json).expect("write config");
    ViltConfig::from_dir(&dir)
}

fn config_error(name: &str, json: &str) -> String {
    let err = config_with(name, json).expect_err("config must be rejected");
    let msg = err.to_string();
    assert!(msg.contains("config.json"), "{msg}");
    msg
}

#[test]
fn absent_config_fields_take_vilt_config_defaults() {
    let config = config_with("defaults", r#"{"model_type": "vilt"}"#).unwrap();
    assert_eq!(
        config,
        ViltConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 384,
            patch_size: 32,
            num_channels: 3,
            max_position_embeddings: 40,
            type_vocab_size: 2,
            modality_type_vocab_size: 2,
            qkv_bias: true,
            max_image_length: -1,
            num_labels: 2,
            id2label: vec!["LABEL_0".into(), "LABEL_1".into()],
            pad_token_id: 0,
            dtype: None,
            answer_probability: AnswerProbability::Sigmoid,
        }
    );
    assert_eq!(config.grid_size(), 12);
}

/// `answer_probability`: a softmax over the answers where the head was trained with
/// cross-entropy (the bundled demo models say so), else σ per answer; anything else is an
/// error naming the key.
#[test]
fn answer_probability_follows_the_training_loss() {
    let softmax = config_with(
        "softmax",
        r#"{"model_type": "vilt", "answer_probability": "softmax"}"#,
    )
    .unwrap();
    assert_eq!(softmax.answer_probability, AnswerProbability::Softmax);
    let p = AnswerProbability::Softmax.of(&[2.0, 0.0, 0.0]);
    let e2 = 2.0f64.exp();
    assert!((f64::from(p[0]) - e2 / (e2 + 2.0)).abs() < 1e-7, "{p:?}");
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{p:?}");
    let s = AnswerProbability::Sigmoid.of(&[0.0, 2.0]);
    assert_eq!(s[0], 0.5);
    assert!((f64::from(s[1]) - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-7);
    let bundled = ViltConfig::from_dir(&common::repo().join("models/vilt-synth")).unwrap();
    assert_eq!(bundled.answer_probability, AnswerProbability::Softmax);
    let msg = config_error(
        "probability",
        r#"{"model_type": "vilt", "answer_probability": "tanh"}"#,
    );
    assert!(
        msg.contains("`answer_probability`") && msg.contains("\"softmax\""),
        "{msg}"
    );
}

#[test]
fn clip_config_is_the_wrong_family() {
    let err = ViltConfig::from_dir(&fixtures().join("clip")).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::WrongFamily {
                expected: ModelFamily::Vilt,
                found: ModelFamily::Clip,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_config_fields_are_named() {
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "qkv",
            r#"{"model_type": "vilt", "qkv_bias": false}"#,
            &["`qkv_bias`", "not supported", "found false"],
        ),
        (
            "heads",
            r#"{"model_type": "vilt", "hidden_size": 50, "num_attention_heads": 4}"#,
            &[
                "`hidden_size`",
                "multiple of num_attention_heads (4)",
                "found 50",
            ],
        ),
        (
            "grid",
            r#"{"model_type": "vilt", "image_size": 60, "patch_size": 16}"#,
            &["`image_size`", "multiple of patch_size (16)", "found 60"],
        ),
        (
            "act",
            r#"{"model_type": "vilt", "hidden_act": "relu"}"#,
            &["`hidden_act`", "\"relu\""],
        ),
        (
            "gap",
            r#"{"model_type": "vilt", "id2label": {"0": "yes", "2": "no"}}"#,
            &["`id2label`", "0..n-1", "\"2\""],
        ),
        (
            "label-type",
            r#"{"model_type": "vilt", "id2label": {"0": "yes", "1": 7}}"#,
            &["`id2label`", "\"1\": 7"],
        ),
        (
            "count",
            r#"{"model_type": "vilt", "id2label": {"0": "yes", "1": "no"}, "num_labels": 3}"#,
            &["`num_labels`", "expected 2", "found 3"],
        ),
        (
            "max-image",
            r#"{"model_type": "vilt", "max_image_length": 1.5}"#,
            &["`max_image_length`", "an integer", "found 1.5"],
        ),
        (
            "modality",
            r#"{"model_type": "vilt", "modality_type_vocab_size": 1}"#,
            &["`modality_type_vocab_size`", "at least 2"],
        ),
    ];
    for (name, json, parts) in cases {
        let msg = config_error(name, json);
        for part in parts {
            assert!(msg.contains(part), "{name}: message {msg:?} lacks {part:?}");
        }
    }
}

// ----------------------------------------------------------------------------------------------
// preprocessor_config.json: ViltProcessorConfig

#[test]
fn fixture_preprocessor_config_values() {
    assert_eq!(
        processor(),
        ViltProcessorConfig {
            do_resize: true,
            shortest_edge: 64,
            size_divisor: 16,
            resample: Resample::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            do_pad: true,
        }
    );
}

fn processor_with(name: &str, json: &str) -> Result<ViltProcessorConfig, InputError> {
    let dir = scratch(name);
    std::fs::write(dir.join("preprocessor_config.json"), json).expect("write config");
    ViltProcessorConfig::from_dir(&dir, 384)
}

/// Without preprocessor_config.json: `ViltImageProcessor()`'s defaults with the model's
/// image_size as the shortest edge (spec §H), which for ViLT's 384 are the defaults exactly; a
/// file without `size` takes it too.
#[test]
fn absent_preprocessor_settings_come_from_the_model_image_size() {
    let config = ViltProcessorConfig::from_dir(&scratch("no-preprocessor"), 384).unwrap();
    assert_eq!(
        (config.shortest_edge, config.size_divisor, config.resample),
        (384, 32, Resample::Bicubic)
    );
    assert_eq!((config.image_mean, config.image_std), ([0.5; 3], [0.5; 3]));
    assert!(config.do_resize && config.do_rescale && config.do_normalize && config.do_pad);
    let config = ViltProcessorConfig::from_dir(&scratch("no-preprocessor-96"), 96).unwrap();
    assert_eq!(config, ViltProcessorConfig::vilt(96));
    assert_eq!((config.shortest_edge, config.size_divisor), (96, 32));
    let dir = scratch("no-size");
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"size_divisor": 16}"#,
    )
    .unwrap();
    let config = ViltProcessorConfig::from_dir(&dir, 96).unwrap();
    assert_eq!((config.shortest_edge, config.size_divisor), (96, 16));
}

/// dandelin/vilt-b32-finetuned-vqa's preprocessor_config.json uses the legacy integer `size`
/// (and older ones the legacy `pad_and_return_pixel_mask`).
#[test]
fn legacy_preprocessor_fields_parse() {
    let config = processor_with(
        "legacy",
        r#"{"feature_extractor_type": "ViltFeatureExtractor", "size": 384, "size_divisor": 32,
            "resample": 3, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "pad_and_return_pixel_mask": false, "do_pad": true}"#,
    )
    .unwrap();
    assert_eq!(config.shortest_edge, 384);
    assert!(!config.do_pad, "pad_and_return_pixel_mask overrides do_pad");
    let config = processor_with(
        "both-edges",
        r#"{"size": {"shortest_edge": 200, "longest_edge": 300}, "resample": 2, "do_pad": false}"#,
    )
    .unwrap();
    assert_eq!(config.shortest_edge, 200, "longest_edge is ignored");
    assert_eq!(config.resample, Resample::Bilinear);
    assert!(!config.do_pad);
}

#[test]
fn bad_preprocessor_fields_are_named() {
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "exact",
            r#"{"size": {"height": 384, "width": 384}}"#,
            &["`size`", "shortest_edge"],
        ),
        (
            "divisor",
            r#"{"size_divisor": 0}"#,
            &["`size_divisor`", "found 0"],
        ),
        ("nearest", r#"{"resample": 0}"#, &["`resample`", "found 0"]),
        ("std", r#"{"image_std": [0.5, 0.0, 0.5]}"#, &["`image_std`"]),
        ("mean", r#"{"image_mean": [0.5, 0.5]}"#, &["`image_mean`"]),
        ("pad", r#"{"do_pad": "yes"}"#, &["`do_pad`", "\"yes\""]),
        (
            "factor",
            r#"{"rescale_factor": "1/255"}"#,
            &["`rescale_factor`"],
        ),
    ];
    for (name, json, parts) in cases {
        let msg = processor_with(name, json)
            .expect_err("config must be rejected")
            .to_string();
        assert!(msg.contains("preprocessor_config.json"), "{msg}");
        for part in parts {
            assert!(msg.contains(part), "{name}: message {msg:?} lacks {part:?}");
        }
    }
    let msg = processor_with("json", "{ nope").unwrap_err().to_string();
    assert!(msg.contains("not valid JSON"), "{msg}");
}

// ----------------------------------------------------------------------------------------------
// Output sizes (golden.json preprocess.<stem>.resize)

#[test]
fn output_sizes_equal_transformers() {
    let json = golden_json();
    let config = processor();
    for (stem, file) in IMAGES {
        let resize = &json["preprocess"][stem]["resize"];
        let (h, w) = usize_pair(&resize["input_hw"]);
        let expected = usize_pair(&resize["output_hw"]);
        assert_eq!(config.output_size(h, w), expected, "{file}");
        assert_eq!(resize_output_size(h, w, 64, 16), expected, "{file}");
        // Without the divisor the size is the rounded one.
        assert_eq!(
            resize_output_size(h, w, 64, 1),
            usize_pair(&resize["rounded_hw"]),
            "{file}"
        );
        let (rows, cols) = usize_pair(&resize["patch_grid"]);
        assert_eq!(
            patch_grid(expected.0, expected.1, 16),
            (rows, cols),
            "{file}"
        );
        let (_, ph, pw) = config
            .preprocess_file(&image_path(file))
            .expect("preprocess");
        assert_eq!((ph, pw), expected, "{file}: preprocessed size");
    }
}

/// Values worked through transformers' formula by hand (`get_resize_output_image_size`).
#[test]
fn resize_arithmetic_by_hand() {
    // 384 shortest edge: longer = int(1.66625 · 384) = int(639.84) = 639.
    // 480×640: scale 0.8 → 384 × 512 (no cap), both multiples of 32.
    assert_eq!(resize_output_size(480, 640, 384, 32), (384, 512));
    // 100×1000: 384 × 3840 → capped by 639/3840: 63.9 × 639 → 64, 639 → 64, 608.
    assert_eq!(resize_output_size(100, 1000, 384, 32), (64, 608));
    // Square: the h ≥ w branch, scale · h = 384 exactly.
    assert_eq!(resize_output_size(500, 500, 384, 32), (384, 384));
    // Upscaling a small portrait image: 10×7 → 548.57 × 384 → 549 → 544 × 384.
    assert_eq!(resize_output_size(10, 7, 384, 32), (544, 384));
    // Shortest edge 2: longer = int(3.3325) = 3; 3×5 → 2 × 3.33 → capped by 0.9: 1.8 × 3.0 →
    // int(2.3), int(3.5) = 2 × 3.
    assert_eq!(resize_output_size(3, 5, 2, 1), (2, 3));
    // A strip so thin that its short side rounds to nothing.
    assert_eq!(resize_output_size(1, 1000, 64, 16), (0, 96));
}

#[test]
fn image_resized_to_nothing_is_an_error() {
    let strip = RgbImage::from_pixel(1000, 1, image::Rgb([1, 2, 3]));
    let err = processor().preprocess(&strip, "strip").unwrap_err();
    assert!(
        matches!(err, InputError::ResizedToNothing { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("strip") && msg.contains("1000×1") && msg.contains("96×0"),
        "{msg}"
    );
    let err = processor()
        .preprocess(&RgbImage::new(0, 4), "blank")
        .unwrap_err()
        .to_string();
    assert!(err.contains("blank") && err.contains("0×4"), "{err}");
}

// ----------------------------------------------------------------------------------------------
// Pixels against transformers

#[test]
fn png_resize_equals_pillow_bytes() {
    let config = processor();
    for (stem, file) in IMAGES.iter().filter(|(_, f)| f.ends_with(".png")) {
        let image = fiedler::input::image::load_image(&image_path(file)).expect("decode");
        let (h, w) = config.output_size(image.height() as usize, image.width() as usize);
        let ours = fiedler::input::image::resize(&image, w, h, Resample::Bicubic).into_raw();
        let (theirs, shape) = golden_resized(stem);
        assert_eq!(shape, vec![h, w, 3], "{file}");
        assert_eq!(ours, theirs, "{file}: resized bytes differ from PIL's");
    }
}

/// Per image (a batch of one): the pixel values and the all-ones mask of transformers.
#[test]
fn pixel_values_and_masks_equal_transformers() {
    let golden = golden();
    let config = processor();
    for (stem, file) in IMAGES {
        let pixels = config
            .preprocess_batch(&[image_path(file)])
            .expect("preprocess");
        let shape = golden.shape(&format!("preprocess.{stem}.pixel_values"));
        assert_eq!(
            vec![3, pixels.height, pixels.width],
            shape,
            "{file}: pixel_values shape"
        );
        assert_eq!(pixels.sizes, vec![(shape[1], shape[2])], "{file}");
        let theirs = golden.f32(&format!("preprocess.{stem}.pixel_values"));
        let (diff, at) = max_abs_diff(&pixels.data, &theirs);
        let differing = pixels
            .data
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{file}: pixel_values max |Δ| = {diff} ({:.2} levels) at {at}; {differing} of {} differ",
            diff / ONE_LEVEL,
            theirs.len()
        );
        if file.ends_with(".png") {
            // Same bytes after the resize, same float32 arithmetic: bit-identical.
            assert_eq!(diff, 0.0, "{file}: max |Δ| = {diff} at {at}");
        } else {
            // zune-jpeg vs libjpeg-turbo rounding (see tests/input_image.rs).
            assert!(diff <= ONE_LEVEL + 1e-6, "{file}: max |Δ| = {diff} at {at}");
        }
        let mask = golden_mask(&golden, &format!("preprocess.{stem}.pixel_mask"));
        assert_eq!(pixels.mask, mask, "{file}: pixel_mask");
    }
}

/// The processor's own batches, b1 (catdog) and b3 (catdog, coco, tall: padded to 96×96).
#[test]
fn batches_equal_transformers() {
    let golden = golden();
    let json = golden_json();
    let config = processor();
    for case in ["b1", "b3"] {
        let files: Vec<PathBuf> = json["cases"][case]["pairs"]
            .as_array()
            .expect("pairs")
            .iter()
            .map(|p| image_path(p["image"].as_str().expect("image name")))
            .collect();
        let pixels = config.preprocess_batch(&files).expect("batch");
        let shape = golden.shape(&format!("{case}.pixel_values"));
        assert_eq!(
            vec![pixels.batch, 3, pixels.height, pixels.width],
            shape,
            "{case}"
        );
        let mask = golden_mask(&golden, &format!("{case}.pixel_mask"));
        assert_eq!(pixels.mask, mask, "{case}: pixel_mask");
        let theirs = golden.f32(&format!("{case}.pixel_values"));
        let per_image = 3 * pixels.height * pixels.width;
        for (b, file) in files.iter().enumerate() {
            let range = b * per_image..(b + 1) * per_image;
            let (diff, at) = max_abs_diff(&pixels.data[range.clone()], &theirs[range]);
            println!("{case}[{b}] {}: max |Δ| = {diff} at {at}", file.display());
            let jpeg = file.extension().is_some_and(|e| e == "jpg");
            let bound = if jpeg { ONE_LEVEL + 1e-6 } else { 0.0 };
            assert!(diff <= bound, "{case}[{b}]: max |Δ| = {diff} at {at}");
        }
        // The patch grids the model reads from this mask (golden.json cases.<c>.layout).
        let expected: Vec<(usize, usize)> = json["cases"][case]["layout"]["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| usize_pair(&s["patch_grid"]))
            .collect();
        let grids: Vec<_> = pixels
            .sizes
            .iter()
            .map(|&(h, w)| patch_grid(h, w, 16))
            .collect();
        assert_eq!(grids, expected, "{case}: patch grids");
    }
}

#[test]
fn padding_is_zero_after_normalisation_and_mask_is_the_top_left_rectangle() {
    let config = processor();
    let pixels = config
        .preprocess_batch(&[image_path("odd.png"), image_path("tall.png")])
        .expect("batch");
    // odd 48×96 and tall 96×32: max height and max width taken separately.
    assert_eq!((pixels.batch, pixels.height, pixels.width), (2, 96, 96));
    assert_eq!(pixels.sizes, vec![(48, 96), (96, 32)]);
    let ViltPixels {
        data,
        mask,
        height,
        width,
        ..
    } = &pixels;
    for (b, &(h, w)) in pixels.sizes.iter().enumerate() {
        for y in 0..*height {
            for x in 0..*width {
                let real = y < h && x < w;
                assert_eq!(mask[(b * height + y) * width + x], real, "[{b}, {y}, {x}]");
                if !real {
                    for c in 0..3 {
                        assert_eq!(data[((b * 3 + c) * height + y) * width + x], 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn unpadded_batches_need_one_size() {
    let mut config = processor();
    config.do_pad = false;
    let err = config
        .preprocess_batch(&[image_path("catdog.png"), image_path("odd.png")])
        .unwrap_err();
    assert!(matches!(err, InputError::RaggedBatch { .. }), "{err:?}");
    assert!(err.to_string().contains("do_pad"), "{err}");
    let same = config
        .preprocess_batch(&[image_path("catdog.png"), image_path("catdog.png")])
        .expect("same sizes batch");
    assert_eq!((same.height, same.width), (64, 64));
    assert!(same.mask.iter().all(|&m| m));
    let empty = processor()
        .preprocess_batch::<&Path>(&[])
        .expect("empty batch");
    assert_eq!((empty.batch, empty.height, empty.width), (0, 0, 0));
    assert!(empty.data.is_empty() && empty.mask.is_empty());
}

/// `fiedler inspect` says how many patches ViLT reads: for the fixture (shortest edge 64,
/// 16 px patches) 16 of a square image and at most 24, the most over every image shape up to
/// 400 × 400 pixels as the processor resizes them.
#[test]
fn inspect_gives_the_patch_counts_of_resized_images() {
    let dir = fixtures().join("vilt");
    let summary = fiedler::model::summary::ModelSummary::read(&dir).unwrap();
    let joint = &summary.towers[0].tokens;
    let p = processor();
    let patches = |h: usize, w: usize| {
        let (h, w) = resize_output_size(h, w, p.shortest_edge, p.size_divisor);
        let (rows, cols) = patch_grid(h, w, 16);
        rows * cols
    };
    let most = (1..=400)
        .flat_map(|h| (1..=400).map(move |w| (h, w)))
        .map(|(h, w)| patches(h, w))
        .max()
        .unwrap();
    assert_eq!((patches(50, 50), most), (16, 24));
    assert!(
        joint.ends_with(
            "one per 16×16 px patch of the resized image: 16 for a square image, at most 24"
        ),
        "{joint}"
    );
}
