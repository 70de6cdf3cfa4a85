//! The scheduler: one thread per model that runs every generation step as part of a batch.
//! Whatever sequences want a token at the same moment go through one forward pass together, so
//! each weight matrix is read once for all of them (continuous batching: sequences join and leave
//! between passes). A prompt that arrives while others decode is evaluated a few tokens per pass
//! beside their tokens, paced so that a pass takes at most about `PREFILL_SLOWDOWN` times a plain
//! decode pass: a long prompt does not freeze the running streams. Per token the arithmetic does
//! not depend on the batch, so every sequence's logits are bit-identical to running it alone.
//!
//! Steps are answered through a callback (the binding resolves a JS promise with it), so waiting
//! for a token holds no thread. At most `max_sequences` generations hold a slot; more wait, in
//! order of arrival, until one ends, unless they are cancelled first.
//!
//! Look-ahead: once a caller has a token, the scheduler computes that generation's next step
//! without waiting to be asked (at most one step ahead, so a caller that stops asking holds
//! back the generation after one token). The caller's next request is then answered at once:
//! the time a token takes to reach JS and the next request to come back (0.1-0.35 ms on the
//! hosts measured) overlaps the pass instead of adding to it. Closing the generation before it
//! takes that step takes its token back from the sequence, and stops a pass computing only
//! look-aheads within a layer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::model::forward::{ForwardBuffers, SeqInput, CHUNK};

use super::generation::{Generation, Prepared, Step};
use super::lock;
use super::sequence::Sequence;
use super::Model;

/// How much longer than a decode-only pass a pass that also evaluates prompt tokens may take:
/// the running streams' inter-token time grows by about this factor while a prompt arrives.
/// (Qwen2.5-1.5B, 3 streams and a 2000-token prompt, 2 threads: at 2.5 the gaps' median was
/// 2.5x the steady gap and their p99 3.7x, the prompt evaluated at 34 tok/s.)
const PREFILL_SLOWDOWN: f64 = 2.0;

/// Prompt tokens per pass beside decoding streams before their cost has been measured.
const FIRST_PREFILL_TOKENS: usize = 4;

/// How long a pass waits for running generations that have not asked for their next token yet
/// (their callers are between two tokens): a tenth of a decode pass, within these bounds.
/// Joining this pass costs them far less than waiting for the next one, and streams that drift
/// out of step pay a whole pass per token (8 streams of Qwen2.5-0.5B with a fixed 2 ms wait: the
/// JS thread took longer than that to ask for all 8 next tokens, and passes split in two).
const GATHER_WAIT: [Duration; 2] = [Duration::from_millis(2), Duration::from_millis(20)];

/// Called once with the answer to a step.
pub type Reply = Box<dyn FnOnce(Result<Step>) + Send>;

/// One request for a generation's next token.
pub struct StepJob {
    /// None once the generation has been closed.
    pub generation: Arc<Mutex<Option<Generation>>>,
    pub cancel: Arc<AtomicBool>,
    pub reply: Reply,
}

/// A step the scheduler runs: a caller's request, or a look-ahead (`reply` None: the answer is
/// kept in `Generation::ahead` for the caller's next request).
struct Job {
    generation: Arc<Mutex<Option<Generation>>>,
    cancel: Arc<AtomicBool>,
    reply: Option<Reply>,
}

impl Job {
    fn look_ahead(generation: Arc<Mutex<Option<Generation>>>, cancel: Arc<AtomicBool>) -> Job {
        Job { generation, cancel, reply: None }
    }
}

enum Request {
    Step(StepJob),
    /// Something changed that a waiting job may be waiting for (a slot freed, a job cancelled).
    Wake,
}

pub struct Scheduler {
    tx: Sender<Request>,
    free_slots: Mutex<usize>,
    max_sequences: usize,
}

impl Scheduler {
    /// Starts the model's scheduler thread. It holds the model weakly: it ends when the model is
    /// dropped (which drops the sender), and steps in flight keep the model alive themselves.
    pub(super) fn start(model: Weak<Model>, max_sequences: usize) -> Scheduler {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("chord-scheduler".into())
            .spawn(move || run(&model, &rx))
            .expect("spawning the scheduler thread");
        Scheduler { tx, free_slots: Mutex::new(max_sequences), max_sequences }
    }

    /// Queues a step; `job.reply` is called from the scheduler thread when it is done.
    pub fn submit(&self, job: StepJob) {
        if let Err(crossbeam_channel::SendError(Request::Step(job))) = self.tx.send(Request::Step(job)) {
            (job.reply)(Err(Error::Disposed));
        }
    }

    /// Makes the scheduler look at its queue again (after a cancel).
    pub fn wake(&self) {
        let _ = self.tx.send(Request::Wake);
    }

