//! What `fiedler inspect` reports about a model directory, read from config.json and the
//! safetensors headers only (no tensor is converted).

use std::fmt;
use std::path::Path;

use crate::model::config::{read_family, ClipConfig, LxmertConfig, ModelFamily, ViltConfig};
use crate::model::weights::Weights;
use crate::model::{clip, lxmert, vilt, ModelError};

/// One stack of attention layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowerSummary {
    pub name: &'static str,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    /// Tokens per sample at the configured input size (text: maximum positions).
    pub tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub family: ModelFamily,
    pub towers: Vec<TowerSummary>,
    pub parameters: usize,
    /// Stored dtype → tensor count, e.g. [("F16", 200)].
    pub stored_dtypes: Vec<(String, usize)>,
}

impl ModelSummary {
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let family = read_family(dir)?;
        // The towers, and the layer stacks the weights must not exceed.
        let (towers, stacks) = match family {
            ModelFamily::Clip => {
                let c = ClipConfig::from_dir(dir)?;
                let grid = c.vision.grid_size();
                let towers = vec![
                    TowerSummary {
                        name: "vision",
                        layers: c.vision.num_hidden_layers,
                        heads: c.vision.num_attention_heads,
                        width: c.vision.hidden_size,
                        tokens: 1 + grid * grid,
                    },
                    TowerSummary {
                        name: "text",
                        layers: c.text.num_hidden_layers,
                        heads: c.text.num_attention_heads,
                        width: c.text.hidden_size,
                        tokens: c.text.max_position_embeddings,
                    },
                ];
                (towers, clip::layer_stacks(&c).to_vec())
            }
            ModelFamily::Vilt => {
                let c = ViltConfig::from_dir(dir)?;
                let towers = vec![TowerSummary {
                    name: "joint",
                    layers: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    width: c.hidden_size,
                    // Text positions + image class token + the stored patch grid.
                    tokens: c.max_position_embeddings + 1 + c.grid_size() * c.grid_size(),
                }];
                (towers, vilt::layer_stacks(&c).to_vec())
            }
            ModelFamily::Lxmert => {
                let c = LxmertConfig::from_dir(dir)?;
                let tower = |name, layers, tokens| TowerSummary {
                    name,
                    layers,
                    heads: c.num_attention_heads,
                    width: c.hidden_size,
                    tokens,
                };
                // Region counts come from the features (36 for LXMERT's Faster R-CNN).
                let towers = vec![
                    tower("language", c.l_layers, c.max_position_embeddings),
                    tower("regions", c.r_layers, 36),
                    tower("cross", c.x_layers, c.max_position_embeddings + 36),
                ];
                (towers, lxmert::layer_stacks(&c).to_vec())
            }
        };
        let weights = Weights::open(dir)?;
        weights.check_depth(&stacks)?;
        Ok(Self {
            family,
            towers,
            parameters: weights.param_count(),
            stored_dtypes: weights.stored_dtypes(),
        })
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "family      {}", self.family)?;
        for t in &self.towers {
            writeln!(
                f,
                "{:<11} {} layers, {} heads, width {}, {} tokens",
                t.name, t.layers, t.heads, t.width, t.tokens
            )?;
        }
        let millions = self.parameters as f64 / 1e6;
        writeln!(f, "parameters  {} ({millions:.2} M)", self.parameters)?;
        let dtypes: Vec<String> = self
            .stored_dtypes
            .iter()
            .map(|(d, n)| format!("{d} ({n} tensors)"))
            .collect();
        write!(f, "stored as   {}", dtypes.join(", "))
    }
}
