//! The forward pass: a batch of tokens, from one sequence or many, through every block, for
//! every architecture and weight source. Every layer's weights are fetched (and, when paged,
//! loaded) once per batch and each matrix product is one weights-by-tokens product, however many
//! sequences the tokens belong to; attention alone looks at sequences, each token reading its own
//! sequence's cache at its own position. Per token, the operations and their order depend on
//! neither the batch size nor its other tokens, so logits are bit-identical however prompts are
//! split and whatever runs beside them (tested). Reads top to bottom like the math; each
//! operation is one call on the `Compute` context.

use crate::error::{Error, Result};
use crate::model::compute::{Compute, Scratch, Slot};
use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvCache;
use crate::model::state::BatchBuffers;
use crate::model::weights::WeightSource;
use crate::pool::ComputePool;

/// Tokens per batch. Large enough that per-operation costs (waking the pool, fetching a layer,
/// converting activations) are shared by many tokens and a blocked kernel can reuse each weight
/// row across many activation rows; small enough that the batch buffers stay a few MB (they grow
/// with chunk x n_ff) and cancellation is noticed within one chunk's layer.
pub const CHUNK: usize = 64;

/// Tokens whose logits are computed together: the (n_vocab, tokens) product buffer is the
/// largest of the batch (16 MB for a 262k vocabulary at 16 tokens), so the head goes in smaller
/// groups than the blocks.
const HEAD_GROUP: usize = 16;

/// One sequence's part of a forward pass: `tokens` go in at positions `kv.len()..`.
pub struct SeqInput<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Logits are computed for tokens[i], i >= logits_from (none when it is tokens.len()).
    pub logits_from: usize,
}

/// Receives the logits of token `index` of sequence `seq` of the pass (n_vocab values).
pub type LogitsSink<'a> = dyn FnMut(usize, usize, &[f32]) + 'a;

/// What a forward pass reads: the model's shape and weights, and the threads that compute.
#[derive(Clone, Copy)]
pub struct Transformer<'m> {
    pub config: &'m ModelConfig,
    pub weights: &'m dyn WeightSource,
    pub pool: &'m ComputePool,
}

/// What a forward pass writes besides the caches: activation and scratch buffers, kept from one
/// pass to the next so that decoding allocates nothing.
#[derive(Default)]
pub struct ForwardBuffers {
    /// Sized for the largest batch seen; None until the first pass.
    batch: Option<BatchBuffers>,
    scratch: Scratch,
}

