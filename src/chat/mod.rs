//! Chat templates: the Jinja program a GGUF carries in `tokenizer.chat_template`, rendered as
//! Hugging Face transformers renders it (`apply_chat_template`), so that a prompt is
//! byte-identical to what the model was trained on.
//!
//! transformers compiles templates in a sandboxed Jinja2 environment with `trim_blocks`,
//! `lstrip_blocks` and loop controls, adds `raise_exception`, `strftime_now` and a `tojson`
//! that is Python's `json.dumps`, and passes `messages`, `tools`, `add_generation_prompt` and the
//! special tokens' texts. minijinja is set up the same way here; where its defaults differ from
//! Python (how `None`, booleans, floats and lists print; string methods) the `python` module and
//! minijinja-contrib's `pycompat` bring it back to Python's behaviour.
//!
//! Templates come from downloaded files, so rendering is bounded: minijinja's fuel charges every
//! instruction and every byte a template creates, which caps both time and memory.

mod python;
pub mod strftime;

use std::fmt;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};

use crate::error::{Error, Result};
use python::JsonStyle;
pub use strftime::Clock;

/// Fuel a render may use whatever its input (one fuel is one instruction or 64 bytes of data):
/// about 50 ms of work and 64 MB of strings.
const BASE_FUEL: u64 = 1_000_000;

/// What a template is rendered with besides the conversation.
pub struct TemplateContext<'a> {
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    pub add_generation_prompt: bool,
    pub clock: Clock,
}

/// A conversation to render: `messages` is a JSON array of `{ role, content, ... }` objects and
/// `tools` (if any) a JSON array of tool schemas, both passed to the template as they are.
pub struct Conversation {
    pub messages: serde_json::Value,
    pub tools: Option<serde_json::Value>,
}

impl Conversation {
    /// Parses `{"messages": [...], "tools": [...]}` and checks the messages' shape: every
    /// message an object with a string `role`.
    pub fn from_json(json: &str) -> Result<Conversation> {
        let mut value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid_option("messages", format!("not valid JSON: {e}")))?;
        let messages = value.get_mut("messages").map(serde_json::Value::take).unwrap_or_default();
        let tools = value.get_mut("tools").map(serde_json::Value::take).filter(|t| !t.is_null());
        let list = messages.as_array().ok_or_else(|| Error::invalid_option("messages", "must be an array"))?;
        for (i, message) in list.iter().enumerate() {
            let role = message.as_object().and_then(|m| m.get("role"));
            if !matches!(role, Some(serde_json::Value::String(_))) {
                return Err(Error::invalid_option("messages", format!("message {i} needs a string `role`")));
            }
        }
        if tools.as_ref().is_some_and(|t| !t.is_array()) {
            return Err(Error::invalid_option("tools", "must be an array"));
        }
        let messages = match messages {
            serde_json::Value::Array(list) => serde_json::Value::Array(list.into_iter().map(alias_reasoning).collect()),
            other => other,
        };
        Ok(Conversation { messages, tools })
    }

    /// The same conversation with every string in it (contents, names, tool arguments)
    /// replaced by `f(string)`.
    pub fn map_strings(&self, f: &dyn Fn(&str) -> String) -> Conversation {
        Conversation {
            messages: map_json_strings(&self.messages, f),
            tools: self.tools.as_ref().map(|t| map_json_strings(t, f)),
        }
    }

    fn input_bytes(&self) -> u64 {
        let strings = |v: &serde_json::Value| -> u64 {
            let mut n = 0;
            visit_json_strings(v, &mut |s| n += s.len() as u64 + 8);
            n
        };
        strings(&self.messages) + self.tools.as_ref().map_or(0, strings)
    }
}

/// Names a message's reasoning goes under; templates read the first (`reasoning_content`),
/// gpt-oss's reads `thinking`.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// As transformers does before rendering: a message with reasoning under any of its names gets
/// it as `thinking` (first, unless already there) and as `reasoning_content`.
fn alias_reasoning(message: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(map) = message else { return message };
    let reasoning = REASONING_FIELDS.iter().find_map(|k| map.get(*k).filter(|v| !v.is_null())).cloned();
    let Some(reasoning) = reasoning else { return serde_json::Value::Object(map) };
    let mut aliased = serde_json::Map::new();
    aliased.insert("thinking".to_owned(), reasoning.clone());
    aliased.extend(map);
    aliased.insert("reasoning_content".to_owned(), reasoning);
    serde_json::Value::Object(aliased)
}

fn map_json_strings(value: &serde_json::Value, f: &dyn Fn(&str) -> String) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        J::String(s) => J::String(f(s)),
        J::Array(items) => J::Array(items.iter().map(|v| map_json_strings(v, f)).collect()),
        J::Object(map) => J::Object(map.iter().map(|(k, v)| (k.clone(), map_json_strings(v, f))).collect()),
        other => other.clone(),
    }
}

