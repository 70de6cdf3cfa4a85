//! llama.cpp's hand-written regex matchers (`unicode_regex_split_custom_gpt2`, `_llama3` and
//! `_qwen2` in `unicode.cpp`), step for step: they are what llama.cpp actually runs for these
//! patterns, and they differ from a real regex engine in corner cases (which codepoints count
//! as `\s`, how a trailing space is grouped), so they are reproduced rather than re-derived
//! from the patterns.
//!
//! Each function appends the lengths (in codepoints) of the words it finds in one segment.

use super::pretokenize::Segment;
use super::unicode::CptFlags;

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (the original
/// GPT-2 pattern: lowercase-only contractions).
pub(crate) fn gpt2(seg: &Segment, out: &mut Vec<usize>) {
    let mut pos = seg.start;
    while pos < seg.end {
        let end = gpt2_match_end(seg, pos);
        out.push(end - pos);
        pos = end;
    }
}

/// Where the GPT-2 pattern's match starting at `pos` ends (always past `pos`).
fn gpt2_match_end(seg: &Segment, pos: usize) -> usize {
    let c = seg.cpts[pos];

    if let Some(end) = contraction_end(seg, pos, false) {
        return end;
    }

    // An optional leading space belongs to the letter / number / other run after it.
    let body = if c == ' ' { pos + 1 } else { pos };
    let first = seg.flags(body);
    let run_end = |class: fn(CptFlags) -> bool| {
        let mut p = body;
        while class(seg.flags(p)) {
            p += 1;
        }
        p
    };
    if first.is_letter() {
        return run_end(CptFlags::is_letter);
    }
    if first.is_number() {
        return run_end(CptFlags::is_number);
    }
    if is_other(first) {
        return run_end(is_other);
    }

    let spaces = whitespace_run(seg, pos);
    // \s+(?!\S): a whitespace run followed by more text leaves its last codepoint to
    // prefix the next word.
    if spaces > 1 && seg.cpt(pos + spaces).is_some() {
        return pos + spaces - 1;
    }
    if spaces > 0 {
        return pos + spaces;
    }
    // Unreachable for real codepoints (every one has a category); llama.cpp emits one
    // codepoint here, and so do we.
    pos + 1
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` — llama3 with `max_digits` 3, qwen2 with 1.
pub(crate) fn llama3(seg: &Segment, max_digits: usize, out: &mut Vec<usize>) {
    let mut pos = seg.start;
    while pos < seg.end {
        let start = pos;
        let c = seg.cpts[pos];
        let flags = seg.flags(pos);

        if let Some(end) = contraction_end(seg, pos, true) {
            out.push(end - start);
            pos = end;
            continue;
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+ : one optional non-letter prefix (llama.cpp takes any
        // codepoint that is not CR, LF or a number, letters included) before a letter run.
        if !(c == '\r' || c == '\n' || flags.is_number()) && (flags.is_letter() || seg.flags(pos + 1).is_letter()) {
            pos += 1;
            while seg.flags(pos).is_letter() {
                pos += 1;
            }
            out.push(pos - start);
            continue;
        }

        // \p{N}{1,max_digits}: a number run cut into groups from the left.
        if flags.is_number() {
            let mut group_start = pos;
            while seg.flags(pos).is_number() {
                pos += 1;
                if pos - group_start >= max_digits {
                    out.push(pos - group_start);
                    group_start = pos;
                }
            }
            if pos > group_start {
                out.push(pos - group_start);
            }
            continue;
        }

        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'. llama.cpp tests the codepoint after an optional space,
        // but requires only the first codepoint itself to exist, so a space at the very end
        // of the segment is taken here as a word of its own.
        let mut flags2 = if c == ' ' { seg.flags(pos + 1) } else { flags };
        if !(flags2.is_whitespace() || flags2.is_letter() || flags2.is_number()) && flags.is_some() {
            if c == ' ' {
                pos += 1;
            }
            while !(flags2.is_whitespace() || flags2.is_letter() || flags2.is_number()) && flags2.is_some() {
                pos += 1;
                flags2 = seg.flags(pos);
            }
            while matches!(seg.cpt(pos), Some('\r' | '\n')) {
                pos += 1;
            }
            out.push(pos - start);
            continue;
        }

        // Whitespace: up to and including its last CR / LF if it has one (\s*[\r\n]+), else
        // all but the last codepoint when text follows (\s+(?!\S)), else all of it (\s+).
        let spaces = whitespace_run(seg, pos);
        let last_newline_end = (0..spaces).rev().find(|&i| matches!(seg.cpts[pos + i], '\r' | '\n')).map(|i| i + 1);
        let len = match last_newline_end {
            Some(end) => end,
            None if spaces > 1 && seg.cpt(pos + spaces).is_some() => spaces - 1,
            None if spaces > 0 => spaces,
            // Not reachable for real codepoints; llama.cpp emits one codepoint.
            None => 1,
        };
        out.push(len);
        pos += len;
    }
}

/// The end of a contraction (`'s 't 're 've 'm 'll 'd`) starting at `pos`, if one does.
/// `any_case` is the llama3 family's `(?i:...)`; only ASCII letters can lowercase into
/// these (llama.cpp's lowercase table maps no other codepoint to them).
fn contraction_end(seg: &Segment, pos: usize, any_case: bool) -> Option<usize> {
    if seg.cpts[pos] != '\'' || pos + 1 >= seg.end {
        return None;
    }
    let fold = |c: char| if any_case { c.to_ascii_lowercase() } else { c };
    let next = fold(seg.cpts[pos + 1]);
    if matches!(next, 's' | 't' | 'm' | 'd') {
        return Some(pos + 2);
    }
    let next2 = fold(seg.cpt(pos + 2)?);
    matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')).then_some(pos + 3)
}

/// How many whitespace codepoints start at `pos`.
fn whitespace_run(seg: &Segment, pos: usize) -> usize {
    let mut n = 0;
    while seg.flags(pos + n).is_whitespace() {
        n += 1;
    }
    n
}

/// `[^\s\p{L}\p{N}]` within the segment.
fn is_other(f: CptFlags) -> bool {
    f.is_some() && !f.is_whitespace() && !f.is_letter() && !f.is_number()
}
