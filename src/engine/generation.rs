//! Generation: sampling tokens one step at a time over a sequence, with stop strings, limits and
//! text released as whole UTF-8 characters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerParams};
use crate::text_stream::TextStream;

use super::sequence::{ContextShift, Sequence, SequenceOptions};
use super::{lock, Model};

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// None: until end of generation or the context is full.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

/// One step of a generation.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A generated token and the text it releases (possibly empty while a UTF-8 character or a
    /// possible stop string is incomplete).
    Token { id: u32, text: String },
    /// Generation is over. `text` is what was still held back; `token` is the end-of-generation
    /// token if one ended it.
    End { text: String, token: Option<u32>, reason: EndReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    EndOfGeneration,
    MaxTokens,
    Stop,
    ContextFull,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::EndOfGeneration => "eog",
            EndReason::MaxTokens => "maxTokens",
            EndReason::Stop => "stop",
            EndReason::ContextFull => "contextFull",
        }
    }
}

/// A generation in progress over a sequence: its sampler, text stream and limits. Its steps are
/// computed by the model's scheduler, batched with other sequences' (`Scheduler::submit`), or
/// alone with `next` (tests, and the reference the batched steps are compared with).
pub struct Generation {
    model: Arc<Model>,
    sequence: Arc<Mutex<Sequence>>,
    sampler: Sampler,
    stream: TextStream,
    params: GenerateParams,
    prompt_len: usize,
    generated: usize,
    /// Set once generation is over; later calls report it again.
    ended: Option<EndReason>,
    /// Whether it holds one of the scheduler's sequence slots.
    pub(crate) has_slot: bool,
    /// When the generation was created, and when it produced its first token: the scheduler
    /// paces a prompt only beside streams that were already producing tokens when it came.
    pub(crate) created: Instant,
    pub(crate) first_token_at: Option<Instant>,
    /// The next step, computed by the scheduler while the caller was taking the last one (see
    /// `scheduler`'s look-ahead). A token here is already pushed to the sequence: dropping the
    /// generation before the caller takes it takes the token back.
    pub(crate) ahead: Option<Result<Step>>,
}

/// What a step needs before sampling.
pub(crate) enum Prepared {
    /// Nothing to evaluate: the step's answer.
    Done(Step),
    /// The sequence has tokens to evaluate; the last one's logits are sampled.
    Evaluate,
}

impl Generation {
    /// Appends `prompt` to `sequence` and prepares to generate after it. The sequence must not
    /// be in use by another generation.
    pub fn new(
        model: Arc<Model>,
        sequence: Arc<Mutex<Sequence>>,
        prompt: &[u32],
        params: GenerateParams,
    ) -> Result<Self> {
        if model.is_disposed() {
            return Err(Error::Disposed);
        }
        params.sampler.validate()?;
        model.check_tokens(prompt)?;
        {
            let mut seq = lock(&sequence);
            if seq.busy {
                return Err(Error::SessionBusy);
            }
            if seq.tokens().is_empty() && prompt.is_empty() {
                return Err(Error::invalid_option("prompt", "must hold at least one token"));
            }
            let held = seq.tokens().len() + prompt.len();
            let room = match seq.context_shift() {
                ContextShift::Off => seq.context(),
                ContextShift::Keep(keep) => seq.context() - keep + seq.tokens().len().min(keep),
            };
            if prompt.len() > room || (seq.context_shift() == ContextShift::Off && held > seq.context()) {
                return Err(Error::ContextFull { needed: held, context_size: seq.context() });
            }
            seq.push(prompt);
            seq.busy = true;
        }
        model.counters.generations.fetch_add(1, Ordering::Relaxed);
        Ok(Generation {
            sampler: Sampler::new(params.sampler.clone()),
            stream: TextStream::new(params.stop.clone()),
            prompt_len: prompt.len(),
            generated: 0,
            ended: None,
            params,
            model,
            sequence,
            has_slot: false,
            created: Instant::now(),
            first_token_at: None,
            ahead: None,
        })
    }

