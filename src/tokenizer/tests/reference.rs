//! Exact comparison with llama.cpp: for every vocabulary in `testdata/<name>-refs.json` (made
//! by `scripts/gen-tokenizer-refs.mjs`), every string must tokenize (with and without special
//! parsing) and detokenize to what llama.cpp produced, and the vocabulary facts (size, BOS,
//! add-BOS default, EOG set, every token's rendering) must agree. A vocabulary whose GGUF is
//! not on this machine is skipped with a note: real models come from the model cache
//! (`node scripts/fetch-models`), the others are llama.cpp's own vocabulary-only test files
//! (models/ggml-vocab-*.gguf in the llama.cpp release bundled with node-llama-cpp).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::gguf_vocab::read_vocab_spec;
use super::json::{self, Json};
use crate::tokenizer::Tokenizer;

/// Where a reference's GGUF lives.
#[derive(Clone, Copy)]
enum Place {
    /// The model cache: $CHORD_LLM_MODELS, else ~/.cache/chord-llm/models.
    ModelCache,
    /// llama.cpp's `models/` folder: $LLAMA_CPP_SRC, else /tmp/llama-src, else the clone the
    /// generator script makes in the temp folder.
    LlamaCppModels,
}

struct Reference {
    refs: &'static str,
    file: &'static str,
    place: Place,
}

fn find(reference: &Reference) -> Option<PathBuf> {
    let dirs: Vec<PathBuf> = match reference.place {
        Place::ModelCache => {
            let dir = match std::env::var_os("CHORD_LLM_MODELS") {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/chord-llm/models"),
            };
            vec![dir]
        }
        Place::LlamaCppModels => {
            let mut dirs = vec![PathBuf::from("/tmp/llama-src"), std::env::temp_dir().join("chord-llm-llama-src")];
            if let Some(src) = std::env::var_os("LLAMA_CPP_SRC") {
                dirs.insert(0, PathBuf::from(src));
            }
            dirs.into_iter().map(|d| d.join("models")).collect()
        }
    };
    dirs.into_iter().map(|d| d.join(reference.file)).find(|p| p.is_file())
}

/// Builds the tokenizer for a reference, or `None` (with a note) when its GGUF is absent.
fn load(reference: &Reference) -> Option<(Tokenizer, Json)> {
    let Some(path) = find(reference) else {
        eprintln!("note: {} not found; skipping its llama.cpp tokenizer comparison", reference.file);
        return None;
    };
    Some((build(&path), json::parse(reference.refs).expect("parse refs")))
}

fn build(path: &Path) -> Tokenizer {
    let spec = read_vocab_spec(path).expect("read tokenizer keys");
    let start = Instant::now();
    let tokenizer = Tokenizer::new(spec).expect("build tokenizer");
    let elapsed = start.elapsed();
    eprintln!("{}: {} tokens, tokenizer built in {elapsed:?}", path.display(), tokenizer.vocab_size());
    // A release build loads even 262144 tokens in a fraction of this.
    assert!(elapsed.as_secs_f64() < 3.0, "building the tokenizer of {} took {elapsed:?}", path.display());
    tokenizer
}

/// FNV-1a (32-bit), the digest the generator script uses.
fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u32 = 0x811c9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

/// Checks every case of the reference; returns the mismatches.
fn check_cases(tok: &Tokenizer, refs: &Json) -> Vec<String> {
    let cases = refs.get("cases").and_then(Json::as_array).expect("cases");
    let mut failures = Vec::new();
    let mut failing_cases = 0;
    let mut checks = 0;
    for case in cases {
        let failures_before = failures.len();
        let text = case.get("text").and_then(Json::as_str).expect("text");
        let ids = case.get("ids").and_then(Json::as_ids).expect("ids");
        // Left out of the file when equal to `ids` / to the text.
        let ids_special = case.get("idsSpecial").map_or(Some(ids.clone()), Json::as_ids).expect("idsSpecial");
        let str_of = |k: &str| case.get(k).map_or(Some(text), Json::as_str).expect(k).to_string();

        for (special, want) in [(false, &ids), (true, &ids_special)] {
            let got = tok.encode(text, false, special);
            if got != *want {
                failures.push(format!("encode (special {special}) {text:?}: got {got:?}, llama.cpp {want:?}"));
            }
        }
        for (ids, special, key) in [
            (&ids, false, "decoded"),
            (&ids_special, true, "decodedSpecial"),
            (&ids_special, false, "decodedSpecialPlain"),
        ] {
            let got = tok.decode(ids, special);
            let want = str_of(key);
            if got != want {
                failures.push(format!("{key} {text:?}: got {got:?}, llama.cpp {want:?}"));
            }
        }
        checks += 5;
        failing_cases += usize::from(failures.len() > failures_before);
    }
    eprintln!(
        "{}: {} of {} strings match llama.cpp exactly ({} encode/decode checks, {} mismatches)",
        refs.get("model").and_then(Json::as_str).unwrap_or("?"),
        cases.len() - failing_cases,
        cases.len(),
        checks,
        failures.len()
    );
    failures
}

