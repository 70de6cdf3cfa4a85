//! The engine's tests over tiny models written by `testutil`: paging, chunking, generation,
//! perplexity, and sequences batched by the scheduler.

use super::perplexity::log_softmax_at;
use super::*;
use crate::model::forward::ForwardBuffers;
use crate::pager::LoadMethod;
use crate::sampler::SamplerParams;
use std::path::Path;
use std::sync::Arc;

use crate::testutil::{write_tiny_llama, write_tiny_model, TempPath, TinyModel};

fn load(path: &Path, opts: LoadOptions) -> Result<Model> {
    Model::load(path, &LoadOptions { threads: Some(2), ..opts }, &AtomicBool::new(false), &mut |_, _| {})
}

fn paged(budget: u64, method: LoadMethod) -> LoadOptions {
    LoadOptions {
        memory_budget: Some(budget),
        paging: Paging::Always,
        paging_method: Some(method),
        prefetch_layers: Some(1),
        ..LoadOptions::default()
    }
}

const IDS: [u32; 12] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33];

#[test]
fn paged_logits_are_bit_identical_to_resident_and_stay_in_budget() {
    let file = TempPath::new("paged");
    // Q4_0 matrices: the units resident for good are rearranged where the kernels have a
    // layout, and ffn_down's rows of 256 values are long enough for that to move their bytes.
    let spec = TinyModel { mixed_types: true, q4_0: true, feed_forward: 256, ..TinyModel::llama(6) };
    write_tiny_model(file.path(), &spec);
    let resident = load(file.path(), LoadOptions { copy_weights: Some(false), ..LoadOptions::default() }).unwrap();
    let expected = resident.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
    let layer = resident.weights.stats().resident_bytes / 7; // six layers and a head of similar size
    let rearranged = crate::quant::has_interleaved_kernel(crate::tensor::GgmlType::Q4_0);
    for method in [LoadMethod::Read, LoadMethod::Map] {
        for budget in [layer * 2, layer * 3, layer * 5] {
            let model = load(file.path(), paged(budget, method)).unwrap();
            assert!(model.info.paged);
            // Map: passes while the copying thread copies the units resident for good, then after.
            let got = model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
            assert!(got == expected, "{method:?} budget {budget}: logits differ");
            wait_for_the_copy(&model);
            let got = model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
            assert!(got == expected, "{method:?} budget {budget}: logits differ once copied");
            let s = model.weight_stats();
            if budget == layer * 5 {
                // Map copies the units it pins after the load; Read reads them so.
                assert_eq!(s.copied, rearranged && method == LoadMethod::Map, "{method:?}: {s:?}");
            }
            assert!(s.peak_resident_bytes <= budget, "{method:?}: peak {} > budget {budget}", s.peak_resident_bytes);
            assert!(s.layer_loads > 0 && s.bytes_read > 0);
            // Five layers' budget pins some units, which are then hits on every pass; at
            // the smaller budgets a hit needs the prefetch to win a race with compute.
            if budget == layer * 5 {
                assert!(s.layer_hits > 0, "{method:?} budget {budget}: {s:?}");
            }
        }
    }
}

#[test]
fn copied_weights_give_the_mapped_weights_logits_bit_for_bit() {
    let file = TempPath::new("copied");
    let spec = TinyModel { mixed_types: true, biases: true, ..TinyModel::llama(3) };
    write_tiny_model(file.path(), &spec);
    let mapped = load(file.path(), LoadOptions { copy_weights: Some(false), ..LoadOptions::default() }).unwrap();
    let mut reported = (0, 0);
    let copied = Model::load(
        file.path(),
        &LoadOptions { threads: Some(2), copy_weights: Some(true), ..LoadOptions::default() },
        &AtomicBool::new(false),
        &mut |done, total| reported = (done, total),
    )
    .unwrap();
    assert!(reported.0 > 0 && reported.0 == reported.1, "progress {reported:?}");
    let logits = |m: &Model| m.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
    assert!(logits(&copied) == logits(&mapped));
    assert!(copied.weight_stats().copied && !mapped.weight_stats().copied);
    assert_eq!(WeightStats { copied: false, copied_bytes: 0, ..copied.weight_stats() }, mapped.weight_stats());
    let cancelled = Model::load(
        file.path(),
        &LoadOptions { copy_weights: Some(true), ..LoadOptions::default() },
        &AtomicBool::new(true),
        &mut |_, _| {},
    );
    assert_eq!(cancelled.err().map(|e| e.code()), Some("ABORT_ERR"));
}

#[test]
fn the_default_copy_gives_the_same_logits_as_the_whole_copy_and_the_mapping() {
    let file = TempPath::new("partly-copied");
    let spec = TinyModel { mixed_types: true, biases: true, q4_0: true, ..TinyModel::llama(3) };
    write_tiny_model(file.path(), &spec);
    let with = |copy_weights| {
        let mut reported = (0, 0);
        let opts = LoadOptions { threads: Some(2), copy_weights, ..LoadOptions::default() };
        let model = Model::load(file.path(), &opts, &AtomicBool::new(false), &mut |d, t| reported = (d, t)).unwrap();
        assert!(reported.0 > 0 && reported.0 == reported.1, "{copy_weights:?}: progress {reported:?}");
        model
    };
    let (mapped, all, default) = (with(Some(false)), with(Some(true)), with(None));
    wait_for_the_copy(&default);
    let logits = |m: &Model| m.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
    assert!(logits(&all) == logits(&mapped) && logits(&default) == logits(&mapped));
    let (mapped, all, default) = (mapped.weight_stats(), all.weight_stats(), default.weight_stats());
    assert!(!mapped.copied && mapped.copied_bytes == 0);
    assert!(all.copied && all.copied_bytes >= all.resident_bytes);
    if crate::quant::has_interleaved_kernel(crate::tensor::GgmlType::Q4_0) {
        // Every tensor is under 32 MiB: the default copies all but token_embd, and the tied head
        // apart from it, the size of token_embd's place in the whole copy.
        assert!(default.copied && default.copied_bytes == all.copied_bytes);
    } else {
        assert!(!default.copied && default.copied_bytes == 0);
    }
}

