//! `config.json` of a Hugging Face model directory: the model family and the hyper-parameters of
//! CLIP and ViLT.
//!
//! Follows transformers' `CLIPConfig` / `CLIPTextConfig` / `CLIPVisionConfig`
//! (`models/clip/configuration_clip.py`): absent fields take those classes' defaults, and the
//! legacy `text_config_dict` / `vision_config_dict` objects, when present, override the keys
//! they name in `text_config` / `vision_config`. ViLT follows `ViltConfig`
//! (`models/vilt/configuration_vilt.py`), one flat object.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::hub;
use crate::backend::Activation;
use crate::input::regions::BOX_LEN;

/// Name of the model configuration file inside a model directory.
pub const CONFIG_FILE: &str = "config.json";

/// The largest size a config may give (2²⁰): above any published model's vocabulary,
/// position or answer count, and small enough that
/// - a product of three sizes fits a u64 (a fuzzed `image_size` of 2⁵³ overflowed the grid's
///   token count);
/// - answer names made up from a count alone (LABEL_0 … LABEL_{n-1}, for a config without
///   id2label, before the weights are read) cannot exhaust memory (a count of 10¹² did).
pub const MAX_SIZE: usize = 1 << 20;

/// Reading or validating `config.json` failed; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path} not found: a Hugging Face model directory needs a config.json")]
    Missing { path: PathBuf },
    #[error("no model folder {}", dir.display())]
    NoFolder { dir: PathBuf },
    #[error("{} is a file, not a model folder: give the folder that holds its config.json and weights", path.display())]
    NotAFolder { path: PathBuf },
    #[error("{} in the local Hugging Face cache gives no model folder: {reason}", repo.display())]
    Unresolved { repo: PathBuf, reason: String },
    #[error(
        "no folder {dir} here, and no {repo} in the local Hugging Face cache: download it \
         first (`huggingface-cli download {dir}`), or give a local model folder",
        dir = dir.display(),
        repo = repo.display()
    )]
    HubId { dir: PathBuf, repo: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: unknown model_type {found:?}; supported: {}",
        ModelFamily::SUPPORTED
    )]
    UnknownModelType { path: PathBuf, found: String },
    #[error("{path}: model_type is \"{found}\", but this loader reads \"{expected}\" configs")]
    WrongFamily {
        path: PathBuf,
        expected: ModelFamily,
        found: ModelFamily,
    },
    #[error("{path}: field `{field}`: expected {expected}, found {found}")]
    Field {
        path: PathBuf,
        field: String,
        expected: String,
        found: String,
    },
}

/// The model families fiedler knows, from `model_type` in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Clip,
    Vilt,
    Lxmert,
}

impl ModelFamily {
    /// The `model_type` values accepted, for error messages.
    pub const SUPPORTED: &'static str = "\"clip\", \"vilt\", \"lxmert\"";

    /// Parses transformers' `model_type` string.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "clip" => Some(Self::Clip),
            "vilt" => Some(Self::Vilt),
            "lxmert" => Some(Self::Lxmert),
            _ => None,
        }
    }

    /// The `model_type` string of this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Clip => "clip",
            Self::Vilt => "vilt",
            Self::Lxmert => "lxmert",
        }
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// Reads the model family of the model directory `dir` from its config.json.
pub fn read_family(dir: &Path) -> Result<ModelFamily, ConfigError> {
    let raw = RawConfig::read(dir)?;
    raw.family()
}

/// `CLIPConfig`: both towers, the shared projection size and the initial logit scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
    pub logit_scale_init_value: f32,
    /// The stored `dtype` (transformers ≥ 4.56) or `torch_dtype` string, e.g. "float16".
    pub dtype: Option<String>,
}

/// `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
}

/// `CLIPVisionConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f32,
}

