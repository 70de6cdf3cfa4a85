//! The bodies of the fuzz targets in `fuzz/` (`scripts/fuzz` runs them with cargo fuzz), kept
//! in the crate so that `cargo test` replays the regression corpus (`fuzz/regressions/<target>/`)
//! through the same code without libFuzzer. Each takes arbitrary bytes and must return without
//! panicking, hanging or allocating without bound; errors are the expected outcome.

use std::sync::OnceLock;

use crate::chat::{self, Clock, Conversation, TemplateContext};
use crate::quant;
use crate::tensor::GgmlType;
use crate::tokenizer::{Tokenizer, VocabSpec};

/// A fuzz target's body: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: [(&str, Target); 4] =
    [("gguf", gguf), ("tokenizer", tokenizer), ("chat_template", chat_template), ("quant", quant)];

/// The GGUF reader: header, metadata and tensor infos of arbitrary bytes.
pub fn gguf(data: &[u8]) {
    let _ = crate::gguf::check_bytes(data);
}

/// Control tokens, then one token per byte, then merged tokens.
fn bpe_spec(pre: &str) -> VocabSpec {
    const SPECIAL: [(&str, i32); 4] =
        [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4)];
    const MERGES: [&str; 10] = ["Ġ t", "h e", "Ġt he", "i n", "a n", "e r", "o n", "Ġ a", "r e", "1 2"];
    let mut tokens: Vec<String> = SPECIAL.iter().map(|(t, _)| t.to_string()).collect();
    let mut types: Vec<i32> = SPECIAL.iter().map(|&(_, ty)| ty).collect();
    for b in 0..=255u8 {
        tokens.push(crate::tokenizer::byte_to_char(b).to_string());
        types.push(1);
    }
    for merge in MERGES {
        tokens.push(merge.replace(' ', ""));
        types.push(1);
    }
    VocabSpec {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_types: Some(types),
        merges: Some(MERGES.iter().map(|m| m.to_string()).collect()),
        bos: Some(1),
        eos: Some(2),
        ..VocabSpec::default()
    }
}

/// `<unk> <s> </s>` and two control tokens, the 256 byte tokens, then scored pieces.
fn spm_spec() -> VocabSpec {
    const HEAD: [(&str, i32); 5] =
        [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("<start_of_turn>", 3), ("<end_of_turn>", 3)];
    const PIECES: [(&str, f32); 8] = [
        ("▁", -1.0),
        ("▁t", -2.0),
        ("he", -2.5),
        ("▁the", -1.5),
        ("▁a", -2.0),
        ("in", -3.0),
        ("é", -4.0),
        ("▁▁", -5.0),
    ];
    let mut tokens: Vec<String> = HEAD.iter().map(|(t, _)| t.to_string()).collect();
    let mut types: Vec<i32> = HEAD.iter().map(|&(_, ty)| ty).collect();
    let mut scores = vec![0.0; HEAD.len()];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in PIECES {
        tokens.push(piece.into());
        types.push(1);
        scores.push(score);
    }
    VocabSpec { model: "llama".into(), tokens, scores: Some(scores), token_types: Some(types), ..VocabSpec::default() }
}

fn tokenizers() -> &'static [Tokenizer] {
    static TOKENIZERS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKENIZERS.get_or_init(|| {
        let mut all: Vec<Tokenizer> = ["smollm", "qwen2", "llama-bpe", "gpt-2", "default", "command-r"]
            .iter()
            .map(|pre| Tokenizer::new(bpe_spec(pre)).expect("fuzz BPE vocabulary"))
            .collect();
        all.push(Tokenizer::new(spm_spec()).expect("fuzz SentencePiece vocabulary"));
        all
    })
}

