//! Unicode facts the tokenizers rely on, with llama.cpp's exact definitions (`unicode.cpp`,
//! `unicode-data.cpp`): per-codepoint category flags (\p{L}, \p{N}, ...), llama.cpp's own
//! whitespace set, and GPT-2's reversible byte <-> printable-char mapping.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// The category bits llama.cpp attaches to a codepoint. Exactly one category bit is set for
/// every codepoint; `NONE` (no bit at all) stands for "past the end of the text", which the
/// hand-written matchers use as their end-of-input sentinel, as llama.cpp does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CptFlags(u16);

impl CptFlags {
    pub const NONE: CptFlags = CptFlags(0);

    const UNDEFINED: u16 = 0x0001;
    const NUMBER: u16 = 0x0002;
    const LETTER: u16 = 0x0004;
    const SEPARATOR: u16 = 0x0008;
    const MARK: u16 = 0x0010;
    const PUNCTUATION: u16 = 0x0020;
    const SYMBOL: u16 = 0x0040;
    const CONTROL: u16 = 0x0080;
    const WHITESPACE: u16 = 0x0100;

    pub fn of(c: char) -> CptFlags {
        let category = category_bit(c);
        let whitespace = if is_whitespace(c) { Self::WHITESPACE } else { 0 };
        CptFlags(category | whitespace)
    }

    /// True for every real codepoint, false only for the end-of-input sentinel.
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
    pub fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    pub fn is_punctuation(self) -> bool {
        self.0 & Self::PUNCTUATION != 0
    }
}

fn category_bit(c: char) -> u16 {
    if assigned_after_llama_cpp_tables(c) {
        return CptFlags::UNDEFINED;
    }
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => {
            CptFlags::LETTER
        }
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => CptFlags::NUMBER,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => CptFlags::MARK,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => CptFlags::PUNCTUATION,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => CptFlags::SYMBOL,
        G::SpaceSeparator | G::LineSeparator | G::ParagraphSeparator => CptFlags::SEPARATOR,
        G::Control | G::Format | G::Surrogate | G::PrivateUse => CptFlags::CONTROL,
        // Unassigned, and any category a future crate version might add.
        _ => CptFlags::UNDEFINED,
    }
}

/// Codepoints that the `unicode-general-category` crate (Unicode 16.0) assigns but llama.cpp's
/// generated tables (an older Unicode) still treat as unassigned. Found by comparing the crate
/// with llama.cpp's `unicode_ranges_flags` over all 0x110000 codepoints: these ranges are the
/// only differences, so with them every codepoint gets llama.cpp's category.
const ASSIGNED_AFTER_LLAMA_CPP: &[(u32, u32)] = &[
    (0x897, 0x897),
    (0x1B4E, 0x1B4F),
    (0x1B7F, 0x1B7F),
    (0x1C89, 0x1C8A),
    (0x2427, 0x2429),
    (0x31E4, 0x31E5),
    (0xA7CB, 0xA7CD),
    (0xA7DA, 0xA7DC),
    (0x105C0, 0x105F3),
    (0x10D40, 0x10D65),
    (0x10D69, 0x10D85),
    (0x10D8E, 0x10D8F),
    (0x10EC2, 0x10EC4),
    (0x10EFC, 0x10EFC),
    (0x11380, 0x11389),
    (0x1138B, 0x1138B),
    (0x1138E, 0x1138E),
    (0x11390, 0x113B5),
    (0x113B7, 0x113C0),
    (0x113C2, 0x113C2),
    (0x113C5, 0x113C5),
    (0x113C7, 0x113CA),
    (0x113CC, 0x113D5),
    (0x113D7, 0x113D8),
    (0x113E1, 0x113E2),
    (0x116D0, 0x116E3),
    (0x11BC0, 0x11BE1),
    (0x11BF0, 0x11BF9),
    (0x11F5A, 0x11F5A),
    (0x13460, 0x143FA),
    (0x16100, 0x16139),
    (0x16D40, 0x16D79),
    (0x18CFF, 0x18CFF),
    (0x1CC00, 0x1CCF9),
    (0x1CD00, 0x1CEB3),
    (0x1E5D0, 0x1E5FA),
    (0x1E5FF, 0x1E5FF),
    (0x1F8B2, 0x1F8BB),
    (0x1F8C0, 0x1F8C1),
    (0x1FA89, 0x1FA89),
    (0x1FA8F, 0x1FA8F),
    (0x1FABE, 0x1FABE),
    (0x1FAC6, 0x1FAC6),
    (0x1FADC, 0x1FADC),
    (0x1FADF, 0x1FADF),
    (0x1FAE9, 0x1FAE9),
    (0x1FBCB, 0x1FBEF),
];

/// The Unicode version the override table above was computed against; a test pins it so a
/// crate upgrade forces the table to be recomputed.
#[cfg(test)]
pub(crate) const CATEGORY_TABLE_UNICODE_VERSION: (u64, u64, u64) = (16, 0, 0);

fn assigned_after_llama_cpp_tables(c: char) -> bool {
    let cp = c as u32;
    if cp < ASSIGNED_AFTER_LLAMA_CPP[0].0 {
        return false;
    }
    let i = ASSIGNED_AFTER_LLAMA_CPP.partition_point(|&(first, _)| first <= cp);
    i > 0 && cp <= ASSIGNED_AFTER_LLAMA_CPP[i - 1].1
}

/// llama.cpp's whitespace set (Unicode White_Space), which is what its matchers mean by `\s`.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// Bytes that GPT-2 maps to themselves (printable Latin-1); every other byte is shifted to
/// U+0100 and up in byte order, so the mapping is a bijection onto printable chars.
const fn maps_to_itself(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if maps_to_itself(b) {
            b
        } else {
            shifted += 1;
            0x100 + shifted - 1
        };
        table[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
};

/// Bytes not mapping to themselves, in the order they were shifted to U+0100.. .
const SHIFTED_BYTES: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0;
    let mut b = 0u32;
    while b < 256 {
        if !maps_to_itself(b) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

/// GPT-2 byte-level encoding of one byte.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// Inverse of [`byte_to_char`]; `None` for chars outside the mapping.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if maps_to_itself(cp) {
        return Some(cp as u8);
    }
    let shifted = cp.checked_sub(0x100)?;
    SHIFTED_BYTES.get(shifted as usize).copied()
}

/// Appends the GPT-2 byte-level encoding of `text` to `out`.
pub(crate) fn byte_encode_into(text: &str, out: &mut String) {
    out.extend(text.bytes().map(byte_to_char));
}
