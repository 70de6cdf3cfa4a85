//! The memory-mapped model file: the only place where the file's bytes become a slice.
//!
//! Every range handed out is checked against the file length first. The mapping is read-only
//! and private; the engine never writes through it.
//!
//! Also the other memory the engine takes from the OS, or gives back, past the allocator: the
//! anonymous buffers weights are copied into, and the heap's free pages after a load.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use crate::error::{Error, Result};

#[cfg(unix)]
mod bus_guard;
#[cfg(target_os = "linux")]
mod page_cache;
mod published;

pub use published::{BufferWriter, PublishedBuffer};

pub struct MappedFile {
    path: PathBuf,
    /// Kept open for positioned reads (the pager's copy mode), which report I/O errors as
    /// errors where a fault on the mapping could only kill the process.
    file: File,
    /// Turns a read past the end of a file truncated under the mapping into zeros and a mark
    /// (see `bus_guard`). Declared before `map`: unregistered before the unmapping.
    #[cfg(unix)]
    guard: Option<bus_guard::Guard>,
    /// None for an empty file, which cannot be mapped.
    map: Option<Mmap>,
}

/// Bytes per step when prefaulting, reading or copying the file; also the granularity of load
/// progress reports.
const PREFAULT_CHUNK: usize = 8 << 20;
const PAGE: usize = 4096;
/// The size of the pages a large folio of the page cache can be mapped with.
pub(crate) const HUGE_PAGE: usize = 2 << 20;
/// 2 MiB pages mapped in, spread over the weights, to tell how the page cache holds the file
/// (see `mapped_in_small_pages`).
#[cfg(target_os = "linux")]
const PROBE_PAGES: usize = 16;

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
            // SAFETY: the mapping is read-only and private and we never write to it. Another
            // process truncating the file while it is mapped makes reads past the new end fault:
            // `bus_guard` turns those faults into zeros and a mark the engine checks (`faulted`).
            // Rewriting it in place changes what the slices read, which is reported the same way
            // only when it also shrinks the file.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.to_owned(), source })?;
            Some(map)
        };
        #[cfg(unix)]
        let guard = map.as_ref().and_then(|m| bus_guard::guard(m.as_ptr(), m.len()));
        Ok(MappedFile {
            path: path.to_owned(),
            file,
            #[cfg(unix)]
            guard,
            map,
        })
    }

    /// Whether a read of the mapping found the file cut short since it was opened: what was
    /// read there was zeros, not the model.
    pub fn faulted(&self) -> bool {
        #[cfg(unix)]
        return self.guard.as_ref().is_some_and(bus_guard::Guard::faulted);
        #[cfg(not(unix))]
        false
    }

    /// `Err(ModelFileChanged)` once `faulted`.
    pub fn check(&self) -> Result<()> {
        if self.faulted() {
            return Err(Error::ModelFileChanged(self.path.clone()));
        }
        Ok(())
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

    /// `Err(Truncated)` unless `offset..offset+len` lies inside the file.
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match self.range(offset, len) {
            Some(_) => Ok(()),
            None => Err(Error::Truncated(format!("range {offset}+{len} is past the end of the file"))),
        }
    }

    /// Reads every page of `offset..offset+len` so that the first token does not pay for page
    /// faults (llama.cpp does the same with MAP_POPULATE). Calls `progress(done_bytes)` after each
    /// chunk and stops early with `Error::Aborted` when `cancel` is set.
    pub fn prefault(&self, offset: u64, len: u64, cancel: &AtomicBool, mut progress: impl FnMut(u64)) -> Result<()> {
        self.check_range(offset, len)?;
        #[cfg(unix)]
        if let Some(map) = &self.map {
            // Advice only; failure just means the kernel reads ahead less eagerly.
            let _ = map.advise_range(memmap2::Advice::WillNeed, offset as usize, len as usize);
        }
        in_chunks(len, cancel, &mut progress, |done, step| {
            self.touch(offset + done, step);
            Ok(())
        })
    }

    /// Fills `dst` with the file's bytes from `offset` by positioned reads, a chunk at a time:
    /// calls `progress(done_bytes)` after each and stops with `Error::Aborted` when `cancel` is
    /// set. The mapping is not touched, so the bytes read do not count in this process's
    /// resident set twice.
    pub fn copy_into(
        &self,
        offset: u64,
        dst: &mut [u8],
        cancel: &AtomicBool,
        mut progress: impl FnMut(u64),
    ) -> Result<()> {
        in_chunks(dst.len() as u64, cancel, &mut progress, |done, step| {
            self.read_at(offset + done, &mut dst[done as usize..(done + step) as usize])
        })
    }

    /// Whether the file's cached pages in `offset..offset+len` are mapped 4 KiB at a time where
    /// 2 MiB pages were possible, judged by mapping in `PROBE_PAGES` 2 MiB pages spread over it:
    /// the state of a file read in scattered pieces, partly paged out and faulted in again, or
    /// (depending on the writer and the kernel) just written (see `page_cache`). False where it
    /// cannot be told (not Linux, a mapping not 2 MiB-aligned, a range shorter than 32 probe
    /// pages).
    pub fn mapped_in_small_pages(&self, offset: u64, len: u64) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            let base = map.as_ptr() as usize;
            // The file's first megabytes are cached in small folios whatever the rest is in
            // (read by the header parser, or while readahead's window was still growing), and
            // its last ones may be (readahead ends at the end of the file): probed between.
            let (start, end) = (offset as usize, (offset + len) as usize);
            let first = (start + 4 * HUGE_PAGE).next_multiple_of(HUGE_PAGE);
            let last = end.saturating_sub(3 * HUGE_PAGE) / HUGE_PAGE * HUGE_PAGE;
            if !base.is_multiple_of(HUGE_PAGE) || last < first + 2 * PROBE_PAGES * HUGE_PAGE {
                return false;
            }
            let pages: Vec<usize> = (0..PROBE_PAGES)
                .map(|i| first + (i * (last - first) / (PROBE_PAGES - 1)) / HUGE_PAGE * HUGE_PAGE)
                .collect();
            let before = page_cache::pmd_mapped_bytes(base).unwrap_or(0);
            // Touched page by page: an ordinary fault maps a large folio with one 2 MiB entry,
            // where MADV_POPULATE_READ (measured on Linux 6.18) maps it 4 KiB at a time.
            pages.iter().for_each(|&page| self.touch(page as u64, HUGE_PAGE as u64));
            let Some(after) = page_cache::pmd_mapped_bytes(base) else { return false };
            pages.iter().for_each(|&page| self.release(page as u64, HUGE_PAGE as u64));
            // A file read sequentially maps nearly every probe page in one entry. (A host that
            // pages out what was not read for a minute, as DAMON's reclaim does, had left
            // Qwen2.5-0.5B 41% mapped so, decoding 13% slower: one probe in the middle of the
            // file had found it whole.)
            return after.saturating_sub(before) < (PROBE_PAGES * HUGE_PAGE * 3 / 4) as u64;
        }
        let _ = (offset, len);
        false
    }

    /// Whether the whole file fits in half the memory available (MemAvailable): a larger one
    /// read again would push most of the page cache out, itself included, and a copy of it
    /// would leave too little for anything else. True where it cannot be told.
    pub fn fits_half_available_memory(&self) -> bool {
        #[cfg(target_os = "linux")]
        return page_cache::available_bytes().is_none_or(|free| self.len() <= free / 2);
        #[cfg(not(target_os = "linux"))]
        true
    }

    /// Drops the file's pages from the page cache and reads it again, which puts it in large
    /// folios where the filesystem has them (see `page_cache`). Calls `progress(done_bytes)` as
    /// it reads; `cancel` stops it with `Error::Aborted`. Pages other processes have mapped stay
    /// as they are.
    pub fn reread_into_page_cache(&self, cancel: &AtomicBool, mut progress: impl FnMut(u64)) -> Result<()> {
        self.release(0, self.len());
        // Advice only: where the filesystem refuses it, reading again would change nothing, and
        // the load goes on with the page cache as it is.
        #[cfg(target_os = "linux")]
        if page_cache::drop_cached(&self.file).is_err() {
            return Ok(());
        }
        // Faults in a mapping advised MADV_HUGEPAGE read the file in 2 MiB folios from its first
        // byte; `read` grows its folios over the first 40 MiB (SmolLM2's weights: 55% then
        // mapped in 2 MiB pages instead of all, decoding 3-6% slower). The advice stays: later
        // faults on pages the kernel dropped read them back the same way. Each chunk is unmapped
        // again once read: mapped, the file counted in the process's RSS, all of it by the end
        // (Qwen2.5-1.5B paged at a 256 MB budget: a peak RSS of 1183 MB).
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            if map.advise(memmap2::Advice::HugePage).is_ok() {
                return in_chunks(self.len(), cancel, &mut progress, |done, step| {
                    self.touch(done, step);
                    self.release(done, step);
                    Ok(())
                });
            }
        }
        let mut buffer = vec![0u8; PREFAULT_CHUNK.min(self.len() as usize)];
        in_chunks(self.len(), cancel, &mut progress, |done, step| self.read_at(done, &mut buffer[..step as usize]))
    }

    /// Fills `dst` with the file's bytes at `offset` using positioned reads.
    pub fn read_at(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let io = |source| Error::Io { path: self.path.clone(), source };
        if offset.checked_add(dst.len() as u64).is_none_or(|end| end > self.len()) {
            return Err(io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the file")));
        }
        os::read_exact_at(&self.file, dst, offset).map_err(io)
    }

    /// Maps every page of the range into this process now, so the compute that follows does not
    /// fault (Linux 5.14+ MADV_POPULATE_READ; elsewhere, or on older kernels, by touching pages).
    pub fn populate(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len)?;
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            match map.advise_range(memmap2::Advice::PopulateRead, offset as usize, len as usize) {
                Ok(()) => return Ok(()),
                // Kernels before 5.14 do not know the advice: fall back to touching pages.
                Err(e) if e.raw_os_error() == Some(22) => {}
                // A read that fails here would be a SIGBUS on first access; report it instead.
                Err(source) => return Err(Error::Io { path: self.path.clone(), source }),
            }
        }
        self.touch(offset, len);
        Ok(())
    }

    /// Reads one byte of every page of the range (inside the file: callers check).
    fn touch(&self, offset: u64, len: u64) {
        let Some(bytes) = self.range(offset, len) else { return };
        let mut acc = 0u8;
        for page in bytes.iter().step_by(PAGE) {
            acc ^= *page;
        }
        std::hint::black_box(acc);
    }

    /// Gives the pages of the range back to the OS: they leave this process's resident set and
    /// are read from the file again if touched later. A no-op where the OS has no such advice.
    pub fn release(&self, offset: u64, len: u64) {
        let Some(map) = &self.map else { return };
        let start = (offset as usize) / PAGE * PAGE;
        let end = ((offset + len) as usize).div_ceil(PAGE).saturating_mul(PAGE).min(map.len());
        if start >= end {
            return;
        }
        #[cfg(unix)]
        // SAFETY: the mapping is private, read-only and backed by an unmodified file, so
        // MADV_DONTNEED discards no data: a later access refaults the same bytes from the file.
        // Slices into the range that are still alive keep reading identical contents.
        unsafe {
            let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start);
        }
        #[cfg(not(unix))]
        let _ = (start, end);
    }
}