/// The tokenizers: the first byte picks a vocabulary (its pre-tokenizer) and the flags, the rest
/// is text (lossily UTF-8) and, read as 16-bit ids, a detokenization input.
pub fn tokenizer(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let all = tokenizers();
    let tok = &all[usize::from(selector & 0x0F) % all.len()];
    let (add_bos, special) = (selector & 0x10 != 0, selector & 0x20 != 0);
    let text = String::from_utf8_lossy(rest);
    let ids = tok.encode(&text, add_bos, special);
    let _ = tok.decode(&ids, special);
    // Message text marked for a chat prompt tokenizes exactly as plain text.
    assert_eq!(tok.encode_marked(&tok.mark_literal(&text), false), tok.encode(&text, false, false));
    let ids: Vec<u32> =
        rest.chunks(2).map(|c| u32::from(c[0]) | u32::from(c.get(1).copied().unwrap_or(0)) << 8).collect();
    let _ = tok.decode(&ids, special);
}

/// The chat template renderer: a template, and after the first NUL, a message's content, in a
/// conversation with every kind of message real templates look at.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template, content) = text.split_once('\0').unwrap_or((&text, "Hello"));
    let messages = serde_json::json!([
        { "role": "system", "content": "You are a helpful assistant." },
        { "role": "user", "content": content },
        { "role": "assistant", "content": null, "tool_calls": [
            { "type": "function", "function": { "name": "get_weather", "arguments": { "city": content } } }
        ] },
        { "role": "tool", "name": "get_weather", "content": "21 °C" },
        { "role": "assistant", "content": content, "reasoning_content": "thinking" },
    ]);
    let tools = serde_json::json!([{ "type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": { "type": "object",
        "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);
    let conversation = Conversation { messages, tools: Some(tools) };
    let context = TemplateContext {
        bos_token: "<s>",
        eos_token: "</s>",
        add_generation_prompt: content.len() % 2 == 0,
        clock: Clock { unix_seconds: 1_700_000_000, utc_offset_minutes: 60 },
    };
    let _ = chat::render(template, &conversation, &context);
}

/// Weight types the decoders and dot products handle (Q8_1 and Q8_K are activation formats).
const QUANT_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// The quant block decoders and dot products (scalar and the CPU's SIMD): the first byte picks
/// the type, the rest is whole blocks of it (at most 16), arbitrary bits in scales included.
pub fn quant(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let ty = QUANT_TYPES[usize::from(selector) % QUANT_TYPES.len()];
    let block_bytes = ty.block_bytes() as usize;
    let blocks = (rest.len() / block_bytes).min(16);
    if blocks == 0 {
        return;
    }
    let row = &rest[..blocks * block_bytes];
    let cols = blocks * ty.block_len() as usize;
    let mut values = vec![0.0f32; cols];
    quant::dequantize_row(ty, row, &mut values);
    let acts: Vec<f32> = (0..cols).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
    let mut act_q = Vec::new();
    quant::quantize_activations(quant::vec_dot_type(ty), &acts, &mut act_q);
    let mut out = [0.0f32; 2];
    let rows2 = [row, row].concat();
    quant::dot_rows(ty, cols, &rows2, &act_q, &mut out);
    let mut batch = [0.0f32; 2];
    quant::dot_rows_batch(ty, cols, row, &[act_q.as_slice(), act_q.as_slice()].concat(), 2, &mut batch);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays `fuzz/regressions/<target>/*`: inputs the fuzzer found (or that once crashed),
    /// kept small and committed.
    #[test]
    fn fuzz_regressions_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("regressions");
        let mut replayed = 0;
        for (name, target) in super::TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(name)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no regression inputs under {}", root.display());
    }

    /// A few inputs of every kind through every target (the seeds the fuzzer starts from are
    /// larger and not committed).
    #[test]
    fn fuzz_targets_run_on_simple_inputs() {
        for (_, target) in super::TARGETS {
            for data in [&b""[..], b"\0", b"GGUF\x03\0\0\0", b"\x21<|im_end|> the\0x", b"{{ messages }}\0hi"] {
                target(data);
            }
        }
    }
}
