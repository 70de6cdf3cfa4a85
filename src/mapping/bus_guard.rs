//! Keeps a model file changed under its mapping from killing the process.
//!
//! Reading a page of a mapped file past its end (the file was truncated while loaded) raises
//! SIGBUS, whose default action ends the process: an Electron app would vanish on its next
//! token. The handler installed here looks the faulting address up among the registered
//! mappings; inside one, it maps a page of zeros over the faulting page, marks the mapping
//! faulted and returns, so the instruction completes (reading zeros) and the engine, which
//! checks the mark after each pass, reports `ERR_MODEL_FILE_CHANGED` instead of any result
//! computed from those zeros. Faults anywhere else go to the handler that was installed before
//! (or the default action), as if this one were not there.
//!
//! The handler may run at any moment on any thread, so it only reads atomics and calls `mmap`
//! (async-signal-safe); registration is a fixed table of atomic slots, no allocation, no lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings that can be guarded at once (models loaded at the same time); more go unguarded.
const SLOTS: usize = 64;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

static SLOTS_TABLE: [Slot; SLOTS] =
    [const { Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), faulted: AtomicBool::new(false) } }; SLOTS];

/// The SIGBUS disposition before ours, for faults outside our mappings.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregistered when dropped (before the mapping is unmapped).
pub(crate) struct Guard {
    slot: usize,
}

impl Guard {
    /// Whether a read of the mapping faulted (the file shrank under it) since it was registered.
    pub fn faulted(&self) -> bool {
        SLOTS_TABLE[self.slot].faulted.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = &SLOTS_TABLE[self.slot];
        slot.end.store(0, Ordering::Release);
        slot.start.store(0, Ordering::Release);
    }
}

/// Registers `start..start + len` (a file mapping of ours), installing the handler on first
/// use. None when every slot is taken or the handler cannot be installed.
pub(crate) fn guard(start: *const u8, len: usize) -> Option<Guard> {
    if len == 0 || !install() {
        return None;
    }
    let start = start as usize;
    for (index, slot) in SLOTS_TABLE.iter().enumerate() {
        if slot.start.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.faulted.store(false, Ordering::Release);
            slot.end.store(start + len, Ordering::Release);
            return Some(Guard { slot: index });
        }
    }
    None
}

fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no handler, empty mask" value; sigaction() only
        // reads `ours` and writes `previous`, both valid for the call.
        unsafe {
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            // The previous disposition is stored before the handler can run.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
            libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0
        }
    })
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    for slot in &SLOTS_TABLE {
        let (start, end) = (slot.start.load(Ordering::Acquire), slot.end.load(Ordering::Acquire));
        if start != 0 && (start..end).contains(&address) {
            let page = address & !(page_size() - 1);
            // SAFETY: MAP_FIXED replaces one page inside a mapping this process owns and only
            // reads (a private, read-only file mapping); no Rust object owns that page's contents
            // beyond the slices reading it, which now read zeros.
            let mapped = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    page_size(),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                slot.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    forward(signal, info, context);
}

/// Hands a fault that is not ours to the previous disposition.
fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get();
    match previous {
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            if p.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal, info, context);
            } else {
                // SAFETY: without SA_SIGINFO the previous handler takes the signal number only.
                let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
                handler(signal);
            }
        }
        _ => {
            // Default action: restore it and return; the faulting access runs again and the
            // signal, now unhandled, ends the process as it would have without us.
            // SAFETY: resetting a signal to SIG_DFL with a zeroed action is always valid.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
            PAGE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Truncating a mapped file, then reading past the new end: zeros and a faulted mark
    /// instead of a dead process.
    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_marked() {
        let path = std::env::temp_dir().join(format!("chord-bus-guard-{}", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&vec![7u8; 64 * 1024]).unwrap();
        drop(file);
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a private read-only mapping of a file this test owns.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let guard = guard(map.as_ptr(), map.len()).expect("a free slot");
        assert_eq!(map[40_000], 7);
        assert!(!guard.faulted());
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        let far = std::hint::black_box(&map[..])[40_000];
        assert_eq!(far, 0);
        assert!(guard.faulted());
        drop(guard);
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
