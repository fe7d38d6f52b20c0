//! A BERT WordPiece tokenizer built from a slow tokenizer's files (`vocab.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json`), for model folders without a
//! tokenizer.json: older Hub repositories may ship only those. It is the pipeline
//! transformers' `BertConverter` builds when it converts such a tokenizer to a fast one:
//! `BertNormalizer` (clean text, Chinese characters, accents, lower case, as the config says),
//! `BertPreTokenizer`, WordPiece with "##" continuations and `[UNK]`, `[CLS] … [SEP]` around
//! each text, the special tokens matched whole, and the WordPiece decoder. Tokens added on top
//! of the vocabulary (`added_tokens_decoder` in tokenizer_config.json, or the older
//! added_tokens.json; `additional_special_tokens`, from both special_tokens_map.json and
//! tokenizer_config.json where transformers reads both) are matched whole too, with the ids
//! transformers gives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Model, Tokenizer};

use super::text::{config_fields, read_json, special_token, token_content, CONFIG_FILE};
use super::InputError;

/// The slow tokenizer's vocabulary, one token per line, ids in line order.
pub const VOCAB_FILE: &str = "vocab.txt";
/// The added tokens of tokenizers saved before `added_tokens_decoder`: token → id.
const ADDED_TOKENS_FILE: &str = "added_tokens.json";

/// Tokenizer classes whose slow tokenizer is BERT's (what `BertConverter` converts).
const BERT_CLASSES: [&str; 3] = ["BertTokenizer", "LxmertTokenizer", "DistilBertTokenizer"];

/// The special tokens, by config field, with BertTokenizer's defaults.
const SPECIALS: [(&str, &str); 5] = [
    ("unk_token", "[UNK]"),
    ("sep_token", "[SEP]"),
    ("pad_token", "[PAD]"),
    ("cls_token", "[CLS]"),
    ("mask_token", "[MASK]"),
];

/// The tokenizer of `dir/vocab.txt`, or `None` when the folder has no vocab.txt.
pub fn from_vocab(dir: &Path) -> Result<Option<(Tokenizer, PathBuf)>, InputError> {
    let vocab = dir.join(VOCAB_FILE);
    if !vocab.is_file() {
        return Ok(None);
    }
    let config_path = dir.join(CONFIG_FILE);
    let config = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        Value::Null
    };
    let error = |reason: String| InputError::Tokenizer {
        path: vocab.clone(),
        reason,
    };
    if let Some(class) = config.get("tokenizer_class").and_then(Value::as_str) {
        let slow = class.trim_end_matches("Fast");
        if !BERT_CLASSES.contains(&slow) {
            return Err(error(format!(
                "{CONFIG_FILE} names {class}, which is not a BERT WordPiece tokenizer; \
                 without a tokenizer.json only {} are read",
                BERT_CLASSES.join(", ")
            )));
        }
    }
    let flag = |field: &str, default: bool| {
        config
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let lowercase = flag("do_lower_case", true);
    let strip_accents = config.get("strip_accents").and_then(Value::as_bool);
    let chinese = flag("tokenize_chinese_chars", true);

    let mut specials: [String; SPECIALS.len()] = Default::default();
    for (slot, (field, default)) in specials.iter_mut().zip(SPECIALS) {
        *slot = special_token(dir, field)?.map_or_else(|| default.to_string(), |(_, t)| t);
    }
    let [unk, sep, _, cls, _] = specials.clone();
    let (added, additional) = added_tokens(dir, &config_path, &config)?;

    let vocab_path = vocab
        .to_str()
        .ok_or_else(|| error("the path is not UTF-8".into()))?;
    let model = WordPiece::from_file(vocab_path)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| error(e.to_string()))?;
    let id = |token: &str| {
        model.token_to_id(token).ok_or_else(|| {
            error(format!(
                "the special token {token:?} is not in the vocabulary"
            ))
        })
    };
    let (sep_id, cls_id) = (id(&sep)?, id(&cls)?);
    let mut tokenizer = Tokenizer::new(model);
    let normalizer = BertNormalizer::new(true, chinese, strip_accents, lowercase);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| error(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    // In transformers' order: the added tokens by id, then the special tokens not among them.
    tokenizer
        .add_tokens(added.iter().map(|(_, _, token)| token.clone()))
        .map_err(|e| error(e.to_string()))?;
    tokenizer
        .add_special_tokens(
            specials
                .into_iter()
                .chain(additional)
                .map(|t| AddedToken::from(t, true)),
        )
        .map_err(|e| error(e.to_string()))?;
    for (file, id, token) in &added {
        let given = tokenizer.token_to_id(&token.content);
        if given != Some(*id) {
            return Err(error(format!(
                "{} gives the added token {:?} id {id}, but after the vocabulary's {} tokens \
                 it gets id {}",
                file.display(),
                token.content,
                tokenizer.get_vocab_size(false),
                given.map_or("none".into(), |g| g.to_string())
            )));
        }
    }
    Ok(Some((tokenizer, vocab)))
}