/// Waits until the default copy, made after the load, is made.
fn wait_for_the_copy(model: &Model) {
    let start = std::time::Instant::now();
    while model.weight_stats().copying {
        assert!(start.elapsed().as_secs() < 30, "the copy takes over 30 s");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn passes_while_the_default_copy_is_made_give_the_mapped_logits() {
    let file = TempPath::new("being-copied");
    let spec = TinyModel { mixed_types: true, biases: true, q4_0: true, ..TinyModel::llama(3) };
    write_tiny_model(file.path(), &spec);
    let mapped = load(file.path(), LoadOptions { copy_weights: Some(false), ..LoadOptions::default() }).unwrap();
    let expected = mapped.logits(&IDS, 0, &AtomicBool::new(false)).unwrap();
    let whole = load_partly_copied(file.path(), u64::MAX).weight_stats().copied_bytes;
    if whole == 0 {
        return; // Nothing is rearranged here (no interleaved kernels): nothing is copied.
    }
    let mut copied = Vec::new();
    // Stops every 64th of the copy: several fall inside the tied output head, the last part,
    // whose rows made are read from the copy (embeddings too) and the others from the file.
    for bytes in (0..=64).map(|i| whole * i / 64) {
        let model = load_partly_copied(file.path(), bytes);
        assert!(model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap() == expected, "copy stopped at {bytes}");
        copied.push(model.weight_stats().copied_bytes);
    }
    // Each stop left a different share copied, the first none and the last all.
    assert!(copied[0] < whole && copied.windows(2).all(|w| w[0] < w[1]) && copied[64] == whole, "{copied:?}");
}

fn load_partly_copied(path: &Path, bytes: u64) -> Model {
    let model = Model::load_partly_copied(path, bytes).unwrap();
    assert!(!model.weight_stats().copying);
    model
}

#[test]
fn inspect_reports_what_load_does_and_the_smallest_budget_pages() {
    let file = TempPath::new("inspect");
    write_tiny_llama(file.path(), 3);
    let opts = LoadOptions { threads: Some(2), context_size: Some(64), ..LoadOptions::default() };
    let (info, threads) = Model::inspect(file.path(), &opts).unwrap();
    let model = load(file.path(), opts).unwrap();
    assert_eq!(format!("{info:?}"), format!("{:?}", model.info));
    assert_eq!(threads, model.threads());
    let min = info.min_budget_bytes;
    assert!(min > 0 && min < info.weight_bytes);
    let paged_at_min = load(file.path(), paged(min, LoadMethod::Read)).unwrap();
    assert!(
        paged_at_min.logits(&IDS, 0, &AtomicBool::new(false)).unwrap()
            == model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap()
    );
    let below =
        load(file.path(), paged(min - 1, LoadMethod::Read)).err().expect("a budget below the largest unit fails");
    assert_eq!(below.code(), "ERR_INVALID_OPTION");
}

#[test]
fn auto_paging_only_when_the_weights_do_not_fit() {
    let file = TempPath::new("auto");
    write_tiny_llama(file.path(), 2);
    let total = load(file.path(), LoadOptions::default()).unwrap().info.weight_bytes;
    let fits = LoadOptions { memory_budget: Some(total), ..LoadOptions::default() };
    assert!(!load(file.path(), fits).unwrap().info.paged);
    let tight = LoadOptions { memory_budget: Some(total - 1), ..LoadOptions::default() };
    assert!(load(file.path(), tight).unwrap().info.paged);
    let never = LoadOptions { memory_budget: Some(1), paging: Paging::Never, ..LoadOptions::default() };
    assert!(!load(file.path(), never).unwrap().info.paged);
    let too_small = load(file.path(), paged(1000, LoadMethod::Read)).err().unwrap();
    assert_eq!(too_small.code(), "ERR_INVALID_OPTION");
    let always_without_budget = LoadOptions { paging: Paging::Always, ..LoadOptions::default() };
    assert_eq!(load(file.path(), always_without_budget).err().unwrap().code(), "ERR_INVALID_OPTION");
}

#[test]
fn a_read_error_while_paging_is_an_error() {
    let file = TempPath::new("ioerr");
    write_tiny_llama(file.path(), 4);
    let total = load(file.path(), LoadOptions::default()).unwrap().info.weight_bytes;
    // MADV_POPULATE_READ reports the failure that a plain access would turn into SIGBUS;
    // kernels without it (before 5.14) cannot take this test in Map mode.
    let methods: &[LoadMethod] =
        if cfg!(target_os = "linux") { &[LoadMethod::Read, LoadMethod::Map] } else { &[LoadMethod::Read] };
    for &method in methods {
        write_tiny_llama(file.path(), 4);
        let model = load(file.path(), paged(total / 3, method)).unwrap();
        // Cut the file so the layers that stream can no longer be read.
        let len = std::fs::metadata(file.path()).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(file.path()).unwrap().set_len(len / 3).unwrap();
        let err = model.logits(&IDS, 0, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(err.code(), "ERR_IO", "{method:?}: {err}");
    }
}

#[test]
fn generation_ends_at_stop_strings_and_max_tokens() {
    let file = TempPath::new("gen");
    write_tiny_llama(file.path(), 2);
    let model = Arc::new(load(file.path(), LoadOptions::default()).unwrap());
    let greedy = SamplerParams { temperature: 0.0, ..SamplerParams::default() };
    let params =
        |max, stop: Vec<String>| GenerateParams { max_tokens: max, sampler: greedy.clone(), stop, ignore_eos: true };
    let run = |p: GenerateParams| {
        let mut g = Generation::one_shot(model.clone(), &IDS, p).unwrap();
        let (mut text, mut end) = (String::new(), None);
        for _ in 0..100 {
            match g.next(&AtomicBool::new(false)).unwrap() {
                Step::Token { text: t, .. } => text.push_str(&t),
                Step::End { text: t, reason, .. } => {
                    text.push_str(&t);
                    end = Some(reason);
                    break;
                }
            }
        }
        (text, end, g.generated())
    };
    let (free, end, n) = run(params(Some(20), vec![]));
    assert_eq!((end, n), (Some(EndReason::MaxTokens), 20));
    let stop: String = free.chars().skip(3).take(2).collect();
    let (stopped, end, _) = run(params(Some(20), vec![stop.clone()]));
    assert_eq!(end, Some(EndReason::Stop));
    assert_eq!(stopped, free[..free.find(&stop).unwrap()]);
    let cancelled = AtomicBool::new(true);
    let mut g = Generation::one_shot(model.clone(), &IDS, params(None, vec![])).unwrap();
    assert_eq!(g.next(&cancelled).unwrap_err().code(), "ABORT_ERR");
}

#[test]
fn perplexity_follows_the_protocol() {
    let file = TempPath::new("ppl");
    write_tiny_llama(file.path(), 2);
    let model = load(file.path(), LoadOptions::default()).unwrap();
    let text = "the quick brown fox jumps over the lazy dog";
    let cancel = AtomicBool::new(false);
    let r = model.perplexity(text, &PerplexityOptions { window: 8, max_tokens: None }, &cancel).unwrap();
    // 43 byte tokens, no BOS for this vocabulary: 5 windows of 8, 7 scored each.
    assert_eq!(r.tokens, 35);
    assert!((r.perplexity - r.mean_nll.exp()).abs() < 1e-9);
    // The same number from logits(): mean of -log softmax over the first window.
    let ids = model.tokenizer.encode(text, false, false);
    let logits = model.logits(&ids[..8], 0, &cancel).unwrap();
    let v = model.config.n_vocab;
    let nll: f64 = (0..7).map(|p| -log_softmax_at(&logits[p * v..(p + 1) * v], ids[p + 1] as usize)).sum();
    let one = model.perplexity(text, &PerplexityOptions { window: 8, max_tokens: Some(8) }, &cancel).unwrap();
    assert_eq!(one.tokens, 7);
    assert!((one.mean_nll - nll / 7.0).abs() < 1e-9);
    let err = model.perplexity("ab", &PerplexityOptions { window: 8, max_tokens: None }, &cancel).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
}

/// Logits of every position of `ids`, one token at a time through `forward`.
fn sequential_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut kv = model.new_cache(model.info.context_size).unwrap();
    let mut out = Vec::new();
    for &t in ids {
        model.evaluate(&mut kv, &[t], 0, &AtomicBool::new(false), &mut |_, l| out.extend_from_slice(l)).unwrap();
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn prompt(len: usize) -> Vec<u32> {
    let mut rng = crate::sampler::Rng::new(len as u64 + 7);
    (0..len).map(|_| (rng.next_f64() * 256.0) as u32 % 256).collect()
}

/// Every architecture variant the tiny model writer knows, with room for several chunks.
fn variants() -> Vec<TinyModel> {
    let base = TinyModel { context: 200, layers: 3, ..TinyModel::llama(3) };
    vec![
        base.clone(),
        TinyModel { mixed_types: true, ..base.clone() },
        TinyModel { arch: "qwen2", mixed_types: true, biases: true, ..base.clone() },
        TinyModel { arch: "gemma3", mixed_types: true, ..base.clone() },
        TinyModel { arch: "gemma3", biases: true, ..base },
    ]
}

#[test]
fn batched_logits_are_bit_identical_to_token_by_token() {
    for spec in variants() {
        let file = TempPath::new("batch");
        write_tiny_model(file.path(), &spec);
        let model = load(file.path(), LoadOptions::default()).unwrap();
        let ids = prompt(200);
        let expected = sequential_logits(&model, &ids);
        let v = model.config.n_vocab;
        for len in [1, 2, 5, 63, 64, 65, 127, 129, 200] {
            let got = model.logits(&ids[..len], 0, &AtomicBool::new(false)).unwrap();
            assert!(bits(&got) == bits(&expected[..len * v]), "{spec:?}: {len} tokens differ");
            let from = len / 2;
            let tail = model.logits(&ids[..len], from, &AtomicBool::new(false)).unwrap();
            assert!(bits(&tail) == bits(&expected[from * v..len * v]), "{spec:?}: {len} tokens from {from}");
        }
    }
}

#[test]
fn any_chunking_and_starting_position_give_the_same_logits() {
    for spec in variants() {
        let file = TempPath::new("chunks");
        write_tiny_model(file.path(), &spec);
        let model = load(file.path(), LoadOptions::default()).unwrap();
        let ids = prompt(90);
        let expected = sequential_logits(&model, &ids);
        let v = model.config.n_vocab;
        for chunk in [2, 3, 7, 16, 64, 90] {
            // Two calls: the second starts at a position the first left in the cache.
            for split in [0, 1, 10, 45] {
                let mut kv = model.new_cache(model.info.context_size).unwrap();
                let mut buffers = ForwardBuffers::default();
                let mut got = vec![0.0f32; ids.len() * v];
                let never = || false;
                for (start, part) in [(0, &ids[..split]), (split, &ids[split..])] {
                    let mut sink = |_, i: usize, l: &[f32]| got[(start + i) * v..][..v].copy_from_slice(l);
                    let mut input = [SeqInput { kv: &mut kv, tokens: part, logits_from: 0 }];
                    model.transformer().forward(&mut buffers, &mut input, chunk, &never, &mut sink).unwrap();
                }
                assert_eq!(kv.len(), ids.len());
                assert!(bits(&got) == bits(&expected), "{spec:?}: chunk {chunk}, split {split}");
            }
        }
    }
}

#[test]
fn paged_batched_logits_are_bit_identical_to_resident_token_by_token() {
    let spec = TinyModel { arch: "qwen2", context: 200, mixed_types: true, biases: true, ..TinyModel::llama(6) };
    let file = TempPath::new("batch-paged");
    write_tiny_model(file.path(), &spec);
    let resident = load(file.path(), LoadOptions::default()).unwrap();
    let ids = prompt(150);
    let expected = sequential_logits(&resident, &ids);
    let layer = resident.weights.stats().resident_bytes / 7;
    for method in [LoadMethod::Read, LoadMethod::Map] {
        let model = load(file.path(), paged(layer * 3, method)).unwrap();
        let got = model.logits(&ids, 0, &AtomicBool::new(false)).unwrap();
        assert!(bits(&got) == bits(&expected), "{method:?}: logits differ");
        // Each layer is fetched once per chunk, not once per token: every fetch is a hit or
        // a load (a prefetched layer that hits counts as both), plus a prefetch or two past
        // the end. Token by token it would be at least 150 x 7.
        let s = model.weight_stats();
        let fetches = ids.len().div_ceil(crate::model::forward::CHUNK) as u64 * 7;
        assert!(s.layer_loads + s.layer_hits <= 2 * fetches + 2, "{method:?}: {s:?}");
    }
}

#[test]
fn generation_after_a_batched_prompt_matches_token_by_token_decoding() {
    let spec = TinyModel { arch: "gemma3", context: 200, mixed_types: true, ..TinyModel::llama(3) };
    let file = TempPath::new("batch-gen");
    write_tiny_model(file.path(), &spec);
    let model = Arc::new(load(file.path(), LoadOptions::default()).unwrap());
    let ids = prompt(70);
    let greedy = SamplerParams { temperature: 0.0, ..SamplerParams::default() };
    let params = GenerateParams { max_tokens: Some(10), sampler: greedy, stop: vec![], ignore_eos: true };
    let mut g = Generation::one_shot(model.clone(), &ids, params).unwrap();
    let mut generated = Vec::new();
    while let Step::Token { id, .. } = g.next(&AtomicBool::new(false)).unwrap() {
        generated.push(id);
    }
    assert_eq!(generated.len(), 10);
    // The same tokens by greedy argmax over token-by-token logits.
    let mut kv = model.new_cache(model.info.context_size).unwrap();
    let mut logits = Vec::new();
    let mut history = ids;
    for &id in &generated {
        for &t in &history[kv.len()..] {
            model.evaluate(&mut kv, &[t], 0, &AtomicBool::new(false), &mut |_, l| logits = l.to_vec()).unwrap();
        }
        let argmax = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)));
        assert_eq!(argmax, Some(id as usize));
        history.push(id);
    }
}

// Sessions and the scheduler.

fn greedy(max: usize) -> GenerateParams {
    let sampler = SamplerParams { temperature: 0.0, ..SamplerParams::default() };
    GenerateParams { max_tokens: Some(max), sampler, stop: vec![], ignore_eos: true }
}

fn sampled(max: usize, seed: u64) -> GenerateParams {
    let sampler =
        SamplerParams { temperature: 0.9, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..SamplerParams::default() };
    GenerateParams { max_tokens: Some(max), sampler, stop: vec![], ignore_eos: true }
}

fn session(model: &Arc<Model>, opts: SequenceOptions) -> Arc<Mutex<Sequence>> {
    Arc::new(Mutex::new(Sequence::new(model.clone(), opts).unwrap()))
}

/// Runs a generation to its end alone (not through the scheduler): its tokens and end reason.
fn run_alone(mut g: Generation) -> (Vec<u32>, EndReason) {
    let mut ids = Vec::new();
    loop {
        match g.next(&AtomicBool::new(false)).unwrap() {
            Step::Token { id, .. } => ids.push(id),
            Step::End { reason, .. } => return (ids, reason),
        }
    }
}

/// What the scheduler answered one generation, step by step.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done(Vec<u32>, EndReason),
    Failed(Vec<u32>, &'static str),
}

/// Runs generations concurrently through the scheduler, each asking for its next token as soon
/// as it has the last; generation `i` is cancelled after `cancel_after[i]` tokens.
fn run_batched(model: &Arc<Model>, gens: Vec<Generation>, cancel_after: &[Option<usize>]) -> Vec<Outcome> {
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<Step>)>();
    let slots: Vec<_> = gens.into_iter().map(|g| Arc::new(Mutex::new(Some(g)))).collect();
    let cancels: Vec<Arc<AtomicBool>> = slots.iter().map(|_| Arc::default()).collect();
    let submit = |i: usize| {
        let tx = tx.clone();
        let reply: Reply = Box::new(move |r| tx.send((i, r)).unwrap());
        model.scheduler().submit(StepJob { generation: slots[i].clone(), cancel: cancels[i].clone(), reply });
    };
    (0..slots.len()).for_each(submit);
    let mut ids = vec![Vec::new(); slots.len()];
    let mut outcomes: Vec<Option<Outcome>> = (0..slots.len()).map(|_| None).collect();
    while outcomes.iter().any(Option::is_none) {
        let (i, r) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a step answered");
        match r {
            Ok(Step::Token { id, .. }) => {
                ids[i].push(id);
                if cancel_after[i] == Some(ids[i].len()) {
                    cancels[i].store(true, Ordering::Relaxed);
                    model.scheduler().wake();
                }
                submit(i);
            }
            Ok(Step::End { reason, .. }) => outcomes[i] = Some(Outcome::Done(std::mem::take(&mut ids[i]), reason)),
            Err(e) => outcomes[i] = Some(Outcome::Failed(std::mem::take(&mut ids[i]), e.code())),
        }
    }
    outcomes.into_iter().map(Option::unwrap).collect()
}

