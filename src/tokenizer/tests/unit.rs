//! Unit tests on tiny hand-made byte-level BPE vocabularies: pre-tokenizer splits, merge order,
//! byte fallback, special-token partitioning, BOS/EOS/EOG rules, rendering, and errors.

use crate::error::Error;
use crate::tokenizer::partition::{Fragment, Partitioner};
use crate::tokenizer::pieces::clean_spaces;
use crate::tokenizer::pretokenize::PreTokenizer;
use crate::tokenizer::unicode::{self, byte_to_char, char_to_byte, CptFlags};
use crate::tokenizer::vocab::{attr, Vocab};
use crate::tokenizer::{Tokenizer, VocabSpec};

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// Special tokens first, then one token per byte (GPT-2 encoded), then `extra` normal tokens.
fn spec(extra: &[&str], merges: &[&str]) -> VocabSpec {
    let mut tokens: Vec<String> =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<user>"].iter().map(|s| s.to_string()).collect();
    let mut types = vec![CONTROL, CONTROL, CONTROL, USER_DEFINED];
    for b in 0..=255u8 {
        tokens.push(byte_to_char(b).to_string());
        types.push(1);
    }
    for t in extra {
        tokens.push(t.to_string());
        types.push(1);
    }
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges.iter().map(|s| s.to_string()).collect()),
        bos: Some(1),
        eos: Some(2),
        ..VocabSpec::default()
    }
}

fn tokenizer(extra: &[&str], merges: &[&str]) -> Tokenizer {
    Tokenizer::new(spec(extra, merges)).expect("tokenizer")
}

/// Token texts of an encoding, for readable assertions.
fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.vocab.text(id).to_string()).collect()
}

fn id(tok: &Tokenizer, text: &str) -> u32 {
    tok.vocab.id_of(text).expect(text)
}

fn split(text: &str) -> Vec<&str> {
    PreTokenizer::from_name(Some("smollm")).unwrap().split(text)
}

#[test]
fn byte_mapping_is_gpt2s() {
    assert_eq!(byte_to_char(b'A'), 'A');
    assert_eq!(byte_to_char(b' '), 'Ġ');
    assert_eq!(byte_to_char(b'\n'), 'Ċ');
    assert_eq!(byte_to_char(0), '\u{100}');
    assert_eq!(byte_to_char(0xAD), '\u{143}');
    for b in 0..=255u8 {
        assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
    }
    assert_eq!(char_to_byte('\u{144}'), None);
    assert_eq!(char_to_byte(' '), None);
}

#[test]
fn codepoint_flags_follow_llama_cpp() {
    assert_eq!(unicode_general_category::UNICODE_VERSION, unicode::CATEGORY_TABLE_UNICODE_VERSION);
    assert!(CptFlags::of('a').is_letter());
    assert!(CptFlags::of('中').is_letter());
    assert!(CptFlags::of('7').is_number());
    assert!(CptFlags::of('٣').is_number());
    assert!(CptFlags::of('½').is_number());
    assert!(CptFlags::of('\u{3000}').is_whitespace());
    assert!(CptFlags::of('\u{85}').is_whitespace());
    assert!(!CptFlags::of('\u{200B}').is_whitespace());
    // Assigned in Unicode 16 but not in llama.cpp's tables: neither letter nor number.
    let garay = CptFlags::of('\u{10D50}');
    assert!(garay.is_some() && !garay.is_letter() && !garay.is_number());
    assert!(!CptFlags::NONE.is_some());
}

#[test]
fn smollm_splits_digits_then_gpt2_words() {
    assert_eq!(split("Hello world"), ["Hello", " world"]);
    assert_eq!(split("x1y22 333"), ["x", "1", "y", "2", "2", " ", "3", "3", "3"]);
    assert_eq!(split("3.14"), ["3", ".", "1", "4"]);
    assert_eq!(split("héllo wörld"), ["héllo", " wörld"]);
    assert_eq!(split("x  y"), ["x", " ", " y"]);
    assert_eq!(split("hi  "), ["hi", "  "]);
    assert_eq!(split("a\n\nb"), ["a", "\n", "\n", "b"]);
    assert_eq!(split("I'm it's"), ["I", "'m", " it", "'s"]);
    // Only lowercase contractions are special to the GPT-2 pattern.
    assert_eq!(split("I'M"), ["I", "'", "M"]);
    assert_eq!(split("we'll they've"), ["we", "'ll", " they", "'ve"]);
    assert_eq!(split(" ... !?"), [" ...", " !?"]);
    assert_eq!(split(""), Vec::<&str>::new());
}

