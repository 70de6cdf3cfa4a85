//! A minimal GGUF metadata reader for the reference test: just enough to fill a `VocabSpec`
//! from a model file without depending on the engine's own GGUF loader.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::tokenizer::VocabSpec;

#[derive(Debug)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

struct Reader<R: Read>(R);

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.0.read_exact(&mut buf)?;
        Ok(buf)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> io::Result<String> {
        let len = self.u64()? as usize;
        let mut buf = vec![0u8; len];
        self.0.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn value(&mut self, ty: u32) -> io::Result<Value> {
        Ok(match ty {
            0 => Value::Int(self.bytes::<1>()?[0] as i64),
            1 => Value::Int(self.bytes::<1>()?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.bytes()?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => Value::Int(self.u32()? as i64),
            5 => Value::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let item_ty = self.u32()?;
                let n = self.u64()?;
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("GGUF value type {ty}"))),
        })
    }
}

/// Reads the `tokenizer.ggml.*` keys of a GGUF v2/v3 file.
pub fn read_vocab_spec(path: &Path) -> io::Result<VocabSpec> {
    let mut r = Reader(BufReader::new(File::open(path)?));
    if &r.bytes::<4>()? != b"GGUF" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not GGUF"));
    }
    let _version = r.u32()?;
    let _tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut kv = HashMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty)?;
        if let Some(name) = key.strip_prefix("tokenizer.ggml.") {
            kv.insert(name.to_string(), value);
        } else if key == "general.name" {
            kv.insert(key, value);
        }
    }

    let string = |k: &str| match kv.get(k) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let strings = |k: &str| match kv.get(k) {
        Some(Value::Array(v)) => {
            Some(v.iter().map(|x| if let Value::Str(s) = x { s.clone() } else { String::new() }).collect())
        }
        _ => None,
    };
    let id = |k: &str| match kv.get(k) {
        Some(Value::Int(i)) => Some(*i as u32),
        _ => None,
    };
    let flag = |k: &str| match kv.get(k) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    let token_types = match kv.get("token_type") {
        Some(Value::Array(v)) => Some(v.iter().map(|x| if let Value::Int(i) = x { *i as i32 } else { 0 }).collect()),
        _ => None,
    };
    let scores = match kv.get("scores") {
        Some(Value::Array(v)) => {
            Some(v.iter().map(|x| if let Value::Float(f) = x { *f as f32 } else { 0.0 }).collect())
        }
        _ => None,
    };
    Ok(VocabSpec {
        model: string("model").unwrap_or_default(),
        pre: string("pre"),
        tokens: strings("tokens").unwrap_or_default(),
        scores,
        token_types,
        merges: strings("merges"),
        bos: id("bos_token_id"),
        eos: id("eos_token_id"),
        eot: id("eot_token_id"),
        eom: id("eom_token_id"),
        unk: id("unknown_token_id"),
        pad: id("padding_token_id"),
        fim_pre: id("prefix_token_id").or(id("fim_pre_token_id")),
        fim_suf: id("suffix_token_id").or(id("fim_suf_token_id")),
        fim_mid: id("middle_token_id").or(id("fim_mid_token_id")),
        fim_pad: id("fim_pad_token_id"),
        fim_rep: id("fim_rep_token_id"),
        fim_sep: id("fim_sep_token_id"),
        add_bos: flag("add_bos_token"),
        add_eos: flag("add_eos_token"),
        add_space_prefix: flag("add_space_prefix"),
        name: string("general.name"),
    })
}
