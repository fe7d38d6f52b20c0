//! Tokenization with the model directory's tokenizer.json (the `tokenizers` crate, the same
//! Rust code behind transformers' fast tokenizers).
//!
//! A batch is encoded as `tokenizer(texts, padding=True)` does: special tokens from the
//! tokenizer's post-processor, right padding to the longest sequence with the tokenizer's pad
//! token. Texts longer than the model's positions are truncated the way `truncation=True` does:
//! the words are cut so that the sequence *with* its special tokens fits, so CLIP's end-of-text
//! token stays last.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use super::{wordpiece, InputError};
use crate::warning::warn;

/// Name of the tokenizer file inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The tokenizer config file that names the tokenizer's class, options and special tokens.
pub(super) const CONFIG_FILE: &str = "tokenizer_config.json";
/// The older file of special tokens, which overrides CONFIG_FILE's where it is read.
const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";

/// A loaded tokenizer with the limits of the model it feeds.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_positions: usize,
    pad_id: u32,
    /// Special tokens the post-processor adds to one sequence: 2, the start and end tokens.
    added_tokens: usize,
    /// The file the tokenizer came from (tokenizer.json or vocab.txt), for messages.
    path: PathBuf,
    /// Rows of the model's token embedding, once [`TextTokenizer::for_vocabulary`] has tied
    /// the tokenizer to a model: a token id past them is refused when a text produces it.
    vocab_size: Option<usize>,
    /// The special tokens' ids (start, end, padding, …): a text that spells one out, such as
    /// a literal "[SEP]", gets a warning, since the model then reads that token there.
    special_ids: HashSet<u32>,
}

/// Token ids of a batch, right-padded to the longest sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// [batch, seq_len], row-major, padding filled with the pad id.
    pub ids: Vec<u32>,
    /// [batch, seq_len]: true for real tokens (transformers' `attention_mask` = 1).
    pub mask: Vec<bool>,
    /// Real tokens per text, special tokens included.
    pub lengths: Vec<usize>,
    pub seq_len: usize,
    /// Whether each text was cut to the model's positions.
    pub truncated: Vec<bool>,
}

impl TokenBatch {
    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    /// The ids of text `b`, padding included.
    pub fn row(&self, b: usize) -> &[u32] {
        &self.ids[b * self.seq_len..(b + 1) * self.seq_len]
    }
}

/// tokenizer.json, its JSON read and checked first: the tokenizers crate (0.23) panics, rather
/// than refusing, on some malformed files (found by fuzzing). Handled here:
/// - a syntax error inside the decoder's section ("Helper");
/// - a Precompiled normalizer whose charsmap is not one ("Precompiled"); a charsmap that
///   parses but is inconsistent panics later, on every text, so these SentencePiece
///   normalizers, which no CLIP, ViLT or LXMERT tokenizer has, are refused outright;
/// - a template that frames a text with a special token it does not define, or whose
///   single-text template places a second text (on every text).
fn read_tokenizer(path: &Path) -> Result<Tokenizer, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    if let Some(normalizer) = json.get("normalizer") {
        check_normalizer(normalizer)?;
    }
    if let Some(processor) = json.get("post_processor") {
        check_post_processor(processor)?;
    }
    Tokenizer::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// The entries of a `Sequence` section (`normalizers`, `processors`).
fn sequence<'a>(section: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    section
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn check_normalizer(normalizer: &Value) -> Result<(), String> {
    match normalizer.get("type").and_then(Value::as_str) {
        Some("Precompiled") => Err("its normalizer is a Precompiled (SentencePiece) charsmap, \
             which fiedler does not read: CLIP, ViLT and LXMERT tokenizers have none"
            .into()),
        Some("Sequence") => sequence(normalizer, "normalizers").try_for_each(check_normalizer),
        _ => Ok(()),
    }
}

