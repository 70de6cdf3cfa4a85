//! Where the forward pass gets its weights: the `WeightSource` trait is the single access point,
//! so the resident (memory-mapped) source here and the pager's source feed one forward pass.
//!
//! Tensor names (`blk.{i}.*`) are resolved and shape-checked once, in `TensorTable::resolve`.

use std::ops::Deref;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::config::ModelConfig;
use crate::quant;
use crate::tensor::TensorView;

/// One transformer block's weights. Matrices are (rows = outputs) x (cols = inputs).
#[derive(Clone, Copy)]
pub struct LayerWeights<'a> {
    pub attn_norm: TensorView<'a>, // (n_embd)
    pub wq: TensorView<'a>,        // (n_head * head_dim, n_embd)
    pub wk: TensorView<'a>,        // (n_head_kv * head_dim, n_embd)
    pub wv: TensorView<'a>,        // (n_head_kv * head_dim, n_embd)
    pub wo: TensorView<'a>,        // (n_embd, n_head * head_dim)
    pub ffn_norm: TensorView<'a>,  // (n_embd)
    pub w_gate: TensorView<'a>,    // (n_ff, n_embd)
    pub w_up: TensorView<'a>,      // (n_ff, n_embd)
    pub w_down: TensorView<'a>,    // (n_embd, n_ff)
}

/// The weights outside the transformer blocks.
#[derive(Clone, Copy)]
pub struct GlobalWeights<'a> {
    pub token_embd: TensorView<'a>,  // (n_vocab, n_embd): one row per token
    pub output_norm: TensorView<'a>, // (n_embd)
    pub output: TensorView<'a>,      // (n_vocab, n_embd); token_embd itself when tied
}

/// Weights borrowed from a source, kept valid (for example pinned in the pager's cache) for as
/// long as the view lives.
pub struct Pinned<'a, T> {
    weights: T,
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a, T> Pinned<'a, T> {
    pub fn new(weights: T, pin: Option<Box<dyn Send + 'a>>) -> Self {
        Pinned { weights, _pin: pin }
    }
}

impl<T> Deref for Pinned<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.weights
    }
}

pub trait WeightSource: Send + Sync {
    fn layer(&self, index: usize) -> Result<Pinned<'_, LayerWeights<'_>>>;
    fn globals(&self) -> Result<Pinned<'_, GlobalWeights<'_>>>;
}

/// Tensor infos for one block, resolved from names.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    pub attn_norm: TensorInfo,
    pub wq: TensorInfo,
    pub wk: TensorInfo,
    pub wv: TensorInfo,
    pub wo: TensorInfo,
    pub ffn_norm: TensorInfo,
    pub w_gate: TensorInfo,
    pub w_up: TensorInfo,
    pub w_down: TensorInfo,
}

#[derive(Clone, Debug)]
pub struct TensorTable {
    pub token_embd: TensorInfo,
    pub output_norm: TensorInfo,
    pub output: TensorInfo,
    pub layers: Vec<LayerTensors>,
}

impl TensorTable {
    /// Finds every tensor the architecture needs, checks its shape against the config and its
    /// type against what the kernels support.
    pub fn resolve(g: &GgufFile, c: &ModelConfig) -> Result<Self> {
        let get = |name: String, shape: &[usize]| -> Result<TensorInfo> {
            let info = g.tensor_info(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let expected: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            if info.shape() != expected {
                return Err(Error::TensorShape { name, expected, found: info.shape() });
            }
            if !quant::is_supported(info.ty) {
                return Err(Error::UnsupportedTensorType { tensor: name, type_name: info.ty.name().to_owned() });
            }
            Ok(info.clone())
        };
        let (d, v, ff, q, kv) = (c.n_embd, c.n_vocab, c.n_ff, c.q_dim(), c.kv_dim());
        let token_embd = get("token_embd.weight".into(), &[d, v])?;
        let output = match g.tensor_info("output.weight") {
            Some(_) => get("output.weight".into(), &[d, v])?,
            None => token_embd.clone(),
        };
        let layers = (0..c.n_layer)
            .map(|i| {
                let t = |name: &str, shape: &[usize]| get(format!("blk.{i}.{name}.weight"), shape);
                Ok(LayerTensors {
                    attn_norm: t("attn_norm", &[d])?,
                    wq: t("attn_q", &[d, q])?,
                    wk: t("attn_k", &[d, kv])?,
                    wv: t("attn_v", &[d, kv])?,
                    wo: t("attn_output", &[q, d])?,
                    ffn_norm: t("ffn_norm", &[d])?,
                    w_gate: t("ffn_gate", &[d, ff])?,
                    w_up: t("ffn_up", &[d, ff])?,
                    w_down: t("ffn_down", &[ff, d])?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(TensorTable { token_embd, output_norm: get("output_norm.weight".into(), &[d])?, output, layers })
    }

    /// File range covered by the weights (for prefaulting): from the first tensor to the last.
    pub fn span(&self) -> (u64, u64) {
        let all = self
            .layers
            .iter()
            .flat_map(|l| [&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down]);
        let all = all.chain([&self.token_embd, &self.output_norm, &self.output]);
        let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t.offset), hi.max(t.offset + t.size)));
        (lo, hi.saturating_sub(lo))
    }
}

/// Resident weights: views straight into the memory-mapped file, no copies.
pub struct MappedWeights {
    file: Arc<GgufFile>,
    table: TensorTable,
}

impl MappedWeights {
    pub fn new(file: Arc<GgufFile>, table: TensorTable) -> Self {
        MappedWeights { file, table }
    }
}

impl WeightSource for MappedWeights {
    fn layer(&self, index: usize) -> Result<Pinned<'_, LayerWeights<'_>>> {
        let t = &self.table.layers[index];
        let v = |info: &TensorInfo| self.file.view(info);
        Ok(Pinned::new(
            LayerWeights {
                attn_norm: v(&t.attn_norm),
                wq: v(&t.wq),
                wk: v(&t.wk),
                wv: v(&t.wv),
                wo: v(&t.wo),
                ffn_norm: v(&t.ffn_norm),
                w_gate: v(&t.w_gate),
                w_up: v(&t.w_up),
                w_down: v(&t.w_down),
            },
            None,
        ))
    }

    fn globals(&self) -> Result<Pinned<'_, GlobalWeights<'_>>> {
        let v = |info: &TensorInfo| self.file.view(info);
        Ok(Pinned::new(
            GlobalWeights {
                token_embd: v(&self.table.token_embd),
                output_norm: v(&self.table.output_norm),
                output: v(&self.table.output),
            },
            None,
        ))
    }
}
