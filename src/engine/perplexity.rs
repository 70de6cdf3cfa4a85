//! Perplexity of a text under a fixed, documented protocol (the one llama.cpp's perplexity tool
//! uses, in windows evaluated from a fresh state).

use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};

use super::Model;

/// How `Model::perplexity` scores a text: tokenized without BOS and without parsing special
/// tokens, cut to `max_tokens` and then to whole windows of `window` tokens, each window
/// evaluated from a fresh state with BOS in front when the model adds BOS; every token but the
/// first of each window is scored.
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    pub window: usize,
    pub max_tokens: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// exp(mean_nll).
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// How many tokens were scored.
    pub tokens: usize,
}

/// log softmax(logits)[index], computed in f64 over the whole vocabulary.
pub(super) fn log_softmax_at(logits: &[f32], index: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[index] as f64 - max - sum.ln()
}

impl Model {
    /// Perplexity of `text` under the protocol of `PerplexityOptions`.
    pub fn perplexity(&self, text: &str, opts: &PerplexityOptions, cancel: &AtomicBool) -> Result<Perplexity> {
        if opts.window < 2 {
            return Err(Error::invalid_option("window", format!("must be at least 2, got {}", opts.window)));
        }
        let mut tokens = self.tokenizer.encode(text, false, false);
        if let Some(max) = opts.max_tokens {
            tokens.truncate(max);
        }
        let windows = tokens.len() / opts.window;
        if windows == 0 {
            return Err(Error::invalid_option(
                "text",
                format!("has {} tokens, fewer than one window of {}", tokens.len(), opts.window),
            ));
        }
        let bos = self.tokenizer.bos().filter(|_| self.tokenizer.add_bos_default());
        let offset = usize::from(bos.is_some());
        self.check_fits(opts.window + offset)?;

        let mut kv = self.new_cache(self.info.context_size)?;
        let (mut nll_sum, mut scored) = (0.0f64, 0usize);
        tokens.chunks_exact(opts.window).try_for_each(|chunk| {
            kv.truncate(0);
            let input: Vec<u32> = bos.into_iter().chain(chunk.iter().copied()).collect();
            // Logits at input position p predict input[p + 1]; the first text token is not scored.
            self.evaluate(&mut kv, &input[..input.len() - 1], offset, cancel, &mut |p, logits| {
                nll_sum -= log_softmax_at(logits, input[p + 1] as usize);
                scored += 1;
            })
        })?;
        let mean_nll = nll_sum / scored as f64;
        Ok(Perplexity { perplexity: mean_nll.exp(), mean_nll, tokens: scored })
    }
}
