//! Loading a model directory: config.json and safetensors weights. Every malformed input gives an
//! error value whose message names the file (and tensor/field) and says expected vs found; the
//! sharded f16 fixture loads to the same values as the f32 one.

mod common;

use std::path::{Path, PathBuf};

use common::{edited_fixture, edited_fixture_file, fixtures};
use fiedler::backend::Activation;
use fiedler::model::config::{read_family, ClipConfig, ConfigError, ModelFamily};
use fiedler::model::weights::{LoadError, Weights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A fresh, empty directory under the system temp dir, unique to this test process and `name`.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fiedler-load-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn clip_dir() -> PathBuf {
    fixtures().join("clip")
}

fn sharded_dir() -> PathBuf {
    fixtures().join("clip-f16-sharded")
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message {message:?} lacks {part:?}");
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

// ----------------------------------------------------------------------------------------------
// config.json

fn config_dir(name: &str, json: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("config.json"), json).expect("write config");
    dir
}

#[test]
fn unknown_model_type_lists_supported_families() {
    let dir = config_dir("bert", r#"{"model_type": "bert"}"#);
    let err = read_family(&dir).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnknownModelType { .. }),
        "{err:?}"
    );
    assert_mentions(
        &err.to_string(),
        &[
            &path_str(&dir.join("config.json")),
            "\"bert\"",
            "\"clip\", \"vilt\", \"lxmert\"",
        ],
    );
}

#[test]
fn missing_model_type_names_the_field() {
    let dir = config_dir("no-type", r#"{"architectures": ["X"]}"#);
    let msg = read_family(&dir).unwrap_err().to_string();
    assert_mentions(
        &msg,
        &[
            &path_str(&dir.join("config.json")),
            "model_type",
            "found nothing",
        ],
    );
}

#[test]
fn missing_config_names_the_path() {
    let dir = scratch("no-config");
    let err = read_family(&dir).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[&path_str(&dir.join("config.json")), "not found"],
    );
    assert!(ClipConfig::from_dir(&dir).is_err());
}

