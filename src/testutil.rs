//! Test support: tiny llama-shaped GGUF files written from Rust, so engine and pager tests run
//! under `cargo test` without Node or downloaded models.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::tensor::GgmlType;
use crate::tokenizer::byte_to_char;

/// A temporary file removed on drop.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("chord-{tag}-{}-{n}.gguf", std::process::id())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Deterministic pseudo-random weights in [-scale, scale).
fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = crate::sampler::Rng::new(seed);
    (0..n).map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale).collect()
}

/// What `write_tiny_model` writes: a small model of one architecture, with optional extras so
/// tests reach the code paths the real models take.
#[derive(Clone, Debug)]
pub struct TinyModel {
    /// "llama", "qwen2" (NeoX RoPE, q/k/v biases) or "gemma3" (extra norms, GELU, sliding
    /// window on every other layer, logit soft-capping).
    pub arch: &'static str,
    pub layers: usize,
    /// The trained context length written to the file, the most positions a test can use.
    pub context: u32,
    /// Matrices of several types (Q8_0, F16, BF16, F32) instead of all F32, so activations are
    /// converted to different dot-product formats within one block.
    pub mixed_types: bool,
    /// q/k/v and output-projection biases (qwen2 has the first three).
    pub biases: bool,
    /// One attention head of 32 values instead of 4 heads of 8 over 2 KV heads (a Q8_0 KV
    /// cache needs heads of whole 32-value blocks).
    pub wide_heads: bool,
    /// attn_output, ffn_down and token_embd in Q4_0, and no output.weight (the output head is
    /// token_embd): matrices a copy rearranges for the x86 kernels, a tied head among them.
    pub q4_0: bool,
    /// The feed-forward width, 64 by default. At 256, ffn_down's rows are a whole group of
    /// eight 32-value blocks, which the rearrangement for the x86 kernels interleaves (shorter
    /// rows it leaves as they are).
    pub feed_forward: usize,
}

impl TinyModel {
    pub fn llama(layers: usize) -> Self {
        TinyModel {
            arch: "llama",
            layers,
            context: 64,
            mixed_types: false,
            biases: false,
            wide_heads: false,
            q4_0: false,
            feed_forward: 64,
        }
    }
}

/// Writes a llama model with F32 weights: `layers` blocks of width 32, 4 heads over 2 KV
/// heads, feed-forward 64, and a byte-level GPT-2 vocabulary of the 256 bytes.
pub fn write_tiny_llama(path: &Path, layers: usize) {
    write_tiny_model(path, &TinyModel::llama(layers));
}

