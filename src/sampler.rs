//! Choosing the next token from logits: repetition penalty, top-k, top-p, min-p, temperature,
//! then a draw, in llama.cpp's default chain order. Pure functions of the logits, the history
//! and the random state, so a seed makes sampling reproducible.

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct SamplerParams {
    /// 0 means greedy (argmax after penalties).
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1 disables top-p.
    pub top_p: f32,
    /// 0 disables min-p.
    pub min_p: f32,
    /// 1 disables the repetition penalty.
    pub repeat_penalty: f32,
    /// How many of the latest tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    /// llama.cpp's defaults (common_params_sampling).
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    pub fn validate(&self) -> Result<()> {
        let finite_non_negative = |v: f32| v.is_finite() && v >= 0.0;
        if !finite_non_negative(self.temperature) {
            return Err(Error::invalid_option(
                "temperature",
                format!("must be a finite number >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid_option("topP", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid_option("minP", format!("must be in [0, 1], got {}", self.min_p)));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(Error::invalid_option(
                "repeatPenalty",
                format!("must be a finite number > 0, got {}", self.repeat_penalty),
            ));
        }
        Ok(())
    }
}

/// SplitMix64: small, fast, and good enough for drawing tokens; reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    /// (token, logit or probability) candidates, reused between calls.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler { params, rng, candidates: Vec::new() }
    }

    /// Picks the next token. `history` is every token so far (prompt and output).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let c = &mut self.candidates;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if p.repeat_penalty != 1.0 {
            apply_repeat_penalty(c, &history[history.len().saturating_sub(p.repeat_last_n)..], p.repeat_penalty);
        }
        if p.temperature <= 0.0 {
            return argmax(c);
        }
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, |a, b| b.1.total_cmp(&a.1));
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_p < 1.0 {
            let probs = softmax(c.iter().map(|x| x.1));
            let mut cum = 0.0;
            let keep = probs.iter().position(|&q| {
                cum += q;
                cum >= p.top_p as f64
            });
            c.truncate(keep.map_or(c.len(), |k| k + 1));
        }
        if p.min_p > 0.0 {
            // With the candidates sorted, p_i >= min_p * p_max  <=>  logit_i >= logit_max + ln(min_p).
            let threshold = c[0].1 + p.min_p.ln();
            let keep = c.iter().take_while(|x| x.1 >= threshold).count().max(1);
            c.truncate(keep);
        }
        let probs = softmax(c.iter().map(|x| x.1 / p.temperature));
        let mut r = self.rng.next_f64();
        for (i, q) in probs.iter().enumerate() {
            if r < *q {
                return c[i].0;
            }
            r -= q;
        }
        c[c.len() - 1].0
    }
}

/// llama.cpp's rule: a penalized positive logit is divided by the penalty, a negative one multiplied.
fn apply_repeat_penalty(c: &mut [(u32, f32)], recent: &[u32], penalty: f32) {
    let mut seen = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for &t in &seen {
        if let Some(x) = c.get_mut(t as usize) {
            x.1 = if x.1 <= 0.0 { x.1 * penalty } else { x.1 / penalty };
        }
    }
}

/// The highest logit; the lowest id among equals, so results do not depend on iteration order.
fn argmax(c: &[(u32, f32)]) -> u32 {
    let mut best = c[0];
    for &x in &c[1..] {
        if x.1 > best.1 {
            best = x;
        }
    }
    best.0
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f64> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.map(|l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplerParams {
        SamplerParams { temperature, seed: 42, ..SamplerParams::default() }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let mut s = Sampler::new(SamplerParams { repeat_penalty: 1.5, ..params(0.0) });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[1]), 3);
        // A negative logit is pushed further down, not up.
        let mut s = Sampler::new(SamplerParams { repeat_penalty: 2.0, ..params(0.0) });
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerParams { seed, ..params(1.0) });
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut s = Sampler::new(SamplerParams { top_k: 1, ..params(5.0) });
        let best = Sampler::new(params(0.0)).sample(&logits, &[]);
        assert!((0..20).all(|_| s.sample(&logits, &[]) == best));
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // ln(1), ln(3): with temperature 1 and no truncation token 1 should win about 3/4 of draws.
        let logits = [0.0f32, 3f32.ln()];
        let mut s = Sampler::new(SamplerParams { top_k: 0, top_p: 1.0, min_p: 0.0, ..params(1.0) });
        let ones = (0..20_000).filter(|_| s.sample(&logits, &[]) == 1).count();
        assert!((14_600..15_400).contains(&ones), "{ones}");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let logits = [5.0f32, 4.9, -5.0, -6.0];
        let mut s = Sampler::new(SamplerParams { top_k: 0, top_p: 1.0, min_p: 0.1, ..params(1.0) });
        assert!((0..2000).all(|_| s.sample(&logits, &[]) < 2));
        let mut s = Sampler::new(SamplerParams { top_k: 0, top_p: 0.5, min_p: 0.0, ..params(1.0) });
        assert!((0..2000).all(|_| s.sample(&logits, &[]) == 0));
    }

    #[test]
    fn invalid_params_are_rejected() {
        assert!(SamplerParams { temperature: -1.0, ..params(0.0) }.validate().is_err());
        assert!(SamplerParams { top_p: 0.0, ..params(0.0) }.validate().is_err());
        assert!(SamplerParams { min_p: 2.0, ..params(0.0) }.validate().is_err());
        assert!(SamplerParams { repeat_penalty: f32::NAN, ..params(0.0) }.validate().is_err());
        assert!(params(0.7).validate().is_ok());
    }
}
