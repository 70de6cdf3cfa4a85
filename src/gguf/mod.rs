//! GGUF container reader (versions 2 and 3) over a memory-mapped file.
//!
//! Owns parsing and validation of the header, metadata and tensor infos, and hands out
//! bounds-checked `TensorView`s. It knows nothing about model architectures: which keys and
//! tensors a model needs is the model loader's business.
//!
//! Every size and offset is a u64 combined with checked arithmetic, so files over 4 GB work and
//! corrupt counts or lengths become errors, never panics or huge allocations.

mod value;

use std::collections::HashMap;
use std::path::Path;

pub use value::{Value, ValueType};

use crate::error::{Error, Result};
use crate::mapping::MappedFile;
use crate::tensor::{GgmlType, TensorView, WeightLayout};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Deeper nesting of arrays than this is treated as corruption (real files nest at most twice).
const MAX_ARRAY_DEPTH: u32 = 8;
const MAX_DIMS: u32 = 4;

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Innermost dimension first; unused trailing dimensions are 1.
    pub dims: [u64; 4],
    pub n_dims: usize,
    /// Absolute offset of the data in the file, or in the copy holding it where `copied`.
    pub offset: u64,
    pub size: u64,
    /// How its rows are arranged where `offset` points: the file's layout unless the data was
    /// copied and rearranged for the kernels.
    pub layout: WeightLayout,
    /// The data was copied at load into the process's own memory (`ResidentWeights`), and
    /// `offset` is its place there; otherwise it is read from the file (or from a buffer the
    /// pager filled from it).
    pub copied: bool,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Rows: the product of every dimension but the innermost (1 for a vector).
    pub fn rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }

    pub fn shape(&self) -> Vec<u64> {
        self.dims[..self.n_dims].to_vec()
    }
}

pub struct GgufFile {
    file: MappedFile,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset where tensor data begins.
    pub data_offset: u64,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::parse(MappedFile::open(path)?)
    }

    pub fn parse(file: MappedFile) -> Result<Self> {
        let name = file.path().display().to_string();
        let Parsed { version, metadata, key_index, tensors, tensor_index, alignment, data_offset } =
            parse_bytes(file.bytes(), &name)?;
        Ok(GgufFile { file, version, metadata, key_index, tensors, tensor_index, alignment, data_offset })
    }

    pub fn mapped(&self) -> &MappedFile {
        &self.file
    }

    pub fn file_len(&self) -> u64 {
        self.file.len()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingKey(key.to_owned()))
    }

    /// An integer key that must fit `T` (any stored integer type is accepted).
    pub fn get_int<T: TryFrom<i128>>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let i = v.as_i128().ok_or_else(|| wrong_type(key, "integer", v))?;
        T::try_from(i)
            .map(Some)
            .map_err(|_| Error::Malformed(format!("metadata key '{key}' value {i} is out of range")))
    }

    /// A float key: F32 (or F64), as llama.cpp requires. An integer here is refused rather than
    /// converted: a writer that meant a float never stores one, and a damaged type byte would
    /// turn the float's bits into a plausible-looking, wrong number.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(f)) => Ok(Some(*f)),
            Some(Value::F64(f)) => Ok(Some(*f as f32)),
            Some(v) => Err(wrong_type(key, "f32", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong_type(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong_type(key, "string", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<(ValueType, &[Value])>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(ty, items)) => Ok(Some((*ty, items))),
            Some(v) => Err(wrong_type(key, "array", v)),
        }
    }

    /// Moves an array's items out of the metadata, leaving the key with an empty array of the
    /// same type. For the large tables (the tokenizer's 150k-entry token and merge lists) that
    /// are read once and converted: keeping them would hold tens of MB for the life of a model.
    pub fn take_array(&mut self, key: &str) -> Result<Option<(ValueType, Vec<Value>)>> {
        let Some(&i) = self.key_index.get(key) else { return Ok(None) };
        match &mut self.metadata[i].1 {
            Value::Array(ty, items) => Ok(Some((*ty, std::mem::take(items)))),
            v => Err(wrong_type(key, "array", v)),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }

    pub fn view(&self, info: &TensorInfo) -> TensorView<'_> {
        let data = self.file.range(info.offset, info.size).expect("tensor ranges are validated at parse time");
        TensorView { ty: info.ty, layout: info.layout, dims: info.dims, n_dims: info.n_dims, data }
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> Error {
    Error::WrongKeyType { key: key.to_owned(), expected, found: found.value_type().name() }
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> =
        tensors.iter().map(|t| (t.offset, t.offset + t.size, t.name.as_str())).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(Error::Malformed(format!("tensors '{}' and '{}' overlap", pair[0].2, pair[1].2)));
        }
    }
    Ok(())
}

/// Raw tensor info as read, before validation against the file.
type RawTensorInfo = (String, usize, [u64; 4], u32, u64);

/// What `parse_bytes` reads: everything of a `GgufFile` but the file.
struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

/// Validates GGUF bytes as `GgufFile::parse` does (header, metadata, tensor infos against the
/// length), without a file: for the fuzzer and the corruption corpus. `Ok` gives the number of
/// tensors.
pub fn check_bytes(bytes: &[u8]) -> Result<usize> {
    parse_bytes(bytes, "input").map(|p| p.tensors.len())
}