    /// A generation on a sequence of its own, dropped with it (`model.generate`).
    pub fn one_shot(model: Arc<Model>, prompt: &[u32], params: GenerateParams) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::invalid_option("prompt", "must hold at least one token"));
        }
        let sequence = Sequence::new(model.clone(), SequenceOptions::default())?;
        Generation::new(model, Arc::new(Mutex::new(sequence)), prompt, params)
    }

    pub(crate) fn sequence(&self) -> &Arc<Mutex<Sequence>> {
        &self.sequence
    }

    /// Computes the next token alone (not batched with other sequences); the first call also
    /// evaluates the prompt. Once generation has ended (including by a stop string, reported
    /// with the token that completed it), calls return `Step::End` with empty text.
    pub fn next(&mut self, cancel: &AtomicBool) -> Result<Step> {
        if self.model.is_disposed() {
            return Err(Error::Disposed);
        }
        let sequence = self.sequence.clone();
        let mut seq = lock(&sequence);
        if let Prepared::Done(step) = self.prepare(&mut seq) {
            return Ok(step);
        }
        let mut logits = Vec::new();
        let (kv, pending) = seq.cache_and_pending();
        let pending = pending.to_vec();
        let result = self.model.evaluate(kv, &pending, pending.len() - 1, cancel, &mut |_, l| logits = l.to_vec());
        seq.recount();
        result?;
        Ok(self.sample(&mut seq, &logits))
    }

    /// Everything a step does before evaluating: report an end, or make sure what the sequence
    /// holds fits its context (shifting it if allowed).
    pub(crate) fn prepare(&mut self, seq: &mut Sequence) -> Prepared {
        if let Some(reason) = self.ended {
            return Prepared::Done(Step::End { text: String::new(), token: None, reason });
        }
        if self.params.max_tokens == Some(self.generated) {
            return Prepared::Done(self.end(None, EndReason::MaxTokens));
        }
        if !seq.fit() {
            return Prepared::Done(self.end(None, EndReason::ContextFull));
        }
        if seq.pending().is_empty() {
            // Everything held is evaluated but the last logits were not kept (a session that
            // ended its last generation at a stop string, or was truncated): evaluate the last
            // token again.
            let n = seq.tokens().len();
            seq.truncate_cache(n - 1);
        }
        Prepared::Evaluate
    }

    /// Whether the next step may be computed before the caller asks for it: it would decode the
    /// one token sampled last, with no context shift (which would change what the sequence
    /// holds even if the token is taken back) and no end to report.
    pub(crate) fn may_look_ahead(&self, seq: &Sequence) -> bool {
        self.ended.is_none()
            && self.params.max_tokens != Some(self.generated)
            && seq.pending().len() == 1
            && seq.tokens().len() <= seq.context()
    }

    /// Samples the next token from the logits of the sequence's last token.
    pub(crate) fn sample(&mut self, seq: &mut Sequence, logits: &[f32]) -> Step {
        let id = self.sampler.sample(logits, seq.tokens());
        if !self.params.ignore_eos && self.model.tokenizer.is_eog(id) {
            return self.end(Some(id), EndReason::EndOfGeneration);
        }
        seq.push(&[id]);
        self.generated += 1;
        self.first_token_at.get_or_insert_with(Instant::now);
        let released = self.stream.push(&self.model.tokenizer.token_bytes(id, false));
        if released.stopped {
            self.ended = Some(EndReason::Stop);
            return Step::Token { id, text: released.text };
        }
        let mut text = released.text;
        // The last token carries whatever is still held, so nothing is lost at the end.
        if self.params.max_tokens == Some(self.generated) {
            text.push_str(&self.stream.finish());
        }
        Step::Token { id, text }
    }

    fn end(&mut self, token: Option<u32>, reason: EndReason) -> Step {
        self.ended = Some(reason);
        Step::End { text: self.stream.finish(), token, reason }
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Why generation ended, once it has.
    pub fn ended(&self) -> Option<EndReason> {
        self.ended
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn generated(&self) -> usize {
        self.generated
    }
}

impl Drop for Generation {
    /// Frees the sequence for the next generation and its slot for another sequence; the last
    /// generation to stop cancels the prefetching done for it.
    fn drop(&mut self) {
        let mut seq = lock(&self.sequence);
        if let Some(Ok(Step::Token { .. })) = self.ahead {
            seq.take_back_last();
        }
        seq.busy = false;
        drop(seq);
        if self.has_slot {
            self.model.scheduler().release_slot();
        }
        if self.model.counters.generations.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.model.weights.idle();
        }
    }
}