impl ClipConfig {
    /// Reads and validates `dir/config.json`, which must have `model_type` "clip".
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::read_as(dir, ModelFamily::Clip)?;
        let root = Section::new(&raw.path, "", raw.json.clone());
        let text = Section::new(&raw.path, "text_config.", raw.sub_config("text")?);
        let vision = Section::new(&raw.path, "vision_config.", raw.sub_config("vision")?);
        Ok(Self {
            text: ClipTextConfig::parse(&text)?,
            vision: ClipVisionConfig::parse(&vision)?,
            projection_dim: root.positive("projection_dim", 512)?,
            logit_scale_init_value: root.finite("logit_scale_init_value", 2.6592)?,
            dtype: raw.dtype()?,
        })
    }
}

impl ClipTextConfig {
    fn parse(s: &Section) -> Result<Self, ConfigError> {
        let config = Self {
            vocab_size: s.positive("vocab_size", 49408)?,
            hidden_size: s.positive("hidden_size", 512)?,
            intermediate_size: s.positive("intermediate_size", 2048)?,
            num_hidden_layers: s.positive("num_hidden_layers", 12)?,
            num_attention_heads: s.positive("num_attention_heads", 8)?,
            max_position_embeddings: s.positive("max_position_embeddings", 77)?,
            hidden_act: s.activation("hidden_act", Activation::QuickGelu)?,
            layer_norm_eps: s.eps("layer_norm_eps", 1e-5)?,
            bos_token_id: s.token_id("bos_token_id", 49406)?,
            eos_token_id: s.token_id("eos_token_id", 49407)?,
            pad_token_id: s.token_id("pad_token_id", 1)?,
        };
        s.divisible(
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
        )?;
        Ok(config)
    }
}

impl ClipVisionConfig {
    fn parse(s: &Section) -> Result<Self, ConfigError> {
        let config = Self {
            hidden_size: s.positive("hidden_size", 768)?,
            intermediate_size: s.positive("intermediate_size", 3072)?,
            num_hidden_layers: s.positive("num_hidden_layers", 12)?,
            num_attention_heads: s.positive("num_attention_heads", 12)?,
            image_size: s.positive("image_size", 224)?,
            patch_size: s.positive("patch_size", 32)?,
            num_channels: s.positive("num_channels", 3)?,
            hidden_act: s.activation("hidden_act", Activation::QuickGelu)?,
            layer_norm_eps: s.eps("layer_norm_eps", 1e-5)?,
        };
        s.divisible(
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
        )?;
        s.divisible(
            ("image_size", config.image_size),
            ("patch_size", config.patch_size),
        )?;
        Ok(config)
    }

    /// Patches per side of the (square) input image.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// transformers' `ViltConfig` (`models/vilt/configuration_vilt.py`) with the labels of its
/// question-answering head (`PretrainedConfig.id2label`).
#[derive(Debug, Clone, PartialEq)]
pub struct ViltConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f32,
    /// Side of the square image the stored position embeddings were trained for.
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    /// Text positions.
    pub max_position_embeddings: usize,
    /// Text token types.
    pub type_vocab_size: usize,
    /// Modality types: 0 text, 1 image.
    pub modality_type_vocab_size: usize,
    /// Always true: fiedler's attention has query/key/value biases.
    pub qkv_bias: bool,
    /// Image tokens kept per sample; negative keeps every valid patch (transformers' -1). A
    /// positive cap below the valid count makes transformers sample patches at random on
    /// every call; fiedler keeps an evenly spaced subset (`Vilt` docs).
    pub max_image_length: i64,
    pub num_labels: usize,
    /// The answer of each label id (index = id).
    pub id2label: Vec<String>,
    pub pad_token_id: u32,
    /// The stored `dtype` (transformers ≥ 4.56) or `torch_dtype` string, e.g. "float32".
    pub dtype: Option<String>,
    pub answer_probability: AnswerProbability,
}