/// Anonymous memory of `len` bytes (one at least: an empty mapping is an error) to copy weights
/// into, in 2 MiB pages where the OS gives them; `what` names it in errors. Its own mapping,
/// so that dropping it gives the memory back at once (heap allocations of tens of MB can stay
/// in malloc's arenas, counting in the resident set).
pub fn weights_buffer(len: u64, what: &str) -> Result<memmap2::MmapMut> {
    let buffer = memmap2::MmapMut::map_anon(len.max(1) as usize).map_err(|source| anonymous_error(what, source))?;
    #[cfg(target_os = "linux")]
    // Advice only: without huge pages the copy works the same, with more TLB misses.
    let _ = buffer.advise(memmap2::Advice::HugePage);
    Ok(buffer)
}

/// A filled [`weights_buffer`], made read-only.
pub fn seal_weights_buffer(buffer: memmap2::MmapMut, what: &str) -> Result<Mmap> {
    buffer.make_read_only().map_err(|source| anonymous_error(what, source))
}

fn anonymous_error(what: &str, source: std::io::Error) -> Error {
    Error::Io { path: what.into(), source }
}

/// Gives the heap's free pages back to the OS where the C library keeps them (glibc; elsewhere
/// nothing). A load parses the vocabulary into hundreds of thousands of small strings, freed
/// once the tokenizer is built, and glibc keeps freed chunks that small in the heap, resident:
/// Qwen2.5's 151k tokens and merges left 8.7 MiB so (anonymous memory a load adds, `useMmap`:
/// 24.4 MiB before, 15.7 after; Gemma-3's 262k tokens 16.9 and 12.8).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim has no precondition: it takes the arenas' locks itself and
        // returns only free memory to the OS.
        unsafe { malloc_trim(0) };
    }
}