/// A Hub id that is not in the local cache is not fetched: the error says how to get it.
#[test]
fn hub_id_says_to_download_a_local_folder() {
    let err = read_family(Path::new("unc-nlp/lxmert-vqa-uncased")).unwrap_err();
    assert!(matches!(err, ConfigError::HubId { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            "huggingface-cli download unc-nlp/lxmert-vqa-uncased",
            "models--unc-nlp--lxmert-vqa-uncased in the local Hugging Face cache",
        ],
    );
    // owner/name under a folder that exists here (tests run in the crate root) is a plain
    // missing folder, not a Hub id
    let err = read_family(Path::new("tests/no-such-model")).unwrap_err();
    assert!(matches!(err, ConfigError::NoFolder { .. }), "{err:?}");
    assert_eq!(err.to_string(), "no model folder tests/no-such-model");
    // A file given for the folder (its config.json, say) is called one.
    let file = Path::new("tests/fixtures/clip/config.json");
    let err = read_family(file).unwrap_err();
    assert!(matches!(err, ConfigError::NotAFolder { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("tests/fixtures/clip/config.json is a file, not a model folder"),
        "{err}"
    );
}

#[test]
fn invalid_config_json_names_the_path() {
    let dir = config_dir("bad-json", "{\"model_type\": \"clip\",");
    let msg = ClipConfig::from_dir(&dir).unwrap_err().to_string();
    assert_mentions(
        &msg,
        &[&path_str(&dir.join("config.json")), "not valid JSON"],
    );
    let dir = config_dir("array-json", "[1, 2]");
    let msg = read_family(&dir).unwrap_err().to_string();
    assert_mentions(&msg, &["a JSON object", "[1,2]"]);
}

#[test]
fn families_are_read_from_model_type() {
    for (model_type, family) in [
        ("clip", ModelFamily::Clip),
        ("vilt", ModelFamily::Vilt),
        ("lxmert", ModelFamily::Lxmert),
    ] {
        let dir = config_dir(model_type, &format!(r#"{{"model_type": "{model_type}"}}"#));
        assert_eq!(read_family(&dir).unwrap(), family);
    }
    let dir = config_dir("vilt-as-clip", r#"{"model_type": "vilt"}"#);
    let msg = ClipConfig::from_dir(&dir).unwrap_err().to_string();
    assert_mentions(&msg, &["\"vilt\"", "\"clip\""]);
}

#[test]
fn clip_fixture_config_values() {
    let config = ClipConfig::from_dir(&clip_dir()).expect("fixture config");
    assert_eq!(config.projection_dim, 40);
    assert_eq!(config.dtype.as_deref(), Some("float32"));
    let t = &config.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads
        ),
        (814, 48, 96, 3, 4)
    );
    assert_eq!(
        (
            t.max_position_embeddings,
            t.bos_token_id,
            t.eos_token_id,
            t.pad_token_id
        ),
        (32, 812, 813, 813)
    );
    assert_eq!(t.hidden_act, Activation::Gelu);
    let v = &config.vision;
    assert_eq!(
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads
        ),
        (64, 128, 3, 4)
    );
    assert_eq!(
        (v.image_size, v.patch_size, v.num_channels, v.grid_size()),
        (48, 8, 3, 6)
    );
    assert_eq!(v.hidden_act, Activation::QuickGelu);
    assert_eq!(
        ClipConfig::from_dir(&sharded_dir()).unwrap().text,
        config.text
    );
}

#[test]
fn absent_clip_fields_take_transformers_defaults() {
    let dir = config_dir("defaults", r#"{"model_type": "clip", "text_config": null}"#);
    let config = ClipConfig::from_dir(&dir).unwrap();
    let t = &config.text;
    assert_eq!(
        (
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads
        ),
        (49408, 512, 2048, 12, 8)
    );
    assert_eq!(
        (
            t.max_position_embeddings,
            t.pad_token_id,
            t.bos_token_id,
            t.eos_token_id
        ),
        (77, 1, 49406, 49407)
    );
    assert_eq!(
        (t.hidden_act, t.layer_norm_eps),
        (Activation::QuickGelu, 1e-5)
    );
    let v = &config.vision;
    assert_eq!(
        (
            v.hidden_size,
            v.intermediate_size,
            v.num_hidden_layers,
            v.num_attention_heads
        ),
        (768, 3072, 12, 12)
    );
    assert_eq!((v.image_size, v.patch_size, v.num_channels), (224, 32, 3));
    assert_eq!(
        (v.hidden_act, v.layer_norm_eps),
        (Activation::QuickGelu, 1e-5)
    );
    assert_eq!(
        (config.projection_dim, config.logit_scale_init_value),
        (512, 2.6592)
    );
    assert_eq!(config.dtype, None);
}

#[test]
fn legacy_config_dict_overrides_config() {
    let dir = config_dir(
        "legacy-dict",
        r#"{"model_type": "clip", "torch_dtype": "float16",
            "vision_config": {"hidden_size": 64, "num_attention_heads": 4, "patch_size": 16},
            "vision_config_dict": {"patch_size": 14, "image_size": 336}}"#,
    );
    let config = ClipConfig::from_dir(&dir).unwrap();
    assert_eq!(
        (
            config.vision.hidden_size,
            config.vision.patch_size,
            config.vision.image_size
        ),
        (64, 14, 336)
    );
    assert_eq!(config.dtype.as_deref(), Some("float16"));
}

#[test]
fn invalid_clip_fields_are_named() {
    let cases = [
        (
            r#"{"text_config": {"hidden_size": 50, "num_attention_heads": 4}}"#,
            vec![
                "text_config.hidden_size",
                "multiple of text_config.num_attention_heads (4)",
                "found 50",
            ],
        ),
        (
            r#"{"vision_config": {"image_size": 50, "patch_size": 8}}"#,
            vec![
                "vision_config.image_size",
                "multiple of vision_config.patch_size (8)",
                "found 50",
            ],
        ),
        (
            r#"{"vision_config": {"num_hidden_layers": 0}}"#,
            vec![
                "vision_config.num_hidden_layers",
                "positive integer",
                "found 0",
            ],
        ),
        (
            // Fuzzed: the grid's token count overflowed (a panic, or in release a wrong shape).
            r#"{"vision_config": {"image_size": 9007199254740992, "patch_size": 8}}"#,
            vec![
                "vision_config.image_size",
                "positive integer up to 1048576",
                "found 9007199254740992",
            ],
        ),
        (
            r#"{"text_config": {"hidden_act": "swish"}}"#,
            vec!["text_config.hidden_act", "quick_gelu", "found \"swish\""],
        ),
        (
            r#"{"text_config": {"vocab_size": "many"}}"#,
            vec!["text_config.vocab_size", "found \"many\""],
        ),
        (
            r#"{"text_config": {"layer_norm_eps": -1.0}}"#,
            vec!["text_config.layer_norm_eps", "positive number"],
        ),
        (
            r#"{"projection_dim": -3}"#,
            vec!["`projection_dim`", "found -3"],
        ),
        (
            r#"{"text_config": [1]}"#,
            vec!["`text_config`", "a JSON object"],
        ),
    ];
    for (i, (fields, expected)) in cases.iter().enumerate() {
        let json = format!(
            r#"{{"model_type": "clip", {}}}"#,
            &fields[1..fields.len() - 1]
        );
        let dir = config_dir(&format!("invalid-{i}"), &json);
        let err = ClipConfig::from_dir(&dir).unwrap_err();
        let msg = err.to_string();
        assert_mentions(&msg, &[&path_str(&dir.join("config.json"))]);
        assert_mentions(&msg, expected);
    }
}

// ----------------------------------------------------------------------------------------------
// weights: malformed files

fn weights_error(dir: &Path) -> LoadError {
    Weights::open(dir).expect_err("malformed weights must not open")
}

/// A directory whose model.safetensors holds exactly `bytes`.
fn weights_dir(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("model.safetensors"), bytes).expect("write weights");
    dir
}

fn write_safetensors(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                *name,
                TensorView::new(*dtype, shape.clone(), data).expect("valid view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("serialize");
}

#[test]
fn no_weights_lists_the_files_looked_for() {
    let dir = scratch("no-weights");
    let err = weights_error(&dir);
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            &path_str(&dir),
            "model.safetensors",
            "model.safetensors.index.json",
        ],
    );
}

#[test]
fn zero_byte_file_is_corrupt() {
    let dir = weights_dir("zero", b"");
    let err = weights_error(&dir);
    assert!(matches!(err, LoadError::Corrupt { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[&path_str(&dir.join("model.safetensors")), "0 bytes"],
    );
}

#[test]
fn header_length_beyond_file_is_corrupt() {
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let dir = weights_dir("long-prefix", &bytes);
    let msg = weights_error(&dir).to_string();
    assert_mentions(
        &msg,
        &[
            &path_str(&dir.join("model.safetensors")),
            "1000000 bytes",
            "only 2 bytes",
        ],
    );

    // A prefix near u64::MAX must not overflow anywhere.
    let dir = weights_dir("huge-prefix", &u64::MAX.to_le_bytes());
    let msg = weights_error(&dir).to_string();
    assert_mentions(
        &msg,
        &[
            &path_str(&dir.join("model.safetensors")),
            "header length prefix",
        ],
    );
}

#[test]
fn garbage_header_is_corrupt_with_safetensors_reason() {
    let garbage = b"\x01\xffnot json at all";
    let mut bytes = (garbage.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(garbage);
    let dir = weights_dir("garbage", &bytes);
    let msg = weights_error(&dir).to_string();
    assert_mentions(
        &msg,
        &[
            &path_str(&dir.join("model.safetensors")),
            "not a valid safetensors file",
            "UTF-8",
        ],
    );

    let json = b"{\"w\": [1, 2, 3]}";
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json);
    let dir = weights_dir("bad-header-json", &bytes);
    let msg = weights_error(&dir).to_string();
    assert_mentions(
        &msg,
        &["not a valid safetensors file", "invalid JSON in header"],
    );
}

#[test]
fn truncated_file_is_corrupt() {
    let bytes = std::fs::read(clip_dir().join("model.safetensors")).expect("fixture weights");
    let dir = weights_dir("truncated", &bytes[..bytes.len() - 1000]);
    let err = weights_error(&dir);
    assert!(matches!(err, LoadError::Corrupt { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[&path_str(&dir.join("model.safetensors")), "truncated"],
    );

    // Cut inside the header as well.
    let dir = weights_dir("truncated-header", &bytes[..100]);
    assert_mentions(&weights_error(&dir).to_string(), &["only 92 bytes follow"]);
}

#[test]
fn missing_tensor_names_tensor_and_file() {
    let weights = Weights::open(&clip_dir()).expect("fixture weights");
    let err = weights.get("text_model.no_such.weight", &[4]).unwrap_err();
    assert!(matches!(err, LoadError::MissingTensor { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            "text_model.no_such.weight",
            &path_str(&clip_dir().join("model.safetensors")),
        ],
    );
    assert!(weights
        .get_optional("text_model.no_such.weight", &[4])
        .unwrap()
        .is_none());

    let sharded = Weights::open(&sharded_dir()).expect("sharded weights");
    let msg = sharded
        .get("vision_model.nope", &[1])
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["vision_model.nope", "model.safetensors.index.json"]);
}

#[test]
fn wrong_shape_says_expected_and_found() {
    let weights = Weights::open(&clip_dir()).expect("fixture weights");
    let name = "text_model.embeddings.token_embedding.weight";
    assert_eq!(weights.shape(name), Some(&[814, 48][..]));
    let err = weights.get(name, &[48, 814]).unwrap_err();
    assert!(matches!(err, LoadError::Shape { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            name,
            &path_str(&clip_dir().join("model.safetensors")),
            "expected shape [48, 814], found [814, 48]",
        ],
    );
    // Present but wrong is an error for optional tensors too.
    assert!(weights.get_optional(name, &[1]).is_err());
}

#[test]
fn integer_tensor_is_a_dtype_error() {
    let dir = scratch("i64");
    let ids: Vec<u8> = [1i64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        vec![("position_ids", Dtype::I64, vec![1, 3], ids)],
    );
    let weights = Weights::open(&dir).expect("valid file");
    assert_eq!(weights.stored_dtypes(), vec![("I64".to_string(), 1)]);
    // An integer buffer is not a parameter (transformers' num_parameters() leaves it out).
    assert_eq!(weights.param_count(), 0);
    let err = weights.get("position_ids", &[1, 3]).unwrap_err();
    assert!(matches!(err, LoadError::Dtype { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            "position_ids",
            &path_str(&dir.join("model.safetensors")),
            "float dtype",
            "found I64",
        ],
    );
}

#[test]
fn bf16_and_f32_storage_convert_to_f32() {
    let dir = scratch("bf16");
    let values = [1.5f32, -2.25, 3.0e-3];
    let bf: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let f: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        vec![
            ("a", Dtype::BF16, vec![3], bf),
            ("b", Dtype::F32, vec![3], f),
        ],
    );
    let weights = Weights::open(&dir).unwrap();
    let a = weights.get("a", &[3]).unwrap();
    for (x, v) in a.iter().zip(values) {
        assert!((x - v).abs() <= v.abs() * 2f32.powi(-8), "{x} vs {v}");
    }
    assert_eq!(weights.get("b", &[3]).unwrap(), values);
    assert_eq!(weights.names(), vec!["a", "b"]);
    assert_eq!(weights.param_count(), 6);
}

/// A float64 checkpoint loads rounded to f32, as transformers loads it into an f32 model.
#[test]
fn f64_storage_converts_to_f32() {
    let dir = scratch("f64");
    let values = [0.1f64, -2.5, 1.0e-40, 3.0e38];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        vec![("w", Dtype::F64, vec![2, 2], bytes)],
    );
    let weights = Weights::open(&dir).unwrap();
    assert_eq!(weights.stored_dtypes(), vec![("F64".to_string(), 1)]);
    let expected: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    assert_eq!(weights.get("w", &[2, 2]).unwrap(), expected);
}

/// A copy of the sharded fixture whose index is replaced by `index`.
fn sharded_copy(name: &str, index: &str) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(sharded_dir()).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::fs::copy(&path, dir.join(path.file_name().expect("file name"))).expect("copy");
        }
    }
    std::fs::write(dir.join("model.safetensors.index.json"), index).expect("write index");
    dir
}

#[test]
fn index_pointing_to_missing_shard() {
    let index =
        std::fs::read_to_string(sharded_dir().join("model.safetensors.index.json")).unwrap();
    let index = index.replacen("model-00002-of-00002", "model-00003-of-00003", 1);
    let dir = sharded_copy("missing-shard", &index);
    let err = weights_error(&dir);
    assert!(matches!(err, LoadError::MissingShard { .. }), "{err:?}");
    assert_mentions(
        &err.to_string(),
        &[
            &path_str(&dir.join("model-00003-of-00003.safetensors")),
            "model.safetensors.index.json",
            "missing",
        ],
    );
}

#[test]
fn invalid_index_json() {
    let dir = sharded_copy("index-garbage", "{ weight_map");
    assert_mentions(
        &weights_error(&dir).to_string(),
        &[
            &path_str(&dir.join("model.safetensors.index.json")),
            "not valid JSON",
        ],
    );
    let dir = sharded_copy("index-no-map", r#"{"metadata": {}}"#);
    assert_mentions(&weights_error(&dir).to_string(), &["no \"weight_map\""]);
    let dir = sharded_copy(
        "index-wrong-shard",
        r#"{"weight_map": {"logit_scale": "model-00002-of-00002.safetensors"}}"#,
    );
    assert_mentions(
        &weights_error(&dir).to_string(),
        &[
            "logit_scale",
            "model-00002-of-00002.safetensors",
            "does not contain it",
        ],
    );
    let dir = sharded_copy("index-number", r#"{"weight_map": {"logit_scale": 7}}"#);
    assert_mentions(
        &weights_error(&dir).to_string(),
        &["weight_map[\"logit_scale\"]", "7"],
    );
}

// ----------------------------------------------------------------------------------------------
// weights: the sharded f16 fixture equals the f32 one within f16 rounding

#[test]
fn sharded_f16_matches_f32_within_f16_rounding() {
    let f32w = Weights::open(&clip_dir()).expect("f32 fixture");
    let f16w = Weights::open(&sharded_dir()).expect("sharded f16 fixture");
    assert_eq!(f32w.names(), f16w.names());
    assert_eq!(f32w.param_count(), f16w.param_count());
    assert_eq!(f32w.param_count(), 217_457, "the index's total_parameters");
    assert_eq!(f32w.stored_dtypes(), vec![("F32".to_string(), 110)]);
    assert_eq!(f16w.stored_dtypes(), vec![("F16".to_string(), 110)]);

    for name in f32w.names() {
        let shape = f32w.shape(name).expect("shape").to_vec();
        assert_eq!(f16w.shape(name), Some(shape.as_slice()), "{name}");
        let a = f32w.get(name, &shape).expect("f32 tensor");
        let b = f16w.get(name, &shape).expect("f16 tensor");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            // Round to nearest f16: relative 2^-11 for normals, 2^-25 ≈ 3e-8 absolute below.
            let bound = x.abs() * 2f32.powi(-11) + 6e-8;
            assert!((x - y).abs() <= bound, "{name}[{i}]: f32 {x} vs f16 {y}");
        }
    }
    // The scalar logit_scale has shape [].
    assert_eq!(f16w.get("logit_scale", &[]).unwrap().len(), 1);
}

/// A config that says fewer layers than the weights hold would run on the first ones and
/// give wrong answers: each family refuses it, naming the field and both counts, and so does
/// `inspect`'s summary.
#[test]
fn config_with_fewer_layers_than_the_weights_is_refused() {
    use fiedler::backend::Cpu;
    use fiedler::model::clip::Clip;
    use fiedler::model::lxmert::Lxmert;
    use fiedler::model::summary::ModelSummary;
    use fiedler::model::vilt::Vilt;

    let clip = edited_fixture("clip", "layers", |c| {
        c["vision_config"]["num_hidden_layers"] = 2.into()
    });
    let err = Clip::load(&Cpu, &clip).err().expect("refused").to_string();
    assert_mentions(
        &err,
        &[
            "vision_config.num_hidden_layers = 2",
            "3 layers",
            "vision_model.encoder.layers",
        ],
    );
    let err = ModelSummary::read(&clip).unwrap_err().to_string();
    assert_mentions(&err, &["vision_config.num_hidden_layers = 2"]);

    let vilt = edited_fixture("vilt", "layers", |c| c["num_hidden_layers"] = 2.into());
    let err = Vilt::load(&Cpu, &vilt).err().expect("refused").to_string();
    assert_mentions(
        &err,
        &["num_hidden_layers = 2", "3 layers", "vilt.encoder.layer"],
    );

    let lxmert = edited_fixture("lxmert", "layers", |c| c["x_layers"] = 1.into());
    let err = Lxmert::load(&Cpu, &lxmert)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &["x_layers = 1", "2 layers", "lxmert.encoder.x_layers"],
    );

    // the unedited fixtures load
    assert!(Lxmert::load(&Cpu, &fixtures().join("lxmert")).is_ok());
    for dir in [clip, vilt, lxmert] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A config without id2label names 2 answers; an answer head with more outputs is refused with
/// that said, not as a bare shape mismatch.
#[test]
fn config_naming_other_answers_than_the_head_is_refused() {
    use fiedler::backend::Cpu;
    use fiedler::model::lxmert::Lxmert;
    use fiedler::model::vilt::Vilt;

    let unnamed = |c: &mut serde_json::Value| {
        let c = c.as_object_mut().unwrap();
        c.remove("id2label");
        c.remove("label2id");
        c.remove("num_labels");
    };
    let vilt = edited_fixture("vilt", "answers", unnamed);
    let err = Vilt::load(&Cpu, &vilt).err().expect("refused").to_string();
    assert_mentions(
        &err,
        &[
            "names 2 answers (id2label)",
            "classifier.3.weight",
            "has 12 outputs",
        ],
    );
    let lxmert = edited_fixture("lxmert", "answers", |c| {
        unnamed(c);
        c["num_qa_labels"] = 30.into();
    });
    let err = Lxmert::load(&Cpu, &lxmert)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(&err, &["names 30 answers", "answer_head.logit_fc.3.weight"]);
    for dir in [vilt, lxmert] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A preprocessor_config.json that crops to another size than the vision tower's image_size
/// (copied from another CLIP) is refused when the model opens, naming both sizes; before, the
/// first explanation failed on a pixel buffer of the wrong length.
#[test]
fn preprocessing_for_another_image_size_is_refused() {
    let dir = edited_fixture_file(
        "clip",
        "crop-mismatch",
        "preprocessor_config.json",
        |json| {
            json["crop_size"] = serde_json::json!({"height": 224, "width": 224});
        },
    );
    let preprocessor = dir.join("preprocessor_config.json");
    let err = fiedler::session::ClipSession::open(&dir)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &[&path_str(&preprocessor), "crop_size", "48×48", "224×224"],
    );
}

// ----------------------------------------------------------------------------------------------
// absurd values that would allocate without end, or fail later with an internal message

/// A config without id2label names its answers LABEL_0 … from num_labels / num_qa_labels
/// before the weights are read: a count of 10^12 aborted the process allocating the names.
#[test]
fn absurd_answer_counts_are_refused_before_allocating() {
    use fiedler::model::config::{LxmertConfig, ViltConfig};
    let unnamed = |c: &mut serde_json::Value| {
        let c = c.as_object_mut().unwrap();
        c.remove("id2label");
        c.remove("label2id");
    };
    let vilt = edited_fixture("vilt", "labels-huge", |c| {
        unnamed(c);
        c["num_labels"] = 1_000_000_000_000u64.into();
    });
    let err = ViltConfig::from_dir(&vilt).unwrap_err().to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&vilt.join("config.json")),
            "num_labels",
            "1000000000000",
        ],
    );
    let lxmert = edited_fixture("lxmert", "labels-huge", |c| {
        unnamed(c);
        c["num_qa_labels"] = 1_000_000_000_000u64.into();
    });
    let err = LxmertConfig::from_dir(&lxmert).unwrap_err().to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&lxmert.join("config.json")),
            "num_qa_labels",
            "up to 1048576",
        ],
    );
}

