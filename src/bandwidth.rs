//! Memory read bandwidth of this machine, for the decode bound `npm run bench` prints: decoding
//! one token reads every weight once, so no engine decodes faster than bandwidth / weight bytes.
//!
//! Owns only its own buffer and threads; nothing in the engine uses it. The binding exposes it
//! as the internal `measureReadBandwidth` (not part of the public API in `lib/`).

use std::time::Instant;

use crate::error::{Error, Result};

/// Default buffer size: far above any L3 cache, so the reads come from DRAM.
pub const DEFAULT_BYTES: usize = 1 << 30;

/// Timed passes over the buffer. The bench takes the fastest as the machine's bandwidth, and
/// the median as what a run of many seconds meets on a host shared with other guests, whose
/// passes at two threads spread over 27-48 GB/s within a second.
pub const PASSES: usize = 8;

/// Smallest buffer accepted: one page per thread at least makes the split meaningful.
const MIN_BYTES: usize = 4096;

const MAX_THREADS: usize = 1024;

/// Value every word of the buffer holds; not zero, so the pages are written (and so really
/// allocated) rather than mapped to the shared zero page.
const FILL: u64 = 0x0101_0101_0101_0101;

/// The read bandwidth, in bytes per second, of each of `passes` passes of `threads` threads each
/// summing a contiguous slice of one `bytes`-byte buffer (rounded down to whole 8-byte words).
///
/// The buffer is written once before the timed passes, by the calling thread: on a multi-socket
/// machine its pages sit on that thread's node.
pub fn measure_read_bandwidth(threads: usize, bytes: usize, passes: usize) -> Result<Vec<f64>> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(Error::invalid_option("threads", format!("must be in 1..={MAX_THREADS}, got {threads}")));
    }
    if bytes < MIN_BYTES {
        return Err(Error::invalid_option("bytes", format!("must be at least {MIN_BYTES}, got {bytes}")));
    }
    if passes == 0 {
        return Err(Error::invalid_option("passes", "must be at least 1"));
    }
    let words = filled_buffer(bytes / 8)?;
    let expected = FILL.wrapping_mul(words.len() as u64);
    let rates = (0..passes)
        .map(|_| {
            let start = Instant::now();
            let sum = parallel_sum(std::hint::black_box(&words), threads);
            let seconds = start.elapsed().as_secs_f64();
            // Using the sum keeps the reads from being optimized away, and checks the split.
            assert_eq!(std::hint::black_box(sum), expected, "bandwidth buffer sum");
            (words.len() * 8) as f64 / seconds.max(1e-9)
        })
        .collect();
    Ok(rates)
}

/// `n` words of `FILL`; an allocation failure is an error, not an abort.
fn filled_buffer(n: usize) -> Result<Vec<u64>> {
    let mut words = Vec::new();
    words
        .try_reserve_exact(n)
        .map_err(|e| Error::invalid_option("bytes", format!("cannot allocate {} bytes: {e}", n * 8)))?;
    words.resize(n, FILL);
    Ok(words)
}

/// Sum of `words` split into `threads` contiguous slices, one per scoped thread.
fn parallel_sum(words: &[u64], threads: usize) -> u64 {
    let per_thread = words.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = words.chunks(per_thread).map(|slice| s.spawn(move || sum_words(slice))).collect();
        handles.into_iter().map(|h| h.join().expect("summing cannot panic")).fold(0, u64::wrapping_add)
    })
}

/// Wrapping sum of the words: integer addition is associative, so LLVM vectorizes and unrolls
/// this into several independent vector accumulators, enough loads in flight to keep DRAM busy.
fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |acc, &w| acc.wrapping_add(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_sum_matches_serial_for_any_split() {
        let words: Vec<u64> = (0..10_007u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
        let serial = sum_words(&words);
        for threads in [1, 2, 3, 7, 64, 20_000] {
            assert_eq!(parallel_sum(&words, threads), serial, "{threads} threads");
        }
        assert_eq!(parallel_sum(&[], 4), 0);
    }

    #[test]
    fn measures_a_positive_finite_rate() {
        for threads in [1, 2, 3] {
            let passes = measure_read_bandwidth(threads, 1 << 20, 2).unwrap();
            assert_eq!(passes.len(), 2);
            assert!(passes.iter().all(|&bps| bps.is_finite() && bps > 1e6), "{threads} threads: {passes:?} B/s");
        }
        // Not a multiple of 8 or of the thread count.
        assert!(measure_read_bandwidth(3, 4096 + 5, 1).unwrap()[0] > 0.0);
    }

    #[test]
    fn rejects_bad_arguments() {
        for (threads, bytes, passes) in [(0, 1 << 20, 1), (MAX_THREADS + 1, 1 << 20, 1), (1, 100, 1), (1, 1 << 20, 0)] {
            let err = measure_read_bandwidth(threads, bytes, passes).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_OPTION");
        }
    }
}