    fn try_take_slot(&self) -> bool {
        let mut free = lock(&self.free_slots);
        let took = *free > 0;
        if took {
            *free -= 1;
        }
        took
    }

    /// Generations holding a slot: running, whether or not they are asking for a token now.
    fn slots_held(&self) -> usize {
        self.max_sequences - *lock(&self.free_slots)
    }

    pub(crate) fn release_slot(&self) {
        *lock(&self.free_slots) += 1;
        self.wake();
    }
}

fn run(model: &Weak<Model>, rx: &Receiver<Request>) {
    let mut active: Vec<Job> = Vec::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    // The model's spare buffers, taken while there is work and given back when there is none.
    let mut buffers: Option<ForwardBuffers> = None;
    // The logits of each sequence of a pass, kept from pass to pass: at 150k-token vocabularies
    // a fresh vector per sequence and token is 600 KB mapped and faulted in every time.
    let mut logits: Vec<Vec<f32>> = Vec::new();
    let mut pacing = Pacing::default();
    loop {
        // Block only when nothing can run.
        let first = if active.is_empty() {
            match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => break,
            }
        } else {
            None
        };
        for request in first.into_iter().chain(rx.try_iter()) {
            if let Request::Step(job) = request {
                receive(job, &mut active, &mut waiting);
            }
        }
        let Some(model) = model.upgrade() else { break };
        drop_stopped(&model, &mut active);
        drop_stopped(&model, &mut waiting);
        admit(&model, &mut waiting, &mut active);
        if active.is_empty() {
            if let Some(b) = buffers.take() {
                model.give_back_buffers(b);
            }
            continue;
        }
        // Wait briefly for running generations whose callers are between two tokens. Those whose
        // next step is computed ahead are waited for too: their request, answered at once,
        // brings the step after it into this pass (otherwise streams whose requests arrive a
        // little apart would each take a pass of their own).
        let deadline = Instant::now() + pacing.gather_wait();
        while active.len() < model.scheduler().slots_held() {
            match rx.recv_deadline(deadline) {
                Ok(Request::Step(job)) => receive(job, &mut active, &mut waiting),
                Ok(Request::Wake) => {}
                Err(_) => break,
            }
            admit(&model, &mut waiting, &mut active);
        }
        drop_stopped(&model, &mut active);
        let running = model.scheduler().slots_held();
        let b = buffers.get_or_insert_with(|| model.take_buffers());
        step(&model, &mut active, running, b, &mut logits, &mut pacing);
    }
    for job in active.into_iter().chain(waiting) {
        if let Some(reply) = job.reply {
            reply(Err(Error::Disposed));
        }
    }
}

/// Takes a caller's request: answered at once from a look-ahead that has finished, given to one
/// that is still to run, or queued.
fn receive(job: StepJob, active: &mut Vec<Job>, waiting: &mut VecDeque<Job>) {
    let StepJob { generation, cancel, reply } = job;
    if !cancel.load(Ordering::Relaxed) {
        let mut slot = lock(&generation);
        // (A cancelled generation or a disposed model is answered by `drop_stopped` instead.)
        let ahead = slot.as_mut().filter(|g| !g.model().is_disposed()).and_then(|g| g.ahead.take());
        if let Some(answer) = ahead {
            let look_ahead = matches!(answer, Ok(Step::Token { .. }))
                && slot.as_ref().is_some_and(|g| g.may_look_ahead(&lock(g.sequence())));
            // As in `step`: a caller that sees the end sees the sequence freed.
            let finished = if ends_generation(&answer) { slot.take() } else { None };
            drop(slot);
            drop(finished);
            reply(answer);
            if look_ahead {
                active.push(Job::look_ahead(generation, cancel));
            }
            return;
        }
    }
    if let Some(ahead) = active.iter_mut().find(|j| j.reply.is_none() && Arc::ptr_eq(&j.generation, &generation)) {
        ahead.reply = Some(reply);
        return;
    }
    waiting.push_back(Job { generation, cancel, reply: Some(reply) });
}

/// Answers the jobs of a disposed model with `Disposed` and cancelled ones with `Aborted`, and
/// drops their generations.
fn drop_stopped<C>(model: &Model, jobs: &mut C)
where
    C: Default + Extend<Job> + IntoIterator<Item = Job>,
{
    let disposed = model.is_disposed();
    let (stopped, kept): (Vec<Job>, Vec<Job>) =
        std::mem::take(jobs).into_iter().partition(|j| disposed || j.cancel.load(Ordering::Relaxed));
    jobs.extend(kept);
    for job in stopped {
        let generation = lock(&job.generation).take();
        drop(generation);
        if let Some(reply) = job.reply {
            reply(Err(if disposed { Error::Disposed } else { Error::Aborted }));
        }
    }
}