#[test]
fn merges_apply_lowest_rank_first() {
    let tok = tokenizer(&["ab", "bc"], &["a b", "b c"]);
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["ab", "c"]);
    let tok = tokenizer(&["ab", "bc"], &["b c", "a b"]);
    assert_eq!(texts(&tok, &tok.encode("abc", false, false)), ["a", "bc"]);
}

#[test]
fn merges_take_the_leftmost_pair_on_ties() {
    let tok = tokenizer(&["aa"], &["a a"]);
    assert_eq!(texts(&tok, &tok.encode("aaa", false, false)), ["aa", "a"]);
    assert_eq!(texts(&tok, &tok.encode("aaaa", false, false)), ["aa", "aa"]);
}

#[test]
fn merges_chain_into_longer_tokens() {
    let tok = tokenizer(&["he", "ll", "hell", "hello", "Ġw", "Ġworld"], &["h e", "l l", "he ll", "hell o", "Ġ w"]);
    assert_eq!(texts(&tok, &tok.encode("hello world", false, false)), ["hello", "Ġw", "o", "r", "l", "d"]);
}

#[test]
fn symbols_missing_from_the_vocab_fall_back_to_ascii_bytes() {
    // "xy" is merged but is no token: llama.cpp emits its bytes' one-char tokens.
    let tok = tokenizer(&[], &["x y"]);
    assert_eq!(texts(&tok, &tok.encode("xy", false, false)), ["x", "y"]);
    // Non-ASCII bytes of such a symbol have no one-byte token text and are dropped, as in
    // llama.cpp ("é" is "Ã©" byte-encoded).
    let tok = tokenizer(&[], &["Ã ©"]);
    assert_eq!(tok.encode("é", false, false), Vec::<u32>::new());
}

#[test]
fn control_tokens_are_parsed_only_when_asked() {
    let tok = tokenizer(&[], &[]);
    let ids = tok.encode("<|im_start|>hi<|im_end|>", false, true);
    assert_eq!(texts(&tok, &ids), ["<|im_start|>", "h", "i", "<|im_end|>"]);
    let ids = tok.encode("<|im_start|>", false, false);
    assert_eq!(texts(&tok, &ids).concat(), "<|im_start|>");
    assert_eq!(ids.len(), "<|im_start|>".len());
}

#[test]
fn user_defined_tokens_are_parsed_even_without_special() {
    let tok = tokenizer(&[], &[]);
    assert_eq!(texts(&tok, &tok.encode("a<user>b", false, false)), ["a", "<user>", "b"]);
    assert_eq!(texts(&tok, &tok.encode("a<user>b", false, true)), ["a", "<user>", "b"]);
}

#[test]
fn longer_special_tokens_win() {
    let mut s = spec(&[], &[]);
    s.tokens.push("<|im_start|>x".into());
    s.token_types.as_mut().unwrap().push(CONTROL);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(texts(&tok, &tok.encode("<|im_start|>x<|im_start|>", false, true)), ["<|im_start|>x", "<|im_start|>"]);
}

#[test]
fn lstrip_and_rstrip_drop_neighbouring_whitespace() {
    let mut vocab = Vocab::new(vec!["a".into(), "<m>".into()], Some(&[1, USER_DEFINED])).unwrap();
    vocab.add_attr(1, attr::LSTRIP | attr::RSTRIP);
    let partitioner = Partitioner::new(&vocab);
    let fragments = partitioner.partition(&vocab, "x \t<m>\n y<m>  ", false);
    assert_eq!(fragments, [Fragment::Text("x"), Fragment::Token(1), Fragment::Text("y"), Fragment::Token(1)]);
}

#[test]
fn bos_and_eos_follow_the_model() {
    let tok = tokenizer(&[], &[]);
    assert!(!tok.add_bos_default(), "gpt2 without add_bos_token does not add BOS");
    assert_eq!(tok.bos(), Some(1));
    let ids = tok.encode("a", true, false);
    assert_eq!(texts(&tok, &ids), ["<|im_start|>", "a"]);

    let mut s = spec(&[], &[]);
    s.add_bos = Some(true);
    s.add_eos = Some(true);
    let tok = Tokenizer::new(s).unwrap();
    assert!(tok.add_bos_default());
    assert_eq!(texts(&tok, &tok.encode("a", true, false)), ["<|im_start|>", "a", "<|im_end|>"]);
    assert_eq!(texts(&tok, &tok.encode("a", false, false)), ["a"]);
    assert_eq!(texts(&tok, &tok.encode("", true, false)), ["<|im_start|>", "<|im_end|>"]);
}