/// Calls `step(done, len)` for consecutive chunks of `0..total` of at most PREFAULT_CHUNK
/// bytes, then `progress(done)`; `Error::Aborted` as soon as `cancel` is set.
fn in_chunks(
    total: u64,
    cancel: &AtomicBool,
    progress: &mut impl FnMut(u64),
    mut step: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let mut done = 0u64;
    while done < total {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        let len = (PREFAULT_CHUNK as u64).min(total - done);
        step(done, len)?;
        done += len;
        progress(done);
    }
    Ok(())
}

/// Positioned reads behind one interface per platform, with a portable fallback.
mod os {
    use std::fs::File;
    use std::io;

    #[cfg(unix)]
    pub fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(file, dst, offset)
    }

    #[cfg(windows)]
    pub fn read_exact_at(file: &File, mut dst: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !dst.is_empty() {
            match file.seek_read(dst, offset)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended early")),
                n => {
                    dst = &mut dst[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    #[cfg(not(any(unix, windows)))]
    pub fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::MappedFile;

    /// Reading the file again maps it a chunk at a time: the file pages this process has mapped
    /// (RssFile + RssShmem, which other tests' heap allocations do not move) grow by a chunk or
    /// two while it reads, not by the file.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reread_keeps_a_chunk_mapped_at_a_time() {
        let mapped_file_bytes = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
            let kb = |key: &str| -> u64 {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map_or(0, |v| v.trim().trim_end_matches("kB").trim().parse().expect("a size in kB"))
            };
            (kb("RssFile:") + kb("RssShmem:")) * 1024
        };
        let path = crate::testutil::TempPath::new("reread-rss");
        let len = 64u64 << 20;
        std::fs::write(path.path(), vec![7u8; len as usize]).expect("write the file");
        let file = MappedFile::open(path.path()).expect("open the file");
        let before = mapped_file_bytes();
        let mut most = 0u64;
        let never = std::sync::atomic::AtomicBool::new(false);
        file.reread_into_page_cache(&never, |_| most = most.max(mapped_file_bytes().saturating_sub(before)))
            .expect("reread");
        assert!(most <= 3 * super::PREFAULT_CHUNK as u64, "{} MiB of the file mapped at once", most >> 20);
    }

    /// The page cache states `mapped_in_small_pages` tells apart, on this host's kernel and temp
    /// directory's filesystem (they need large folios and 2 MiB file mappings, hence ignored):
    /// the file read in 4 KiB pieces in scattered order (small folios), the same read again by
    /// `reread_into_page_cache` (2 MiB folios), and then every other 8 MiB dropped and faulted
    /// back in (half small). `cargo test --release page_cache_states -- --ignored`.
    #[test]
    #[ignore]
    #[cfg(target_os = "linux")]
    fn page_cache_states_are_told_apart_and_a_reread_maps_2_mib_pages() {
        use std::os::unix::io::AsRawFd;
        let path = crate::testutil::TempPath::new("page-cache");
        let len = 96u64 << 20;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut written = std::fs::File::create(path.path()).expect("create the file");
        std::io::Write::write_all(&mut written, &bytes).expect("write the file");
        // Written back, or dropping its pages would leave the dirty ones.
        written.sync_all().expect("sync the file");
        drop((written, bytes));
        let file = MappedFile::open(path.path()).expect("open the file");
        let drop_range = |at: u64, n: u64| {
            // SAFETY: posix_fadvise only reads its integer arguments; the file is open.
            let rc =
                unsafe { libc::posix_fadvise(file.file.as_raw_fd(), at as i64, n as i64, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0, "fadvise");
        };
        drop_range(0, len);
        let pages = len / 4096;
        let mut page = [0u8; 4096];
        // Every page once, in the order of a full-period LCG (odd increment, multiplier 1 mod 4).
        let mut at = 0u64;
        for _ in 0..pages {
            at = (at * 1_103_515_245 + 12_345) % pages;
            file.read_at(at * 4096, &mut page).expect("read a page");
        }
        assert!(file.mapped_in_small_pages(0, len), "read in scattered 4 KiB pieces");
        let never = std::sync::atomic::AtomicBool::new(false);
        file.reread_into_page_cache(&never, |_| {}).expect("reread");
        assert!(!file.mapped_in_small_pages(0, len), "read again");
        // Faulted back through another mapping: this one's MADV_HUGEPAGE would read 2 MiB
        // folios (as another process would not).
        let other = MappedFile::open(path.path()).expect("open the file again");
        let chunk = 8u64 << 20;
        for at in (0..len).step_by(2 * chunk as usize) {
            drop_range(at, chunk);
            other.touch(at, chunk);
        }
        other.release(0, len);
        assert!(file.mapped_in_small_pages(0, len), "half dropped and faulted back");
    }

    /// How fast one thread can bring a file's pages in and give them back, the two ways the
    /// pager loads a unit: populate + release of the mapped range (no copy), and positioned
    /// reads into one reused buffer (a copy). The file should be in the page cache: this is the
    /// ceiling on how many bytes per second paged decode can stream. `CHORD_LLM_BENCH_FILE=path
    /// cargo test --release populate_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn populate_throughput() {
        let Some(path) = std::env::var_os("CHORD_LLM_BENCH_FILE") else {
            eprintln!("set CHORD_LLM_BENCH_FILE to a large file in the page cache");
            return;
        };
        let file = MappedFile::open(std::path::Path::new(&path)).expect("open the file");
        const STEP: u64 = 32 << 20;
        let steps = file.len() / STEP;
        let mut buffer = vec![0u8; STEP as usize];
        for pass in 0..3 {
            let t = std::time::Instant::now();
            for i in 0..steps {
                file.populate(i * STEP, STEP).expect("populate");
                file.release(i * STEP, STEP);
            }
            let mapped = (steps * STEP) as f64 / t.elapsed().as_secs_f64() / 1e9;
            let t = std::time::Instant::now();
            for i in 0..steps {
                file.read_at(i * STEP, &mut buffer).expect("read");
            }
            let read = (steps * STEP) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("pass {pass}: populate + release {mapped:.2} GB/s, read into a reused buffer {read:.2} GB/s");
        }
    }
}