/// A VQA model with no answers, or an LXMERT whose boxes are not the regions' 4 numbers, is
/// refused when its config is read: the first would index an empty head, the second read
/// boxes with the wrong stride (`fiedler eval` sliced them by `visual_pos_dim`).
#[test]
fn vqa_configs_without_answers_or_with_other_boxes_are_refused() {
    use fiedler::model::config::{LxmertConfig, ViltConfig};
    for (name, edit) in [
        ("labels-zero", serde_json::json!({"num_labels": 0})),
        ("labels-empty", serde_json::json!({"id2label": {}})),
    ] {
        let dir = edited_fixture("vilt", name, |c| {
            let c = c.as_object_mut().unwrap();
            c.remove("id2label");
            c.remove("label2id");
            c.remove("num_labels");
            c.extend(edit.as_object().unwrap().clone());
        });
        let err = ViltConfig::from_dir(&dir).unwrap_err().to_string();
        let key = edit.as_object().unwrap().keys().next().unwrap().clone();
        assert_mentions(&err, &[&path_str(&dir.join("config.json")), &key]);
    }
    for width in [2, 5] {
        let dir = edited_fixture("lxmert", &format!("boxes-{width}"), |c| {
            c["visual_pos_dim"] = width.into();
        });
        let err = LxmertConfig::from_dir(&dir).unwrap_err().to_string();
        assert_mentions(
            &err,
            &["visual_pos_dim", "x1, y1, x2, y2", &width.to_string()],
        );
    }
}