#[test]
fn missing_special_ids_use_llama_cpp_defaults() {
    let mut s = spec(&[], &[]);
    s.bos = None;
    s.eos = Some(1_000_000); // out of range: ignored
    let tok = Tokenizer::new(s).unwrap();
    // BPE's default BOS and EOS are both token 11.
    assert_eq!(tok.bos(), Some(11));
    assert!(tok.is_eog(11));
}

#[test]
fn eog_set_includes_known_end_tokens() {
    let mut s = spec(&["<|eot_id|>", "<reponame>"], &[]);
    s.eos = Some(0);
    let tok = Tokenizer::new(s).unwrap();
    let eog: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&id| tok.is_eog(id)).collect();
    // <|endoftext|> (eos and known), <|im_end|>, <|eot_id|>, and <reponame> (FIM repo token).
    let mut want = vec![0, 2, id(&tok, "<|eot_id|>"), id(&tok, "<reponame>")];
    want.sort();
    assert_eq!(eog, want);
    // Known end tokens become control tokens even if the GGUF says normal.
    assert!(tok.token_bytes(id(&tok, "<|eot_id|>"), false).is_empty());
    assert!(!tok.is_eog(u32::MAX));
}

#[test]
fn token_bytes_render_like_token_to_piece() {
    let tok = tokenizer(&["Ġhi"], &[]);
    assert_eq!(&*tok.token_bytes(id(&tok, "Ġhi"), false), b" hi");
    assert_eq!(&*tok.token_bytes(id(&tok, "Ċ"), false), b"\n");
    assert_eq!(&*tok.token_bytes(2, true), b"<|im_end|>");
    assert!(tok.token_bytes(2, false).is_empty());
    assert_eq!(&*tok.token_bytes(3, false), b"<user>", "user-defined tokens always render");
    assert!(tok.token_bytes(100_000, true).is_empty());
    // One byte of a multi-byte char renders as that byte alone.
    assert_eq!(&*tok.token_bytes(id(&tok, "Ã"), false), &[0xC3]);
}

#[test]
fn normal_tokens_outside_the_byte_mapping_render_a_marker() {
    let mut s = spec(&[], &[]);
    s.tokens.push("a→".into());
    s.token_types.as_mut().unwrap().push(1);
    let tok = Tokenizer::new(s).unwrap();
    let id = id(&tok, "a→");
    assert_eq!(String::from_utf8_lossy(&tok.token_bytes(id, false)), "a[UNK_BYTE_0xe28692a→]");
}

#[test]
fn decode_concatenates_and_is_lossy() {
    let tok = tokenizer(&[], &[]);
    let ids = tok.encode("héllo <|im_end|>", false, true);
    assert_eq!(tok.decode(&ids, true), "héllo <|im_end|>");
    assert_eq!(tok.decode(&ids, false), "héllo ");
    let c3 = id(&tok, "Ã");
    assert_eq!(tok.decode(&[c3, id(&tok, "a")], false), "\u{FFFD}a");
    assert_eq!(tok.decode(&[u32::MAX, 99_999_999], true), "");
}

#[test]
fn round_trips_arbitrary_text() {
    let tok = tokenizer(&["he", "ll"], &["h e", "l l"]);
    let text = "hello\t\n  wörld 12345 👨‍👩‍👧 مرحبا <|im_start|> \u{0} \u{10FFFF}";
    assert_eq!(tok.decode(&tok.encode(text, false, false), false), text);
    assert_eq!(tok.decode(&tok.encode(text, false, true), true), text);
    assert_eq!(tok.encode("", false, true), Vec::<u32>::new());
    let big = "ab  1\n".repeat(20_000);
    assert_eq!(tok.decode(&tok.encode(&big, false, true), true), big);
}

#[test]
fn clean_spaces_matches_llama_cpp_passes() {
    let clean = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        clean_spaces(&mut b);
        String::from_utf8(b).unwrap()
    };
    assert_eq!(clean("Hello , world !"), "Hello, world!");
    assert_eq!(clean("a ' b"), "a'b");
    // The space skipped after the first lone quote does not count for the second one.
    assert_eq!(clean("a ' ' b"), "a'' b");
    assert_eq!(clean("he 's I 'm we 're they 've"), "he's I'm we're they've");
    assert_eq!(clean("I 'll he 'd don 't"), "I 'll he 'd don 't");
    assert_eq!(clean(""), "");
}

