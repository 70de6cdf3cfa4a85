//! Test support: tiny llama-shaped GGUF files written from Rust, so engine and pager tests run
//! under `cargo test` without Node or downloaded models.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Writes a llama model with F32 weights: `layers` blocks of width 32, 4 heads over 2 KV
/// heads, feed-forward 64, and a byte-level GPT-2 vocabulary of the 256 bytes.
pub fn write_tiny_llama(path: &Path, layers: usize) {
    let (d, ff, heads, kv_heads, vocab) = (32usize, 64usize, 4usize, 2usize, 256usize);
    let kv = d / heads * kv_heads;
    let mut meta: Vec<u8> = Vec::new();
    let mut n_kv = 0u64;
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    let kv_u32 = |b: &mut Vec<u8>, k: &str, v: u32| {
        s(b, k);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    };
    kv_u32(&mut meta, "llama.context_length", 64);
    kv_u32(&mut meta, "llama.embedding_length", d as u32);
    kv_u32(&mut meta, "llama.block_count", layers as u32);
    kv_u32(&mut meta, "llama.feed_forward_length", ff as u32);
    kv_u32(&mut meta, "llama.attention.head_count", heads as u32);
    kv_u32(&mut meta, "llama.attention.head_count_kv", kv_heads as u32);
    kv_u32(&mut meta, "tokenizer.ggml.bos_token_id", 0);
    kv_u32(&mut meta, "tokenizer.ggml.eos_token_id", 1);
    n_kv += 8;
    for (k, v) in
        [("general.architecture", "llama"), ("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.pre", "smollm")]
    {
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

    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, data: Vec<f32>| tensors.push((name, dims, data));
    let n = |dims: &[usize]| dims.iter().product::<usize>();
    add("token_embd.weight".into(), vec![d as u64, vocab as u64], weights(1, n(&[d, vocab]), 0.5));
    for l in 0..layers {
        let seed = 100 + l as u64 * 10;
        let norm = |seed| weights(seed, d, 0.2).into_iter().map(|w| 1.0 + w).collect::<Vec<_>>();
        add(format!("blk.{l}.attn_norm.weight"), vec![d as u64], norm(seed));
        add(format!("blk.{l}.attn_q.weight"), vec![d as u64, d as u64], weights(seed + 1, d * d, 0.3));
        add(format!("blk.{l}.attn_k.weight"), vec![d as u64, kv as u64], weights(seed + 2, d * kv, 0.3));
        add(format!("blk.{l}.attn_v.weight"), vec![d as u64, kv as u64], weights(seed + 3, d * kv, 0.3));
        add(format!("blk.{l}.attn_output.weight"), vec![d as u64, d as u64], weights(seed + 4, d * d, 0.3));
        add(format!("blk.{l}.ffn_norm.weight"), vec![d as u64], norm(seed + 5));
        add(format!("blk.{l}.ffn_gate.weight"), vec![d as u64, ff as u64], weights(seed + 6, d * ff, 0.3));
        add(format!("blk.{l}.ffn_up.weight"), vec![d as u64, ff as u64], weights(seed + 7, d * ff, 0.3));
        add(format!("blk.{l}.ffn_down.weight"), vec![ff as u64, d as u64], weights(seed + 8, d * ff, 0.3));
    }
    add("output_norm.weight".into(), vec![d as u64], vec![1.0; d]);
    add("output.weight".into(), vec![d as u64, vocab as u64], weights(2, n(&[d, vocab]), 0.5));

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&n_kv.to_le_bytes());
    out.extend_from_slice(&meta);
    let mut offset = 0u64;
    for (name, dims, data) in &tensors {
        s(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64 * 4).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for (_, _, data) in &tensors {
        data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        while out.len() % 32 != 0 {
            out.push(0);
        }
    }
    std::fs::File::create(path).unwrap().write_all(&out).unwrap();
}
