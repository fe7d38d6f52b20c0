//! Weights in PyTorch's pickle formats (`pytorch_model.bin`, sharded or not; zip or legacy),
//! written by torch 2.9 and transformers 4.57 (tools/reference/make_torch_fixtures.py), load
//! to exactly the values of the safetensors fixtures they were saved from. Files that are not
//! state dicts, cut short, or that ask to run code are refused with an error naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use fiedler::model::weights::{LoadError, Weights};

/// Every tensor of `a` equals the same-named tensor of `b` after `round`, bit for bit, and the
/// two hold the same names.
fn assert_same_tensors(a: &Weights, b: &Weights, round: impl Fn(f32) -> f32) {
    assert_eq!(a.names(), b.names());
    for name in a.names() {
        let shape = a.shape(name).expect("listed").to_vec();
        assert_eq!(Some(shape.as_slice()), b.shape(name), "{name}");
        let (x, y) = (a.get(name, &shape).unwrap(), b.get(name, &shape).unwrap());
        let y: Vec<f32> = y.into_iter().map(&round).collect();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs"
        );
    }
}

#[test]
fn lxmert_pytorch_model_bin_holds_the_safetensors_values() {
    let torch = Weights::open(&fixtures().join("lxmert-torch")).unwrap();
    let safe = Weights::open(&fixtures().join("lxmert")).unwrap();
    assert_same_tensors(&torch, &safe, |v| v);
    assert_eq!(torch.stored_dtypes(), vec![("F32".to_string(), 185)]);
}

#[test]
fn sharded_bf16_pytorch_shards_hold_the_rounded_values() {
    let torch = Weights::open(&fixtures().join("clip-torch-bf16-sharded")).unwrap();
    let safe = Weights::open(&fixtures().join("clip")).unwrap();
    // torch's .to(bfloat16) rounds to nearest even, as half's from_f32 does.
    assert_same_tensors(&torch, &safe, |v| half::bf16::from_f32(v).to_f32());
    assert_eq!(torch.stored_dtypes(), vec![("BF16".to_string(), 110)]);
}

/// A transposed view and a slice at a storage offset (gathered), a 0-d tensor, f16 and bf16,
/// in both of torch.save's layouts.
#[test]
fn views_offsets_and_both_layouts() {
    let expected = open_as("tensors.safetensors", "model.safetensors").unwrap();
    for file in ["tensors.bin", "tensors.zip.bin"] {
        let torch = open_as(file, "pytorch_model.bin").unwrap();
        assert_same_tensors(&torch, &expected, |v| v);
        let t = torch.get("f32.transposed", &[4, 3]).unwrap();
        let base = torch.get("f32", &[3, 4]).unwrap();
        assert_eq!(t[1], base[4], "{file}: the transpose reads base[1][0]");
    }
}

/// The fixture `tests/fixtures/torch-pickles/{file}` as the weights file `name` of a model folder.
fn open_as(file: &str, name: &str) -> Result<Weights, LoadError> {
    let dir = scratch(&format!("{file}-{name}"));
    std::fs::copy(fixtures().join("torch-pickles").join(file), dir.join(name)).unwrap();
    Weights::open(&dir)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fiedler-torch-weights-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn torch_error(name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let dir = scratch(name);
    let path = dir.join("pytorch_model.bin");
    std::fs::write(&path, bytes).unwrap();
    let err = Weights::open(&dir).unwrap_err();
    assert!(matches!(err, LoadError::Torch { .. }), "{err:?}");
    (path, err.to_string())
}

fn fixture_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_cut_file_is_refused_at_every_length() {
    for file in ["tensors.bin", "tensors.zip.bin"] {
        let bytes = fixture_bytes(&fixtures().join("torch-pickles").join(file));
        // Every prefix, so that each field and opcode is cut somewhere.
        for len in (0..bytes.len()).step_by(7) {
            let (path, message) = torch_error("cut", &bytes[..len]);
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }
}

#[test]
fn a_pickle_that_calls_anything_else_is_refused() {
    // pickle.dumps of a reduce to os.system("echo"), protocol 2.
    let evil = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.";
    let (_, message) = torch_error("evil", evil);
    assert!(
        message.contains("posix.system") && message.contains("refused"),
        "{message}"
    );
}

#[test]
fn a_training_checkpoint_is_not_a_state_dict() {
    let checkpoint = fixture_bytes(&fixtures().join("torch-pickles").join("checkpoint.bin"));
    let (_, message) = torch_error("checkpoint", &checkpoint);
    assert!(
        message.contains("epoch holds an int, not a tensor"),
        "{message}"
    );
}

#[test]
fn no_weights_lists_the_pytorch_files_too() {
    let err = Weights::open(&scratch("none")).unwrap_err().to_string();
    for file in [
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ] {
        assert!(err.contains(file), "{err}");
    }
}

#[test]
fn a_whole_pickled_module_is_refused_with_what_to_save_instead() {
    let module = fixture_bytes(&fixtures().join("torch-pickles").join("module.bin"));
    let (_, message) = torch_error("module", &module);
    assert!(
        message.contains("torch.nn.modules.linear.Linear") && message.contains("state_dict()"),
        "{message}"
    );
}

/// Found by fuzzing: a tensor whose last element's index is usize::MAX (its end wrapped to
/// 0 and passed the bounds check, reading bytes before its storage), and a 10¹²-element
/// tensor of stride 0 in a 537-byte file (gathering it asked for 4 TB and aborted).
#[test]
fn wrapped_offsets_and_repeated_elements_are_refused() {
    let err = open_as("fuzz-offset-wrap.bin", "pytorch_model.bin").unwrap_err();
    assert!(err.to_string().contains("runs past its storage"), "{err}");
    let weights = open_as("fuzz-stride0-huge.bin", "pytorch_model.bin").unwrap();
    let names = weights.names();
    let err = weights.get(names[0], &[1_000_000_000_000]).unwrap_err();
    assert!(
        matches!(err, LoadError::TensorSize { .. }) && err.to_string().contains("memory"),
        "{err}"
    );
}