/// LXMERT's config without id2label skipped the hidden_size / num_attention_heads check:
/// inspect said the model loads, and explain failed on an attention buffer's length.
#[test]
fn lxmert_heads_are_checked_without_id2label() {
    use fiedler::model::config::LxmertConfig;
    let dir = edited_fixture("lxmert", "heads5-unnamed", |c| {
        c.as_object_mut().unwrap().remove("id2label");
        c["num_attention_heads"] = 5.into();
    });
    let err = LxmertConfig::from_dir(&dir).unwrap_err().to_string();
    assert_mentions(
        &err,
        &[
            "hidden_size",
            "multiple of num_attention_heads (5)",
            "found 48",
        ],
    );
}

/// A resize or crop size in the hundreds of thousands of pixels (a typo) made explain abort on
/// a multi-GB allocation: it is refused when the preprocessing is read, naming file and field.
#[test]
fn preprocessing_sizes_past_the_limit_are_refused() {
    use fiedler::input::image::{ImageProcessorConfig, MAX_SIDE};
    use fiedler::input::vilt::ViltProcessorConfig;
    let file = "preprocessor_config.json";
    for (i, size) in [
        serde_json::json!({"shortest_edge": 1_000_000}),
        serde_json::json!({"height": 100_000, "width": 100_000}),
        serde_json::json!(1_000_000),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = edited_fixture_file("clip", &format!("size-huge-{i}"), file, |j| {
            j["size"] = size.clone()
        });
        let err = ImageProcessorConfig::from_dir(&dir, 48)
            .unwrap_err()
            .to_string();
        assert_mentions(
            &err,
            &[&path_str(&dir.join(file)), "`size`", &MAX_SIDE.to_string()],
        );
    }
    let dir = edited_fixture_file("vilt", "size-huge", file, |j| {
        j["size"] = serde_json::json!({"shortest_edge": 1_000_000})
    });
    let err = ViltProcessorConfig::from_dir(&dir, 64)
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &[&path_str(&dir.join(file)), "`size`"]);
    // the largest allowed size still reads
    let dir = edited_fixture_file("vilt", "size-max", file, |j| {
        j["size"] = serde_json::json!({"shortest_edge": MAX_SIDE})
    });
    assert!(ViltProcessorConfig::from_dir(&dir, 64).is_ok());
}

