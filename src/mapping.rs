//! The memory-mapped model file: the only place where the file's bytes become a slice.
//!
//! Every range handed out is checked against the file length first. The mapping is read-only
//! and private; the engine never writes through it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use crate::error::{Error, Result};

pub struct MappedFile {
    path: PathBuf,
    /// None for an empty file, which cannot be mapped.
    map: Option<Mmap>,
}

/// Bytes touched per step when prefaulting; also the granularity of load progress reports.
const PREFAULT_CHUNK: usize = 8 << 20;
const PAGE: usize = 4096;

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::FileNotFound { path: path.to_owned(), source })?;
        let meta = file.metadata().map_err(|source| Error::Io { path: path.to_owned(), source })?;
        if meta.is_dir() {
            return Err(Error::NotGguf(format!("{} is a directory", path.display())));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only and private. Another process truncating or
            // rewriting the model file while it is loaded is outside what we can guard against
            // (as for every mmap-based loader, llama.cpp included); we never write to it.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.to_owned(), source })?;
            Some(map)
        };
        Ok(MappedFile { path: path.to_owned(), map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The bytes `offset..offset+len`, or None when the range is not inside the file.
    pub fn range(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        let start = usize::try_from(offset).ok()?;
        let end = usize::try_from(end).ok()?;
        Some(&self.bytes()[start..end])
    }

    /// Reads every page of `offset..offset+len` so that the first token does not pay for page
    /// faults (llama.cpp does the same with MAP_POPULATE). Calls `progress(done_bytes)` after each
    /// chunk and stops early with `Error::Aborted` when `cancel` is set.
    pub fn prefault(&self, offset: u64, len: u64, cancel: &AtomicBool, mut progress: impl FnMut(u64)) -> Result<()> {
        let bytes = self
            .range(offset, len)
            .ok_or_else(|| Error::Truncated(format!("range {offset}+{len} is past the end of the file")))?;
        #[cfg(unix)]
        if let Some(map) = &self.map {
            // Advice only; failure just means the kernel reads ahead less eagerly.
            let _ = map.advise_range(memmap2::Advice::WillNeed, offset as usize, len as usize);
        }
        let mut done = 0u64;
        for chunk in bytes.chunks(PREFAULT_CHUNK) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Aborted);
            }
            let mut acc = 0u8;
            for page in chunk.iter().step_by(PAGE) {
                acc ^= *page;
            }
            std::hint::black_box(acc);
            done += chunk.len() as u64;
            progress(done);
        }
        Ok(())
    }
}