fn visit_json_strings(value: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    use serde_json::Value as J;
    match value {
        J::String(s) => f(s),
        J::Array(items) => items.iter().for_each(|v| visit_json_strings(v, f)),
        J::Object(map) => map.iter().for_each(|(k, v)| {
            f(k);
            visit_json_strings(v, f)
        }),
        _ => f(""),
    }
}

/// JSON as a template value: objects keep their key order, as Python dicts do.
fn template_value(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => items.iter().map(template_value).collect(),
        J::Object(map) => Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), template_value(v)))),
    }
}

/// Marks an error as the template's own `raise_exception(message)`, reported with just the
/// message.
#[derive(Debug)]
struct Raised;

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message).with_source(Raised))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    // What the remaining fuel pays for (one fuel is 64 bytes), checked before anything that size
    // is allocated.
    let max_len = state.fuel_levels().map_or(usize::MAX, |(_, remaining)| remaining.saturating_mul(64) as usize);
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        // Python turns an int (a bool is one) into that many spaces.
        Some(v) => {
            let n = if v.kind() == ValueKind::Bool { usize::from(v.is_true()) } else { usize::try_from(v)? };
            if n > max_len {
                return Err(minijinja::Error::new(
                    ErrorKind::OutOfFuel,
                    "tojson indent is larger than the template may produce",
                ));
            }
            Some(" ".repeat(n))
        }
    };
    let separators = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> =
                v.try_iter()?.map(|p| p.as_str().map(str::to_owned)).collect::<Option<_>>().unwrap_or_default();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => Some((item, key)),
                Err(_) => {
                    return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "separators must be two strings"))
                }
            }
        }
        _ => None,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let mut out = String::new();
    let style = JsonStyle { max_len, ..JsonStyle::new(indent, separators, sort_keys, ensure_ascii) };
    python::dumps(value, &style, &mut out)?;
    // Serializing walks the whole value: charged like minijinja charges its own tojson.
    state.consume_fuel(out.len() as u64 / 4 + 1)?;
    Ok(Value::from(out))
}

fn environment(clock: Clock) -> Environment<'static> {
    let mut env = Environment::new();
    let syntax =
        SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("default delimiters are valid");
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", move |format: String| Value::from(strftime::strftime(&format, clock)));
    env.set_formatter(|out, _state, value| {
        let mut text = String::new();
        python::python_str(value, &mut text);
        out.write_str(&text).map_err(minijinja::Error::from)
    });
    env
}

fn template_error(e: minijinja::Error) -> Error {
    use std::error::Error as _;
    let raised = e.source().is_some_and(|s| s.is::<Raised>());
    Error::ChatTemplate(match (raised, e.kind()) {
        (true, _) => e.detail().unwrap_or_default().to_owned(),
        (_, ErrorKind::OutOfFuel) => "rendering took more work or memory than a chat template may use".to_owned(),
        _ => e.to_string(),
    })
}

/// transformers' `{% generation %}...{% endgeneration %}` marks the assistant's text for training
/// masks and renders its body unchanged. minijinja has no such tag, so each becomes the block tag
/// `{% if true %}` / `{% endif %}`, which keeps the same whitespace control.
fn without_generation_tags(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains("generation") {
        return source.into();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        // The closing `%}` after the opening `{%` (in `{%}` they overlap).
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            rest = tag;
            break;
        };
        let inner = &tag[2..end];
        let (left, body) = match inner.chars().next() {
            Some(c @ ('-' | '+')) => (c.to_string(), &inner[1..]),
            _ => (String::new(), inner),
        };
        let (body, right) = match body.chars().last() {
            Some(c @ ('-' | '+')) => (&body[..body.len() - 1], c.to_string()),
            _ => (body, String::new()),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{left} {r} {right}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out.into()
}

/// Renders `template` over `conversation`.
pub fn render(template: &str, conversation: &Conversation, context: &TemplateContext) -> Result<String> {
    let mut env = environment(context.clock);
    env.set_fuel(Some(BASE_FUEL + conversation.input_bytes()));
    let source = without_generation_tags(template);
    let compiled = env.template_from_str(&source).map_err(template_error)?;
    let tools = conversation.tools.as_ref().map_or(Value::from(()), template_value);
    let ctx = minijinja::context! {
        messages => template_value(&conversation.messages),
        tools => tools,
        add_generation_prompt => context.add_generation_prompt,
        bos_token => context.bos_token,
        eos_token => context.eos_token,
    };
    compiled.render(ctx).map_err(template_error)
}

#[cfg(test)]
mod tests;
