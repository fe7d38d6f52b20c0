//! What `fiedler inspect` reports about a model directory, read from config.json and the
//! safetensors headers only (no tensor is converted).

use std::fmt;
use std::path::Path;

use crate::input::vilt::{patch_grid, resize_output_size, ViltProcessorConfig};
use crate::model::config::{
    read_family, unnamed_answers, ClipConfig, LxmertConfig, ModelFamily, ViltConfig,
};
use crate::model::weights::Weights;
use crate::model::{clip, lxmert, vilt, ModelError};

/// One stack of attention layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowerSummary {
    pub name: &'static str,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    /// The feed-forward (MLP) width.
    pub feed_forward: usize,
    /// Its tokens per sample, in words: "197 tokens", "up to 77 text tokens".
    pub tokens: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub family: ModelFamily,
    pub towers: Vec<TowerSummary>,
    /// The VQA head's answers and whether config.json names them (LXMERT checkpoints may
    /// not: then `--answers` does).
    pub answers: Option<(usize, bool)>,
    /// The image's size and patches, in words (CLIP, ViLT).
    pub image: Option<String>,
    /// LXMERT's region feature width (what a features file must hold).
    pub region_features: Option<usize>,
    /// CLIP's shared image–text embedding width.
    pub projection: Option<usize>,
    /// Word pieces the tokenizer's ids index.
    pub vocabulary: usize,
    pub parameters: usize,
    /// Stored dtype → tensor count, e.g. [("F16", 200)].
    pub stored_dtypes: Vec<(String, usize)>,
}

/// "1 layer", "12 layers".
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl ModelSummary {
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let family = read_family(dir)?;
        let mut answers = None;
        let mut region_features = None;
        let mut projection = None;
        // The towers, and the layer stacks the weights must not exceed.
        let (towers, stacks, image, vocabulary) = match family {
            ModelFamily::Clip => {
                let c = ClipConfig::from_dir(dir)?;
                let grid = c.vision.grid_size();
                let towers = vec![
                    TowerSummary {
                        name: "vision",
                        layers: c.vision.num_hidden_layers,
                        heads: c.vision.num_attention_heads,
                        width: c.vision.hidden_size,
                        feed_forward: c.vision.intermediate_size,
                        tokens: counted(1 + grid * grid, "token"),
                    },
                    TowerSummary {
                        name: "text",
                        layers: c.text.num_hidden_layers,
                        heads: c.text.num_attention_heads,
                        width: c.text.hidden_size,
                        feed_forward: c.text.intermediate_size,
                        tokens: format!("up to {} tokens", c.text.max_position_embeddings),
                    },
                ];
                projection = Some(c.projection_dim);
                let (size, patch) = (c.vision.image_size, c.vision.patch_size);
                let image = format!(
                    "{size}×{size} pixels, cut into {grid}×{grid} patches of {patch}×{patch}"
                );
                (
                    towers,
                    clip::layer_stacks(&c).to_vec(),
                    image,
                    c.text.vocab_size,
                )
            }
            ModelFamily::Vilt => {
                let c = ViltConfig::from_dir(dir)?;
                let towers = vec![TowerSummary {
                    name: "joint",
                    layers: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    width: c.hidden_size,
                    feed_forward: c.intermediate_size,
                    tokens: format!(
                        "up to {} text tokens, then an image token and {}",
                        c.max_position_embeddings,
                        vilt_patches(dir, &c)?
                    ),
                }];
                answers = Some((c.id2label.len(), !unnamed_answers(&c.id2label)));
                let (patch, grid) = (c.patch_size, c.grid_size());
                let image = format!(
                    "{patch}×{patch}-pixel patches; position embeddings for a {grid}×{grid} grid, \
                     resized to each image's patch grid"
                );
                (towers, vilt::layer_stacks(&c).to_vec(), image, c.vocab_size)
            }
            ModelFamily::Lxmert => {
                let c = LxmertConfig::from_dir(dir)?;
                let tower = |name, layers, tokens| TowerSummary {
                    name,
                    layers,
                    heads: c.num_attention_heads,
                    width: c.hidden_size,
                    feed_forward: c.intermediate_size,
                    tokens,
                };
                let text = format!("up to {} text tokens", c.max_position_embeddings);
                // Region counts come from the features (36 for LXMERT's Faster R-CNN).
                let towers = vec![
                    tower("language", c.l_layers, text.clone()),
                    tower(
                        "regions",
                        c.r_layers,
                        "a token per region of the features".into(),
                    ),
                    tower("cross", c.x_layers, format!("{text} and the regions")),
                ];
                answers = Some((c.id2label.len(), !unnamed_answers(&c.id2label)));
                region_features = Some(c.visual_feat_dim);
                (
                    towers,
                    lxmert::layer_stacks(&c).to_vec(),
                    String::new(),
                    c.vocab_size,
                )
            }
        };
        let weights = Weights::open(dir)?;
        weights.check_depth(&stacks)?;
        Ok(Self {
            family,
            towers,
            answers,
            image: (!image.is_empty()).then_some(image),
            region_features,
            projection,
            vocabulary,
            parameters: weights.param_count(),
            stored_dtypes: weights.stored_dtypes(),
        })
    }
}