fn check_post_processor(processor: &Value) -> Result<(), String> {
    match processor.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let defined = processor.get("special_tokens").and_then(Value::as_object);
            for template in ["single", "pair"] {
                for piece in sequence(processor, template) {
                    // A single text has no second sequence to place (an index panic).
                    let second = piece.pointer("/Sequence/id").and_then(Value::as_str);
                    if template == "single" && second == Some("B") {
                        return Err("its post_processor's single template places a second \
                             text ($B), which a single text does not have"
                            .into());
                    }
                    let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) else {
                        continue;
                    };
                    if !defined.is_some_and(|tokens| tokens.contains_key(id)) {
                        return Err(format!(
                            "its post_processor's {template} template puts the special token \
                             {id:?} around a text, but its special_tokens do not define it"
                        ));
                    }
                }
            }
            Ok(())
        }
        Some("Sequence") => sequence(processor, "processors").try_for_each(check_post_processor),
        _ => Ok(()),
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, or else builds BERT's WordPiece tokenizer from
    /// `dir/vocab.txt` (see `wordpiece`). The pad token is taken where transformers takes it
    /// (special_tokens_map.json, then tokenizer_config.json, then tokenizer.json's own padding
    /// settings); `default_pad_id` (the model config's `pad_token_id`) is used when none names one.
    pub fn from_dir(
        dir: &Path,
        max_positions: usize,
        default_pad_id: u32,
    ) -> Result<Self, InputError> {
        let json = dir.join(TOKENIZER_FILE);
        let (mut tokenizer, path) = if json.is_file() {
            let tokenizer = read_tokenizer(&json).map_err(|reason| InputError::Tokenizer {
                path: json.clone(),
                reason,
            })?;
            (tokenizer, json)
        } else {
            wordpiece::from_vocab(dir)?.ok_or(InputError::TokenizerNotFound { path: json })?
        };
        let load_error = |reason: String| InputError::Tokenizer {
            path: path.clone(),
            reason,
        };

        let pad_id = match special_token(dir, "pad_token")? {
            Some((file, token)) => tokenizer.token_to_id(&token).ok_or_else(|| {
                load_error(format!(
                    "the pad token {token:?} named in {} is not in its vocabulary",
                    file.display()
                ))
            })?,
            None => tokenizer
                .get_padding()
                .map_or(default_pad_id, |padding| padding.pad_id),
        };

        // Padding and truncation are done here, per batch, whatever the file asks for.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_error(e.to_string()))?;

        let added_tokens = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        // The models read a text framed by a start and an end token: ViLT and LXMERT pool
        // [CLS] at position 0, CLIP the end-of-text token, and the methods score the tokens
        // between. Without them the first and last words would be taken for special tokens.
        if added_tokens != 2 {
            let none = if added_tokens == 0 {
                " (it has no post_processor that adds them)"
            } else {
                ""
            };
            return Err(load_error(format!(
                "it adds {added_tokens} special tokens to a text{none}; CLIP, ViLT and LXMERT \
                 read a text between a start and an end token ([CLS] … [SEP], \
                 <|startoftext|> … <|endoftext|>), so it must add 2"
            )));
        }
        if max_positions <= added_tokens {
            return Err(load_error(format!(
                "the model has {max_positions} positions, but the post-processor adds \
                 {added_tokens} special tokens to every text"
            )));
        }
        let special_ids = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        Ok(Self {
            tokenizer,
            max_positions,
            pad_id,
            added_tokens,
            path,
            vocab_size: None,
            special_ids,
        })
    }

    /// Ties the tokenizer to the model it feeds, whose token embedding has `vocab_size` rows
    /// (config.json): the start, end and pad tokens, which every batch holds, must be among
    /// them, or the model is refused when it opens; any other token past them is refused,
    /// by name, when a text produces it. A tokenizer from another model otherwise surfaces
    /// only as an index error in the embedding.
    pub fn for_vocabulary(mut self, vocab_size: usize) -> Result<Self, InputError> {
        let (specials, _) = self.encode_one(0, "")?;
        let named = specials
            .get_ids()
            .iter()
            .zip(specials.get_tokens())
            .map(|(&id, token)| (id, format!("special token {token:?}")))
            .chain([(self.pad_id, "pad token".to_string())]);
        for (id, what) in named {
            if id as usize >= vocab_size {
                return Err(InputError::Tokenizer {
                    path: self.path.clone(),
                    reason: format!(
                        "its {what} has id {id}, but the model's vocab_size (config.json) \
                         is {vocab_size}: the tokenizer does not belong to this model"
                    ),
                });
            }
        }
        self.vocab_size = Some(vocab_size);
        Ok(self)
    }

    /// The ids of the start and end tokens the tokenizer puts around every text.
    pub fn frame_ids(&self) -> Result<(u32, u32), InputError> {
        let (specials, _) = self.encode_one(0, "")?;
        match *specials.get_ids() {
            [start, end] => Ok((start, end)),
            ref ids => Err(InputError::Tokenizer {
                path: self.path.clone(),
                reason: format!("an empty text encodes to {ids:?}, not a start and an end token"),
            }),
        }
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// How many tokens `text` gives without the special tokens (none: nothing the model
    /// reads as a word). No truncation, and no warning.
    pub fn word_tokens(&self, index: usize, text: &str) -> Result<usize, InputError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .map_err(|e| InputError::Encode {
                index,
                text: text.to_string(),
                reason: e.to_string(),
            })
    }

    /// Encodes texts into one right-padded batch, truncating (with a warning) any
    /// that exceeds the model's positions.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch, InputError> {
        let mut rows = Vec::with_capacity(texts.len());
        let mut truncated = Vec::with_capacity(texts.len());
        for (index, &text) in texts.iter().enumerate() {
            let (encoding, cut) = self.encode_one(index, text)?;
            self.warn_of_special_tokens(text, &encoding);
            rows.push(encoding.get_ids().to_vec());
            truncated.push(cut);
        }

        let seq_len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * seq_len);
        let mut mask = Vec::with_capacity(rows.len() * seq_len);
        let mut lengths = Vec::with_capacity(rows.len());
        for row in rows {
            let pad = seq_len - row.len();
            lengths.push(row.len());
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.pad_id, pad)),
            );
            mask.extend(
                std::iter::repeat_n(true, row.len()).chain(std::iter::repeat_n(false, pad)),
            );
        }
        Ok(TokenBatch {
            ids,
            mask,
            lengths,
            seq_len,
            truncated,
        })
    }

    /// Warns of special tokens between `text`'s start and end tokens. One it spells out is
    /// read as that token (as transformers' tokenizer does), and the model then takes it for
    /// one (CLIP reads its text at the first end-of-text token). Words the vocabulary cannot
    /// spell (emoji, scripts a WordPiece vocabulary lacks) become its unknown token.
    fn warn_of_special_tokens(&self, text: &str, encoding: &Encoding) {
        let len = encoding.get_ids().len();
        let inner = 1..len.saturating_sub(1);
        let (mut spelt, mut unknown) = (Vec::<String>::new(), Vec::<&str>::new());
        for (&id, &(start, end)) in encoding.get_ids()[inner.clone()]
            .iter()
            .zip(&encoding.get_offsets()[inner])
        {
            let Some(token) = self
                .special_ids
                .contains(&id)
                .then(|| self.tokenizer.id_to_token(id))
                .flatten()
            else {
                continue;
            };
            // Byte offsets into `text`: what stood where the token was read (a special token
            // may be matched in any case, and with the spaces around it).
            let written = text.get(start..end).unwrap_or_default();
            match written.trim().eq_ignore_ascii_case(&token) {
                true if !spelt.contains(&token) => spelt.push(token),
                false if !unknown.contains(&written) => unknown.push(written),
                _ => {}
            }
        }
        if !unknown.is_empty() {
            let words: Vec<String> = unknown.iter().map(|w| format!("{w:?}")).collect();
            warn(&format!(
                "text {} holds {} that the model's vocabulary cannot spell: the tokenizer reads {} as its unknown token",
                quoted_start(text),
                words.join(", "),
                if unknown.len() == 1 { "it" } else { "each" }
            ));
        }
        if !spelt.is_empty() {
            warn(&format!(
                "text {} holds {}, which the tokenizer reads as the model's special token{}, \
                 not as words",
                quoted_start(text),
                spelt.join(", "),
                if spelt.len() == 1 { "" } else { "s" }
            ));
        }
    }

    /// One text with its special tokens, cut to the model's positions; whether it was cut.
    fn encode_one(&self, index: usize, text: &str) -> Result<(Encoding, bool), InputError> {
        let encode_error = |e: tokenizers::Error| InputError::Encode {
            index,
            text: text.to_string(),
            reason: e.to_string(),
        };
        let mut words = self.tokenizer.encode(text, false).map_err(encode_error)?;
        if let Some(vocab_size) = self.vocab_size {
            let past = words
                .get_ids()
                .iter()
                .zip(words.get_tokens())
                .find(|(&id, _)| id as usize >= vocab_size);
            if let Some((id, token)) = past {
                return Err(InputError::Encode {
                    index,
                    text: text.to_string(),
                    reason: format!(
                        "{} gives the token {token:?} id {id}, but the model's vocab_size \
                         (config.json) is {vocab_size}: the tokenizer does not belong to this \
                         model",
                        self.path.display()
                    ),
                });
            }
        }
        let full_len = words.len() + self.added_tokens;
        let cut = full_len > self.max_positions;
        if cut {
            words.truncate(
                self.max_positions - self.added_tokens,
                0,
                TruncationDirection::Right,
            );
            // Named by its start: `index` counts within a batch, not among the inputs.
            warn(&format!(
                "text {} has {full_len} tokens, more than the model's {} positions; it is \
                 truncated to the first {}",
                quoted_start(text),
                self.max_positions,
                self.max_positions
            ));
        }
        let encoding = self
            .tokenizer
            .post_process(words, None, true)
            .map_err(encode_error)?;
        Ok((encoding, cut))
    }

    /// The byte range of `text` each token of its encoding (as [`Self::encode_batch`] gives
    /// it) comes from; `None` for special tokens.
    pub fn token_spans(&self, text: &str) -> Result<Vec<Option<(usize, usize)>>, InputError> {
        let (encoding, _) = self.encode_one(0, text)?;
        Ok(encoding
            .get_offsets()
            .iter()
            .zip(encoding.get_special_tokens_mask())
            .map(|(&span, &special)| (special == 0).then_some(span))
            .collect())
    }

    /// Readable text of each token, one entry per id, such that they join into the decoded
    /// text: the byte-level decoded text with the BPE end-of-word marker `</w>` read as the
    /// space after a word, as transformers' `CLIPTokenizerFast` reads it (tokenizer.json's
    /// ByteLevel decoder leaves it): "a ", "photo ", or "s", "qu", "are " for one word split
    /// in three. Special tokens are shown as written.
    ///
    /// A character split over several byte tokens is shown on the token that completes it, and
    /// the tokens before it are empty, so that no entry holds half a UTF-8 sequence.
    pub fn tokens_for_display(&self, ids: &[u32]) -> Vec<String> {
        let mut stream = self.tokenizer.decode_stream(false);
        ids.iter()
            .map(|&id| {
                let text = match stream.step(id) {
                    Ok(chunk) => chunk.unwrap_or_default(),
                    // Not expected for a vocabulary id; show the raw token rather than fail.
                    Err(_) => self
                        .tokenizer
                        .id_to_token(id)
                        .unwrap_or_else(|| format!("<id {id}>")),
                };
                text.replace("</w>", " ")
            })
            .collect()
    }
}