fn tiny(name: &str, spec: TinyModel, opts: LoadOptions) -> (TempPath, Arc<Model>) {
    let file = TempPath::new(name);
    write_tiny_model(file.path(), &spec);
    let model = Arc::new(load(file.path(), opts).unwrap());
    (file, model)
}

fn spec(arch: &'static str) -> TinyModel {
    TinyModel { arch, context: 200, mixed_types: true, biases: arch == "qwen2", ..TinyModel::llama(3) }
}

#[test]
fn sequences_in_one_pass_have_the_logits_they_have_alone() {
    for arch in ["llama", "qwen2", "gemma3"] {
        let (_file, model) = tiny("multi", spec(arch), LoadOptions::default());
        let v = model.config.n_vocab;
        // Sequences at different positions, some with a cached prefix, one decoding a token.
        let histories = [prompt(1), prompt(9), prompt(70), prompt(130)];
        let cached = [0usize, 4, 0, 100];
        let mut caches: Vec<KvCache> = (0..4).map(|_| model.new_cache(200).unwrap()).collect();
        let mut expected = Vec::new();
        for (s, ids) in histories.iter().enumerate() {
            let mut kv = model.new_cache(200).unwrap();
            let mut out = Vec::new();
            model.evaluate(&mut kv, ids, 0, &AtomicBool::new(false), &mut |_, l| out.extend_from_slice(l)).unwrap();
            expected.push(out);
            let never = AtomicBool::new(false);
            model.evaluate(&mut caches[s], &ids[..cached[s]], ids.len(), &never, &mut |_, _| {}).unwrap();
        }
        let mut got: Vec<Vec<f32>> = histories.iter().map(|h| vec![0.0; h.len() * v]).collect();
        let mut inputs: Vec<SeqInput> = caches
            .iter_mut()
            .zip(&histories)
            .zip(cached)
            .map(|((kv, ids), from)| SeqInput { kv, tokens: &ids[from..], logits_from: 0 })
            .collect();
        let mut buffers = ForwardBuffers::default();
        let mut sink = |s: usize, i: usize, l: &[f32]| {
            got[s][(cached[s] + i) * v..][..v].copy_from_slice(l);
        };
        model.transformer().forward(&mut buffers, &mut inputs, 64, &|| false, &mut sink).unwrap();
        for s in 0..4 {
            let from = cached[s] * v;
            assert!(bits(&got[s][from..]) == bits(&expected[s][from..]), "{arch}: sequence {s} differs");
        }
    }
}