/// Writes `spec` with the shapes of `write_tiny_llama` (but the feed-forward width) and
/// deterministic weights.
pub fn write_tiny_model(path: &Path, spec: &TinyModel) {
    let (d, ff, vocab) = (32usize, spec.feed_forward, 256usize);
    let (heads, kv_heads) = if spec.wide_heads { (1usize, 1usize) } else { (4, 2) };
    let (arch, layers) = (spec.arch, spec.layers);
    let gemma = arch == "gemma3";
    let kv = d / heads * kv_heads;
    let mut meta: Vec<u8> = Vec::new();
    let mut n_kv = 0u64;
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    let mut kv_u32 = |b: &mut Vec<u8>, k: &str, v: u32| {
        s(b, k);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
        n_kv += 1;
    };
    kv_u32(&mut meta, &format!("{arch}.context_length"), spec.context);
    kv_u32(&mut meta, &format!("{arch}.embedding_length"), d as u32);
    kv_u32(&mut meta, &format!("{arch}.block_count"), layers as u32);
    kv_u32(&mut meta, &format!("{arch}.feed_forward_length"), ff as u32);
    kv_u32(&mut meta, &format!("{arch}.attention.head_count"), heads as u32);
    kv_u32(&mut meta, &format!("{arch}.attention.head_count_kv"), kv_heads as u32);
    kv_u32(&mut meta, "tokenizer.ggml.bos_token_id", 0);
    kv_u32(&mut meta, "tokenizer.ggml.eos_token_id", 1);
    if gemma {
        kv_u32(&mut meta, "gemma3.attention.sliding_window", 5);
        kv_u32(&mut meta, "gemma3.attention.sliding_window_pattern", 2);
    }
    let kv_f32 = |b: &mut Vec<u8>, k: &str, v: f32| {
        s(b, k);
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    };
    if gemma {
        kv_f32(&mut meta, "gemma3.final_logit_softcapping", 3.0);
        kv_f32(&mut meta, "gemma3.rope.freq_base_swa", 1000.0);
        n_kv += 2;
    }
    for (k, v) in [("general.architecture", arch), ("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.pre", "smollm")] {
        s(&mut meta, k);
        meta.extend_from_slice(&8u32.to_le_bytes());
        s(&mut meta, v);
        n_kv += 1;
    }
    s(&mut meta, "tokenizer.ggml.tokens");
    meta.extend_from_slice(&9u32.to_le_bytes());
    meta.extend_from_slice(&8u32.to_le_bytes());
    meta.extend_from_slice(&(vocab as u64).to_le_bytes());
    for b in 0..=255u8 {
        s(&mut meta, &byte_to_char(b).to_string());
    }
    s(&mut meta, "tokenizer.ggml.merges");
    meta.extend_from_slice(&9u32.to_le_bytes());
    meta.extend_from_slice(&8u32.to_le_bytes());
    meta.extend_from_slice(&0u64.to_le_bytes());
    n_kv += 2;

    // (name, dims, GGUF type id, data)
    let mut tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)> = Vec::new();
    let mut add = |name: String, dims: &[usize], ty: GgmlType, data: Vec<f32>| {
        tensors.push((name, dims.iter().map(|&x| x as u64).collect(), type_id(ty), encode(ty, &data)))
    };
    let ty = |mixed: GgmlType| if spec.mixed_types { mixed } else { GgmlType::F32 };
    let n = |dims: &[usize]| dims.iter().product::<usize>();
    let q4_0 = |other: GgmlType| if spec.q4_0 { GgmlType::Q4_0 } else { other };
    add("token_embd.weight".into(), &[d, vocab], q4_0(GgmlType::F32), weights(1, n(&[d, vocab]), 0.5));
    for l in 0..layers {
        let seed = 100 + l as u64 * 20;
        let norm = |seed| weights(seed, d, 0.2).into_iter().map(|w| 1.0 + w).collect::<Vec<_>>();
        let name = |n: &str| format!("blk.{l}.{n}");
        add(name("attn_norm.weight"), &[d], GgmlType::F32, norm(seed));
        add(name("attn_q.weight"), &[d, d], ty(GgmlType::Q8_0), weights(seed + 1, d * d, 0.3));
        add(name("attn_k.weight"), &[d, kv], ty(GgmlType::F16), weights(seed + 2, d * kv, 0.3));
        add(name("attn_v.weight"), &[d, kv], ty(GgmlType::Q8_0), weights(seed + 3, d * kv, 0.3));
        add(name("attn_output.weight"), &[d, d], q4_0(GgmlType::F32), weights(seed + 4, d * d, 0.3));
        add(name("ffn_norm.weight"), &[d], GgmlType::F32, norm(seed + 5));
        add(name("ffn_gate.weight"), &[d, ff], ty(GgmlType::Q8_0), weights(seed + 6, d * ff, 0.3));
        add(name("ffn_up.weight"), &[d, ff], ty(GgmlType::BF16), weights(seed + 7, d * ff, 0.3));
        add(name("ffn_down.weight"), &[ff, d], q4_0(ty(GgmlType::Q8_0)), weights(seed + 8, d * ff, 0.3));
        if spec.biases {
            add(name("attn_q.bias"), &[d], GgmlType::F32, weights(seed + 9, d, 0.2));
            add(name("attn_k.bias"), &[kv], GgmlType::F32, weights(seed + 10, kv, 0.2));
            add(name("attn_v.bias"), &[kv], GgmlType::F32, weights(seed + 11, kv, 0.2));
            add(name("attn_output.bias"), &[d], GgmlType::F32, weights(seed + 12, d, 0.2));
        }
        if gemma {
            let hd = d / heads;
            add(name("attn_q_norm.weight"), &[hd], GgmlType::F32, norm(seed + 13)[..hd].to_vec());
            add(name("attn_k_norm.weight"), &[hd], GgmlType::F32, norm(seed + 14)[..hd].to_vec());
            add(name("post_attention_norm.weight"), &[d], GgmlType::F32, norm(seed + 15));
            add(name("post_ffw_norm.weight"), &[d], GgmlType::F32, norm(seed + 16));
        }
    }
    add("output_norm.weight".into(), &[d], GgmlType::F32, vec![1.0; d]);
    if !spec.q4_0 {
        add("output.weight".into(), &[d, vocab], ty(GgmlType::Q8_0), weights(2, n(&[d, vocab]), 0.5));
    }

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&meta);
    let mut offset = 0u64;
    for (name, dims, ty, data) in &tensors {
        s(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for (_, _, _, data) in &tensors {
        out.extend_from_slice(data);
        while out.len() % 32 != 0 {
            out.push(0);
        }
    }
    std::fs::File::create(path).unwrap().write_all(&out).unwrap();
}

/// GGUF's number for the types `write_tiny_model` writes.
fn type_id(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 8,
        GgmlType::BF16 => 30,
        other => panic!("testutil: {other} is not written"),
    }
}

/// Tensor bytes of `data` in `ty`: F32, F16, BF16 and Q8_0 are also activation formats, so
/// the activation conversion writes them; Q4_0 is rounded here.
fn encode(ty: GgmlType, data: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    if ty != GgmlType::Q4_0 {
        crate::quant::quantize_activations(ty, data, &mut out);
        return out;
    }
    for block in data.chunks_exact(32) {
        // ggml's rounding: the value of largest magnitude maps to -8.
        let max = block.iter().fold(0.0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = max / -8.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        let q = |x: f32| ((x * inv + 8.5) as i32).clamp(0, 15) as u8;
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend((0..16).map(|j| q(block[j]) | q(block[j + 16]) << 4));
    }
    out
}