/// A tiny image_std (or a huge rescale_factor) made every pixel infinite; explain then failed
/// with "pixel value inf at index 0 is not finite", naming neither file nor field.
#[test]
fn preprocessing_that_makes_pixels_infinite_is_refused() {
    use fiedler::input::image::ImageProcessorConfig;
    use fiedler::input::vilt::ViltProcessorConfig;
    let file = "preprocessor_config.json";
    let cases = [
        ("image_std", serde_json::json!([1e-45, 1e-45, 1e-45])),
        ("rescale_factor", serde_json::json!(1e38)),
    ];
    for (field, value) in cases {
        for model in ["clip", "vilt"] {
            let dir = edited_fixture_file(model, &format!("inf-{field}"), file, |j| {
                j[field] = value.clone()
            });
            let err = if model == "clip" {
                ImageProcessorConfig::from_dir(&dir, 48).unwrap_err()
            } else {
                ViltProcessorConfig::from_dir(&dir, 64).unwrap_err()
            };
            assert_mentions(
                &err.to_string(),
                &[&path_str(&dir.join(file)), field, "finite"],
            );
        }
    }
    // a negative std or mean is odd but finite: it reads
    let dir = edited_fixture_file("vilt", "std-negative", file, |j| {
        j["image_std"] = serde_json::json!([-0.5, -0.5, -0.5])
    });
    assert!(ViltProcessorConfig::from_dir(&dir, 64).is_ok());
}