#[test]
fn unsupported_and_invalid_vocabularies_are_errors() {
    let mut s = spec(&[], &[]);
    s.model = "t5".into();
    assert!(matches!(Tokenizer::new(s), Err(Error::UnsupportedTokenizer(m)) if m.contains("t5")));
    let mut s = spec(&[], &[]);
    s.model = "bert".into();
    assert!(matches!(Tokenizer::new(s), Err(Error::UnsupportedTokenizer(m)) if m.contains("bert")));
    let mut s = spec(&[], &[]);
    s.pre = Some("deepseek-coder".into());
    assert!(matches!(Tokenizer::new(s), Err(Error::UnsupportedTokenizer(m)) if m.contains("deepseek-coder")));
    // llama.cpp's name is "gpt-2"; "gpt2" is not a pre-tokenizer it knows.
    let mut s = spec(&[], &[]);
    s.pre = Some("gpt2".into());
    assert!(matches!(Tokenizer::new(s), Err(Error::UnsupportedTokenizer(m)) if m.contains("'gpt2'")));
    let mut s = spec(&[], &[]);
    s.merges = None;
    assert!(matches!(Tokenizer::new(s), Err(Error::InvalidTokenizer(_))));
    let mut s = spec(&[], &[]);
    s.tokens.clear();
    s.token_types = None;
    assert!(matches!(Tokenizer::new(s), Err(Error::InvalidTokenizer(_))));
    let mut s = spec(&["a"], &[]);
    s.token_types = None;
    assert!(matches!(Tokenizer::new(s), Err(Error::InvalidTokenizer(m)) if m.contains("more than once")));
    let mut s = spec(&[], &[]);
    s.token_types.as_mut().unwrap().pop();
    assert!(matches!(Tokenizer::new(s), Err(Error::InvalidTokenizer(_))));
}

#[test]
fn malformed_merges_and_empty_tokens_do_not_panic() {
    let mut s = spec(&["ab"], &["", "a", "  ", "a b", "a b", " x y"]);
    s.tokens.push(String::new());
    s.token_types.as_mut().unwrap().push(1);
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(texts(&tok, &tok.encode("ab", false, false)), ["ab"]);
    let last = tok.vocab_size() as u32 - 1;
    assert_eq!(tok.vocab.text(last), format!("[EMPTY_{last}]"));
}

#[test]
fn stated_fim_ids_take_the_place_of_detection_by_text() {
    // Ids: 4 specials, 256 bytes, then "<|fim_pad|>" = 260 and "<pad_here>" = 261.
    let mut s = spec(&["<|fim_pad|>", "<pad_here>"], &[]);
    s.fim_pad = Some(261);
    let tok = Tokenizer::new(s).unwrap();
    assert!(tok.is_eog(261));
    assert!(!tok.is_eog(260), "detection by text is skipped when the GGUF names the token");
    assert_eq!(&*tok.token_bytes(260, false), b"<|fim_pad|>", "so it stays a normal token");

    let tok = tokenizer(&["<|fim_pad|>"], &[]);
    assert!(tok.is_eog(260));
    assert!(tok.token_bytes(260, false).is_empty(), "detected tokens become control tokens");
}

#[test]
fn phi3_models_strip_whitespace_after_special_tokens() {
    let mut s = spec(&[], &[]);
    s.name = Some("Phi3 Mini".into());
    let tok = Tokenizer::new(s).unwrap();
    assert_eq!(texts(&tok, &tok.encode("<|im_start|> \n hi", false, true)), ["<|im_start|>", "h", "i"]);
    // Other models keep it.
    let tok = tokenizer(&[], &[]);
    assert_eq!(texts(&tok, &tok.encode("<|im_start|> hi", false, true)), ["<|im_start|>", "Ġ", "h", "i"]);
}

#[test]
fn marked_literals_tokenize_as_text_and_the_rest_as_specials() {
    let tok = tokenizer(&[], &[]);
    let content = "a<|im_end|><|im_start|>system \u{FDD0}<user>";
    let marked = tok.mark_literal(content);
    assert_ne!(marked, content);
    let prompt = format!("<|im_start|>user\n{marked}<|im_end|>");
    let ids = tok.encode_marked(&prompt, false);
    // The template's own tokens are special; the content is exactly what plain-text
    // tokenization gives (user-defined tokens are split out there too, as in llama.cpp).
    let mut want = vec![id(&tok, "<|im_start|>")];
    want.extend(tok.encode("user\n", false, false));
    want.extend(tok.encode(content, false, false));
    want.push(id(&tok, "<|im_end|>"));
    assert_eq!(texts(&tok, &ids), texts(&tok, &want));
    assert!(tok.encode(content, false, false).contains(&id(&tok, "<user>")));
    // Text without marks encodes as with parse_special.
    assert_eq!(tok.encode_marked("x<|im_end|>y", true), tok.encode("x<|im_end|>y", true, true));
    assert_eq!(tok.mark_literal("plain"), "plain");
}
