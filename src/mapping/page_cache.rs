//! How the kernel holds the model file in its page cache, and a way to change it (Linux).
//!
//! A file read sequentially (or by a first mapping, through readahead) sits in the page cache
//! in large folios, which a 2 MiB-aligned mapping maps with one page-table entry per 2 MiB
//! (all but its first 40 MiB, where readahead's folios are still growing). A file read in
//! small scattered pieces, partly paged out and faulted back in, or, depending on the writer
//! and the kernel, written just before (downloaded, copied; a plain `write` on Linux 6.18 and
//! ext4 leaves large folios) sits in 4 KiB folios, mapped page by page: the weights then stream
//! through the TLB more slowly (Qwen2.5-1.5B, one thread, bench medians: 11.8 against 16.4
//! tok/s) and the pager maps a layer 4 KiB at a time. Dropping the file's clean pages and
//! faulting it in again through a mapping advised `MADV_HUGEPAGE` puts all of it in large
//! folios, once, for every later load (`MappedFile::reread_into_page_cache`).

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// Bytes of the mapping that starts at `start` mapped through 2 MiB entries (`FilePmdMapped`
/// in `/proc/self/smaps`); None when smaps cannot be read or has no such mapping.
pub fn pmd_mapped_bytes(start: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut lines = smaps.lines();
    let header = format!("{start:x}-");
    lines.by_ref().find(|l| l.starts_with(&header))?;
    for line in lines {
        // The next mapping's header ("start-end perms ...") ends this one's fields.
        if line.split_whitespace().next().is_some_and(|w| w.contains('-')) {
            break;
        }
        if let Some(rest) = line.strip_prefix("FilePmdMapped:") {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            return Some(kb * 1024);
        }
    }
    None
}

/// Asks the kernel to drop the file's clean cached pages (those no process maps).
pub fn drop_cached(file: &File) -> io::Result<()> {
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for the
    // call's duration (borrowed from `file`). The advice changes no data.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `MemAvailable` of `/proc/meminfo`: what the page cache can grow into without swapping.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line["MemAvailable:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}