/// Reads the header, metadata and tensor infos of `bytes` (the whole file, named `name` in
/// errors), checking every count, length and offset against it.
fn parse_bytes(bytes: &[u8], name: &str) -> Result<Parsed> {
    let mut r = Reader { bytes, pos: 0 };
    if bytes.is_empty() {
        return Err(Error::NotGguf(format!("{name} is empty")));
    }
    let magic = r.take(4).map_err(|_| Error::NotGguf(format!("{name} is too short to be a GGUF file")))?;
    if magic != MAGIC {
        return Err(Error::NotGguf(format!("{name} does not start with the GGUF magic")));
    }
    let version = r.u32().map_err(|_| Error::Truncated("file ends inside the header".into()))?;
    if version != 2 && version != 3 {
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(Error::Malformed("big-endian GGUF files are not supported".into()));
        }
        return Err(Error::UnsupportedGgufVersion(version));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    // Each key/value pair takes at least 12 bytes and each tensor info 24; larger counts
    // cannot be honest, and checking first keeps corrupt counts from allocating.
    if kv_count > r.remaining() / 12 {
        return Err(Error::Truncated(format!("the file ends before the {kv_count} metadata entries it declares")));
    }
    if tensor_count > r.remaining() / 24 {
        return Err(Error::Truncated(format!("the file ends before the {tensor_count} tensor infos it declares")));
    }

    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut key_index = HashMap::with_capacity(kv_count as usize);
    for _ in 0..kv_count {
        let key = r.string().map_err(|e| e.context("metadata key"))?;
        let ty = r.value_type().map_err(|e| e.context(&format!("metadata key '{key}'")))?;
        let value = r.value(ty, 0).map_err(|e| e.context(&format!("metadata key '{key}'")))?;
        if key_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(Error::Malformed(format!("duplicate metadata key '{key}'")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.get(key_index.get("general.alignment").copied().unwrap_or(usize::MAX)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_i128() {
            Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 30 => a as u64,
            _ => return Err(Error::Malformed(format!("general.alignment {v} is not a positive power of two"))),
        },
    };

    let mut infos = Vec::with_capacity(tensor_count as usize);
    for _ in 0..tensor_count {
        infos.push(r.tensor_info().map_err(|e| e.context("tensor info"))?);
    }
    let data_offset =
        align_up(r.pos as u64, alignment).ok_or_else(|| Error::Malformed("tensor data offset overflows".into()))?;

    let file_len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    let mut tensor_index = HashMap::with_capacity(infos.len());
    for (name, n_dims, dims, type_id, rel_offset) in infos {
        let ty = GgmlType::from_u32(type_id).ok_or_else(|| Error::UnsupportedTensorType {
            tensor: name.clone(),
            type_name: format!("type id {type_id}"),
        })?;
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::Malformed(format!("tensor '{name}' has too many elements")))?;
        let size = ty.bytes_for(elements).ok_or_else(|| {
            Error::Malformed(format!(
                "tensor '{name}' of type {ty} has {elements} elements, not a whole number of {}-element blocks",
                ty.block_len()
            ))
        })?;
        if dims[0] % ty.block_len() != 0 {
            return Err(Error::Malformed(format!(
                "tensor '{name}' rows of {} elements are not a whole number of {ty} blocks",
                dims[0]
            )));
        }
        if rel_offset % alignment != 0 {
            return Err(Error::Malformed(format!("tensor '{name}' offset {rel_offset} is not aligned to {alignment}")));
        }
        let offset = data_offset
            .checked_add(rel_offset)
            .ok_or_else(|| Error::Malformed(format!("tensor '{name}' offset overflows")))?;
        let end =
            offset.checked_add(size).ok_or_else(|| Error::Malformed(format!("tensor '{name}' size overflows")))?;
        if end > file_len {
            return Err(Error::Truncated(format!(
                "tensor '{name}' needs bytes {offset}..{end} but the file has {file_len}"
            )));
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(Error::Malformed(format!("duplicate tensor name '{name}'")));
        }
        tensors.push(TensorInfo { name, ty, dims, n_dims, offset, size, layout: WeightLayout::Gguf, copied: false });
    }
    check_no_overlap(&tensors)?;

    Ok(Parsed { version, metadata, key_index, tensors, tensor_index, alignment, data_offset })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Error {
    /// Adds where parsing was when a truncation or malformation was found.
    fn context(self, what: &str) -> Error {
        match self {
            Error::Truncated(m) => Error::Truncated(format!("{m} (in {what})")),
            Error::Malformed(m) => Error::Malformed(format!("{m} (in {what})")),
            other => other,
        }
    }
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated(format!(
                "needed {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.bytes.len()
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > self.remaining() {
            return Err(Error::Truncated(format!(
                "string of {len} bytes at offset {} runs past the end of the file",
                self.pos - 8
            )));
        }
        // Lossy rather than an error: a few real vocabularies carry tokens that are not valid
        // UTF-8 on their own, and refusing the whole model for that helps nobody.
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let id = self.u32()?;
        ValueType::from_u32(id).ok_or_else(|| Error::Malformed(format!("unknown metadata value type {id}")))
    }

    fn value(&mut self, ty: ValueType, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(self.array::<1>()?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::Malformed(format!("bool value {b} is neither 0 nor 1"))),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::Malformed(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.value_type()?;
                let count = self.u64()?;
                if count > self.remaining() / elem.min_encoded_len() {
                    return Err(Error::Truncated(format!(
                        "array of {count} {} values runs past the end of the file",
                        elem.name()
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<RawTensorInfo> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Malformed(format!("tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
        }
        let mut dims = [1u64; 4];
        for d in dims.iter_mut().take(n_dims as usize) {
            *d = self.u64()?;
            if *d == 0 {
                return Err(Error::Malformed(format!("tensor '{name}' has a zero dimension")));
            }
        }
        let type_id = self.u32()?;
        let offset = self.u64()?;
        Ok((name, n_dims as usize, dims, type_id, offset))
    }
}

#[cfg(test)]
mod tests;