#[test]
fn batched_generations_match_each_run_alone_and_abort_leaves_the_others_unchanged() {
    let (_file, model) = tiny("sched", spec("qwen2"), LoadOptions::default());
    let prompts = [prompt(3), prompt(40), prompt(90), prompt(7)];
    let params = |i: usize| if i.is_multiple_of(2) { greedy(20) } else { sampled(20, 7 + i as u64) };
    let alone: Vec<_> =
        (0..4).map(|i| run_alone(Generation::one_shot(model.clone(), &prompts[i], params(i)).unwrap())).collect();
    let gens =
        |m: &Arc<Model>| (0..4).map(|i| Generation::one_shot(m.clone(), &prompts[i], params(i)).unwrap()).collect();
    let together = run_batched(&model, gens(&model), &[None; 4]);
    for i in 0..4 {
        assert_eq!(together[i], Outcome::Done(alone[i].0.clone(), EndReason::MaxTokens), "generation {i}");
    }
    // Cancel one stream after 5 tokens: it fails with ABORT_ERR, the others are unchanged.
    let cancelled = run_batched(&model, gens(&model), &[None, Some(5), None, None]);
    assert_eq!(cancelled[1], Outcome::Failed(alone[1].0[..5].to_vec(), "ABORT_ERR"));
    for i in [0, 2, 3] {
        assert_eq!(cancelled[i], Outcome::Done(alone[i].0.clone(), EndReason::MaxTokens), "generation {i}");
    }
    let stats = model.sequence_stats();
    assert_eq!((stats.sequences, stats.kv_bytes), (0, 0));
}

