//! Reader tests over byte images built here by hand, so they do not depend on any writer of ours.

use super::*;
use std::io::Write;
use std::path::PathBuf;

/// Little-endian GGUF byte builder for tests.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn header(version: u32, tensors: u64, kvs: u64) -> Self {
        Bytes::default().raw(b"GGUF").u32(version).u64(tensors).u64(kvs)
    }
    fn pad_to(mut self, alignment: usize) -> Self {
        while !self.0.len().is_multiple_of(alignment) {
            self.0.push(0);
        }
        self
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("chord-gguf-test-{}-{n}.gguf", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(bytes: &[u8]) -> Result<GgufFile> {
    let f = TempFile::new(bytes);
    GgufFile::open(&f.0)
}

/// One KV of each scalar type, a string array, a nested array, and two F32 tensors.
fn full_file(version: u32) -> Vec<u8> {
    let b = Bytes::header(version, 2, 16)
        .str("u8")
        .u32(0)
        .raw(&[200])
        .str("i8")
        .u32(1)
        .raw(&[0xff])
        .str("u16")
        .u32(2)
        .raw(&65000u16.to_le_bytes())
        .str("i16")
        .u32(3)
        .raw(&(-300i16).to_le_bytes())
        .str("u32")
        .u32(4)
        .u32(4_000_000_000)
        .str("i32")
        .u32(5)
        .raw(&(-5i32).to_le_bytes())
        .str("f32")
        .u32(6)
        .raw(&1.5f32.to_le_bytes())
        .str("bool")
        .u32(7)
        .raw(&[1])
        .str("string")
        .u32(8)
        .str("héllo")
        .str("u64")
        .u32(10)
        .u64(u64::MAX)
        .str("i64")
        .u32(11)
        .raw(&(-7i64).to_le_bytes())
        .str("f64")
        .u32(12)
        .raw(&0.25f64.to_le_bytes())
        .str("strings")
        .u32(9)
        .u32(8)
        .u64(3)
        .str("a")
        .str("")
        .str("c c")
        .str("nested")
        .u32(9)
        .u32(9)
        .u64(2)
        .u32(4)
        .u64(2)
        .u32(1)
        .u32(2)
        .u32(8)
        .u64(1)
        .str("x")
        .str("empty")
        .u32(9)
        .u32(6)
        .u64(0)
        .str("general.alignment")
        .u32(4)
        .u32(64)
        // tensor infos: a [4] vector and a [4, 2] matrix
        .str("vec")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .str("mat")
        .u32(2)
        .u64(4)
        .u64(2)
        .u32(0)
        .u64(64)
        .pad_to(64);
    let mut b = b;
    for i in 0..4 {
        b = b.raw(&(i as f32).to_le_bytes());
    }
    b = b.pad_to(64);
    for i in 0..8 {
        b = b.raw(&(10.0 + i as f32).to_le_bytes());
    }
    b.0
}

#[test]
fn reads_every_value_type_and_tensors_v2_and_v3() {
    for version in [2, 3] {
        let g = parse(&full_file(version)).unwrap();
        assert_eq!(g.version, version);
        assert_eq!(g.get("u8"), Some(&Value::U8(200)));
        assert_eq!(g.get("i8"), Some(&Value::I8(-1)));
        assert_eq!(g.get("u16"), Some(&Value::U16(65000)));
        assert_eq!(g.get("i16"), Some(&Value::I16(-300)));
        assert_eq!(g.get("u32"), Some(&Value::U32(4_000_000_000)));
        assert_eq!(g.get("i32"), Some(&Value::I32(-5)));
        assert_eq!(g.get("f32"), Some(&Value::F32(1.5)));
        assert_eq!(g.get("bool"), Some(&Value::Bool(true)));
        assert_eq!(g.get_str("string").unwrap(), Some("héllo"));
        assert_eq!(g.get("u64"), Some(&Value::U64(u64::MAX)));
        assert_eq!(g.get("i64"), Some(&Value::I64(-7)));
        assert_eq!(g.get("f64"), Some(&Value::F64(0.25)));
        let (ty, items) = g.get_array("strings").unwrap().unwrap();
        assert_eq!(ty, ValueType::String);
        assert_eq!(items, &[Value::String("a".into()), Value::String("".into()), Value::String("c c".into())]);
        let (ty, items) = g.get_array("nested").unwrap().unwrap();
        assert_eq!(ty, ValueType::Array);
        assert_eq!(items[0], Value::Array(ValueType::U32, vec![Value::U32(1), Value::U32(2)]));
        assert_eq!(items[1], Value::Array(ValueType::String, vec![Value::String("x".into())]));
        assert_eq!(g.get_array("empty").unwrap().unwrap().1.len(), 0);
        assert_eq!(g.alignment, 64);
        assert_eq!(g.get_int::<u32>("u16").unwrap(), Some(65000));
        assert!(g.get_int::<u8>("u16").is_err(), "out-of-range integer must be an error");
        assert!(matches!(g.get_str("u8"), Err(Error::WrongKeyType { .. })));

        let v = g.tensor("vec").unwrap();
        assert_eq!((v.cols(), v.rows()), (4, 1));
        let m = g.tensor("mat").unwrap();
        assert_eq!((m.cols(), m.rows()), (4, 2));
        assert_eq!(m.data.len(), 32);
        assert_eq!(f32::from_le_bytes(m.row(1)[..4].try_into().unwrap()), 14.0);
        assert_eq!(f32::from_le_bytes(v.data[12..16].try_into().unwrap()), 3.0);
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = full_file(3);
    for len in 0..full.len() {
        let err = parse(&full[..len]).err().unwrap_or_else(|| panic!("prefix of {len} bytes parsed"));
        assert!(
            matches!(err, Error::Truncated(_) | Error::NotGguf(_) | Error::Malformed(_)),
            "prefix {len}: unexpected {err:?}"
        );
    }
}

#[test]
fn rejects_bad_magic_version_and_types() {
    assert!(matches!(parse(b""), Err(Error::NotGguf(_))));
    assert!(matches!(parse(b"GGML\x03\0\0\0"), Err(Error::NotGguf(_))));
    assert!(matches!(parse(&Bytes::header(1, 0, 0).0), Err(Error::UnsupportedGgufVersion(1))));
    assert!(matches!(parse(&Bytes::header(99, 0, 0).0), Err(Error::UnsupportedGgufVersion(99))));
    let unknown_value = Bytes::header(3, 0, 1).str("k").u32(13).u32(0);
    assert!(matches!(parse(&unknown_value.0), Err(Error::Malformed(_))));
    let bad_bool = Bytes::header(3, 0, 1).str("k").u32(7).raw(&[2]);
    assert!(matches!(parse(&bad_bool.0), Err(Error::Malformed(_))));
    let unknown_tensor_type = Bytes::header(3, 1, 0).str("t").u32(1).u64(32).u32(77).u64(0).pad_to(32).raw(&[0; 128]);
    assert!(matches!(parse(&unknown_tensor_type.0), Err(Error::UnsupportedTensorType { .. })));
}

#[test]
fn rejects_absurd_lengths_and_counts_without_allocating() {
    let huge_string = Bytes::header(3, 0, 1).u64(1 << 62).raw(b"key").raw(&[0; 32]);
    assert!(matches!(parse(&huge_string.0), Err(Error::Truncated(_))));
    let huge_array = Bytes::header(3, 0, 1).str("k").u32(9).u32(10).u64(u64::MAX / 2);
    assert!(matches!(parse(&huge_array.0), Err(Error::Truncated(_))));
    let huge_kv_count = Bytes::header(3, 0, u64::MAX);
    assert!(matches!(parse(&huge_kv_count.0), Err(Error::Truncated(_))));
    let huge_tensor_count = Bytes::header(3, u64::MAX, 0);
    assert!(matches!(parse(&huge_tensor_count.0), Err(Error::Truncated(_))));
    let mut deep = Bytes::header(3, 0, 1).str("k").u32(9);
    for _ in 0..20 {
        deep = deep.u32(9).u64(1);
    }
    assert!(parse(&deep.u32(4).u64(0).0).is_err());
}

#[test]
fn rejects_bad_tensor_infos() {
    let tensor = |name: &str, dims: &[u64], ty: u32, off: u64| {
        let mut b = Bytes::default().str(name).u32(dims.len() as u32);
        for d in dims {
            b = b.u64(*d);
        }
        b.u32(ty).u64(off).0
    };
    let file = |infos: &[Vec<u8>], data: usize| {
        let mut b = Bytes::header(3, infos.len() as u64, 0);
        for i in infos {
            b = b.raw(i);
        }
        b.pad_to(32).raw(&vec![0; data]).0
    };
    // out of bounds
    assert!(matches!(parse(&file(&[tensor("t", &[8], 0, 0)], 16)), Err(Error::Truncated(_))));
    // misaligned
    assert!(matches!(parse(&file(&[tensor("t", &[4], 0, 4)], 64)), Err(Error::Malformed(_))));
    // duplicate name
    assert!(matches!(parse(&file(&[tensor("t", &[4], 0, 0), tensor("t", &[4], 0, 32)], 64)), Err(Error::Malformed(_))));
    // overlap
    assert!(matches!(
        parse(&file(&[tensor("a", &[16], 0, 0), tensor("b", &[4], 0, 32)], 128)),
        Err(Error::Malformed(_))
    ));
    // too many dims, zero dim, row not a whole number of blocks, element count overflow
    assert!(matches!(parse(&file(&[tensor("t", &[1, 1, 1, 1, 1], 0, 0)], 64)), Err(Error::Malformed(_))));
    assert!(matches!(parse(&file(&[tensor("t", &[0], 0, 0)], 64)), Err(Error::Malformed(_))));
    assert!(matches!(parse(&file(&[tensor("t", &[16, 2], 8, 0)], 128)), Err(Error::Malformed(_))));
    assert!(matches!(parse(&file(&[tensor("t", &[1 << 40, 1 << 40], 0, 0)], 64)), Err(Error::Malformed(_))));
    // bad alignment value
    let bad_align = Bytes::header(3, 0, 1).str("general.alignment").u32(4).u32(3);
    assert!(matches!(parse(&bad_align.0), Err(Error::Malformed(_))));
}

/// A tensor whose data sits past 4 GiB in a sparse file: offsets must be 64-bit all the way.
#[test]
fn reads_tensor_beyond_4_gib_in_sparse_file() {
    let offset: u64 = 5 << 30;
    let header = Bytes::header(3, 2, 0)
        .str("small")
        .u32(1)
        .u64(8)
        .u32(0)
        .u64(0)
        .str("far")
        .u32(1)
        .u64(8)
        .u32(0)
        .u64(offset)
        .pad_to(32);
    let data_start = header.0.len() as u64;
    let path = std::env::temp_dir().join(format!("chord-gguf-sparse-{}.gguf", std::process::id()));
    let _cleanup = TempFile(path.clone());
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&header.0).unwrap();
        f.seek(SeekFrom::Start(data_start + offset)).unwrap();
        for i in 0..8 {
            f.write_all(&(100.0f32 + i as f32).to_le_bytes()).unwrap();
        }
    }
    let g = GgufFile::open(&path).unwrap();
    assert!(g.file_len() > 4 << 30);
    let far = g.tensor("far").unwrap();
    assert_eq!(g.tensor_info("far").unwrap().offset, data_start + offset);
    assert_eq!(f32::from_le_bytes(far.data[28..32].try_into().unwrap()), 107.0);
    // One byte short of the far tensor's end is a truncation.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(data_start + offset + 31).unwrap();
    assert!(matches!(GgufFile::open(&path), Err(Error::Truncated(_))));
}