impl Transformer<'_> {
    /// Runs every sequence's tokens through the model, at most `chunk` tokens per batch (`CHUNK`
    /// but in tests), appending their keys and values to the sequences' caches, and calls
    /// `on_logits(seq, i, logits)` for every wanted token in order. `cancelled` is polled
    /// between blocks; a cancelled or failed pass leaves each cache holding the batches that
    /// finished.
    pub fn forward(
        &self,
        buffers: &mut ForwardBuffers,
        seqs: &mut [SeqInput],
        chunk: usize,
        cancelled: &dyn Fn() -> bool,
        on_logits: &mut LogitsSink,
    ) -> Result<()> {
        for s in seqs.iter() {
            let needed = s.kv.len() + s.tokens.len();
            if needed > s.kv.context() {
                return Err(Error::ContextFull { needed, context_size: s.kv.context() });
            }
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= self.config.n_vocab) {
                return Err(Error::InvalidToken(bad.into()));
            }
        }
        // Every token of the pass as (sequence, index in its tokens), sequence after sequence.
        let order: Vec<(usize, usize)> =
            seqs.iter().enumerate().flat_map(|(s, input)| (0..input.tokens.len()).map(move |i| (s, i))).collect();
        let chunk = chunk.max(1);
        let capacity = chunk.min(order.len());
        let b = match &mut buffers.batch {
            Some(b) if b.capacity >= capacity => b,
            slot => slot.insert(BatchBuffers::new(self.config, capacity)),
        };
        let starts: Vec<usize> = seqs.iter().map(|s| s.kv.len()).collect();
        for part in order.chunks(chunk) {
            b.tokens.clear();
            b.slots.clear();
            let mut wanted = Vec::new();
            for (t, &(seq, i)) in part.iter().enumerate() {
                b.tokens.push(seqs[seq].tokens[i]);
                b.slots.push(Slot { seq, pos: starts[seq] + i });
                if i >= seqs[seq].logits_from {
                    wanted.push((t, seq, i));
                }
            }
            let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut *s.kv).collect();
            self.forward_batch(b, &mut buffers.scratch, &mut caches, cancelled)?;
            // Weights read as zeros from a file cut short under its mapping: the caches and
            // the logits would be garbage.
            self.weights.check_file()?;
            for &(seq, i) in part {
                caches[seq].set_len(starts[seq] + i + 1);
            }
            self.output_head(b, &mut buffers.scratch, &wanted, on_logits)?;
        }
        Ok(())
    }

    /// The tokens of `b` through every block: afterwards `b.x` holds their final hidden states.
    fn forward_batch(
        &self,
        b: &mut BatchBuffers,
        scratch: &mut Scratch,
        caches: &mut [&mut KvCache],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<()> {
        let c = self.config;
        let n = b.tokens.len();
        let (e, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let (x, xb, q, k, v) =
            (&mut b.x[..n * e], &mut b.xb[..n * e], &mut b.q[..n * qd], &mut b.k[..n * kvd], &mut b.v[..n * kvd]);
        let (att_out, proj, gate, up) =
            (&mut b.att_out[..n * qd], &mut b.proj[..n * e], &mut b.gate[..n * ff], &mut b.up[..n * ff]);
        let slots = &b.slots[..n];
        let mut ctx = Compute { c, pool: self.pool, s: scratch };

        for (&token, row) in b.tokens.iter().zip(x.chunks_exact_mut(e)) {
            self.weights.embed(token, row)?;
        }
        ctx.scale(x, c.embedding_scale.unwrap_or(1.0));
        let freq_factors = c.rope_freq_factors.as_deref();
        for (t, slot) in slots.iter().enumerate() {
            b.rope_global[t].fill(c, c.rope, slot.pos, freq_factors);
            if c.sliding_window.is_some() {
                b.rope_local[t].fill(c, c.rope_swa, slot.pos, freq_factors);
            }
        }

        for l in 0..c.n_layer {
            if cancelled() {
                return Err(Error::Aborted);
            }
            let layer = self.weights.layer(l)?;
            let w = layer.weights();
            let local = c.swa_layers[l];
            let (window, ropes) = if local { (c.sliding_window, &b.rope_local) } else { (None, &b.rope_global) };

            // Attention: x += Wo · attention(rope(Wq·xb), rope(Wk·xb), Wv·xb) with xb = rmsnorm(x)
            ctx.rmsnorm(xb, x, &w.attn_norm);
            ctx.matmul(xb, n, &mut [(&w.wq, &mut *q), (&w.wk, &mut *k), (&w.wv, &mut *v)]);
            ctx.add_bias(q, w.bq.as_ref());
            ctx.add_bias(k, w.bk.as_ref());
            ctx.add_bias(v, w.bv.as_ref());
            ctx.rmsnorm_in_place(q, w.q_norm.as_ref()); // Gemma's q/k norms: per head
            ctx.rmsnorm_in_place(k, w.k_norm.as_ref());
            ctx.rope(q, qd, ropes);
            ctx.rope(k, kvd, ropes);
            ctx.scale(q, c.q_scale);
            for ((slot, kr), vr) in slots.iter().zip(k.chunks_exact(kvd)).zip(v.chunks_exact(kvd)) {
                caches[slot.seq].store(l, slot.pos, kr, vr);
            }
            let readers: Vec<&KvCache> = caches.iter().map(|kv| &**kv).collect();
            ctx.attention(q, &readers, slots, l, window, att_out);
            ctx.matmul(att_out, n, &mut [(&w.wo, &mut *proj)]);
            ctx.add_bias(proj, w.bo.as_ref());
            ctx.rmsnorm_in_place(proj, w.post_attn_norm.as_ref());
            ctx.add(x, proj);

            // Feed-forward: x += Wdown · (act(Wgate·xb) * (Wup·xb)) with xb = rmsnorm(x)
            ctx.rmsnorm(xb, x, &w.ffn_norm);
            ctx.matmul(xb, n, &mut [(&w.w_gate, &mut *gate), (&w.w_up, &mut *up)]);
            ctx.gated_activation(gate, up);
            ctx.matmul(gate, n, &mut [(&w.w_down, &mut *proj)]);
            ctx.rmsnorm_in_place(proj, w.post_ffn_norm.as_ref());
            ctx.add(x, proj);
        }
        Ok(())
    }

    /// Logits of the `wanted` tokens of the batch, given as (row in the batch, sequence, index
    /// in the sequence's tokens): the final norm and the vocabulary projection, in groups.
    fn output_head(
        &self,
        b: &mut BatchBuffers,
        scratch: &mut Scratch,
        wanted: &[(usize, usize, usize)],
        on_logits: &mut LogitsSink,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let c = self.config;
        let e = c.n_embd;
        let head = self.weights.head()?;
        let h = head.weights();
        let mut ctx = Compute { c, pool: self.pool, s: scratch };
        for group in wanted.chunks(HEAD_GROUP) {
            let g = group.len();
            // The group's hidden states side by side (they need not be adjacent in the batch).
            for (j, &(t, _, _)) in group.iter().enumerate() {
                b.proj[j * e..(j + 1) * e].copy_from_slice(&b.x[t * e..(t + 1) * e]);
            }
            ctx.rmsnorm(&mut b.xb[..g * e], &b.proj[..g * e], &h.output_norm);
            let products = ctx.matmul_untransposed(&b.xb[..g * e], g, &h.output);
            self.weights.check_file()?;
            for (j, &(_, seq, i)) in group.iter().enumerate() {
                if g == 1 && c.final_logit_softcap.is_none() {
                    on_logits(seq, i, products); // one token's products are its logits
                    continue;
                }
                for (l, p) in b.logits.iter_mut().zip(products.iter().skip(j).step_by(g)) {
                    *l = *p;
                }
                if let Some(cap) = c.final_logit_softcap {
                    b.logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
                }
                on_logits(seq, i, &b.logits);
            }
        }
        Ok(())
    }
}