/// ViLT rounds sides down to multiples of size_divisor: one past the shortest edge rounded
/// every image to 0×0, an error that named the image rather than the config.
#[test]
fn vilt_size_divisor_past_the_shortest_edge_is_refused() {
    use fiedler::input::vilt::ViltProcessorConfig;
    let file = "preprocessor_config.json";
    let dir = edited_fixture_file("vilt", "divisor", file, |j| j["size_divisor"] = 128.into());
    let err = ViltProcessorConfig::from_dir(&dir, 64)
        .unwrap_err()
        .to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&dir.join(file)),
            "size_divisor",
            "(64)",
            "found 128",
        ],
    );
}

/// ViLT reads whole patches. A size_divisor that is no multiple of the patch made every batch
/// fail with "images are not whole 16 px patches", naming no file: it is refused on opening.
/// Without resizing, each image keeps its size, and one of partial patches is refused by name.
#[test]
fn vilt_preprocessing_that_cuts_patches_is_refused() {
    use fiedler::explain::{Method, MethodOptions};
    use fiedler::session::{AnswerTarget, PairRequest, ViltSession};
    let file = "preprocessor_config.json";
    let dir = edited_fixture_file("vilt", "divisor-24", file, |j| {
        j["size_divisor"] = 24.into()
    });
    let err = ViltSession::open(&dir).err().expect("refused").to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&dir.join(file)),
            "size_divisor",
            "multiple of 16",
            "found 24",
        ],
    );

    let dir = edited_fixture_file("vilt", "no-resize", file, |j| j["do_resize"] = false.into());
    let session = ViltSession::open(&dir).unwrap();
    let explain = |width: u32, height: u32| {
        let image = scratch(&format!("vilt-{width}x{height}")).join("image.png");
        image::RgbImage::from_pixel(width, height, image::Rgb([90, 140, 200]))
            .save(&image)
            .unwrap();
        let pair = PairRequest {
            image: image.clone(),
            text: "what color is it?".into(),
        };
        let methods = [Method::RawAttn];
        let target = AnswerTarget::Predicted;
        let result = session.explain(
            &[pair],
            &methods,
            &MethodOptions::default(),
            &target,
            1,
            |_| {},
        );
        (image, result.map(drop).map_err(|e| e.to_string()))
    };
    let (_, whole) = explain(48, 32);
    assert_eq!(whole, Ok(()));
    let (image, cut) = explain(50, 32);
    assert_mentions(
        &cut.unwrap_err(),
        &[
            &path_str(&image),
            "50×32",
            "do_resize is false",
            "multiples of 16",
        ],
    );
}

