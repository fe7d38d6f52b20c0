//! The op set every model is written against, forward and backward.
//!
//! Models run as a straight sequence of these ops over preallocated buffers (the llm.c
//! style): a forward that keeps what the backward and the explanation methods need, then a
//! backward that computes activation gradients only — never weight gradients. Each op has a
//! CPU implementation (`cpu`, the oracle) and, later, a CUDA one with the same contract.
//!
//! Layout conventions: activations are row-major `[rows, width]` with `rows = batch · tokens`;
//! linear weights are stored as Hugging Face stores them, `[out, in]`; attention heads are
//! interleaved in the width (`[.., heads · head_dim]`); an attention reads query rows of
//! width `heads · head_dim` and fused key|value rows `[k | v]` of twice that width.

mod check;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use thiserror::Error;

use crate::linalg::{Fiedler, GraphOptions, SpectralError};

pub use cpu::Cpu;

/// Elementwise activation of a feed-forward block, as named by `hidden_act` in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact form x·Φ(x) with the error function.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `quick_gelu`: x·σ(1.702·x), used by OpenAI's CLIP.
    QuickGelu,
    /// `tanh`, as the BERT-style poolers apply it.
    Tanh,
}

impl Activation {
    /// Parses the `hidden_act` string of a Hugging Face config.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "quick_gelu" => Some(Self::QuickGelu),
            "tanh" => Some(Self::Tanh),
            _ => None,
        }
    }
}

/// A head-averaged attention-shaped matrix the explanation methods read (spec §C): per
/// entry, the mean over heads of a function of the head's A (or its LRP relevance R_A) and
/// ∇A. Averaged where the trace lives, only the mean travels to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadMean {
    /// mean_h A (raw attention, rollout).
    Attention,
    /// mean_h (∇A)⁺ (DSMI+Grad).
    PositiveGradient,
    /// mean_h (∇A ⊙ A)⁺ (Chefer, DSMI+Grad+Attn).
    PositiveGradientTimesAttention,
    /// mean_h (∇A ⊙ R_A)⁺ (Transformer Attribution).
    PositiveGradientTimesRelevance,
    /// mean_h R_A (partial LRP).
    Relevance,
}

impl HeadMean {
    pub const ALL: [HeadMean; 5] = [
        Self::Attention,
        Self::PositiveGradient,
        Self::PositiveGradientTimesAttention,
        Self::PositiveGradientTimesRelevance,
        Self::Relevance,
    ];

    /// Whether the mean reads the LRP relevance R_A in place of A.
    pub fn reads_relevance(self) -> bool {
        matches!(self, Self::PositiveGradientTimesRelevance | Self::Relevance)
    }

    /// Whether the mean reads ∇A.
    pub fn reads_gradient(self) -> bool {
        !matches!(self, Self::Attention | Self::Relevance)
    }

    /// One head's term at one entry, from x = A or R_A and g = ∇A.
    #[inline]
    pub fn term(self, x: f32, g: f32) -> f32 {
        match self {
            Self::Attention | Self::Relevance => x,
            Self::PositiveGradient => g.max(0.0),
            Self::PositiveGradientTimesAttention | Self::PositiveGradientTimesRelevance => {
                (x * g).max(0.0)
            }
        }
    }

    /// The kernels' code for the kind (kernels/attention.cu, `head_mean`).
    pub fn code(self) -> i32 {
        match self {
            Self::Attention | Self::Relevance => 0,
            Self::PositiveGradient => 1,
            Self::PositiveGradientTimesAttention | Self::PositiveGradientTimesRelevance => 2,
        }
    }
}

/// A relevance product over a tower's layers, R = F_last·…·F_first, of which a method reads
/// one row (`Backend::relevance_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelevanceProduct {
    /// F_l = rownorm(mean_h A_l + I): rollout (spec §C.6).
    Rollout,
    /// F_l = I + M_l with M the head mean of the kind: Chefer's relevance maps
    /// ((∇A ⊙ A)⁺, §C.1) and Transformer Attribution ((∇A ⊙ R_A)⁺, §A.3), carried as R − I
    /// (§H, last item).
    Residual(HeadMean),
}

impl RelevanceProduct {
    /// The head mean each factor is formed from.
    pub fn mean(self) -> HeadMean {
        match self {
            Self::Rollout => HeadMean::Attention,
            Self::Residual(kind) => kind,
        }
    }
}

