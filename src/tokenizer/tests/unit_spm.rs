//! Unit tests on tiny hand-made SentencePiece (`llama`) vocabularies: score-driven merging,
//! the space prefix, byte fallback, unknown tokens, special tokens, defaults and decoding.

use crate::tokenizer::{Tokenizer, VocabSpec};

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// `<unk> <s> </s>`, then the 256 byte tokens, then `extra` (text, score, type).
fn spec(extra: &[(&str, f32, i32)]) -> VocabSpec {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].iter().map(|s| s.to_string()).collect();
    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(BYTE);
        scores.push(0.0);
    }
    for &(text, score, ty) in extra {
        tokens.push(text.to_string());
        types.push(ty);
        scores.push(score);
    }
    VocabSpec { model: "llama".into(), tokens, scores: Some(scores), token_types: Some(types), ..VocabSpec::default() }
}

/// A small English-ish vocabulary; higher scores merge first.
fn words() -> Vec<(&'static str, f32, i32)> {
    vec![
        ("\u{2581}", -1.0, NORMAL),
        ("a", -2.0, NORMAL),
        ("b", -2.0, NORMAL),
        ("c", -2.0, NORMAL),
        ("h", -2.0, NORMAL),
        ("i", -2.0, NORMAL),
        ("ab", -3.0, NORMAL),
        ("bc", -4.0, NORMAL),
        ("abc", -5.0, NORMAL),
        ("hi", -3.0, NORMAL),
        ("\u{2581}hi", -2.5, NORMAL),
        ("\u{2581}\u{2581}", -6.0, NORMAL),
        ("<start_of_turn>", 0.0, CONTROL),
        ("<br>", 0.0, USER_DEFINED),
        ("<unused0>", 0.0, UNUSED),
    ]
}

fn tokenizer(extra: &[(&str, f32, i32)]) -> Tokenizer {
    Tokenizer::new(spec(extra)).expect("tokenizer")
}

fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.vocab.text(id).to_string()).collect()
}

fn encode(tok: &Tokenizer, text: &str, special: bool) -> Vec<String> {
    texts(tok, &tok.encode(text, false, special))
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.vocab.id_of(text).expect(text)
}

#[test]
fn higher_scores_merge_first() {
    let mut no_prefix = spec(&words());
    no_prefix.add_space_prefix = Some(false);
    let tok = Tokenizer::new(no_prefix).unwrap();
    // "ab" (-3) beats "bc" (-4); then "abc" is a token and merges too.
    assert_eq!(encode(&tok, "abc", false), ["abc"]);
    // Without "abc", the better pair wins and the rest stays.
    let mut v = words();
    v.retain(|t| t.0 != "abc");
    let mut s = spec(&v);
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(encode(&tok, "abc", false), ["ab", "c"]);
    // Raise "bc" above "ab" and the split flips.
    for t in v.iter_mut().filter(|t| t.0 == "bc") {
        t.1 = -2.9;
    }
    let mut s = spec(&v);
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(encode(&tok, "abc", false), ["a", "bc"]);
}

#[test]
fn equal_scores_merge_the_leftmost_pair() {
    let mut s = spec(&[("a", -1.0, NORMAL), ("aa", -1.0, NORMAL)]);
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(encode(&tok, "aaa", false), ["aa", "a"]);
    assert_eq!(encode(&tok, "aaaaa", false), ["aa", "aa", "a"]);
}

#[test]
fn spaces_become_u2581_and_a_prefix_is_added_by_default() {
    let tok = tokenizer(&words());
    assert!(tok.add_space_prefix, "SentencePiece defaults to add_space_prefix");
    assert_eq!(encode(&tok, "hi", false), ["\u{2581}hi"]);
    assert_eq!(encode(&tok, "hi hi", false), ["\u{2581}hi", "\u{2581}hi"]);
    // A leading space is escaped as well, after the added one.
    assert_eq!(encode(&tok, " hi", false), ["\u{2581}", "\u{2581}hi"]);
    assert_eq!(encode(&tok, "  ", false), ["\u{2581}\u{2581}", "\u{2581}"]);
    // Other whitespace is not escaped.
    assert_eq!(encode(&tok, "\thi", false), ["\u{2581}", "<0x09>", "hi"]);
    assert_eq!(tok.encode("", false, false), Vec::<u32>::new());
}

#[test]
fn the_space_prefix_follows_the_gguf_key() {
    let mut s = spec(&words());
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(encode(&tok, "hi", false), ["hi"]);
    assert_eq!(encode(&tok, "hi hi", false), ["hi", "\u{2581}hi"]);
}

#[test]
fn text_after_a_special_token_gets_the_prefix_again() {
    let tok = tokenizer(&words());
    assert_eq!(encode(&tok, "hi<start_of_turn>hi", true), ["\u{2581}hi", "<start_of_turn>", "\u{2581}hi"]);
    // User-defined tokens split the text even without special parsing, and count as special.
    assert_eq!(encode(&tok, "hi<br>hi", false), ["\u{2581}hi", "<br>", "\u{2581}hi"]);
    // Not parsed: the markup is plain text (bytes here), with one prefix at the start.
    let plain = encode(&tok, "<start_of_turn>hi", false);
    assert_eq!(plain.first().map(String::as_str), Some("\u{2581}"));
    assert_eq!(plain.last().map(String::as_str), Some("hi"));
    assert!(!plain.contains(&"<start_of_turn>".to_string()));
}

