//! Anonymous memory that one writer fills front to back while other threads read the part it
//! has published: what lets forward passes use a copy of the weights while it is being made.
//!
//! The invariant every access rests on: bytes below the published mark are never written
//! again, and bytes from the mark on are reached only by the one `BufferWriter`.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::Result;

pub struct PublishedBuffer {
    /// Keeps the memory mapped until the buffer is dropped; the memory is reached only through
    /// `base`, which stays valid however the map value moves.
    _map: memmap2::MmapMut,
    base: NonNull<u8>,
    len: usize,
    /// Bytes from the start that are written and will not change.
    published: AtomicUsize,
}

// SAFETY: the buffer hands out shared slices only of published bytes, which nothing writes any
// more, and the one writer's mutable slices lie past the mark; the mark itself is atomic.
unsafe impl Send for PublishedBuffer {}
// SAFETY: as for Send.
unsafe impl Sync for PublishedBuffer {}

impl PublishedBuffer {
    /// A buffer of `len` bytes (a [`super::weights_buffer`]: zeros, in 2 MiB pages where the OS
    /// gives them), nothing published, and its only writer. `what` names it in errors.
    pub fn new(len: u64, what: &str) -> Result<(Arc<Self>, BufferWriter)> {
        let mut map = super::weights_buffer(len, what)?;
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        let buffer = Arc::new(PublishedBuffer { _map: map, base, len: len as usize, published: AtomicUsize::new(0) });
        Ok((buffer.clone(), BufferWriter { buffer }))
    }

    /// The bytes published so far. Sequentially consistent with `BufferWriter::publish`: a
    /// thread that announces itself (an atomic store) before reading the mark and a writer that
    /// publishes before reading announcements cannot both miss each other.
    pub fn published(&self) -> &[u8] {
        let len = self.published.load(Ordering::SeqCst);
        // SAFETY: the first `len` bytes are inside the mapping, were written before the store
        // that published them (this load synchronizes with it) and are never written again.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), len) }
    }

    pub fn is_complete(&self) -> bool {
        self.published.load(Ordering::SeqCst) == self.len
    }
}

/// The one writer of a [`PublishedBuffer`].
pub struct BufferWriter {
    buffer: Arc<PublishedBuffer>,
}

impl BufferWriter {
    /// The bytes from the published mark up to `end`, to fill before publishing them.
    pub fn unpublished(&mut self, end: usize) -> &mut [u8] {
        let start = self.buffer.published.load(Ordering::Relaxed);
        assert!(start <= end && end <= self.buffer.len, "{start}..{end} is not past the mark and inside the buffer");
        // SAFETY: inside the mapping (checked above); past the mark, where no reader looks, and
        // only this writer (borrowed mutably for the slice's life) writes.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.base.as_ptr().add(start), end - start) }
    }

    /// Publishes the bytes up to `end`: readers may see them from now on, and they are never
    /// written again.
    pub fn publish(&mut self, end: usize) {
        let start = self.buffer.published.load(Ordering::Relaxed);
        assert!(start <= end && end <= self.buffer.len, "the mark moves forward inside the buffer");
        self.buffer.published.store(end, Ordering::SeqCst);
    }

    /// Publishes the rest and makes the memory read-only, so that a stray write faults instead
    /// of changing weights.
    pub fn seal(mut self) {
        self.publish(self.buffer.len);
        #[cfg(unix)]
        // SAFETY: the range is the buffer's own mapping (`weights_buffer` maps at least a byte,
        // so `len.max(1)`); readers only read it, and no writer is left.
        unsafe {
            libc::mprotect(self.buffer.base.as_ptr().cast(), self.buffer.len.max(1), libc::PROT_READ);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_only_what_the_writer_published() {
        let (buffer, mut writer) = PublishedBuffer::new(10, "test buffer").unwrap();
        assert!(buffer.published().is_empty() && !buffer.is_complete());
        writer.unpublished(4).copy_from_slice(&[1, 2, 3, 4]);
        assert!(buffer.published().is_empty());
        writer.publish(4);
        let first = buffer.published();
        writer.unpublished(7).copy_from_slice(&[5, 6, 7]);
        writer.publish(7);
        assert_eq!((first, buffer.published()), (&[1, 2, 3, 4][..], &[1, 2, 3, 4, 5, 6, 7][..]));
        writer.seal();
        assert!(buffer.is_complete() && buffer.published() == [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "past the mark")]
    fn published_bytes_cannot_be_written_again() {
        let (_buffer, mut writer) = PublishedBuffer::new(10, "test buffer").unwrap();
        writer.publish(4);
        let _ = writer.unpublished(3);
    }
}