/// The one row a method reads (`Backend::relevance_rows`, `Backend::head_rows`): of sample
/// `sample`'s matrices over the token positions `tokens`, row `query` (an index into
/// `tokens`).
#[derive(Debug, Clone, Copy)]
pub struct ReadoutRow<'a> {
    pub sample: usize,
    pub query: usize,
    pub tokens: &'a [usize],
}

/// What Grad-CAM (spec §C.5) reads of a layer at one row (`Backend::head_rows`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadRows {
    /// Per head, the mean of ∇A over the row's tokens × tokens: an f64 sum in row-major
    /// order, divided, then rounded to f32.
    pub grad_means: Vec<f32>,
    /// Per head, row `query` of A over the row's tokens: [heads, tokens].
    pub rows: Vec<f32>,
}

/// One graph of `Backend::head_mean_matvec`: sample `sample`'s head mean over the token
/// positions `tokens` × `tokens`, times `vector` (one entry per token).
#[derive(Debug, Clone, Copy)]
pub struct MeanGraph<'a> {
    pub sample: usize,
    pub tokens: &'a [usize],
    pub vector: &'a [f32],
}

/// Shape of one softmax attention over a padded batch: `queries` rows of one sequence attend
/// to `keys` rows of another (the same one for self-attention).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
    /// Causal masking: query i sees keys j ≤ i (CLIP's text tower).
    pub causal: bool,
    /// Which keys each sample may attend to, [batch · keys] (false = padding); `None` when
    /// every key is real. Padding need not be a suffix (ViLT pads text in mid-sequence).
    pub key_mask: Option<Vec<bool>>,
}

impl AttentionShape {
    /// Self-attention over `tokens` tokens per sample.
    pub fn self_attention(batch: usize, heads: usize, tokens: usize, head_dim: usize) -> Self {
        Self {
            batch,
            heads,
            queries: tokens,
            keys: tokens,
            head_dim,
            causal: false,
            key_mask: None,
        }
    }

    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.queries * self.keys
    }

    /// Whether query i of sample b may attend to key j (padding and causal masks).
    pub fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        !(self.causal && j > i) && self.key_mask.as_ref().is_none_or(|m| m[b * self.keys + j])
    }

    /// The attention of one query per sample, the one at `positions[b]` of sample b, over
    /// the same keys: what that query sees (padding and causal masks) becomes the key mask.
    pub fn single_query(&self, positions: &[usize]) -> Self {
        let key_mask = positions
            .iter()
            .enumerate()
            .flat_map(|(b, &i)| (0..self.keys).map(move |j| self.visible(b, i, j)))
            .collect();
        Self {
            queries: 1,
            causal: false,
            key_mask: Some(key_mask),
            ..*self
        }
    }

    /// A key mask from per-sample counts of real keys at the start of each sequence.
    pub fn prefix_mask(lengths: &[usize], keys: usize) -> Vec<bool> {
        lengths
            .iter()
            .flat_map(|&l| (0..keys).map(move |j| j < l))
            .collect()
    }

    /// Softmax temperature 1/√head_dim, as every family here uses.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Geometry of a batch of images cut into non-overlapping square patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub patch: usize,
}

impl PatchGeometry {
    pub fn grid(&self) -> (usize, usize) {
        (self.height / self.patch, self.width / self.patch)
    }

    pub fn patches(&self) -> usize {
        let (h, w) = self.grid();
        h * w
    }

