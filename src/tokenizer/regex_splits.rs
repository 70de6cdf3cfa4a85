//! The split regexes that llama.cpp runs through std::regex rather than a hand-written
//! matcher. There, a pattern with `\p{..}` classes is matched against a "collapsed" copy of
//! the text in which each ASCII codepoint stays itself and every other one becomes a byte
//! standing for its category (whitespace first, then number, letter, punctuation, mark,
//! symbol, or a catch-all); the class `\p{N}` becomes `[<number byte>0-9]` and so on. So a
//! non-ASCII codepoint matches a class by its category alone, an ASCII one only by the
//! class's explicit ASCII ranges. Matches become words, and so does each run of text between
//! them (`unicode_regex_split_stl`).

use super::pretokenize::Segment;
use super::unicode::CptFlags;

/// `\p{N}` as matched on the collapsed text.
pub(crate) fn is_number(c: char, flags: CptFlags) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        !flags.is_whitespace() && flags.is_number()
    }
}

/// `[\p{P}\$\+<=>\^~\|]` (the first regex of llama.cpp's default list) as matched on the
/// collapsed text; the ASCII part is llama.cpp's own list of punctuation bytes for `\p{P}`
/// (`` ` `` is not among them) plus the explicit symbols.
pub(crate) fn is_default_punctuation(c: char, flags: CptFlags) -> bool {
    if c.is_ascii() {
        matches!(
            c,
            '!' | '"'
                | '#'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '?'
                | '@'
                | '['
                | '\\'
                | ']'
                | '_'
                | '{'
                | '}'
                | '$'
                | '+'
                | '<'
                | '='
                | '>'
                | '^'
                | '~'
                | '|'
        )
    } else {
        !flags.is_whitespace() && flags.is_punctuation()
    }
}

/// `class` (a single-codepoint pattern): every matching codepoint is a word of its own, and
/// so is each run of codepoints between them.
pub(crate) fn isolate(seg: &Segment, class: fn(char, CptFlags) -> bool, out: &mut Vec<usize>) {
    let mut gap_start = seg.start;
    for pos in seg.start..seg.end {
        if class(seg.cpts[pos], seg.flags[pos]) {
            if pos > gap_start {
                out.push(pos - gap_start);
            }
            out.push(1);
            gap_start = pos + 1;
        }
    }
    if seg.end > gap_start {
        out.push(seg.end - gap_start);
    }
}

/// `class+`: maximal runs of matching codepoints are words, and so is each run between them.
pub(crate) fn runs(seg: &Segment, class: fn(char, CptFlags) -> bool, out: &mut Vec<usize>) {
    let mut pos = seg.start;
    while pos < seg.end {
        let matching = class(seg.cpts[pos], seg.flags[pos]);
        let start = pos;
        while pos < seg.end && class(seg.cpts[pos], seg.flags[pos]) == matching {
            pos += 1;
        }
        out.push(pos - start);
    }
}

/// `[0-9][0-9][0-9]` (std::wregex on the codepoints, so ASCII digits only): leftmost
/// non-overlapping triples are words, and so is each run between them.
pub(crate) fn ascii_digit_triples(seg: &Segment, out: &mut Vec<usize>) {
    let is_digit = |pos: usize| pos < seg.end && seg.cpts[pos].is_ascii_digit();
    let mut gap_start = seg.start;
    let mut pos = seg.start;
    while pos + 3 <= seg.end {
        if is_digit(pos) && is_digit(pos + 1) && is_digit(pos + 2) {
            if pos > gap_start {
                out.push(pos - gap_start);
            }
            out.push(3);
            pos += 3;
            gap_start = pos;
        } else {
            pos += 1;
        }
    }
    if seg.end > gap_start {
        out.push(seg.end - gap_start);
    }
}
