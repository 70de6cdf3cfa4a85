//! Per-model token attributes that GGUF files do not carry and llama.cpp sets by name at the
//! end of loading a vocabulary: whitespace stripping around some special tokens. They only
//! change how special tokens split the text (`partition`), never how tokens render.

use super::vocab::{attr, Vocab};

/// Applies llama.cpp's name-based lstrip / rstrip rules. `model_name` is `general.name`,
/// `pre` is `tokenizer.ggml.pre`.
pub(crate) fn apply(vocab: &mut Vocab, model_name: Option<&str>, pre: Option<&str>) {
    // llama.cpp lowercases the name byte by byte in the C locale.
    let name = model_name.unwrap_or("").to_ascii_lowercase();
    let pre = pre.unwrap_or("");
    let contains_any = |s: &str, parts: &[&str]| parts.iter().any(|p| s.contains(p));

    // (The same rule also fires for two BERT architectures, which this engine does not load.)
    if contains_any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"]) {
        set(vocab, "<mask>", attr::LSTRIP, true);
    } else if contains_any(&name, &["phi-3", "phi3"]) {
        // Phi-3 chat markup: whitespace after special tokens belongs to the markup.
        let special: Vec<u32> = vocab
            .iter()
            .map(|(id, _)| id)
            .filter(|&id| vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .collect();
        for id in special {
            vocab.add_attr(id, attr::RSTRIP);
        }
        set(vocab, "</s>", attr::RSTRIP, true);
        for text in ["<unk>", "<s>", "<|endoftext|>"] {
            set(vocab, text, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(vocab, "[MASK]", attr::LSTRIP, true);
    }
}

/// Sets or clears `bit` on the token with this text. A missing token makes llama.cpp warn
/// (mask tokens) or fail to load (the Phi-3 ones); here the rule is just skipped.
fn set(vocab: &mut Vocab, text: &str, bit: u32, on: bool) {
    let Some(id) = vocab.id_of(text) else { return };
    let bits = vocab.attr(id);
    vocab.set_attr(id, if on { bits | bit } else { bits & !bit });
}