/// Waits (at most 10 s) until the scheduler has computed the generation's next step unasked.
fn wait_for_look_ahead(slot: &Mutex<Option<Generation>>) {
    let started = std::time::Instant::now();
    while lock(slot).as_ref().is_none_or(|g| g.ahead.is_none()) {
        assert!(started.elapsed().as_secs() < 10, "no look-ahead");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_step_computed_ahead_answers_the_next_request_and_is_taken_back_on_close() {
    let (_file, model) = tiny("look_ahead", spec("llama"), LoadOptions::default());
    let p = prompt(6);
    let (expected, _) = run_alone(Generation::one_shot(model.clone(), &p, greedy(8)).unwrap());
    let s = session(&model, SequenceOptions::default());
    let slot = Arc::new(Mutex::new(Some(Generation::new(model.clone(), s.clone(), &p, greedy(8)).unwrap())));
    let cancel: Arc<AtomicBool> = Arc::default();
    let ask = || {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply: Reply = Box::new(move |r| tx.send(r).unwrap());
        model.scheduler().submit(StepJob { generation: slot.clone(), cancel: cancel.clone(), reply });
        match rx.recv_timeout(std::time::Duration::from_secs(10)).expect("an answer").unwrap() {
            Step::Token { id, .. } => id,
            end => panic!("{end:?}"),
        }
    };
    let mut ids: Vec<u32> = (0..3).map(|_| ask()).collect();
    // The fourth token is sampled (and the third evaluated) before it is asked for...
    wait_for_look_ahead(&slot);
    assert_eq!(lock(&s).tokens().len(), p.len() + 4);
    // ...answers the request, and the fifth is computed next.
    ids.push(ask());
    wait_for_look_ahead(&slot);
    assert_eq!(ids, expected[..4]);
    // Closing takes the fifth back and frees the session at once.
    cancel.store(true, Ordering::Relaxed);
    let closed = lock(&slot).take();
    drop(closed);
    assert_eq!(lock(&s).tokens(), [&p[..], &ids].concat());
    let (rest, _) = run_alone(Generation::new(model.clone(), s.clone(), &[], greedy(4)).unwrap());
    assert_eq!([ids, rest].concat(), expected);
}

#[test]
fn a_session_keeps_its_history_and_evaluates_only_what_is_new() {
    let (_file, model) = tiny("session", spec("llama"), LoadOptions::default());
    let s = session(&model, SequenceOptions::default());
    let (first, second) = (prompt(12), prompt(5));
    let (gen1, _) = run_alone(Generation::new(model.clone(), s.clone(), &first, greedy(6)).unwrap());
    // The cache holds all but the last generated token, which the next step evaluates.
    assert_eq!(lock(&s).tokens().len(), 18);
    assert_eq!(lock(&s).pending().len(), 1);
    let (gen2, _) = run_alone(Generation::new(model.clone(), s.clone(), &second, greedy(6)).unwrap());
    let history: Vec<u32> = [&first[..], &gen1, &second].concat();
    assert_eq!(lock(&s).tokens(), [&history[..], &gen2].concat());
    // The same tokens from scratch.
    let (fresh, _) = run_alone(Generation::one_shot(model.clone(), &history, greedy(6)).unwrap());
    assert_eq!(gen2, fresh);
    let bytes = lock(&s).kv_bytes();
    assert_eq!(bytes, 28 * KvType::F16.bytes_per_position(&model.config)); // all but the last token
    let stats = model.sequence_stats();
    assert_eq!((stats.sequences, stats.kv_bytes), (1, bytes));
    // Rewind to before the second prompt and regenerate the first reply's continuation.
    lock(&s).truncate(12);
    let (again, _) = run_alone(Generation::new(model.clone(), s.clone(), &[], greedy(6)).unwrap());
    assert_eq!(again, gen1);
    lock(&s).truncate(0);
    assert!(lock(&s).tokens().is_empty() && lock(&s).kv_bytes() == 0);
    // One generation at a time.
    let busy = Generation::new(model.clone(), s.clone(), &first, greedy(1)).unwrap();
    let err = Generation::new(model.clone(), s.clone(), &first, greedy(1)).err().unwrap();
    assert_eq!(err.code(), "ERR_SESSION_BUSY");
    drop(busy);
    drop(s);
    let stats = model.sequence_stats();
    assert_eq!((stats.sequences, stats.kv_bytes), (0, 0));
}

#[test]
fn a_full_sequence_ends_or_shifts_its_context() {
    let (_file, model) = tiny("full", spec("qwen2"), LoadOptions::default());
    let s = session(&model, SequenceOptions { context_size: Some(40), context_shift: ContextShift::Off });
    let (ids, end) = run_alone(Generation::new(model.clone(), s.clone(), &prompt(30), greedy(100)).unwrap());
    // 10 tokens fill the context; the 11th is sampled from the last position's logits.
    assert_eq!((ids.len(), end), (11, EndReason::ContextFull));
    let err = Generation::new(model.clone(), s.clone(), &prompt(5), greedy(1)).err().unwrap();
    assert_eq!(err.code(), "ERR_CONTEXT_FULL");
    let opts = SequenceOptions { context_size: Some(40), context_shift: ContextShift::Keep(4) };
    let s = session(&model, opts);
    let (ids, end) = run_alone(Generation::new(model.clone(), s.clone(), &prompt(30), greedy(30)).unwrap());
    assert_eq!((ids.len(), end), (30, EndReason::MaxTokens));
    let held = lock(&s).tokens().to_vec();
    assert!(held.len() <= 40 && held[..4] == prompt(30)[..4] && held.ends_with(&ids[ids.len() - 5..]));
}

#[test]
fn shifted_keys_give_the_logits_of_evaluating_the_kept_tokens_afresh() {
    // One layer: its keys and values depend on the token and its position only, so after a
    // shift the cache holds what evaluating the kept tokens afresh gives, up to the rounding of
    // the rotated keys to the cache type. (With more layers the moved positions keep hidden
    // states computed beside the dropped tokens, as in llama.cpp: that is the shift's
    // approximation, not an error of the rotation.)
    for (arch, kv_type) in
        [("llama", KvType::F16), ("qwen2", KvType::F16), ("gemma3", KvType::F16), ("llama", KvType::Q8_0)]
    {
        let spec = TinyModel { wide_heads: kv_type == KvType::Q8_0, layers: 1, ..spec(arch) };
        let (_file, model) = tiny("shift", spec, LoadOptions { kv_type, ..LoadOptions::default() });
        let ids = prompt(60);
        let (keep, discard) = (4, 20);
        let never = AtomicBool::new(false);
        let next_logits = |rotate: bool| {
            let mut kv = model.new_cache(100).unwrap();
            model.evaluate(&mut kv, &ids[..59], 59, &never, &mut |_, _| {}).unwrap();
            if rotate {
                kv.discard(&model.config, keep, discard);
            } else {
                kv.discard_unrotated_for_test(keep, discard); // the same rows moved as they are
            }
            assert_eq!(kv.len(), 39);
            let mut out = Vec::new();
            model.evaluate(&mut kv, &ids[59..], 0, &never, &mut |_, l| out = l.to_vec()).unwrap();
            out
        };
        let kept: Vec<u32> = [&ids[..keep], &ids[keep + discard..]].concat();
        let fresh = model.logits(&kept, kept.len() - 1, &never).unwrap();
        let max_diff = |a: &[f32]| a.iter().zip(&fresh).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let spread = fresh.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let (shifted, unrotated) = (max_diff(&next_logits(true)), max_diff(&next_logits(false)));
        // Q8_0 keys are quantized a second time after rotating, as llama.cpp's shift does.
        let tolerance = if kv_type == KvType::F16 { 0.01 } else { 0.03 };
        assert!(shifted < tolerance * spread, "{arch} {kv_type:?}: max diff {shifted} (logits up to {spread})");
        assert!(unrotated > 10.0 * shifted, "{arch} {kv_type:?}: without rotation {unrotated}, with {shifted}");
    }
}

#[test]
fn a_q8_0_cache_halves_the_bytes_and_stays_close_to_f16() {
    let spec = TinyModel { wide_heads: true, ..spec("llama") };
    let (_f1, f16) = tiny("kvf16", spec.clone(), LoadOptions::default());
    let (_f2, q8) = tiny("kvq8", spec, LoadOptions { kv_type: KvType::Q8_0, ..LoadOptions::default() });
    let per = |m: &Model| m.info.kv_type.bytes_per_position(&m.config);
    assert_eq!(per(&q8) * 64, per(&f16) * 34);
    let ids = prompt(50);
    let never = AtomicBool::new(false);
    let (a, b) = (f16.logits(&ids, 0, &never).unwrap(), q8.logits(&ids, 0, &never).unwrap());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let spread = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(diff > 0.0 && diff < 0.05 * spread, "max diff {diff} (logits up to {spread})");
    // A head that is not whole Q8_0 blocks is refused.
    let file = TempPath::new("kvq8-narrow");
    write_tiny_model(file.path(), &spec_narrow());
    let err = load(file.path(), LoadOptions { kv_type: KvType::Q8_0, ..LoadOptions::default() }).err().unwrap();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
}

fn spec_narrow() -> TinyModel {
    spec("llama")
}

#[test]
fn generations_beyond_the_sequence_limit_wait_for_a_slot() {
    let opts = LoadOptions { max_sequences: Some(1), ..LoadOptions::default() };
    let (_file, model) = tiny("slots", spec("llama"), opts);
    let gens =
        |n: usize| (0..n).map(|i| Generation::one_shot(model.clone(), &prompt(4 + i), greedy(5)).unwrap()).collect();
    // Both finish: the second waits for the first's slot.
    let both = run_batched(&model, gens(2), &[None, None]);
    assert!(both.iter().all(|o| matches!(o, Outcome::Done(ids, EndReason::MaxTokens) if ids.len() == 5)));
    // A waiting generation can be cancelled before it gets a slot.
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut g: Vec<Generation> = gens(2);
    let second = Arc::new(Mutex::new(g.pop()));
    let first = Arc::new(Mutex::new(g.pop()));
    let cancel: Arc<AtomicBool> = Arc::default();
    for (i, slot) in [(0, &first), (1, &second)] {
        let tx = tx.clone();
        let reply: Reply = Box::new(move |r| tx.send((i, r.map(|_| ()).map_err(|e| e.code()))).unwrap());
        let c = if i == 1 { cancel.clone() } else { Arc::default() };
        model.scheduler().submit(StepJob { generation: slot.clone(), cancel: c, reply });
    }
    assert_eq!(rx.recv().unwrap(), (0, Ok(())));
    assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "the second waits");
    cancel.store(true, Ordering::Relaxed);
    model.scheduler().wake();
    assert_eq!(rx.recv().unwrap(), (1, Err("ABORT_ERR")));
}

/// Time of one forward pass decoding one token for each of 1, 2, 4 and 8 sequences
/// (`PROBE_SEQUENCES`), each after `PROBE_POSITIONS` (default 64) cached positions, on a real
/// model: `CHORD_PROBE_MODEL=file.gguf cargo test --release batch_probe -- --ignored --nocapture`
/// (`PROBE_STEPS` passes timed, default 16, each after a pause of `PROBE_GAP_US`; `PROBE_THREADS`,
/// default 2; `PROBE_BUDGET` bytes pages the weights; `PROBE_COPY=1` copies every tensor, which
/// leaves a tied output head in the file's layout; `0` copies nothing; unset, the default copy is
/// waited for before the first pass: its thread runs only when the compute threads leave a core
/// idle, and back-to-back passes with a thread per core never do, so without the wait the probe
/// timed the mapped file's layout).
#[test]
#[ignore]
fn batch_probe() {
    let Some(path) = std::env::var_os("CHORD_PROBE_MODEL") else { return };
    let threads = std::env::var("PROBE_THREADS").map_or(2, |v| v.parse().unwrap());
    let positions: usize = std::env::var("PROBE_POSITIONS").map_or(64, |v| v.parse().unwrap());
    let context = (positions + 1).next_power_of_two().max(512);
    let opts = LoadOptions {
        context_size: Some(context),
        threads: Some(threads),
        copy_weights: std::env::var("PROBE_COPY").ok().map(|v| v == "1"),
        memory_budget: std::env::var("PROBE_BUDGET").ok().map(|v| v.parse().unwrap()),
        ..LoadOptions::default()
    };
    let model = Model::load(Path::new(&path), &opts, &AtomicBool::new(false), &mut |_, _| {}).unwrap();
    wait_for_the_copy(&model);
    let never = AtomicBool::new(false);
    let mut buffers = ForwardBuffers::default();
    let counts: Vec<usize> = std::env::var("PROBE_SEQUENCES")
        .map_or(vec![1, 2, 4, 8], |v| v.split(',').map(|n| n.parse().unwrap()).collect());
    for n in counts {
        let mut caches: Vec<KvCache> = (0..n).map(|_| model.new_cache(context).unwrap()).collect();
        for (s, kv) in caches.iter_mut().enumerate() {
            let ids: Vec<u32> = (0..positions as u32).map(|i| 100 + (i * 7 + s as u32 * 13) % 1000).collect();
            model.evaluate(kv, &ids, 64, &never, &mut |_, _| {}).unwrap();
        }
        let token = [42u32];
        let steps: usize = std::env::var("PROBE_STEPS").map_or(16, |v| v.parse().unwrap());
        // A pause before each pass, as a caller handling each token takes: the pool's workers
        // park if it is longer than they spin.
        let gap = std::time::Duration::from_micros(std::env::var("PROBE_GAP_US").map_or(0, |v| v.parse().unwrap()));
        let mut times = Vec::new();
        for _ in 0..steps.max(1) {
            std::thread::sleep(gap);
            let start = std::time::Instant::now();
            let mut inputs: Vec<SeqInput> =
                caches.iter_mut().map(|kv| SeqInput { kv, tokens: &token, logits_from: 0 }).collect();
            model.transformer().forward(&mut buffers, &mut inputs, 64, &|| false, &mut |_, _, _| {}).unwrap();
            times.push(start.elapsed().as_secs_f64() * 1e3);
            caches.iter_mut().for_each(|kv| kv.truncate(positions));
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        // The tenth percentile as well: on a shared host the median moves with other guests' load.
        let p10 = times[times.len() / 10];
        println!(
            "{n} sequences: {median:.2} ms per pass (median of {}), {:.1} tok/s; p10 {p10:.2} ms",
            times.len(),
            n as f64 * 1e3 / median
        );
    }
}

/// Tokens a second of one greedy generation driven through the scheduler, as `model.generate`
/// runs it, with a caller that spends `PROBE_CONSUMER_US` (default 0) of CPU time on each token
/// before asking for the next (a JS thread's share of a token, ~0.2 ms on a 2-vCPU host), on a
/// real model: `CHORD_PROBE_MODEL=file.gguf cargo test --release stream_probe -- --ignored
/// --nocapture` (`PROBE_THREADS`, default 2; `PROBE_STEPS` tokens, default 128, after a
/// 128-token prompt; the default copy, made before the first token). Compared with
/// `batch_probe`'s passes, it shows what the scheduler and the caller's work add per token.
#[test]
#[ignore]
fn stream_probe() {
    let Some(path) = std::env::var_os("CHORD_PROBE_MODEL") else { return };
    let threads = std::env::var("PROBE_THREADS").map_or(2, |v| v.parse().unwrap());
    let consumer =
        std::time::Duration::from_micros(std::env::var("PROBE_CONSUMER_US").map_or(0, |v| v.parse().unwrap()));
    let steps: usize = std::env::var("PROBE_STEPS").map_or(128, |v| v.parse().unwrap());
    let opts = LoadOptions { context_size: Some(512), threads: Some(threads), ..LoadOptions::default() };
    let model = Arc::new(Model::load(Path::new(&path), &opts, &AtomicBool::new(false), &mut |_, _| {}).unwrap());
    wait_for_the_copy(&model);
    let prompt: Vec<u32> = (0..128u32).map(|i| 100 + (i * 7) % 1000).collect();
    let generation = Arc::new(Mutex::new(Some(Generation::one_shot(model.clone(), &prompt, greedy(steps)).unwrap())));
    let cancel: Arc<AtomicBool> = Arc::default();
    let (tx, rx) = crossbeam_channel::unbounded::<Result<Step>>();
    let ask = || {
        let tx = tx.clone();
        let reply: Reply = Box::new(move |r| tx.send(r).unwrap());
        model.scheduler().submit(StepJob { generation: generation.clone(), cancel: cancel.clone(), reply });
    };
    ask();
    let mut arrivals = Vec::new();
    while let Step::Token { .. } = rx.recv().unwrap().unwrap() {
        let now = std::time::Instant::now();
        arrivals.push(now);
        while now.elapsed() < consumer {
            std::hint::spin_loop();
        }
        ask();
    }
    // From the first token to the last: the prompt's evaluation is not counted.
    let mut gaps: Vec<f64> = arrivals.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    gaps.sort_by(f64::total_cmp);
    println!(
        "consumer {} us: {:.1} tok/s, median gap {:.2} ms ({} tokens)",
        consumer.as_micros(),
        1e3 / mean,
        gaps[gaps.len() / 2],
        arrivals.len()
    );
}