/// Moves waiting jobs whose generation holds or can take a slot into `active`, in order.
fn admit(model: &Arc<Model>, waiting: &mut VecDeque<Job>, active: &mut Vec<Job>) {
    let mut still = VecDeque::new();
    for job in waiting.drain(..) {
        let admitted = match lock(&job.generation).as_mut() {
            None => true, // closed: answered by `step`
            Some(g) => {
                g.has_slot || {
                    g.has_slot = model.scheduler().try_take_slot();
                    g.has_slot
                }
            }
        };
        if admitted {
            active.push(job);
        } else {
            still.push_back(job);
        }
    }
    *waiting = still;
}

/// Whether an answer is the generation's last: an end or an error. The generation is then
/// dropped before the caller sees the answer, so that its sequence is free by then.
fn ends_generation(answer: &Result<Step>) -> bool {
    matches!(answer, Err(_) | Ok(Step::End { .. }))
}

/// What a pass did for one job.
enum Outcome {
    /// Its prompt is not finished: it stays active.
    Running,
    /// Its answer, for the caller; with whether to look ahead to the next step.
    Answer(Result<Step>, bool),
    /// A look-ahead's answer, kept in the generation.
    Parked,
}

/// One forward pass over every active job that needs one, and the answers of those whose
/// token is ready.
/// `running` counts every generation holding a slot, including those between two tokens: the
/// pacing keeps room for them.
fn step(
    model: &Arc<Model>,
    active: &mut Vec<Job>,
    running: usize,
    buffers: &mut ForwardBuffers,
    logits: &mut Vec<Vec<f32>>,
    pacing: &mut Pacing,
) {
    let mut generations: Vec<MutexGuard<Option<Generation>>> = active.iter().map(|j| lock(&j.generation)).collect();
    let sequences: Vec<Option<Arc<Mutex<Sequence>>>> =
        generations.iter().map(|g| g.as_ref().map(|g| g.sequence().clone())).collect();
    let mut seqs: Vec<Option<MutexGuard<Sequence>>> = sequences.iter().map(|s| s.as_deref().map(lock)).collect();
    let mut answers: Vec<Option<Result<Step>>> = (0..active.len()).map(|_| None).collect();

    // What each job needs: an answer without evaluating, or tokens through the pass.
    let mut takes = vec![0usize; active.len()];
    let mut prefills = Vec::new();
    for (i, (g, seq)) in generations.iter_mut().zip(&mut seqs).enumerate() {
        let (Some(g), Some(seq)) = (g.as_mut(), seq.as_mut()) else {
            answers[i] = Some(Err(Error::Aborted));
            continue;
        };
        match g.prepare(seq) {
            Prepared::Done(step) => answers[i] = Some(Ok(step)),
            Prepared::Evaluate if seq.pending().len() == 1 => takes[i] = 1,
            Prepared::Evaluate => prefills.push(i),
        }
    }
    let decoding = takes.iter().sum::<usize>();
    // Prompt tokens share what the pacing allows, oldest job first; the first always gets some.
    // Pacing protects streams that were producing tokens when the oldest prompt arrived; streams
    // that arrived with it (requests that came together) wait for it like llama.cpp's batch.
    let oldest_prompt = prefills.iter().filter_map(|&i| generations[i].as_ref().map(|g| g.created)).min();
    let protected = oldest_prompt.is_some_and(|arrived| {
        generations.iter().zip(&takes).any(|(g, &take)| {
            take == 1 && g.as_ref().and_then(|g| g.first_token_at).is_some_and(|first| first < arrived)
        })
    });
    let mut budget = if protected {
        pacing.prefill_budget(decoding.max(running.saturating_sub(prefills.len())))
    } else {
        CHUNK.saturating_sub(decoding).max(1)
    };
    for &i in &prefills {
        let pending = seqs[i].as_ref().map_or(0, |s| s.pending().len());
        takes[i] = pending.min(budget);
        budget -= takes[i];
    }
    let prefilled = takes.iter().sum::<usize>() - decoding;

    let mut look_ahead = vec![false; active.len()];
    if takes.iter().any(|&t| t > 0) {
        let started = Instant::now();
        let mut owners = Vec::new();
        let mut inputs: Vec<SeqInput> = Vec::new();
        for (i, seq) in seqs.iter_mut().enumerate() {
            let (Some(seq), take) = (seq.as_mut(), takes[i]) else { continue };
            if take == 0 {
                continue;
            }
            let (kv, pending) = seq.cache_and_pending();
            let done = take == pending.len();
            owners.push(i);
            inputs.push(SeqInput { kv, tokens: &pending[..take], logits_from: if done { take - 1 } else { take } });
        }
        if logits.len() < inputs.len() {
            logits.resize_with(inputs.len(), Vec::new);
        }
        // A pass of look-aheads alone stops once all of them are cancelled (their generations
        // closed): closing waits for it.
        let only_look_aheads: Vec<&AtomicBool> = if owners.iter().all(|&i| active[i].reply.is_none()) {
            owners.iter().map(|&i| &*active[i].cancel).collect()
        } else {
            Vec::new()
        };
        let cancelled = || !only_look_aheads.is_empty() && only_look_aheads.iter().all(|c| c.load(Ordering::Relaxed));
        let mut got = vec![false; inputs.len()];
        let result = model.transformer().forward(buffers, &mut inputs, CHUNK, &cancelled, &mut |s, _, l| {
            logits[s].clear();
            logits[s].extend_from_slice(l);
            got[s] = true;
        });
        drop(inputs);
        pacing.record(decoding, prefilled, started.elapsed().as_secs_f64());
        model.counters.passes.fetch_add(1, Ordering::Relaxed);
        model.counters.pass_tokens.fetch_add((decoding + prefilled) as u64, Ordering::Relaxed);
        for (k, &i) in owners.iter().enumerate() {
            let (Some(g), Some(seq)) = (generations[i].as_mut(), seqs[i].as_mut()) else { continue };
            seq.recount();
            answers[i] = match (&result, got[k]) {
                (Err(e), _) => Some(Err(e.duplicate())),
                (Ok(()), true) => Some(Ok(g.sample(seq, &logits[k]))),
                (Ok(()), false) => None, // prompt not finished: stays active
            };
            look_ahead[i] = active[i].reply.is_some()
                && !active[i].cancel.load(Ordering::Relaxed)
                && matches!(answers[i], Some(Ok(Step::Token { .. })))
                && g.may_look_ahead(seq);
        }
    }

    // Answer, and drop the generations that are over (their sequences unlocked first: dropping
    // a generation locks its sequence). A look-ahead's answer, even an end, stays with its
    // generation until the caller asks for it or closes the generation.
    drop(seqs);
    let mut finished = Vec::new();
    let mut outcomes = Vec::with_capacity(active.len());
    for (i, g) in generations.iter_mut().enumerate() {
        outcomes.push(match answers[i].take() {
            None => Outcome::Running,
            Some(answer) if active[i].reply.is_none() => {
                if let Some(g) = g.as_mut() {
                    g.ahead = Some(answer);
                }
                Outcome::Parked
            }
            Some(answer) => {
                if ends_generation(&answer) {
                    finished.push(g.take());
                }
                Outcome::Answer(answer, look_ahead[i])
            }
        });
    }
    drop(generations);
    drop(sequences);
    drop(finished); // before answering: a caller that sees the end sees the sequence freed
    for (mut job, outcome) in std::mem::take(active).into_iter().zip(outcomes) {
        match outcome {
            Outcome::Running => active.push(job),
            Outcome::Parked => {}
            Outcome::Answer(answer, look_ahead) => {
                if let Some(reply) = job.reply.take() {
                    reply(answer);
                }
                if look_ahead {
                    active.push(Job::look_ahead(job.generation, job.cancel));
                }
            }
        }
    }
}