impl ViltConfig {
    /// Reads and validates `dir/config.json`, which must have `model_type` "vilt".
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::read_as(dir, ModelFamily::Vilt)?;
        let s = Section::new(&raw.path, "", raw.json.clone());
        let (num_labels, id2label) = s.labels()?;
        let config = Self {
            vocab_size: s.positive("vocab_size", 30522)?,
            hidden_size: s.positive("hidden_size", 768)?,
            num_hidden_layers: s.positive("num_hidden_layers", 12)?,
            num_attention_heads: s.positive("num_attention_heads", 12)?,
            intermediate_size: s.positive("intermediate_size", 3072)?,
            hidden_act: s.activation("hidden_act", Activation::Gelu)?,
            layer_norm_eps: s.eps("layer_norm_eps", 1e-12)?,
            image_size: s.positive("image_size", 384)?,
            patch_size: s.positive("patch_size", 32)?,
            num_channels: s.positive("num_channels", 3)?,
            max_position_embeddings: s.positive("max_position_embeddings", 40)?,
            type_vocab_size: s.positive("type_vocab_size", 2)?,
            modality_type_vocab_size: s.positive("modality_type_vocab_size", 2)?,
            qkv_bias: s.flag("qkv_bias", true)?,
            max_image_length: s.integer("max_image_length", -1)?,
            num_labels,
            id2label,
            pad_token_id: s.token_id("pad_token_id", 0)?,
            dtype: raw.dtype()?,
            answer_probability: s.answer_probability()?,
        };
        s.divisible(
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
        )?;
        s.divisible(
            ("image_size", config.image_size),
            ("patch_size", config.patch_size),
        )?;
        if !config.qkv_bias {
            return Err(s.error(
                "qkv_bias",
                "true (attention without query/key/value biases is not supported)",
                "false".into(),
            ));
        }
        if config.modality_type_vocab_size < 2 {
            return Err(s.error(
                "modality_type_vocab_size",
                "at least 2 (type 0 is text, 1 is image)",
                config.modality_type_vocab_size.to_string(),
            ));
        }
        if config.max_image_length == 0 {
            return Err(s.error(
                "max_image_length",
                "a positive integer, or -1 for every valid patch",
                "0".into(),
            ));
        }
        Ok(config)
    }

    /// Patches per side of the stored position-embedding grid (`image_size / patch_size`), which
    /// ViLT interpolates to each image's own patch grid.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// How a VQA head's logits become answer probabilities: as its training loss read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnswerProbability {
    /// σ(logit) per answer: the published ViLT and LXMERT VQA heads, trained with a binary
    /// loss per answer (the default when config.json says nothing).
    #[default]
    Sigmoid,
    /// A softmax over the answers: heads trained with cross-entropy, such as the bundled demo
    /// models (`"answer_probability": "softmax"` in their config.json, a fiedler key that
    /// transformers ignores).
    Softmax,
}

impl AnswerProbability {
    /// The probability of every answer, from one sample's logits.
    pub fn of(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Sigmoid => logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
            Self::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                exp.iter().map(|&e| (e / sum) as f32).collect()
            }
        }
    }
}

/// transformers' `LxmertConfig` (`models/lxmert/configuration_lxmert.py`) with the answer
/// labels of its question-answering head. Every LayerNorm of LXMERT uses eps 1e-12 whatever
/// the config says (the modeling code hard-codes it), so no eps is read.
#[derive(Debug, Clone, PartialEq)]
pub struct LxmertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    /// Language, object-relationship and cross-modality layers.
    pub l_layers: usize,
    pub r_layers: usize,
    pub x_layers: usize,
    /// Width of a region feature and of a region box.
    pub visual_feat_dim: usize,
    pub visual_pos_dim: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    /// The answer of each logit (index = id); `num_qa_labels` must agree.
    pub id2label: Vec<String>,
    pub pad_token_id: u32,
    pub dtype: Option<String>,
    pub answer_probability: AnswerProbability,
}