// ----------------------------------------------------------------------------------------------
// a tokenizer that does not belong to the model

/// A tokenizer.json without a post-processor adds no [CLS]/[SEP]: ViLT and LXMERT then took
/// the first and last words for special tokens and explained without a word of warning.
#[test]
fn tokenizer_without_start_and_end_tokens_is_refused() {
    use fiedler::session::{LxmertSession, ViltSession};
    let edit = |j: &mut serde_json::Value| j["post_processor"] = serde_json::Value::Null;
    let vilt = edited_fixture_file("vilt", "no-post", "tokenizer.json", edit);
    let err = ViltSession::open(&vilt).err().expect("refused").to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&vilt.join("tokenizer.json")),
            "adds 0 special tokens",
            "post_processor",
        ],
    );
    let lxmert = edited_fixture_file("lxmert", "no-post", "tokenizer.json", edit);
    let err = LxmertSession::open(&lxmert, None)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(&err, &["adds 0 special tokens"]);
}

/// Token ids past the model's embedding failed as "embed_tokens: token id 100007 is outside
/// the vocabulary of 222", naming neither the tokenizer nor the token. The special tokens,
/// which every text gets, are checked when the model opens; other tokens when a text has one.
#[test]
fn tokenizer_ids_past_the_vocabulary_are_named() {
    use fiedler::explain::{Method, MethodOptions};
    use fiedler::session::{AnswerTarget, PairRequest, ViltSession};
    let tokenizer = "tokenizer.json";
    let special = edited_fixture_file("vilt", "special-past", tokenizer, |j| {
        for processor in ["special_tokens"] {
            for token in j["post_processor"][processor]
                .as_object_mut()
                .unwrap()
                .values_mut()
            {
                token["ids"] = serde_json::json!([1_000_000]);
            }
        }
    });
    let err = ViltSession::open(&special)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&special.join(tokenizer)),
            "special token \"[CLS]\" has id 1000000",
            "vocab_size (config.json) is 329",
        ],
    );

    let word = edited_fixture_file("vilt", "word-past", tokenizer, |j| {
        j["model"]["vocab"]["what"] = 100_000.into();
    });
    let session = ViltSession::open(&word).expect("the special tokens fit: it opens");
    let pairs = [PairRequest {
        image: common::repo().join("examples/images/shapes-1.png"),
        text: "what color is it?".into(),
    }];
    let err = session
        .explain(
            &pairs,
            &[Method::RawAttn],
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            1,
            |_| {},
        )
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&word.join(tokenizer)),
            "\"what\" id 100000",
            "vocab_size (config.json) is 329",
        ],
    );
}

