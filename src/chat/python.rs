//! Python's view of template values, where it differs from minijinja's: `json.dumps` (the
//! `tojson` filter Hugging Face transformers installs for chat templates), `str()` (what
//! `{{ value }}` prints in Jinja2: `None`, `True`, `1.0`, `['a', 'b']`) and float `repr`.

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// Deeper nesting than this is refused instead of recursing on (Python's own recursion limit
/// stops `json.dumps` near 1000).
const MAX_DEPTH: usize = 256;

/// `json.dumps` options.
pub(crate) struct JsonStyle {
    /// `indent`: None for one line; otherwise each level's indentation.
    pub indent: Option<String>,
    /// `separators`: between items, and between a key and its value.
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
    /// Bytes the output may reach (what the template's remaining fuel pays for): a huge
    /// `indent` repeated on every line must fail, not allocate.
    pub max_len: usize,
}

impl JsonStyle {
    /// Python's defaults for the separators: `', '` on one line, `','` when indented.
    pub fn new(
        indent: Option<String>,
        separators: Option<(String, String)>,
        sort_keys: bool,
        ensure_ascii: bool,
    ) -> Self {
        let (item_separator, key_separator) = separators.unwrap_or_else(|| {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        });
        JsonStyle { indent, item_separator, key_separator, sort_keys, ensure_ascii, max_len: usize::MAX }
    }
}

fn too_long() -> Error {
    Error::new(ErrorKind::OutOfFuel, "tojson output is larger than the template may produce")
}

fn not_serializable(kind: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("Object of type {kind} is not JSON serializable"))
}

/// `json.dumps(value, ...)` into `out`.
pub(crate) fn dumps(value: &Value, style: &JsonStyle, out: &mut String) -> Result<(), Error> {
    dump_at(value, style, 0, out)
}

fn dump_at(value: &Value, style: &JsonStyle, level: usize, out: &mut String) -> Result<(), Error> {
    if level > MAX_DEPTH {
        return Err(Error::new(ErrorKind::InvalidOperation, "maximum recursion depth exceeded in tojson"));
    }
    if out.len() > style.max_len {
        return Err(too_long());
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => push_number(value, out),
        ValueKind::String => push_json_string(value.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separate(style, level + 1, i == 0, out)?;
                dump_at(item, style, level + 1, out)?;
            }
            close(style, level, out)?;
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                separate(style, level + 1, i == 0, out)?;
                push_json_string(key, style.ensure_ascii, out);
                out.push_str(&style.key_separator);
                dump_at(item, style, level + 1, out)?;
            }
            close(style, level, out)?;
            out.push('}');
        }
        ValueKind::Undefined => return Err(not_serializable("Undefined")),
        ValueKind::Bytes => return Err(not_serializable("bytes")),
        _ => return Err(not_serializable("object")),
    }
    Ok(())
}

/// Before an item: the item separator (not before the first), then a newline and the
/// indentation of `level` when indenting.
fn separate(style: &JsonStyle, level: usize, first: bool, out: &mut String) -> Result<(), Error> {
    if !first {
        out.push_str(&style.item_separator);
    }
    close(style, level, out)
}

/// A newline and the indentation of `level`, when indenting.
fn close(style: &JsonStyle, level: usize, out: &mut String) -> Result<(), Error> {
    if let Some(indent) = &style.indent {
        let grows = indent.len().saturating_mul(level).saturating_add(1);
        if out.len().saturating_add(grows) > style.max_len {
            return Err(too_long());
        }
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and None
/// converted to their JSON text.
fn json_key(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::None => "null".to_owned(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_owned(),
        ValueKind::Number => {
            let mut s = String::new();
            push_number(key, &mut s);
            s
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("keys must be str, int, float, bool or None, not {}", key.kind()),
            ))
        }
    })
}

fn push_number(value: &Value, out: &mut String) {
    if value.is_integer() {
        out.push_str(&value.to_string());
    } else {
        let x = f64::try_from(value.clone()).unwrap_or(f64::NAN);
        out.push_str(&float_repr(x, "NaN", "Infinity"));
    }
}