impl LxmertConfig {
    /// Reads and validates `dir/config.json`, which must have `model_type` "lxmert".
    pub fn from_dir(dir: &Path) -> Result<Self, ConfigError> {
        let raw = RawConfig::read_as(dir, ModelFamily::Lxmert)?;
        let s = Section::new(&raw.path, "", raw.json.clone());
        let (_, id2label) = s.labels()?;
        let config = Self {
            vocab_size: s.positive("vocab_size", 30522)?,
            hidden_size: s.positive("hidden_size", 768)?,
            num_attention_heads: s.positive("num_attention_heads", 12)?,
            intermediate_size: s.positive("intermediate_size", 3072)?,
            hidden_act: s.activation("hidden_act", Activation::Gelu)?,
            l_layers: s.positive("l_layers", 9)?,
            r_layers: s.positive("r_layers", 5)?,
            x_layers: s.positive("x_layers", 5)?,
            visual_feat_dim: s.positive("visual_feat_dim", 2048)?,
            visual_pos_dim: s.positive("visual_pos_dim", 4)?,
            max_position_embeddings: s.positive("max_position_embeddings", 512)?,
            type_vocab_size: s.positive("type_vocab_size", 2)?,
            id2label,
            pad_token_id: s.token_id("pad_token_id", 0)?,
            dtype: raw.dtype()?,
            answer_probability: s.answer_probability()?,
        };
        s.divisible(
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
        )?;
        if config.visual_pos_dim != BOX_LEN {
            return Err(s.error(
                "visual_pos_dim",
                format!("{BOX_LEN}: a region's box is x1, y1, x2, y2"),
                config.visual_pos_dim.to_string(),
            ));
        }
        let qa = s.positive("num_qa_labels", 9500)?;
        if s.get("id2label").is_none() {
            // Checkpoints such as unc-nlp/lxmert-vqa-uncased ship no answer names; an answer
            // list (`--answers`) names them later.
            return Ok(Self {
                id2label: (0..qa).map(|i| format!("LABEL_{i}")).collect(),
                ..config
            });
        }
        if qa != config.id2label.len() {
            return Err(s.error(
                "num_qa_labels",
                format!("{} (the number of id2label entries)", config.id2label.len()),
                qa.to_string(),
            ));
        }
        Ok(config)
    }
}

/// The parsed JSON object of a config.json and where it came from.
struct RawConfig {
    path: PathBuf,
    json: Map<String, Value>,
}

impl RawConfig {
    /// Reads `dir/config.json` and checks that its `model_type` is `family`.
    fn read_as(dir: &Path, family: ModelFamily) -> Result<Self, ConfigError> {
        let raw = Self::read(dir)?;
        let found = raw.family()?;
        if found != family {
            return Err(ConfigError::WrongFamily {
                path: raw.path,
                expected: family,
                found,
            });
        }
        Ok(raw)
    }

