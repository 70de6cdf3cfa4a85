//! Hyperparameters of a model, read from GGUF metadata (`{arch}.*` keys) and nowhere else.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
}

impl Architecture {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "llama" => Ok(Architecture::Llama),
            other => Err(Error::UnsupportedArchitecture(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
        }
    }
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
    pub rope_freq_base: f32,
    /// Position scale for linear RoPE scaling (1 / factor); 1.0 without scaling.
    pub rope_freq_scale: f32,
    pub norm_eps: f32,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
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
        let rope_freq_scale = match g.get_str(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = g.get_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if factor > 0.0 {
                    1.0 / factor
                } else {
                    1.0
                }
            }
            Some(other) => return Err(Error::Malformed(format!("unsupported RoPE scaling type '{other}'"))),
        };
        let n_vocab = match g.get_int::<usize>(&key("vocab_size"))? {
            Some(n) => n,
            None => g.get_array("tokenizer.ggml.tokens")?.map(|(_, t)| t.len()).unwrap_or(0),
        };
        Ok(ModelConfig {
            arch,
            n_vocab,
            n_embd,
            n_layer: required("block_count")?,
            n_ff: required("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_freq_base: g.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_freq_scale,
            norm_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            n_ctx_train: required("context_length")?,
        })
    }

    /// Width of one position's keys (or values) across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}