/// A JSON string literal as Python writes it: `"`, `\` and control characters escaped (the
/// short forms where JSON has them), everything else as is, or as `\uXXXX` (surrogate pairs
/// above the BMP) with `ensure_ascii`.
fn push_json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional for exponents from
/// -4 to 15 (always with a fraction: `1.0`), scientific otherwise (`1e-05`, `1.5e+16`).
pub(crate) fn float_repr(x: f64, nan: &str, inf: &str) -> String {
    if x.is_nan() {
        return nan.to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { inf.to_owned() } else { format!("-{inf}") };
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else {
            let point = point as usize;
            if digits.len() <= point {
                format!("{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs())
    }
}

/// Python's `str(value)`, as Jinja2 prints a value: None, True and False capitalised, floats
/// by `repr`, containers by their `repr` (strings quoted inside them).
pub(crate) fn python_str(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        ValueKind::Undefined => {}
        _ => python_repr(value, 0, out),
    }
}

fn python_repr(value: &Value, level: usize, out: &mut String) {
    if level > MAX_DEPTH {
        out.push_str("...");
        return;
    }
    match value.kind() {
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&float_repr(f64::try_from(value.clone()).unwrap_or(f64::NAN), "nan", "inf")),
        ValueKind::String => push_string_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, level + 1, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, level + 1, out);
                out.push_str(": ");
                python_repr(&value.get_item(&key).unwrap_or_default(), level + 1, out);
            }
            out.push('}');
        }
        // Iterators, objects and undefined values print as minijinja prints them.
        _ => out.push_str(&value.to_string()),
    }
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double one.
fn push_string_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_printable(c) => match c as u32 {
                n @ 0..=0xff => out.push_str(&format!("\\x{n:02x}")),
                n @ 0x100..=0xffff => out.push_str(&format!("\\u{n:04x}")),
                n => out.push_str(&format!("\\U{n:08x}")),
            },
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: everything but the "Other" and
/// "Separator" categories, except the ASCII space.
fn is_printable(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    c == ' '
        || !matches!(
            get_general_category(c),
            G::Control
                | G::Format
                | G::Surrogate
                | G::PrivateUse
                | G::Unassigned
                | G::LineSeparator
                | G::ParagraphSeparator
                | G::SpaceSeparator
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps_str(value: &Value, style: &JsonStyle) -> String {
        let mut out = String::new();
        dumps(value, style, &mut out).unwrap();
        out
    }

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789.125, "123456789.125"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5e-7, "-2.5e-07"),
            (1e100, "1e+100"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x, "NaN", "Infinity"), want, "{x}");
        }
        assert_eq!(float_repr(f64::NEG_INFINITY, "NaN", "Infinity"), "-Infinity");
    }

    #[test]
    fn json_dumps_matches_python_layouts() {
        let value = Value::from_pairs([
            ("b", Value::from(vec![Value::from(1), Value::from(2.5)])),
            ("a", Value::from_pairs([("x", Value::from(()))])),
            ("é\"\n", Value::from(Vec::<Value>::new())),
        ]);
        let plain = JsonStyle::new(None, None, false, false);
        assert_eq!(dumps_str(&value, &plain), r#"{"b": [1, 2.5], "a": {"x": null}, "é\"\n": []}"#);
        let indented = JsonStyle::new(Some("  ".into()), None, true, false);
        assert_eq!(
            dumps_str(&value, &indented),
            "{\n  \"a\": {\n    \"x\": null\n  },\n  \"b\": [\n    1,\n    2.5\n  ],\n  \"é\\\"\\n\": []\n}"
        );
        let compact = JsonStyle::new(None, Some((",".into(), ":".into())), false, true);
        assert_eq!(dumps_str(&value, &compact), r#"{"b":[1,2.5],"a":{"x":null},"\u00e9\"\n":[]}"#);
        assert_eq!(dumps_str(&Value::from("\u{1F600}\u{1}"), &compact), r#""\ud83d\ude00\u0001""#);
    }

    #[test]
    fn str_matches_python() {
        let mut out = String::new();
        let v = Value::from(vec![
            Value::from("it's"),
            Value::from(()),
            Value::from(true),
            Value::from(2.0),
            Value::from("a\u{200b}\u{a0}\u{1F600}\u{e0001}\t"),
        ]);
        python_str(&v, &mut out);
        assert_eq!(out, r#"["it's", None, True, 2.0, 'a\u200b\xa0😀\U000e0001\t']"#);
    }
}
