//! Unit tests of the BPE pre-tokenizers: which `tokenizer.ggml.pre` names llama.cpp maps to
//! which regex list and flags, and how each list splits text.

use crate::error::Error;
use crate::tokenizer::pretokenize::PreTokenizer;

fn pre(name: &str) -> PreTokenizer {
    PreTokenizer::from_name(Some(name)).expect(name)
}

fn split<'a>(name: &str, text: &'a str) -> Vec<&'a str> {
    pre(name).split(text)
}

#[test]
fn names_map_to_llama_cpps_flags() {
    // clean_spaces, ignore_merges, add_bos default, no default BOS
    let flags = |p: PreTokenizer| (p.clean_spaces(), p.ignore_merges(), p.add_bos_default(), p.no_default_bos());
    assert_eq!(flags(pre("llama-bpe")), (true, true, true, false));
    assert_eq!(flags(pre("qwen2")), (false, false, false, false));
    assert_eq!(flags(pre("stablelm2")), (true, false, false, false));
    assert_eq!(flags(pre("gpt-2")), (true, false, false, false));
    assert_eq!(flags(pre("smollm")), (false, false, false, false));
    assert_eq!(flags(pre("starcoder")), (true, false, false, false));
    assert_eq!(flags(pre("glm4")), (true, false, false, true));
    assert_eq!(flags(pre("default")), (true, false, false, false));
    assert_eq!(PreTokenizer::from_name(None).unwrap(), pre("default"));
    assert_eq!(PreTokenizer::from_name(Some("")).unwrap(), pre("default"));
    for unknown in ["gpt2", "llama", "deepseek-llm", "tekken", "Qwen2"] {
        let err = PreTokenizer::from_name(Some(unknown)).unwrap_err();
        assert!(matches!(&err, Error::UnsupportedTokenizer(m) if m.contains(&format!("'{unknown}'"))), "{err}");
    }
}

#[test]
fn gpt2_keeps_number_runs_and_lowercase_contractions() {
    assert_eq!(split("gpt-2", "x1y22 333"), ["x", "1", "y", "22", " 333"]);
    assert_eq!(split("gpt-2", "I'm I'M"), ["I", "'m", " I", "'", "M"]);
    assert_eq!(split("gpt-2", "a  b\n\nc"), ["a", " ", " b", "\n", "\n", "c"]);
}

#[test]
fn llama3_groups_digits_by_three_and_folds_contractions() {
    let s = |t| split("llama-bpe", t);
    assert_eq!(s("Hello world"), ["Hello", " world"]);
    assert_eq!(s("12345 1234567"), ["123", "45", " ", "123", "456", "7"]);
    assert_eq!(s("I'M it's WE'LL"), ["I", "'M", " it", "'s", " WE", "'LL"]);
    // Any one non-letter, non-number, non-newline codepoint right before a letter run
    // prefixes it; a space before punctuation goes with the punctuation instead.
    assert_eq!(s(".Hello _x 3rd"), [".Hello", " _", "x", " ", "3", "rd"]);
    // Punctuation takes one leading space and trailing newlines.
    assert_eq!(s("a !?\n\nx"), ["a", " !?\n\n", "x"]);
    // Whitespace up to its last newline, then the last space goes to the next word.
    assert_eq!(s("x  \n y"), ["x", "  \n", " y"]);
    assert_eq!(s("a\n\nb"), ["a", "\n\n", "b"]);
    assert_eq!(s("x   y"), ["x", "  ", " y"]);
    assert_eq!(s("hi  "), ["hi", "  "]);
    assert_eq!(s("a "), ["a", " "]);
    assert_eq!(s("\u{3000}日本"), ["\u{3000}日本"]);
}

#[test]
fn qwen2_is_llama3_with_single_digits() {
    let s = |t| split("qwen2", t);
    assert_eq!(s("12345"), ["1", "2", "3", "4", "5"]);
    assert_eq!(s("v1.25 x"), ["v", "1", ".", "2", "5", " x"]);
    assert_eq!(s("DON'T"), ["DON", "'T"]);
    assert_eq!(s("    return x\n"), ["   ", " return", " x", "\n"]);
}

#[test]
fn default_splits_punctuation_then_gpt2_then_numbers() {
    let s = |t| split("default", t);
    assert_eq!(s("Hello, world!!! 12345 a1b"), ["Hello", ",", " world", "!!!", " ", "123", "45", " a", "1", "b"]);
    // Backquote is not punctuation to llama.cpp's collapsed \p{P}; $ and + are listed.
    assert_eq!(s("a`b $5+x"), ["a", "`", "b", " ", "$", "5", "+", "x"]);
    // Non-ASCII punctuation and numbers count by category.
    assert_eq!(s("¿sí?٣٤٥٦"), ["¿", "sí", "?", "٣٤٥٦"]);
}

#[test]
fn every_split_concatenates_back_to_the_text() {
    let text = "It's 2024!\r\n\t  Ünïcödé  ٣٤  😀👍🏽 'LL x\u{2028}y  \u{a0} end  ";
    for name in ["gpt-2", "smollm", "llama-bpe", "qwen2", "default"] {
        assert_eq!(split(name, text).concat(), text, "{name}");
        assert!(split(name, text).iter().all(|w| !w.is_empty()), "{name}");
    }
}
