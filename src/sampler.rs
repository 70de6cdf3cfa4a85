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
        let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
        if p.temperature <= 0.0 {
            return greedy(logits, recent, p.repeat_penalty);
        }
        let c = &mut self.candidates;
        c.clear();
        if p.top_k > 0 && p.top_k < logits.len() {
            top_k(logits, recent, p.repeat_penalty, p.top_k, c);
        } else {
            c.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
            apply_repeat_penalty(c, recent, p.repeat_penalty);
        }
        c.sort_unstable_by(by_rank);
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
    for t in penalized(recent, penalty) {
        if let Some(x) = c.get_mut(t as usize) {
            x.1 = penalize(x.1, penalty);
        }
    }
}

/// The tokens the repetition penalty changes: those of `recent`, each once, in order; none
/// where the penalty is 1.
fn penalized(recent: &[u32], penalty: f32) -> Vec<u32> {
    if penalty == 1.0 {
        return Vec::new();
    }
    let mut seen = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen
}

fn penalize(logit: f32, penalty: f32) -> f32 {
    if logit <= 0.0 {
        logit * penalty
    } else {
        logit / penalty
    }
}

/// The greedy choice: the highest logit after the repetition penalty, the lowest id among
/// equals, so results do not depend on iteration order. Reads the logits in place: building
/// (id, logit) candidates first wrote and read 2 MB a token for a 262k vocabulary.
fn greedy(logits: &[f32], recent: &[u32], penalty: f32) -> u32 {
    let penalized = penalized(recent, penalty);
    let mut best: Option<(usize, f32)> = None;
    let mut consider = |candidate: Option<(usize, f32)>| {
        if let Some((i, v)) = candidate {
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
    };
    for (start, run, penalized) in penalty_runs(logits, &penalized) {
        consider(first_max(run).map(|(i, v)| (start + i, v)));
        if let Some(t) = penalized {
            consider(Some((t, penalize(logits[t], penalty))));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// The logits in id order as runs of unpenalized tokens `(first id, logits)`, each with the
/// penalized token that ends it (none after the last): the walk of `greedy` and `top_k`, which
/// read the runs as they are and penalize only those tokens. `penalized` is sorted.
fn penalty_runs<'a>(
    logits: &'a [f32],
    penalized: &'a [u32],
) -> impl Iterator<Item = (usize, &'a [f32], Option<usize>)> + 'a {
    let ends = penalized.iter().map(|&t| t as usize).filter(|&t| t < logits.len()).map(Some).chain([None]);
    let mut start = 0;
    ends.map(move |end| {
        let run = (start, &logits[start..end.unwrap_or(logits.len())], end);
        start = end.map_or(logits.len(), |t| t + 1);
        run
    })
}

/// Candidates from best to worst: the higher logit, the lower id among equals.
fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` best candidates (`by_rank`) after the repetition penalty, into `out` (in no
/// order), from one pass over the logits that keeps those above the k-th best found so far:
/// candidates of every token, selected, took 0.55 ms a token for a 262k vocabulary.
fn top_k(logits: &[f32], recent: &[u32], penalty: f32, k: usize, out: &mut Vec<(u32, f32)>) {
    // The k-th best kept once `out` was first cut to k: ties with it lose, as later ids.
    let mut worst_kept: Option<f32> = None;
    let flush_at = (4 * k).max(1024);
    let keep = |out: &mut Vec<(u32, f32)>, worst_kept: &mut Option<f32>, id: usize, v: f32| {
        if worst_kept.is_none_or(|w| v > w) {
            out.push((id as u32, v));
            if out.len() >= flush_at {
                out.select_nth_unstable_by(k - 1, by_rank);
                out.truncate(k);
                *worst_kept = Some(out[k - 1].1);
            }
        }
    };
    let penalized = penalized(recent, penalty);
    for (start, run, penalized) in penalty_runs(logits, &penalized) {
        // Sixteen at a time, past those none of which is kept.
        for (c, chunk) in run.chunks(16).enumerate() {
            let most = chunk.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            if worst_kept.is_some_and(|w| most <= w) {
                continue;
            }
            for (i, &v) in chunk.iter().enumerate() {
                keep(out, &mut worst_kept, start + 16 * c + i, v);
            }
        }
        if let Some(t) = penalized {
            keep(out, &mut worst_kept, t, penalize(logits[t], penalty));
        }
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, by_rank);
        out.truncate(k);
    }
}

/// The first index of the largest value of `x` (NaNs never win), or None if it has no number:
/// the largest found sixteen lanes at a time, which compilers vectorize, then its first place.
fn first_max(x: &[f32]) -> Option<(usize, f32)> {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    x.iter().position(|&v| v == max).map(|i| (i, max))
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
        // The lowest id among equals, past the vectorized part too; NaNs never win.
        let mut logits = vec![0.5f32; 100];
        logits[40] = f32::NAN;
        logits[70] = 2.0;
        logits[93] = 2.0;
        assert_eq!(s.sample(&logits, &[]), 70);
        logits[97] = 2.5;
        assert_eq!(s.sample(&logits, &[]), 97);
    }

    /// The greedy path reads the logits in place; it picks what the candidates' argmax after
    /// the penalty picks, the lowest id among equals.
    #[test]
    fn greedy_matches_the_argmax_of_the_penalized_candidates() {
        let mut rng = Rng::new(5);
        for round in 0..200 {
            let n = 1 + (rng.next_u64() % 90) as usize;
            // Few distinct values, so that ties are common.
            let logits: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 7) as f32 - 3.0).collect();
            let history: Vec<u32> =
                (0..rng.next_u64() % 12).map(|_| (rng.next_u64() % (n as u64 + 3)) as u32).collect();
            let penalty = [1.0, 1.3, 0.7][round % 3];
            let mut c: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            apply_repeat_penalty(&mut c, &history, penalty);
            let expected = c.iter().fold(c[0], |best, &x| if x.1 > best.1 { x } else { best }).0;
            assert_eq!(greedy(&logits, &history, penalty), expected, "{logits:?} {history:?} {penalty}");
        }
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

    /// Top-k from one pass keeps what ranking every candidate after the penalty keeps: the k
    /// highest, the lowest ids among equals (ties common here, and runs past a first cut).
    #[test]
    fn top_k_keeps_the_k_best_candidates_after_the_penalty() {
        let mut rng = Rng::new(9);
        for round in 0..300 {
            let n = 1 + (rng.next_u64() % 3000) as usize;
            let logits: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 50) as f32 * 0.5 - 12.0).collect();
            let history: Vec<u32> =
                (0..rng.next_u64() % 40).map(|_| (rng.next_u64() % (n as u64 + 3)) as u32).collect();
            let penalty = [1.0, 1.3, 0.7][round % 3];
            let k = 1 + (rng.next_u64() % 300) as usize;
            let mut all: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
            apply_repeat_penalty(&mut all, &history, penalty);
            all.sort_unstable_by(by_rank);
            all.truncate(k);
            let mut got = Vec::new();
            top_k(&logits, &history, penalty, k, &mut got);
            got.sort_unstable_by(by_rank);
            assert_eq!(got, all, "n {n} k {k} penalty {penalty}");
        }
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