    /// Length of one flattened patch, ordered (channel, row, column) like a conv weight.
    pub fn patch_len(&self) -> usize {
        self.channels * self.patch * self.patch
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("{op}: buffer `{buffer}` has {found} elements, expected {expected}")]
    Length {
        op: &'static str,
        buffer: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    /// The device (or, for the CPU backend, the host) cannot hold a buffer; the caller knows
    /// the batch size that caused it.
    #[error(
        "out of {memory} memory: {op} needs {} more ({} free of {})",
        human_size(*requested), human_size(*free), human_size(*total)
    )]
    OutOfMemory {
        op: &'static str,
        /// "device" or "host".
        memory: &'static str,
        requested: usize,
        free: usize,
        total: usize,
    },
    /// A device, driver or library call failed (kernel launch, cuBLAS, copies).
    #[error("{op}: {message}")]
    Device { op: &'static str, message: String },
    /// A kernel failed on the device (an illegal address, a trap, a timeout), which loses the
    /// device's context: every later call in this process fails the same way, so work must
    /// stop rather than go on to the next sample.
    #[error("{op}: {message} (a kernel failed on the GPU, which loses its context: nothing more can run on it in this process)")]
    DeviceLost { op: &'static str, message: String },
}

/// A byte count for people: "512.0 KiB", "3.2 MiB", "79.1 GiB".
pub(crate) fn human_size(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        n if n < 1 << 20 => format!("{:.1} KiB", b / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", b / (1 << 20) as f64),
        _ => format!("{:.1} GiB", b / (1 << 30) as f64),
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// The operations a model is written against. `Buf` is an f32 buffer living wherever the
/// backend computes; index-like arguments (token ids, row positions) stay on the host.
///
/// Gradient ops name their inputs like the forward and write `d*` outputs; `accumulate`
/// adds into the destination instead of overwriting it (for fan-in such as q/k/v → input).
pub trait Backend: Sync {
    type Buf: Send + Sync;

    fn name(&self) -> &'static str;
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// A buffer of `len` values for an op to overwrite in full (not to accumulate into):
    /// what it holds until then is unspecified. The CUDA backend skips the zero fill, which
    /// is a pass of writes over every buffer of a trace (about 18 GB for a CLIP ViT-B/16 at
    /// batch 64).
    fn uninit(&self, len: usize) -> Result<Self::Buf> {
        self.zeros(len)
    }
    /// Device time per op since the backend was opened (or `profile_restart`), as a table,
    /// where the backend records it (the CUDA backend with FIEDLER_CUDA_PROFILE set); `None`
    /// elsewhere.
    fn profile_report(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Forgets the device time recorded so far, where the backend records it.
    fn profile_restart(&self) -> Result<()> {
        Ok(())
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Moves a buffer into host memory (no copy where it already lives there).
    fn move_to_host(&self, buf: Self::Buf) -> Result<Vec<f32>>;
    fn copy(&self, buf: &Self::Buf) -> Result<Self::Buf>;
    /// Uploads a linear weight given as Hugging Face stores it, `[out, in]` row-major, in the
    /// layout this backend's `linear` and `linear_backward` read fastest. Only those two ops
    /// may read the returned buffer.
    fn upload_weight(&self, w: &[f32], out: usize, input: usize) -> Result<Self::Buf>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Waits until every op enqueued so far has finished (for timing). Ops on a backend that
    /// computes as it is called are finished already.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]); `w` comes from `upload_weight(_, n, k)`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()>;
    /// dx[m, k] (+)= dy[m, n] · w[n, k]; `w` comes from `upload_weight(_, n, k)`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        w: &Self::Buf,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()>;

    /// Row-wise layer norm; `stats` receives (mean, 1/σ) per row for the backward.
    #[allow(clippy::too_many_arguments)]
    fn layernorm(
        &self,
        out: &mut Self::Buf,
        stats: &mut Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        dim: usize,
        eps: f32,
    ) -> Result<()>;
    /// dx (+)= ∂LN/∂x applied to dy.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        stats: &Self::Buf,
        gamma: &Self::Buf,
        dim: usize,
        accumulate: bool,
    ) -> Result<()>;

    fn activation(&self, out: &mut Self::Buf, x: &Self::Buf, act: Activation) -> Result<()>;
    /// dx = dy ⊙ act'(x).
    fn activation_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        act: Activation,
    ) -> Result<()>;

    /// out = a + b (residual connections).
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf) -> Result<()>;
    /// dst += src (gradient fan-in).
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;

    /// Softmax attention of query rows `q` [batch·queries, width] over key|value rows `kv`
    /// [batch·keys, 2·width]: keeps the probabilities [batch, heads, queries, keys] (masked
    /// entries exactly 0) and writes the context [batch·queries, width].
    fn attention(
        &self,
        probs: &mut Self::Buf,
        ctx: &mut Self::Buf,
        q: &Self::Buf,
        kv: &Self::Buf,
        shape: &AttentionShape,
    ) -> Result<()>;
    /// From d ctx: d probs (what the explanation methods read), d q and d kv.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dprobs: &mut Self::Buf,
        dq: &mut Self::Buf,
        dkv: &mut Self::Buf,
        dctx: &Self::Buf,
        q: &Self::Buf,
        kv: &Self::Buf,
        probs: &Self::Buf,
        shape: &AttentionShape,
    ) -> Result<()>;
    /// out[b, e] = (Σ_h kind.term(x[b, h, e], grad[b, h, e])) / heads over `heads` heads of
    /// `entries` entries per sample, heads summed in order (as the methods on the host do):
    /// x is A, or R_A where the kind reads the relevance; `grad` is required where it reads ∇A.
    #[allow(clippy::too_many_arguments)]
    fn head_mean(
        &self,
        out: &mut Self::Buf,
        kind: HeadMean,
        x: &Self::Buf,
        grad: Option<&Self::Buf>,
        heads: usize,
        entries: usize,
    ) -> Result<()>;

    /// For each graph, r_i = Σ_j M[t_i, t_j]·v_j, where M is the head mean `kind` of sample
    /// `graph.sample` as `head_mean` computes it (x, grad: [samples, heads, tokens, tokens]),
    /// t the graph's token positions and v its vector: the spectral methods' Ḡ_l·f_l (spec
    /// §H), computed where the maps are so that only r leaves the device. Each product is
    /// rounded and summed in j order in f32, as `head_mean` followed by the host's
    /// matrix–vector product: every backend gives the same bits.
    #[allow(clippy::too_many_arguments)]
    fn head_mean_matvec(
        &self,
        kind: HeadMean,
        x: &Self::Buf,
        grad: Option<&Self::Buf>,
        heads: usize,
        tokens: usize,
        graphs: &[MeanGraph<'_>],
    ) -> Result<Vec<Vec<f32>>>;

    /// Row `query` of each row's relevance product over `layers` (x and ∇A of each layer as
    /// `head_mean` takes them, [samples, heads, tokens, tokens], first layer first), with
    /// every factor restricted to the row's token positions: one value per token. The
    /// factors' means are `head_mean`'s and they apply from the last layer with the
    /// arithmetic of `cpu::relevance` (`row_step`), so every backend gives the same bits;
    /// formed where the maps are, so that only the rows leave the device.
    fn relevance_rows(
        &self,
        product: RelevanceProduct,
        layers: &[(&Self::Buf, Option<&Self::Buf>)],
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<Vec<f32>>>;

    /// For each row, what Grad-CAM reads of the layer whose A and ∇A are `x` and `grad`
    /// ([samples, heads, tokens, tokens]): the per-head means of ∇A over the row's tokens and
    /// the per-head rows `query` of A (`HeadRows`), so that these leave the device instead of
    /// every head's maps. Every backend gives the same bits (`cpu::head_rows`).
    fn head_rows(
        &self,
        x: &Self::Buf,
        grad: &Self::Buf,
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<HeadRows>>;

    /// The Fiedler vector (spec §B) of every graph: graph g's nodes are the rows `graphs[g].1`
    /// of its feature buffer `graphs[g].0` ([_, dim], row-major). A bad graph gets its own
    /// error; the outer error is a bad row index or a device failure.
    fn fiedler_rows(
        &self,
        graphs: &[(&Self::Buf, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<std::result::Result<Fiedler, SpectralError>>>;

    /// Cuts images [batch, channels, height, width] into rows [batch·patches, patch_len].
    fn patchify(&self, out: &mut Self::Buf, pixels: &Self::Buf, geo: PatchGeometry) -> Result<()>;
    /// Vision tokens: out[b] = [class ; patches[b]] + pos, out [batch·tokens, dim], where
    /// `pos` is shared ([tokens, dim]) or per sample ([batch·tokens, dim]).
    #[allow(clippy::too_many_arguments)]
    fn prepend_class_add_positions(
        &self,
        out: &mut Self::Buf,
        patches: &Self::Buf,
        class: &Self::Buf,
        pos: &Self::Buf,
        batch: usize,
        tokens: usize,
        dim: usize,
    ) -> Result<()>;
    /// out[b] = [a[b] ; b[b]] along the tokens: [batch·(a_tokens + b_tokens), dim].
    #[allow(clippy::too_many_arguments)]
    fn concat_sequences(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        batch: usize,
        a_tokens: usize,
        b_tokens: usize,
        dim: usize,
    ) -> Result<()>;
    /// x[row] += v for every row of width v.len() (embedding-type vectors).
    fn add_row_vector(&self, x: &mut Self::Buf, v: &Self::Buf) -> Result<()>;
    /// Text tokens: out[b, t] = table[ids[b, t]] + pos[t], out [batch·seq, dim].
    fn embed_tokens(
        &self,
        out: &mut Self::Buf,
        ids: &[u32],
        table: &Self::Buf,
        pos: &Self::Buf,
        seq: usize,
        dim: usize,
    ) -> Result<()>;

    /// out[i] = x[rows[i]] for rows of width `dim`.
    fn gather_rows(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        rows: &[usize],
        dim: usize,
    ) -> Result<()>;
    /// dx = 0, then dx[rows[i]] += dy[i].
    fn gather_rows_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        rows: &[usize],
        dim: usize,
    ) -> Result<()>;

    /// scores[b] = scale · cos(a[b], b[b]) for rows of width `dim`.
    fn cosine_scores(
        &self,
        scores: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        scale: f32,
        dim: usize,
    ) -> Result<()>;
    /// da, db from d scores.
    #[allow(clippy::too_many_arguments)]
    fn cosine_scores_backward(
        &self,
        da: &mut Self::Buf,
        db: &mut Self::Buf,
        dscores: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        scale: f32,
        dim: usize,
    ) -> Result<()>;

    // LRP (spec §D): relevance flows from an op's output R to its inputs over the activations
    // the forward kept. Sums of relevance are per sample; `samples` splits a buffer into equal
    // runs of rows, one per sample.

    /// |W| of a weight from `upload_weight`, in the same layout, for `lrp_linear`.
    fn abs_weight(&self, w: &Self::Buf) -> Result<Self::Buf>;
    /// The signed z⁺ rule (α = 1, β = 0, bias ignored) of out[m, n] = x[m, k]·Wᵀ:
    /// rx (+)= x⁺ ⊙ (S·W⁺) + x⁻ ⊙ (S·W⁻), S = sdiv(r, x⁺W⁺ᵀ + x⁻W⁻ᵀ). `w_abs` comes from
    /// `abs_weight(w)`. `forward` is the forward's (output, bias), when kept, from which
    /// x·Wᵀ = output − bias is read instead of recomputed.
    #[allow(clippy::too_many_arguments)]
    fn lrp_linear(
        &self,
        rx: &mut Self::Buf,
        r: &Self::Buf,
        x: &Self::Buf,
        forward: Option<(&Self::Buf, &Self::Buf)>,
        w: &Self::Buf,
        w_abs: &Self::Buf,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()>;
    /// Relevance through `attention` from R at its context: the gradient×input rule on
    /// probs·V and on the unscaled scores Q·Kᵀ, each operand getting half; softmax passes
    /// relevance unchanged. Writes `cam` (relevance at the probabilities, [batch, heads,
    /// queries, keys]), `rq` (query rows) and `rkv` (key|value rows).
    #[allow(clippy::too_many_arguments)]
    fn lrp_attention(
        &self,
        cam: &mut Self::Buf,
        rq: &mut Self::Buf,
        rkv: &mut Self::Buf,
        rctx: &Self::Buf,
        q: &Self::Buf,
        kv: &Self::Buf,
        probs: &Self::Buf,
        ctx: &Self::Buf,
        shape: &AttentionShape,
    ) -> Result<()>;
    /// The add rule of out = a + b: ra = a ⊙ S, rb = b ⊙ S with S = sdiv(r, a + b), then
    /// rescaled per sample so that ra gets |Σra|/(|Σra| + |Σrb|) of Σr and rb the rest.
    #[allow(clippy::too_many_arguments)]
    fn lrp_add(
        &self,
        ra: &mut Self::Buf,
        rb: &mut Self::Buf,
        r: &Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        samples: usize,
    ) -> Result<()>;
    /// The clone rule where x fans out to several consumers: rx = x ⊙ Σ_i sdiv(rs[i], x).
    fn lrp_clone(&self, rx: &mut Self::Buf, x: &Self::Buf, rs: &[&Self::Buf]) -> Result<()>;
}