/// The tokens transformers adds on top of vocab.txt: those of tokenizer_config.json's
/// `added_tokens_decoder` (or else added_tokens.json), each with the file that names it and
/// its id, in id order; and the contents of `additional_special_tokens` (on the legacy path
/// both files' lists, tokenizer_config.json's first).
type AddedTokens = (Vec<(PathBuf, u32, AddedToken)>, Vec<String>);

fn added_tokens(dir: &Path, config_path: &Path, config: &Value) -> Result<AddedTokens, InputError> {
    let field_error =
        |path: &Path, field: &str, expected: &str, found: String| InputError::ConfigField {
            path: path.to_path_buf(),
            field: field.into(),
            expected: expected.into(),
            found,
        };
    const ADDITIONAL: &str = "additional_special_tokens";
    // Where both files are read (the legacy path), transformers' `_from_pretrained` appends
    // special_tokens_map.json's tokens to tokenizer_config.json's list, those not in it
    // already; a token listed twice (an AddedToken object there never equals a string) still
    // gets one id, so the union by content gives the same ids.
    let mut additional: Vec<String> = Vec::new();
    for (path, value) in config_fields(dir, ADDITIONAL)?.into_iter().rev() {
        let Value::Array(items) = value else {
            return Err(field_error(
                &path,
                ADDITIONAL,
                "a list of tokens",
                value.to_string(),
            ));
        };
        for item in &items {
            let token = token_content(&path, ADDITIONAL, item)?;
            if !additional.contains(&token) {
                additional.push(token);
            }
        }
    }
    let mut added = Vec::new();
    if let Some(decoder) = config.get("added_tokens_decoder") {
        const FIELD: &str = "added_tokens_decoder";
        let decoder = decoder.as_object().ok_or_else(|| {
            field_error(
                config_path,
                FIELD,
                "an object id → token",
                decoder.to_string(),
            )
        })?;
        for (id, token) in decoder {
            let id = id.parse().map_err(|_| {
                field_error(config_path, FIELD, "token ids as keys", format!("{id:?}"))
            })?;
            let token = serde_json::from_value(token.clone()).map_err(|e| {
                field_error(
                    config_path,
                    FIELD,
                    "AddedToken objects (content, lstrip, rstrip, single_word, normalized, \
                     special)",
                    format!("{token} ({e})"),
                )
            })?;
            added.push((config_path.to_path_buf(), id, token));
        }
    } else if dir.join(ADDED_TOKENS_FILE).is_file() {
        let path = dir.join(ADDED_TOKENS_FILE);
        let tokens: BTreeMap<String, u32> =
            serde_json::from_value(read_json(&path)?).map_err(|source| InputError::ConfigJson {
                path: path.clone(),
                source,
            })?;
        for (content, id) in tokens {
            let special = additional.contains(&content);
            added.push((path.clone(), id, AddedToken::from(content, special)));
        }
    }
    added.sort_by_key(|&(_, id, _)| id);
    Ok((added, additional))
}