#[test]
fn chars_without_a_token_fall_back_to_byte_tokens() {
    let tok = tokenizer(&words());
    assert_eq!(encode(&tok, "é", false), ["\u{2581}", "<0xC3>", "<0xA9>"]);
    assert_eq!(encode(&tok, "😀", false), ["\u{2581}", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
    assert_eq!(encode(&tok, "\u{1}", false), ["\u{2581}", "<0x01>"]);
}

#[test]
fn without_byte_tokens_single_byte_texts_then_unk_are_used() {
    let mut s = VocabSpec {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "x".into(), "\u{2581}".into()],
        token_types: Some(vec![UNKNOWN, CONTROL, CONTROL, NORMAL, NORMAL]),
        ..VocabSpec::default()
    };
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    // No scores: all 0. "x" is a one-byte text; "é" has neither form and becomes <unk>
    // (llama.cpp throws there).
    assert_eq!(encode(&tok, "xé", false), ["x", "<unk>", "<unk>"]);
}

#[test]
fn unknown_and_control_tokens_parse_only_with_special() {
    let tok = tokenizer(&words());
    assert_eq!(tok.encode("<unk>", false, true), [0]);
    assert_ne!(tok.encode("<unk>", false, false), [0]);
    assert_eq!(encode(&tok, "<s>hi</s>", true), ["<s>", "\u{2581}hi", "</s>"]);
}

#[test]
fn merges_may_form_any_token_of_the_vocabulary() {
    // llama.cpp looks pairs up among all tokens, control ones included.
    let mut s = spec(&[("<", -1.0, NORMAL), ("x", -1.0, NORMAL), (">", -1.0, NORMAL), ("<x", -1.0, NORMAL)]);
    s.tokens.push("<x>".into());
    s.scores.as_mut().unwrap().push(0.0);
    s.token_types.as_mut().unwrap().push(CONTROL);
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(encode(&tok, "<x>", false), ["<x>"]);
}

#[test]
fn defaults_are_llama_cpps() {
    let tok = tokenizer(&words());
    assert!(tok.add_bos_default());
    assert_eq!(tok.bos(), Some(1));
    assert!(tok.is_eog(2), "</s> is the default EOS");
    assert!(!tok.is_eog(1));
    assert_eq!(texts(&tok, &tok.encode("hi", true, false)), ["<s>", "\u{2581}hi"]);

    let mut s = spec(&words());
    s.add_bos = Some(false);
    s.add_eos = Some(true);
    s.bos = Some(2);
    s.eos = Some(1);
    let tok = Tokenizer::new(s).unwrap();
    assert!(!tok.add_bos_default());
    assert_eq!(texts(&tok, &tok.encode("hi", true, false)), ["</s>", "\u{2581}hi", "<s>"]);
}

#[test]
fn decoding_drops_the_first_leading_space_and_joins_bytes() {
    let tok = tokenizer(&words());
    let ids = tok.encode("hi hi", false, false);
    assert_eq!(tok.decode(&ids, false), "hi hi");
    // Only the very first token loses its space.
    let hi = id(&tok, "\u{2581}hi");
    assert_eq!(tok.decode(&[hi, hi], false), "hi hi");
    assert_eq!(&*tok.token_bytes(hi, false), b" hi");
    // A BOS first takes the strip (it has no space), so the text keeps its space.
    assert_eq!(tok.decode(&[1, hi], true), "<s> hi");
    assert_eq!(tok.decode(&[1, hi], false), " hi");
    // Byte tokens join into UTF-8; an incomplete sequence decodes lossily.
    let ids = tok.encode("é", false, false);
    assert_eq!(tok.decode(&ids, false), "é");
    assert_eq!(tok.decode(&[id(&tok, "<0xC3>")], false), "\u{FFFD}");
    // User-defined tokens render their raw text; unused ones render nothing.
    assert_eq!(tok.decode(&[id(&tok, "<br>")], false), "<br>");
    assert_eq!(tok.decode(&[id(&tok, "<unused0>")], true), "");
    // Control and unknown tokens only with `special`.
    assert_eq!(tok.decode(&[id(&tok, "<start_of_turn>"), 0], false), "");
    assert_eq!(tok.decode(&[id(&tok, "<start_of_turn>"), 0], true), "<start_of_turn><unk>");

    let mut s = spec(&words());
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(tok.decode(&[hi, hi], false), " hi hi");
}

#[test]
fn long_inputs_round_trip() {
    let mut s = spec(&words());
    s.add_space_prefix = Some(false);
    let tok = Tokenizer::new(s).unwrap();
    let text = "abc hi  bc\n\té😀 <br> x".repeat(5_000);
    assert_eq!(tok.decode(&tok.encode(&text, false, false), false), text);
}