/// A CLIP config whose eos_token_id is not the tokenizer's end token pooled nothing: every
/// explanation failed with "text 0 has no end-of-text token (id …)". It is refused on opening,
/// naming the field and the id the tokenizer uses.
#[test]
fn clip_eos_token_id_must_be_the_tokenizers_end_token() {
    let dir = edited_fixture("clip", "eos", |c| {
        c["text_config"]["eos_token_id"] = 5.into()
    });
    let err = fiedler::session::ClipSession::open(&dir)
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &[
            &path_str(&dir.join("config.json")),
            "text_config.eos_token_id",
            "expected 813",
            "found 5",
        ],
    );
}

/// A CLIP preprocessor_config.json without a center crop resizes only the shortest edge: a
/// non-square image then reached the model at another size and failed as "pixel buffer has
/// 22320 values, expected 1 images of 3×48×48". The error names the image and the setting; a
/// square image still fits.
#[test]
fn clip_without_center_crop_names_the_image_that_does_not_fit() {
    use fiedler::explain::{Method, MethodOptions};
    use fiedler::session::{ClipSession, PairRequest};
    let dir = edited_fixture_file("clip", "no-crop", "preprocessor_config.json", |j| {
        j["do_center_crop"] = false.into()
    });
    let session = ClipSession::open(&dir).expect("opens: a square image fits");
    let explain = |image: &str| {
        let pairs = [PairRequest {
            image: fixtures().join("images").join(image),
            text: "a photo of a cat".into(),
        }];
        session.explain(
            &pairs,
            &[Method::RawAttn],
            &MethodOptions::default(),
            1,
            |_| {},
        )
    };
    assert!(explain("catdog.png").is_ok());
    let err = explain("tall.png")
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_mentions(
        &err,
        &[
            "tall.png",
            "48×155 pixels",
            "48×48 images",
            "do_center_crop",
        ],
    );
}

/// A ViLT preprocessor_config.json without `size` takes the model's image_size as the shortest
/// edge (spec §H), not ViltImageProcessor's 384: the fixture's 64.
#[test]
fn vilt_preprocessing_falls_back_to_the_model_image_size() {
    use fiedler::session::ViltSession;
    let dir = edited_fixture_file("vilt", "no-size", "preprocessor_config.json", |j| {
        j.as_object_mut().unwrap().remove("size");
    });
    let session = ViltSession::open(&dir).unwrap();
    assert_eq!(session.processor().shortest_edge, 64);
    assert_eq!(session.model().config.image_size, 64);
}
