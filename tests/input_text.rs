//! Tokenization against transformers' `CLIPTokenizerFast(texts, padding=True)` (goldens written
//! by tools/reference/make_clip_fixture.py).

mod common;

use std::path::PathBuf;

use common::{fixtures, Golden};
use fiedler::input::text::TextTokenizer;
use fiedler::input::InputError;
use serde_json::Value;

const SOT: u32 = 812;
const EOT: u32 = 813;

fn clip_dir() -> PathBuf {
    fixtures().join("clip")
}

fn tokenizer() -> TextTokenizer {
    // The fixture config: max_position_embeddings 32, pad_token_id 813.
    TextTokenizer::from_dir(&clip_dir(), 32, 813).expect("fixture tokenizer loads")
}

fn golden_json() -> Value {
    let text = std::fs::read_to_string(clip_dir().join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

fn case_texts(golden: &Value, case: &str) -> Vec<String> {
    golden["cases"][case]["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| p["text"].as_str().expect("text").to_string())
        .collect()
}

#[test]
fn ids_and_mask_equal_transformers_for_every_case() {
    let golden = Golden::open(&clip_dir().join("golden.safetensors"));
    let meta = golden_json();
    let tokenizer = tokenizer();
    for case in ["b1", "b3"] {
        let texts = case_texts(&meta, case);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = tokenizer.encode_batch(&refs).expect("encode");

        let ids: Vec<u32> = batch.ids.clone();
        let expected_ids: Vec<u32> = golden
            .i64(&format!("{case}.input_ids"))
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(ids, expected_ids, "{case}: input_ids");

        let mask: Vec<i64> = batch.mask.iter().map(|&m| i64::from(m)).collect();
        assert_eq!(
            mask,
            golden.i64(&format!("{case}.attention_mask")),
            "{case}: attention_mask"
        );

        assert_eq!(batch.batch_size(), texts.len());
        assert_eq!(batch.seq_len * texts.len(), batch.ids.len());
        assert!(batch.truncated.iter().all(|&t| !t));
    }
}

#[test]
fn ragged_batch_lengths_and_padding() {
    let batch = tokenizer()
        .encode_batch(&[
            "a photo of a dog and a cat sitting together",
            "two people",
            "",
        ])
        .expect("encode");
    assert_eq!(batch.lengths, vec![12, 4, 2]);
    assert_eq!(batch.seq_len, 12);
    // An empty text still gets its start and end tokens, then padding (the pad id is EOT here).
    assert_eq!(&batch.row(2)[..3], &[SOT, EOT, EOT]);
    assert_eq!(&batch.mask[24..27], &[true, true, false]);
}

#[test]
fn long_text_is_truncated_keeping_end_of_text_last() {
    let tokenizer = tokenizer();
    let long = vec!["cat"; 100].join(" ");
    let batch = tokenizer
        .encode_batch(&[long.as_str(), "a cat"])
        .expect("encode");
    assert_eq!(batch.truncated, vec![true, false]);
    assert_eq!(batch.lengths[0], 32);
    assert_eq!(batch.seq_len, 32);
    // As transformers' `tokenizer(long, truncation=True)` gives: the first 30 words (559 is
    // "cat</w>") between the start and end tokens.
    let mut expected = vec![SOT];
    expected.extend([559; 30]);
    expected.push(EOT);
    assert_eq!(batch.row(0), expected.as_slice());
    assert_eq!(batch.lengths[1], 4);
    assert_eq!(&batch.row(1)[..5], &[SOT, 320, 559, EOT, EOT]);
}

#[test]
fn display_tokens_are_readable() {
    let tokenizer = tokenizer();
    let batch = tokenizer
        .encode_batch(&["a photo of a cat"])
        .expect("encode");
    let shown = tokenizer.tokens_for_display(batch.row(0));
    assert_eq!(
        shown,
        vec![
            "<|startoftext|>",
            "a ",
            "photo ",
            "of ",
            "a ",
            "cat ",
            "<|endoftext|>"
        ]
    );
}

#[test]
fn display_decodes_byte_level_tokens() {
    let tokenizer = tokenizer();
    // The fixture's small vocabulary splits "é" into its two UTF-8 bytes; the character is
    // shown once, on the token that completes it, never as a replacement character or as the
    // GPT-2 byte stand-ins ("Ã©").
    let batch = tokenizer.encode_batch(&["café au lait"]).expect("encode");
    let shown = tokenizer.tokens_for_display(&batch.row(0)[1..batch.lengths[0] - 1]);
    // The end-of-word marker is the space after a word: the tokens join into the text.
    assert_eq!(shown.concat(), "café au lait ", "{shown:?}");
    assert!(
        shown.iter().any(|t| t.is_empty()),
        "é is split in two here: {shown:?}"
    );
    assert!(
        shown
            .iter()
            .all(|t| !t.contains('�') && !t.contains("</w>")),
        "{shown:?}"
    );
}

#[test]
fn pad_token_comes_from_the_tokenizer_files() {
    // special_tokens_map.json names "<|endoftext|>" as pad; the fallback id is not used.
    let tokenizer = TextTokenizer::from_dir(&clip_dir(), 32, 1).expect("loads");
    assert_eq!(tokenizer.pad_id(), EOT);
    assert_eq!(tokenizer.max_positions(), 32);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("fiedler-input-text-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn missing_tokenizer_names_the_path() {
    let dir = scratch_dir("missing");
    let err = TextTokenizer::from_dir(&dir, 32, 0).unwrap_err();
    assert!(
        matches!(err, InputError::TokenizerNotFound { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("tokenizer.json").display().to_string()),
        "{msg}"
    );
}

#[test]
fn invalid_tokenizer_names_the_path() {
    let dir = scratch_dir("invalid");
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": 3}",
    )
    .expect("write");
    let msg = TextTokenizer::from_dir(&dir, 32, 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot load tokenizer"), "{msg}");
    assert!(
        msg.contains(&dir.join("tokenizer.json").display().to_string()),
        "{msg}"
    );
}

#[test]
fn too_few_positions_for_the_special_tokens_is_an_error() {
    let msg = TextTokenizer::from_dir(&clip_dir(), 2, 813)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2 positions") && msg.contains("2 special tokens"),
        "{msg}"
    );
}

/// A copy of fixture `name`'s slow-tokenizer files (vocab.txt and the two configs), without
/// its tokenizer.json, in a folder of its own for each `case`.
fn vocab_only(name: &str, case: &str) -> PathBuf {
    let dir = scratch_dir(&format!("vocab-only-{name}-{case}"));
    for file in [
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixtures().join(name).join(file), dir.join(file)).expect("copy");
    }
    dir
}

/// Without a tokenizer.json, BERT's pipeline built from vocab.txt (as transformers converts a
/// slow tokenizer) gives the ids, spans and display tokens of the tokenizer.json that
/// transformers wrote for the same vocabulary: accents, Chinese characters, control
/// characters, punctuation, unknown words, a literal special token, and truncation.
#[test]
fn vocab_txt_tokenizes_like_the_tokenizer_json() {
    let texts = [
        "What color is the square?",
        "IS THE Café's   sign\tred",
        "how many猫are there?!",
        "zzzqqq xylophone-ish [MASK] token",
        "a\u{0}b\u{7}c naïve résumé",
        "left of the green square left of the green square left of the green square left of \
         the green square",
    ];
    for (name, positions) in [("lxmert", 32), ("vilt", 24)] {
        let json = TextTokenizer::from_dir(&fixtures().join(name), positions, 0).unwrap();
        let vocab = TextTokenizer::from_dir(&vocab_only(name, "json"), positions, 0).unwrap();
        assert_eq!(vocab.pad_id(), json.pad_id(), "{name}");
        let (a, b) = (
            json.encode_batch(&texts).unwrap(),
            vocab.encode_batch(&texts).unwrap(),
        );
        assert_eq!(a, b, "{name}: ids");
        assert!(a.truncated[5], "{name}: the long text is cut");
        for text in texts {
            assert_eq!(
                json.token_spans(text).unwrap(),
                vocab.token_spans(text).unwrap()
            );
        }
        assert_eq!(
            json.tokens_for_display(&a.ids),
            vocab.tokens_for_display(&b.ids)
        );
    }
}

/// Where special_tokens_map.json and tokenizer_config.json disagree, the special tokens are
/// transformers': tokenizer_config.json's when it has an `added_tokens_decoder` (as saved since
/// transformers 4.34), special_tokens_map.json's otherwise (the legacy path), from vocab.txt
/// and from tokenizer.json alike (tools/reference/make_special_tokens_fixture.py: "[MASK]" in
/// the map against "[UNK]" and "[PAD]" in the config). On the legacy path
/// `additional_special_tokens` is the union of both files' lists, the config's first, whether
/// a token is written as a string or as an AddedToken object (legacy-additional/: "[C1]",
/// "[A1]" in the config, "[A1]", "[B1]" in the map give ids 222, 223, 224).
#[test]
fn disagreeing_special_token_files_resolve_as_in_transformers() {
    let root = fixtures().join("special-tokens");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for name in ["decoder", "legacy", "fast", "legacy-additional"] {
        let want = &expected[name];
        let tokenizer = TextTokenizer::from_dir(&root.join(name), 32, 99).unwrap();
        assert_eq!(
            u64::from(tokenizer.pad_id()),
            want["pad_token_id"].as_u64().unwrap(),
            "{name}: pad id"
        );
        let batch = tokenizer.encode_batch(&texts).unwrap();
        for (row, ids) in want["input_ids"].as_array().unwrap().iter().enumerate() {
            let ids: Vec<u32> = ids
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = &batch.ids[row * batch.seq_len..(row + 1) * batch.seq_len];
            assert_eq!(&got[..ids.len()], ids, "{name}: ids of text {row}");
            assert!(
                got[ids.len()..].iter().all(|&id| id == tokenizer.pad_id()),
                "{name}: padding of text {row}"
            );
        }
    }
}

#[test]
fn vocab_txt_of_another_tokenizer_class_is_refused() {
    let dir = vocab_only("lxmert", "class");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"tokenizer_class": "RobertaTokenizer"}"#,
    )
    .unwrap();
    let err = TextTokenizer::from_dir(&dir, 32, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vocab.txt") && err.contains("RobertaTokenizer"),
        "{err}"
    );
}

/// Tokens added on top of vocab.txt are matched whole with the ids transformers gives them
/// (checked against `BertTokenizerFast.from_pretrained` on such folders): tokenizer_config.json's
/// `added_tokens_decoder` with its flags; in a folder saved before it, added_tokens.json
/// (normalized, so lower-cased text matches) and `additional_special_tokens`. An id that does
/// not follow the vocabulary is refused, naming the file.
#[test]
fn vocab_txt_reads_the_added_tokens() {
    let plain = TextTokenizer::from_dir(&vocab_only("lxmert", "plain"), 32, 0).unwrap();
    let word = |text: &str| plain.encode_batch(&[text]).unwrap().ids[1];
    let next = 222; // the fixture's vocab.txt has 222 tokens
    let (cls, sep, a, what) = (2, 3, word("a"), word("what"));
    // The fixture's tokenizer_config.json, edited by `edit`, in a folder of its own.
    let with_config = |case: &str, edit: &dyn Fn(&mut Value)| {
        let dir = vocab_only("lxmert", case);
        let path = dir.join("tokenizer_config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        dir
    };
    let encode = |dir: &PathBuf, text: &str| {
        let tokenizer = TextTokenizer::from_dir(dir, 32, 0).unwrap();
        tokenizer.encode_batch(&[text]).unwrap().ids
    };

    let dir = with_config("decoder", &|config| {
        config["added_tokens_decoder"][next.to_string()] = serde_json::json!({
            "content": "<Obj>", "lstrip": true, "normalized": false, "rstrip": false,
            "single_word": false, "special": false
        });
    });
    assert_eq!(encode(&dir, "a <Obj>"), [cls, a, next, sep]);
    assert_ne!(
        encode(&dir, "a <obj>"),
        [cls, a, next, sep],
        "not normalized"
    );

    let legacy = |case: &str| {
        with_config(case, &|config| {
            config
                .as_object_mut()
                .unwrap()
                .remove("added_tokens_decoder");
        })
    };
    let dir = legacy("added-json");
    std::fs::write(dir.join("added_tokens.json"), r#"{"<new>": 222}"#).unwrap();
    assert_eq!(encode(&dir, "<NEW>what"), [cls, next, what, sep]);

    let dir = legacy("additional");
    std::fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"additional_special_tokens": [{"content": "<special>", "lstrip": false,
            "normalized": false, "rstrip": false, "single_word": false}]}"#,
    )
    .unwrap();
    let ids = encode(&dir, "<special> what");
    assert_eq!(ids, [cls, next, what, sep]);
    let tokenizer = TextTokenizer::from_dir(&dir, 32, 0).unwrap();
    assert_eq!(tokenizer.tokens_for_display(&ids[1..2]), ["<special>"]);

    let dir = legacy("gap");
    std::fs::write(dir.join("added_tokens.json"), r#"{"<new>": 300}"#).unwrap();
    let err = TextTokenizer::from_dir(&dir, 32, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("added_tokens.json") && err.contains("\"<new>\" id 300"),
        "{err}"
    );
}

/// A tokenizer.json with a JSON syntax error is an error naming the file (the tokenizers
/// crate panicked on one inside the decoder's section; found by fuzzing).
#[test]
fn a_broken_tokenizer_json_is_an_error() {
    let dir = std::env::temp_dir().join(format!("fiedler-broken-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = std::fs::read_to_string(clip_dir().join("tokenizer.json")).unwrap();
    // Inside "decoder": {"type": "ByteLevel", …}: a key that is not a string.
    let broken = json.replacen("\"add_prefix_space\": true,", "add_prefix_space: true,", 1);
    assert_ne!(broken, json);
    std::fs::write(dir.join("tokenizer.json"), broken).unwrap();
    let Err(err) = TextTokenizer::from_dir(&dir, 32, 813) else {
        panic!("a broken file is refused");
    };
    let message = err.to_string();
    assert!(
        matches!(err, InputError::Tokenizer { .. }) && message.contains("not valid JSON"),
        "{message}"
    );
    assert!(
        message.contains(&dir.join("tokenizer.json").display().to_string()),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sections the tokenizers crate panics on instead of refusing (found by fuzzing) are refused
/// by name: a Precompiled normalizer, alone or in a sequence, a template that uses a special
/// token it does not define, and a single-text template that places a second text (the crate
/// panicked on every text).
#[test]
fn sections_the_tokenizers_crate_panics_on_are_refused() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("vilt/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let precompiled = serde_json::json!({"type": "Precompiled", "precompiled_charsmap": "!!!"});
    let mut undefined = fixture["post_processor"].clone();
    let tokens = undefined["special_tokens"].as_object_mut().unwrap();
    tokens.remove("[SEP]");
    tokens["[CLS]"]["ids"] = serde_json::json!([2, 3]);
    tokens["[CLS]"]["tokens"] = serde_json::json!(["[CLS]", "[SEP]"]);
    let mut second = fixture["post_processor"].clone();
    second["single"][1] = serde_json::json!({"Sequence": {"id": "B", "type_id": 0}});
    let cases = [
        ("normalizer", precompiled.clone(), "Precompiled"),
        ("post_processor", second, "places a second text ($B)"),
        (
            "normalizer",
            serde_json::json!({"type": "Sequence", "normalizers": [
                {"type": "Lowercase"},
                {"type": "Precompiled", "precompiled_charsmap": "AAAAAA=="},
            ]}),
            "Precompiled",
        ),
        ("post_processor", undefined.clone(), "\"[SEP]\""),
        (
            "post_processor",
            serde_json::json!({"type": "Sequence", "processors": [undefined]}),
            "\"[SEP]\"",
        ),
    ];
    for (i, (section, value, named)) in cases.into_iter().enumerate() {
        let dir = scratch_dir(&format!("panicky-{i}"));
        let mut json = fixture.clone();
        json[section] = value;
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        let Err(err) = TextTokenizer::from_dir(&dir, 40, 0) else {
            panic!("case {i}: the {section} is refused");
        };
        let message = err.to_string();
        assert!(message.contains(named), "case {i}: {message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // The fixture itself, in the same folder layout, still loads.
    let dir = scratch_dir("panicky-fixture");
    std::fs::write(dir.join("tokenizer.json"), fixture.to_string()).unwrap();
    assert!(TextTokenizer::from_dir(&dir, 40, 0).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