    fn read(dir: &Path) -> Result<Self, ConfigError> {
        if dir.is_file() {
            return Err(ConfigError::NotAFolder {
                path: dir.to_path_buf(),
            });
        }
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                let repo = match looks_like_hub_id(dir) {
                    true => {
                        let repo =
                            format!("models--{}", dir.display().to_string().replace('/', "--"));
                        hub::cache_dir().map_or(PathBuf::from(&repo), |c| c.join(repo))
                    }
                    false => dir.to_path_buf(),
                };
                if let Some(reason) = hub::unresolved(&repo) {
                    ConfigError::Unresolved { repo, reason }
                } else if looks_like_hub_id(dir) {
                    ConfigError::HubId {
                        dir: dir.to_path_buf(),
                        repo,
                    }
                } else if !dir.exists() {
                    ConfigError::NoFolder {
                        dir: dir.to_path_buf(),
                    }
                } else {
                    ConfigError::Missing { path: path.clone() }
                }
            } else {
                ConfigError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(json)) => Ok(Self { path, json }),
            Ok(other) => Err(ConfigError::Field {
                path,
                field: "(top level)".into(),
                expected: "a JSON object".into(),
                found: other.to_string(),
            }),
            Err(source) => Err(ConfigError::Json { path, source }),
        }
    }

    fn family(&self) -> Result<ModelFamily, ConfigError> {
        let found = match self.json.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(ConfigError::Field {
                    path: self.path.clone(),
                    field: "model_type".into(),
                    expected: format!("a string, one of {}", ModelFamily::SUPPORTED),
                    found: other.map_or_else(|| "nothing".into(), Value::to_string),
                })
            }
        };
        ModelFamily::from_model_type(&found).ok_or_else(|| ConfigError::UnknownModelType {
            path: self.path.clone(),
            found,
        })
    }

    fn dtype(&self) -> Result<Option<String>, ConfigError> {
        for key in ["dtype", "torch_dtype"] {
            match self.json.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(other) => {
                    return Err(ConfigError::Field {
                        path: self.path.clone(),
                        field: key.into(),
                        expected: "a dtype string such as \"float32\"".into(),
                        found: other.to_string(),
                    })
                }
            }
        }
        Ok(None)
    }

    /// `<tower>_config` with the keys of the legacy `<tower>_config_dict` laid over it.
    fn sub_config(&self, tower: &str) -> Result<Map<String, Value>, ConfigError> {
        let mut merged = Map::new();
        for key in [format!("{tower}_config"), format!("{tower}_config_dict")] {
            match self.json.get(&key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(obj)) => merged.extend(obj.clone()),
                Some(other) => {
                    return Err(ConfigError::Field {
                        path: self.path.clone(),
                        field: key,
                        expected: "a JSON object".into(),
                        found: other.to_string(),
                    })
                }
            }
        }
        Ok(merged)
    }
}

/// One JSON object of the config with typed, defaulted field access.
struct Section<'a> {
    path: &'a Path,
    /// Prepended to field names in messages, e.g. "text_config.".
    prefix: &'static str,
    obj: Map<String, Value>,
}

impl<'a> Section<'a> {
    fn new(path: &'a Path, prefix: &'static str, obj: Map<String, Value>) -> Self {
        Self { path, prefix, obj }
    }