/// Size, BOS, add-BOS default, EOG set and every token's rendering on its own.
fn check_vocab_facts(tok: &Tokenizer, refs: &Json) {
    let n = refs.get("vocabSize").and_then(Json::as_u64).expect("vocabSize") as usize;
    assert_eq!(tok.vocab_size(), n);
    assert_eq!(tok.bos().map(u64::from), refs.get("bos").and_then(Json::as_u64), "bos");
    assert_eq!(Some(tok.add_bos_default()), refs.get("shouldPrependBos").and_then(Json::as_bool), "add_bos");

    let eog: Vec<u32> = (0..n as u32).filter(|&id| tok.is_eog(id)).collect();
    assert_eq!(Some(eog), refs.get("eog").and_then(Json::as_ids), "EOG set");

    let digests = refs.get("piecesDigest").expect("piecesDigest");
    for (special, key) in [(false, "plain"), (true, "special")] {
        // Single-token detokenization, as the generator does it: the token's piece, after the
        // first-token space strip and the space clean-up where those apply.
        let joined: Vec<String> = (0..n as u32).map(|id| tok.decode(&[id], special)).collect();
        let got = fnv1a(joined.join("\0").as_bytes());
        assert_eq!(Some(got.as_str()), digests.get(key).and_then(Json::as_str), "pieces digest ({key})");
    }
}

fn check(reference: &Reference) {
    let Some((tok, refs)) = load(reference) else { return };
    check_vocab_facts(&tok, &refs);
    let failures = check_cases(&tok, &refs);
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

macro_rules! reference_tests {
    ($($test:ident: $name:literal, $file:literal, $place:ident;)*) => {
        $(
            #[test]
            fn $test() {
                check(&Reference {
                    refs: include_str!(concat!("../testdata/", $name, "-refs.json")),
                    file: $file,
                    place: Place::$place,
                });
            }
        )*
    };
}

reference_tests! {
    smollm2_matches_llama_cpp: "smollm2", "smollm2-135m-instruct-q4_1.gguf", ModelCache;
    gemma3_matches_llama_cpp: "gemma3", "gemma-3-270m-q4_k_m.gguf", ModelCache;
    qwen25_coder_05b_matches_llama_cpp: "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ModelCache;
    qwen25_coder_15b_matches_llama_cpp: "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", ModelCache;
    llama_spm_matches_llama_cpp: "llama-spm", "ggml-vocab-llama-spm.gguf", LlamaCppModels;
    phi3_matches_llama_cpp: "phi-3", "ggml-vocab-phi-3.gguf", LlamaCppModels;
    baichuan_matches_llama_cpp: "baichuan", "ggml-vocab-baichuan.gguf", LlamaCppModels;
    qwen2_matches_llama_cpp: "qwen2", "ggml-vocab-qwen2.gguf", LlamaCppModels;
    llama_bpe_matches_llama_cpp: "llama-bpe", "ggml-vocab-llama-bpe.gguf", LlamaCppModels;
    command_r_matches_llama_cpp: "command-r", "ggml-vocab-command-r.gguf", LlamaCppModels;
    starcoder_matches_llama_cpp: "starcoder", "ggml-vocab-starcoder.gguf", LlamaCppModels;
    gpt2_matches_llama_cpp: "gpt-2", "ggml-vocab-gpt-2.gguf", LlamaCppModels;
    gpt_neox_matches_llama_cpp: "gpt-neox", "ggml-vocab-gpt-neox.gguf", LlamaCppModels;
    aquila_matches_llama_cpp: "aquila", "ggml-vocab-aquila.gguf", LlamaCppModels;
}

/// 100 KB of the reference strings, with special parsing, through a large vocabulary of each
/// tokenizer type: fast, and decoding gives the text back.
#[test]
fn large_texts_are_fast() {
    for (refs, file) in [
        (include_str!("../testdata/smollm2-refs.json"), "smollm2-135m-instruct-q4_1.gguf"),
        (include_str!("../testdata/gemma3-refs.json"), "gemma-3-270m-q4_k_m.gguf"),
        (include_str!("../testdata/qwen2.5-coder-0.5b-refs.json"), "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    ] {
        let Some((tok, refs)) = load(&Reference { refs, file, place: Place::ModelCache }) else { continue };
        let mut text = String::new();
        let cases = refs.get("cases").and_then(Json::as_array).expect("cases");
        // U+2581 in the input decodes as a space through SentencePiece (as in llama.cpp), so
        // those strings are left out to keep the round trip exact.
        let texts: Vec<&str> = cases
            .iter()
            .filter_map(|c| c.get("text").and_then(Json::as_str))
            .filter(|t| !t.contains('\u{2581}'))
            .collect();
        while text.len() < 100_000 {
            texts.iter().for_each(|t| text.push_str(t));
        }
        let start = Instant::now();
        let ids = tok.encode(&text, false, true);
        let elapsed = start.elapsed();
        eprintln!("{file}: {} bytes -> {} tokens in {elapsed:?}", text.len(), ids.len());
        assert!(elapsed.as_secs_f64() < 2.0, "100 KB took {elapsed:?}");
        // SentencePiece without a space prefix and byte-level BPE both round-trip exactly.
        let back = tok.decode(&ids, true);
        let first_difference = back.char_indices().zip(text.chars()).find(|((_, a), b)| a != b).map(|((i, _), _)| i);
        assert!(back == text, "round trip through {file} differs from byte {first_difference:?}");
    }
}