/// The start of `text` for a message, quoted as Rust debug-prints it: control and bidi
/// characters escaped, not sent to the terminal to act.
fn quoted_start(text: &str) -> String {
    let start: String = text.chars().take(40).collect();
    let more = if start.len() < text.len() { "…" } else { "" };
    format!("{start:?}{more}")
}

/// The special token `field` ("pad_token", "cls_token", …) as the tokenizer's config files
/// name it (see [`config_field`]), and the file it came from.
pub(super) fn special_token(
    dir: &Path,
    field: &str,
) -> Result<Option<(PathBuf, String)>, InputError> {
    let Some((path, value)) = config_field(dir, field)? else {
        return Ok(None);
    };
    let token = token_content(&path, field, &value)?;
    Ok(Some((path, token)))
}

/// The special-token field `field` of the tokenizer config files, and the file that set it,
/// as transformers (4.34 on) reads them: from tokenizer_config.json alone when it has an
/// `added_tokens_decoder` (which those versions write, and then special_tokens_map.json is
/// not read), else from special_tokens_map.json first, then tokenizer_config.json.
fn config_field(dir: &Path, field: &str) -> Result<Option<(PathBuf, Value)>, InputError> {
    Ok(config_fields(dir, field)?.into_iter().next())
}

/// Every value of `field` in the files that `config_field` reads, each with its file, in the
/// order it reads them (special_tokens_map.json first on the legacy path).
pub(super) fn config_fields(dir: &Path, field: &str) -> Result<Vec<(PathBuf, Value)>, InputError> {
    let config = dir.join(CONFIG_FILE);
    let config_json = match config.is_file() {
        true => Some(read_json(&config)?),
        false => None,
    };
    let decoder = config_json
        .as_ref()
        .is_some_and(|c| c.get("added_tokens_decoder").is_some());
    let map = dir.join(SPECIAL_TOKENS_MAP_FILE);
    let mut sources = Vec::new();
    if !decoder && map.is_file() {
        sources.push((read_json(&map)?, map));
    }
    if let Some(json) = config_json {
        sources.push((json, config));
    }
    Ok(sources
        .into_iter()
        .filter_map(
            |(mut json, path)| match json.get_mut(field).map(Value::take) {
                None | Some(Value::Null) => None,
                Some(value) => Some((path, value)),
            },
        )
        .collect())
}

/// A token as `field` of config file `path` gives it: either "<pad>" or the serialised
/// AddedToken {"content": "<pad>", …}.
pub(super) fn token_content(path: &Path, field: &str, value: &Value) -> Result<String, InputError> {
    let content = match value {
        Value::String(s) => Some(s.as_str()),
        other => other.get("content").and_then(Value::as_str),
    };
    content
        .map(str::to_string)
        .ok_or_else(|| InputError::ConfigField {
            path: path.to_path_buf(),
            field: field.into(),
            expected: "a token string or {\"content\": token}".into(),
            found: value.to_string(),
        })
}

/// A tokenizer config file as JSON.
pub(super) fn read_json(path: &Path) -> Result<Value, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| InputError::ConfigJson {
        path: path.to_path_buf(),
        source,
    })
}
