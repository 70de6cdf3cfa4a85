//! Special token ids (BOS, EOS, EOT, EOM, FIM) and the end-of-generation set, resolved the way
//! llama.cpp's vocabulary loader does: per-tokenizer defaults, overridden by the GGUF keys when
//! in range, then auto-detection by token text for the ids the GGUF leaves out. Detection also
//! marks the found tokens as control tokens, which changes how they are partitioned and
//! rendered, so it runs before anything reads the attributes.

use std::collections::BTreeSet;

use super::vocab::{attr, Vocab};
use super::VocabSpec;

/// What a tokenizer type assumes before reading the GGUF keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Defaults {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    eog: BTreeSet<u32>,
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Token texts llama.cpp treats as end of generation wherever they appear in a vocabulary.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// gpt-oss tokens llama.cpp always renders (it forces them to user-defined).
const ALWAYS_RENDERED_TEXTS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl SpecialIds {
    /// `stated` supplies the ids and flags the GGUF states (`tokenizer.ggml.*_token_id`, `add_*_token`).
    pub fn resolve(vocab: &mut Vocab, defaults: Defaults, stated: &VocabSpec) -> SpecialIds {
        let in_range = |id: Option<u32>| id.filter(|&id| vocab.contains(id));
        let bos = in_range(stated.bos).or(in_range(defaults.bos));
        let eos = in_range(stated.eos).or(in_range(defaults.eos));
        let stated_eot = in_range(stated.eot);
        let stated_eom = in_range(stated.eom);
        let [fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep] =
            [stated.fim_pre, stated.fim_suf, stated.fim_mid, stated.fim_pad, stated.fim_rep, stated.fim_sep]
                .map(in_range);

        // llama.cpp walks a hash map here, so with several candidates its pick is arbitrary;
        // the lowest id is ours. Whichever is picked, the EOG set below is the same.
        let mut detect = |stated: Option<u32>, texts: &[&str]| {
            stated.or_else(|| {
                let id = vocab.iter().find(|(_, text)| texts.contains(text)).map(|(id, _)| id)?;
                vocab.add_attr(id, attr::CONTROL);
                Some(id)
            })
        };
        let eot = detect(stated_eot, EOT_TEXTS);
        let eom = detect(stated_eom, EOM_TEXTS);
        for (stated, texts) in [(fim_pre, FIM_PRE_TEXTS), (fim_suf, FIM_SUF_TEXTS), (fim_mid, FIM_MID_TEXTS)] {
            detect(stated, texts);
        }
        let fim_pad = detect(fim_pad, FIM_PAD_TEXTS);
        let fim_rep = detect(fim_rep, FIM_REP_TEXTS);
        let fim_sep = detect(fim_sep, FIM_SEP_TEXTS);

        let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        let eog_texts: Vec<u32> = vocab.iter().filter(|(_, text)| EOG_TEXTS.contains(text)).map(|(id, _)| id).collect();
        for id in eog_texts {
            eog.insert(id);
            vocab.add_attr(id, attr::CONTROL);
        }
        let always_rendered: Vec<u32> =
            vocab.iter().filter(|(_, text)| ALWAYS_RENDERED_TEXTS.contains(text)).map(|(id, _)| id).collect();
        for id in always_rendered {
            vocab.set_attr(id, attr::USER_DEFINED);
        }
        eog.extend([eos, eot, eom].into_iter().flatten());

        // Harmony (gpt-oss) and solar-open end a message with <|end|> but keep generating.
        let has = |eog: &BTreeSet<u32>, vocab: &Vocab, text: &str| find(eog, vocab, text).is_some();
        if let Some(end) = find(&eog, vocab, "<|end|>") {
            let has_call = has(&eog, vocab, "<|call|>") || has(&eog, vocab, "<|calls|>");
            if has_call && (has(&eog, vocab, "<|return|>") || has(&eog, vocab, "<|flush|>")) {
                eog.remove(&end);
                vocab.set_attr(end, attr::USER_DEFINED);
            }
        }
        // Gemma 4 (and paddleocr) vocabularies with <|tool_response> use </s> as plain text.
        if has(&eog, vocab, "<|tool_response>") {
            if let Some(s) = find(&eog, vocab, "</s>") {
                eog.remove(&s);
                vocab.set_attr(s, attr::NORMAL);
            }
        }

        SpecialIds {
            bos,
            eos,
            add_bos: stated.add_bos.unwrap_or(defaults.add_bos),
            add_eos: stated.add_eos.unwrap_or(defaults.add_eos),
            eog,
        }
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
}

/// The id in `eog` whose text is `text`.
fn find(eog: &BTreeSet<u32>, vocab: &Vocab, text: &str) -> Option<u32> {
    eog.iter().copied().find(|&id| vocab.text(id) == text)
}