    /// The value of `key`, treating JSON null like an absent key (transformers' `None`).
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn error(&self, key: &str, expected: impl Into<String>, found: String) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_path_buf(),
            field: format!("{}{key}", self.prefix),
            expected: expected.into(),
            found,
        }
    }

    /// A size: positive and at most [`MAX_SIZE`], so that products of three sizes (a patch's
    /// length, a grid's tokens) cannot overflow.
    fn positive(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n > 0 && n <= MAX_SIZE => Ok(n),
            _ => Err(self.error(
                key,
                format!("a positive integer up to {MAX_SIZE}"),
                v.to_string(),
            )),
        }
    }

    fn token_id(&self, key: &str, default: u32) -> Result<u32, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.error(key, "a token id (integer ≥ 0)", v.to_string()))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        v.as_bool()
            .ok_or_else(|| self.error(key, "true or false", v.to_string()))
    }

    fn integer(&self, key: &str, default: i64) -> Result<i64, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        v.as_i64()
            .ok_or_else(|| self.error(key, "an integer", v.to_string()))
    }

    /// `num_labels` and `id2label` as `PretrainedConfig` reads them: `id2label` (keys are the ids
    /// as strings) decides the count, and an explicit `num_labels` must agree with it; with
    /// neither, two labels "LABEL_0", "LABEL_1".
    fn labels(&self) -> Result<(usize, Vec<String>), ConfigError> {
        let num_labels = self
            .get("num_labels")
            .map(|_| self.positive("num_labels", 0))
            .transpose()?;
        let Some(v) = self.get("id2label") else {
            let n = num_labels.unwrap_or(2);
            return Ok((n, (0..n).map(|i| format!("LABEL_{i}")).collect()));
        };
        const EXPECTED: &str =
            "a non-empty object from the ids 0..n-1 (as strings) to label strings";
        let obj = v
            .as_object()
            .filter(|obj| !obj.is_empty())
            .ok_or_else(|| self.error("id2label", EXPECTED, v.to_string()))?;
        let mut labels: Vec<Option<String>> = vec![None; obj.len()];
        for (key, label) in obj {
            let slot = key
                .parse::<usize>()
                .ok()
                .and_then(|id| labels.get_mut(id))
                .filter(|slot| slot.is_none());
            match (slot, label.as_str()) {
                (Some(slot), Some(label)) => *slot = Some(label.to_string()),
                _ => {
                    return Err(self.error(
                        "id2label",
                        EXPECTED,
                        format!("{key:?}: {label} among {} entries", obj.len()),
                    ))
                }
            }
        }
        // Each of the n distinct keys took a slot below n, so every slot is filled.
        let id2label: Vec<String> = labels.into_iter().flatten().collect();
        if let Some(n) = num_labels.filter(|&n| n != id2label.len()) {
            return Err(self.error(
                "num_labels",
                format!("{} (the number of id2label entries)", id2label.len()),
                n.to_string(),
            ));
        }
        Ok((id2label.len(), id2label))
    }

    fn finite(&self, key: &str, default: f32) -> Result<f32, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x as f32),
            _ => Err(self.error(key, "a finite number", v.to_string())),
        }
    }

    fn eps(&self, key: &str, default: f32) -> Result<f32, ConfigError> {
        let eps = self.finite(key, default)?;
        if eps > 0.0 {
            Ok(eps)
        } else {
            Err(self.error(key, "a positive number", eps.to_string()))
        }
    }

    /// `answer_probability`: "sigmoid" (the default) or "softmax".
    fn answer_probability(&self) -> Result<AnswerProbability, ConfigError> {
        const KEY: &str = "answer_probability";
        match self.get(KEY) {
            None => Ok(AnswerProbability::Sigmoid),
            Some(v) => match v.as_str() {
                Some("sigmoid") => Ok(AnswerProbability::Sigmoid),
                Some("softmax") => Ok(AnswerProbability::Softmax),
                _ => Err(self.error(KEY, "\"sigmoid\" or \"softmax\"", v.to_string())),
            },
        }
    }

    fn activation(&self, key: &str, default: Activation) -> Result<Activation, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        v.as_str()
            .and_then(Activation::from_hf_name)
            .ok_or_else(|| {
                self.error(
                    key,
                    "one of \"gelu\", \"gelu_new\", \"gelu_pytorch_tanh\", \"quick_gelu\"",
                    v.to_string(),
                )
            })
    }

    /// Checks that `num` is a multiple of `den`, naming both fields otherwise.
    fn divisible(&self, num: (&str, usize), den: (&str, usize)) -> Result<(), ConfigError> {
        if num.1.is_multiple_of(den.1) {
            return Ok(());
        }
        Err(self.error(
            num.0,
            format!("a multiple of {}{} ({})", self.prefix, den.0, den.1),
            num.1.to_string(),
        ))
    }
}

/// Whether answer names are transformers' placeholders LABEL_0, LABEL_1, …: what a config
/// without id2label gets.
pub fn unnamed_answers(labels: &[String]) -> bool {
    labels
        .iter()
        .enumerate()
        .all(|(i, l)| l.strip_prefix("LABEL_") == Some(i.to_string().as_str()))
}

/// Whether a model path that does not exist reads as a Hub id, `owner/name`: two plain
/// components, the first of them not a folder here.
fn looks_like_hub_id(dir: &Path) -> bool {
    hub::hub_id(dir).is_some_and(|(owner, _)| !Path::new(&owner).exists())
}