/// How many patches ViLT reads of an image: one per patch of the image as its processor
/// resizes it (shortest edge to `shortest_edge`, the longer capped, sides floored to
/// `size_divisor`), so the count depends on the image's shape.
fn vilt_patches(dir: &Path, c: &ViltConfig) -> Result<String, ModelError> {
    let processor = ViltProcessorConfig::from_dir(dir, c.image_size)
        .map_err(|e| ModelError::Input(e.to_string()))?;
    let p = c.patch_size;
    if !processor.do_resize {
        return Ok(format!(
            "one per {p}×{p} px of the image as given (preprocessor_config.json does not resize)"
        ));
    }
    let s = processor.shortest_edge;
    let patches = |(h, w)| {
        let (rows, cols) = patch_grid(h, w, p);
        rows * cols
    };
    let resized = |w| resize_output_size(s, w, s, processor.size_divisor);
    // The longer side grows with the aspect ratio up to its cap, then the image shrinks: the
    // most patches come at an aspect ratio below 2.
    let most = (s..=2 * s).map(|w| patches(resized(w))).max().unwrap_or(0);
    // A positive max_image_length keeps that many of them (`Vilt::kept_patches`).
    let cap = |n: usize| usize::try_from(c.max_image_length).map_or(n, |cap| n.min(cap));
    Ok(format!(
        "one per {p}×{p} px patch of the resized image: {} for a square image, at most {}",
        cap(patches(resized(s))),
        cap(most)
    ))
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "family      {}", self.family)?;
        for t in &self.towers {
            writeln!(
                f,
                "{:<11} {}, {}, width {}, feed-forward {}, {}",
                t.name,
                counted(t.layers, "layer"),
                counted(t.heads, "head"),
                t.width,
                t.feed_forward,
                t.tokens
            )?;
        }
        if let Some(image) = &self.image {
            writeln!(f, "image       {image}")?;
        }
        if let Some(width) = self.region_features {
            writeln!(f, "features    {width} wide per region, with its box")?;
        }
        if let Some(width) = self.projection {
            writeln!(f, "projection  {width} (the shared image–text embedding)")?;
        }
        writeln!(f, "vocabulary  {} word pieces", self.vocabulary)?;
        if let Some((n, named)) = self.answers {
            let names = if named {
                "named in config.json"
            } else {
                "not named in config.json: give --answers"
            };
            writeln!(f, "answers     {n} ({names})")?;
        }
        let millions = self.parameters as f64 / 1e6;
        writeln!(f, "parameters  {} ({millions:.2} M)", self.parameters)?;
        let dtypes: Vec<String> = self
            .stored_dtypes
            .iter()
            .map(|(d, n)| format!("{d} ({})", counted(*n, "tensor")))
            .collect();
        write!(f, "stored as   {}", dtypes.join(", "))
    }
}