/// Measured pass times, to size the prompt part of passes that also decode.
#[derive(Default)]
struct Pacing {
    /// Seconds of a pass that only decodes (moving average).
    decode_pass: f64,
    /// Seconds each prompt token adds to a pass (moving average).
    per_prompt_token: f64,
}

impl Pacing {
    fn prefill_budget(&self, decoding: usize) -> usize {
        if decoding == 0 {
            return CHUNK;
        }
        if self.decode_pass == 0.0 || self.per_prompt_token == 0.0 {
            return FIRST_PREFILL_TOKENS;
        }
        let tokens = (PREFILL_SLOWDOWN - 1.0) * self.decode_pass / self.per_prompt_token;
        (tokens as usize).clamp(1, CHUNK.saturating_sub(decoding).max(1))
    }

    fn gather_wait(&self) -> Duration {
        Duration::from_secs_f64(self.decode_pass / 10.0).clamp(GATHER_WAIT[0], GATHER_WAIT[1])
    }

    fn record(&mut self, decoding: usize, prompt_tokens: usize, seconds: f64) {
        let average = |old: f64, new: f64| if old == 0.0 { new } else { 0.8 * old + 0.2 * new };
        if prompt_tokens == 0 {
            self.decode_pass = average(self.decode_pass, seconds);
        } else if decoding == 0 {
            self.per_prompt_token = average(self.per_prompt_token, seconds / prompt_tokens as f64);
        } else if self.decode_pass > 0.0 {
            let extra = (seconds - self.decode_pass).max(0.0) / prompt_tokens as f64;
            self.per_prompt_token = average(self.per_prompt_token, extra);
        }
    }
}
