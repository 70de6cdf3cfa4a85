//! Hyperparameters of a model, read from GGUF metadata (`{arch}.*` keys) and nowhere else.
//! Architectures differ only by what is configured here; the forward pass is shared.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Gemma3,
}

impl Architecture {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Architecture::Llama),
            "qwen2" => Ok(Architecture::Qwen2),
            "gemma3" => Ok(Architecture::Gemma3),
            other => Err(Error::UnsupportedArchitecture(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama, whose GGUF q/k weights are permuted for it.
    Normal,
    /// Halves (i, i + rope_dim/2): GPT-NeoX style, used by qwen2 and gemma3.
    Neox,
}

/// The gated feed-forward's activation: `act(gate) * up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// tanh-approximated GELU, as ggml computes it (through an f16 table).
    Gelu,
}

/// RoPE frequencies of one group of layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub freq_base: f32,
    /// Position scale for linear RoPE scaling (1 / factor); 1.0 without scaling.
    pub freq_scale: f32,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub n_vocab: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    pub n_layer: usize,
    /// Hidden width of the feed-forward block.
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Dimensions of each head that RoPE rotates (the rest pass through).
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// RoPE of full-attention layers.
    pub rope: Rope,
    /// RoPE of sliding-window layers.
    pub rope_swa: Rope,
    pub norm_eps: f32,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub activation: Activation,
    /// Multiplies the token embeddings (gemma: sqrt(n_embd)).
    pub embedding_scale: Option<f32>,
    /// Multiplies q before the dot products with the keys (gemma's query_pre_attn_scalar).
    pub q_scale: f32,
    /// Multiplies the q·k scores (1/sqrt(head_dim) where q_scale does not already do it).
    pub kq_scale: f32,
    /// Keys a sliding-window layer attends to: the query's own position and the n-1 before it.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses the sliding window (and `rope_swa`).
    pub swa_layers: Vec<bool>,
    /// logits = cap * tanh(logits / cap) when set.
    pub final_logit_softcap: Option<f32>,
    /// Divisors of each RoPE frequency (the rope_freqs tensor of Llama 3.1+), (rope_dim / 2).
    pub rope_freq_factors: Option<Vec<f32>>,
}

impl ModelConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name =
            g.get_str("general.architecture")?.ok_or_else(|| Error::MissingKey("general.architecture".into()))?;
        let arch = Architecture::from_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let required = |k: &str| -> Result<usize> {
            let k = key(k);
            let v = g.get_int::<usize>(&k)?.ok_or(Error::MissingKey(k.clone()))?;
            if v == 0 {
                return Err(Error::Malformed(format!("metadata key '{k}' is 0")));
            }
            Ok(v)
        };
        let n_embd = required("embedding_length")?;
        let n_layer = required("block_count")?;
        let n_head = required("attention.head_count")?;
        let n_head_kv = g.get_int::<usize>(&key("attention.head_count_kv"))?.unwrap_or(n_head);
        let head_dim = g.get_int::<usize>(&key("attention.key_length"))?.unwrap_or(n_embd / n_head);
        let value_dim = g.get_int::<usize>(&key("attention.value_length"))?.unwrap_or(head_dim);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(Error::Malformed(format!("{n_head} attention heads cannot be shared by {n_head_kv} KV heads")));
        }
        if head_dim == 0 || value_dim != head_dim || head_dim % 2 != 0 {
            return Err(Error::Malformed(format!("unsupported head size (key {head_dim}, value {value_dim})")));
        }
        let rope_dim = g.get_int::<usize>(&key("rope.dimension_count"))?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(Error::Malformed(format!("rope dimension {rope_dim} does not fit head size {head_dim}")));
        }
        let freq_scale = match g.get_str(&key("rope.scaling.type"))? {
            None | Some("none") => match g.get_f32(&key("rope.scale_linear"))? {
                Some(factor) if factor > 0.0 => 1.0 / factor,
                _ => 1.0,
            },
            Some("linear") => match g.get_f32(&key("rope.scaling.factor"))? {
                Some(factor) if factor > 0.0 => 1.0 / factor,
                _ => 1.0,
            },
            Some(other) => return Err(Error::Malformed(format!("unsupported RoPE scaling type '{other}'"))),
        };
        let rope = Rope { freq_base: g.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0), freq_scale };
        let n_vocab = match g.get_int::<usize>(&key("vocab_size"))? {
            Some(n) => n,
            None => g.get_array("tokenizer.ggml.tokens")?.map(|(_, t)| t.len()).unwrap_or(0),
        };

        let mut config = ModelConfig {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_ff: required("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_style: RopeStyle::Normal,
            rope,
            rope_swa: rope,
            norm_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            n_ctx_train: required("context_length")?,
            activation: Activation::Silu,
            embedding_scale: None,
            q_scale: 1.0,
            kq_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window: None,
            swa_layers: vec![false; n_layer],
            final_logit_softcap: None,
            rope_freq_factors: None,
        };
        match arch {
            Architecture::Llama => {}
            Architecture::Qwen2 => config.rope_style = RopeStyle::Neox,
            Architecture::Gemma3 => {
                config.rope_style = RopeStyle::Neox;
                config.activation = Activation::Gelu;
                config.embedding_scale = Some((n_embd as f32).sqrt());
                // Gemma 3 27B scales by the model width per head, the others by the head size.
                let per_head = if n_layer == 62 { n_embd / n_head } else { head_dim };
                config.q_scale = 1.0 / (per_head as f32).sqrt();
                config.kq_scale = 1.0;
                config.final_logit_softcap = g.get_f32(&key("final_logit_softcapping"))?.filter(|&c| c != 0.0);
                if let Some(window) = g.get_int::<usize>(&key("attention.sliding_window"))?.filter(|&w| w > 0) {
                    config.sliding_window = Some(window);
                    // Five local layers, then one global, unless the file says otherwise.
                    let pattern = g.get_int::<usize>(&key("attention.sliding_window_pattern"))?.unwrap_or(6);
                    config.swa_layers = (0..n_layer).map(|il| pattern == 0 || il % pattern < pattern - 1).collect();
                    config.rope_swa =
                        Rope { freq_base: g.get_f32(&key("rope.freq_base_swa"))?.unwrap_or(10_000.0), freq_scale: 1.0 };
                }
            }
        }
        Ok(config)
    }

    /// Width of one position's keys (or values) across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}
