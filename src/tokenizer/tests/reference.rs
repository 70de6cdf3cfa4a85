//! Exact comparison with llama.cpp on SmolLM2-135M-Instruct (gpt2 BPE, pre `smollm`): every
//! string of `testdata/smollm2-refs.json` (made by `scripts/gen-tokenizer-refs.mjs`) must
//! tokenize and detokenize to what llama.cpp produced. Skipped, with a note, when the model
//! file is not in the model cache (`node scripts/fetch-models smollm2` fetches it).

use std::path::PathBuf;
use std::time::Instant;

use super::gguf_vocab::read_vocab_spec;
use super::json::{self, Json};
use crate::tokenizer::Tokenizer;

const REFS: &str = include_str!("../testdata/smollm2-refs.json");
const MODEL_FILE: &str = "smollm2-135m-instruct-q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("CHORD_LLM_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/chord-llm/models"),
    };
    let path = dir.join(MODEL_FILE);
    path.is_file().then_some(path)
}

fn load() -> Option<(Tokenizer, Json)> {
    let Some(path) = model_path() else {
        eprintln!("note: {MODEL_FILE} not in the model cache; skipping the llama.cpp tokenizer comparison");
        return None;
    };
    let spec = read_vocab_spec(&path).expect("read tokenizer keys");
    let tokenizer = Tokenizer::new(spec).expect("build tokenizer");
    let refs = json::parse(REFS).expect("parse refs");
    Some((tokenizer, refs))
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

#[test]
fn smollm2_strings_match_llama_cpp() {
    let Some((tok, refs)) = load() else { return };
    let cases = refs.get("cases").and_then(Json::as_array).expect("cases");
    let mut failures = Vec::new();
    let mut failing_cases = 0;
    for case in cases {
        let failures_before = failures.len();
        let text = case.get("text").and_then(Json::as_str).expect("text");
        let ids = case.get("ids").and_then(Json::as_ids).expect("ids");
        let ids_special = case.get("idsSpecial").and_then(Json::as_ids).expect("idsSpecial");
        let str_of = |k: &str| case.get(k).and_then(Json::as_str).expect(k).to_string();

        let got = tok.encode(text, false, false);
        if got != ids {
            failures.push(format!("encode {text:?}: got {got:?}, llama.cpp {ids:?}"));
        }
        let got = tok.encode(text, false, true);
        if got != ids_special {
            failures.push(format!("encode special {text:?}: got {got:?}, llama.cpp {ids_special:?}"));
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
        failing_cases += usize::from(failures.len() > failures_before);
    }
    eprintln!("{} of {} reference strings match llama.cpp exactly", cases.len() - failing_cases, cases.len());
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn smollm2_vocab_facts_match_llama_cpp() {
    let Some((tok, refs)) = load() else { return };
    let n = refs.get("vocabSize").and_then(Json::as_u64).expect("vocabSize") as usize;
    assert_eq!(tok.vocab_size(), n);
    assert_eq!(tok.bos().map(u64::from), refs.get("bos").and_then(Json::as_u64));
    assert_eq!(Some(tok.add_bos_default()), refs.get("shouldPrependBos").and_then(Json::as_bool));

    let eog: Vec<u32> = (0..n as u32).filter(|&id| tok.is_eog(id)).collect();
    assert_eq!(Some(eog), refs.get("eog").and_then(Json::as_ids));

    let digests = refs.get("piecesDigest").expect("piecesDigest");
    for (special, key) in [(false, "plain"), (true, "special")] {
        let joined: Vec<String> =
            (0..n as u32).map(|id| String::from_utf8_lossy(&tok.token_bytes(id, special)).into_owned()).collect();
        let got = fnv1a(joined.join("\0").as_bytes());
        assert_eq!(Some(got.as_str()), digests.get(key).and_then(Json::as_str), "pieces digest ({key})");
    }
}

#[test]
fn smollm2_large_text_is_fast() {
    let Some((tok, refs)) = load() else { return };
    let mut text = String::new();
    let cases = refs.get("cases").and_then(Json::as_array).expect("cases");
    while text.len() < 100_000 {
        for case in cases {
            text.push_str(case.get("text").and_then(Json::as_str).unwrap_or_default());
        }
    }
    let start = Instant::now();
    let ids = tok.encode(&text, false, true);
    let elapsed = start.elapsed();
    eprintln!("{} bytes -> {} tokens in {elapsed:?}", text.len(), ids.len());
    assert_eq!(tok.decode(&ids, true), text, "round trip");
    assert!(elapsed.as_secs_f64() < 2.0, "100 KB took {elapsed:?}");
}
