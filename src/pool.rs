//! The compute pool: `threads - 1` workers plus the calling thread split one operation (a matrix
//! product's rows, attention heads) into tasks.
//!
//! A forward pass runs hundreds of small operations per token, so waking workers must be cheap:
//! workers spin briefly on the job counter before parking on a condvar, and the caller takes
//! tasks itself instead of waiting idle.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it parks, and the caller for the workers'
/// last tasks before it yields its core: longer than the gap between two operations of a
/// forward pass (a few µs), far shorter than the gap between two tokens. Bounded by time, not
/// by iterations, because the cost of a `pause` varies 10-fold between CPUs, and a spinner
/// must not keep a core from Node's threads (or from a descheduled worker) for long.
const SPIN_TIME: Duration = Duration::from_micros(50);

/// Spin iterations between two reads of the clock.
const SPINS_PER_CLOCK_READ: u32 = 64;

/// Calls `ready` until it returns true while spinning for at most `SPIN_TIME`; returns whether
/// it did.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN_TIME {
            return ready();
        }
    }
}

type Job = &'static (dyn Fn(usize) + Sync);

/// The flag of `Shared::entered` saying the current job still takes workers in.
const OPEN: usize = 1 << (usize::BITS - 1);

struct Shared {
    /// Incremented for each job; workers run a job when it differs from the last one they ran.
    generation: AtomicU64,
    job: Mutex<Option<Job>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    /// `OPEN` while the current job takes workers in, plus the number of workers inside it
    /// (see [`ComputePool::run`] and [`join_job`]).
    entered: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers parked (or about to park) on `wake`: a job wakes them through the condvar only
    /// when there are some, as the wake is a system call and workers between two operations of
    /// a forward pass are spinning, not parked.
    parked: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
}

pub struct ComputePool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes callers: one job runs at a time.
    run_lock: Mutex<()>,
}

impl ComputePool {
    /// A pool that computes with `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("chord-compute-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawning a compute thread")
            })
            .collect();
        ComputePool { shared, workers, run_lock: Mutex::new(()) }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// How many chunks per thread a job that reads `bytes` (weights times tokens, cached keys and
    /// values) is split into: `MAX_CHUNKS_PER_THREAD`, fewer where chunks would read less than
    /// `MIN_CHUNK_BYTES`. Each chunk costs a task taken and a new stream of reads the prefetchers
    /// have not seen, and a small model decodes through ~150 jobs of 0.2-1 MB per token. Decode
    /// step at 2 threads, 192 cached positions, alternating runs, median of their medians:
    /// SmolLM2 3.95 ms with a 64 KiB minimum, 3.85 with 256 KiB, 3.80 with 1 MiB, 3.72 with one
    /// chunk per thread for every job (6 runs each); four chunks per thread for every job against
    /// 1 MiB (4 runs each): Gemma-3-270M 8.9 -> 8.5 ms, Qwen2.5-0.5B 14.6 -> 14.2, Qwen2.5-1.5B
    /// unchanged (~35.9). The largest jobs keep four, for a late or descheduled thread.
    pub fn chunks_per_thread(&self, bytes: usize) -> usize {
        (bytes / (self.threads() * MIN_CHUNK_BYTES)).clamp(1, MAX_CHUNKS_PER_THREAD)
    }

    /// [`Self::chunks_per_thread`] for a matrix product that streams `weight_bytes` of weights
    /// (and reads `bytes` in all, weights times tokens), with more chunks where one would
    /// stream more than `MAX_CHUNK_WEIGHT_BYTES`: a job ends with its last chunk, and the
    /// threads that have none left wait for it. In four chunks per thread, Gemma-3-270M's output
    /// head (178 MB) left chunks of 22 MB, about a millisecond each at two threads.
    pub fn chunks_per_thread_streaming(&self, bytes: usize, weight_bytes: usize) -> usize {
        self.chunks_per_thread(bytes).max(weight_bytes / (self.threads() * MAX_CHUNK_WEIGHT_BYTES))
    }

    /// Wakes the parked workers, if any (a system call, which the workers between two
    /// operations of a forward pass, spinning, do not need).
    fn wake_workers(&self) {
        let s = &*self.shared;
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _g = s.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
    }

    /// Calls `task(i)` for every i in 0..n_tasks, spread over the pool; returns when all are done.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        let _one_job_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the 'static lifetime is a lie told only to the workers. They use the job only
        // between entering it (`join_job`, which fails once the job is closed) and leaving it,
        // and this function closes the job and does not return (nor unwind: the caller's own
        // tasks run under catch_unwind) until every worker that entered has left and the slot
        // is cleared, so `task` outlives every use.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(task) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        s.entered.store(OPEN, Ordering::SeqCst);
        // SeqCst here and in the worker's count-then-check: either the worker sees the new
        // generation before it waits, or this sees it counted and wakes it (taking the lock the
        // worker holds until it waits).
        s.generation.fetch_add(1, Ordering::SeqCst);
        self.wake_workers();
        let caller_panicked = catch_unwind(AssertUnwindSafe(|| take_tasks(s, job))).is_err();
        // Every task is taken. Workers that have not entered yet are not waited for: a parked
        // worker's wake takes ~100 µs on a virtual machine whose idle vCPU has halted, which the
        // first job after an idle gap (a forward pass after the caller handled a token) paid in
        // full, however few tasks were left for it.
        s.entered.fetch_and(!OPEN, Ordering::SeqCst);
        let workers_done = || s.entered.load(Ordering::Acquire) == 0;
        if !spin_until(workers_done) {
            while !workers_done() {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if caller_panicked || s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a compute task panicked");
        }
    }

    /// Splits `out` into about `MAX_CHUNKS_PER_THREAD * threads` chunks of whole `granule`s and
    /// calls `task(first_index, chunk)` for each, in parallel. One thread takes `out` as one
    /// chunk: a task then sees all of it (attention's heads that share keys, a kernel's row
    /// groups).
    pub fn for_each_chunk<T: Send>(&self, out: &mut [T], granule: usize, task: &(dyn Fn(usize, &mut [T]) + Sync)) {
        self.for_each_chunk_by(out, granule, MAX_CHUNKS_PER_THREAD, task);
    }

    /// `for_each_chunk` in about `per_thread * threads` chunks (see [`Self::chunks_per_thread`]).
    pub fn for_each_chunk_by<T: Send>(
        &self,
        out: &mut [T],
        granule: usize,
        per_thread: usize,
        task: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        self.for_each_chunk_of_parts(&mut [out], granule, per_thread, &|_, start, chunk| task(start, chunk));
    }

    /// `for_each_chunk` over several outputs as one job (one wake of the workers, one wait for
    /// the last task, instead of one per output): about `per_thread * threads` chunks in all,
    /// each within one part, and `task(part, first_index_in_part, chunk)` for each.
    pub fn for_each_chunk_of_parts<T: Send>(
        &self,
        parts: &mut [&mut [T]],
        granule: usize,
        per_thread: usize,
        task: &(dyn Fn(usize, usize, &mut [T]) + Sync),
    ) {
        if self.workers.is_empty() {
            for (p, part) in parts.iter_mut().enumerate().filter(|(_, part)| !part.is_empty()) {
                task(p, 0, part);
            }
            return;
        }
        let granule = granule.max(1);
        let units: usize = parts.iter().map(|part| part.len().div_ceil(granule)).sum();
        let per_chunk = units.div_ceil(self.threads() * per_thread.max(1)).max(1) * granule;
        let chunks: Vec<Mutex<(usize, usize, &mut [T])>> = parts
            .iter_mut()
            .enumerate()
            .flat_map(|(p, part)| {
                part.chunks_mut(per_chunk).enumerate().map(move |(i, c)| Mutex::new((p, i * per_chunk, c)))
            })
            .collect();
        self.run(chunks.len(), &|i| {
            let mut guard = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
            let (part, start, ref mut chunk) = *guard;
            task(part, start, chunk);
        });
    }
}

/// Chunks per thread of a job at most: enough that a thread that starts late, or is
/// descheduled, leaves part of its share to the others.
const MAX_CHUNKS_PER_THREAD: usize = 4;

/// Bytes a chunk of a product or of attention reads at least (see
/// [`ComputePool::chunks_per_thread`]).
const MIN_CHUNK_BYTES: usize = 1 << 20;

/// Weight bytes a chunk of a matrix product streams at most, in all but the smallest jobs (see
/// [`ComputePool::chunks_per_thread_streaming`]): ~200 µs of decode at one thread's share of
/// the memory bandwidth, long enough that a chunk's start (a task taken, a new stream for the
/// prefetchers) costs nothing measurable.
const MAX_CHUNK_WEIGHT_BYTES: usize = 4 << 20;

fn take_tasks(s: &Shared, job: Job) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        job(i);
    }
}

fn worker_loop(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let news = || s.generation.load(Ordering::SeqCst) != seen || s.shutdown.load(Ordering::Acquire);
        while !spin_until(news) {
            let guard = s.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.parked.fetch_add(1, Ordering::SeqCst);
            if !news() {
                drop(s.wake.wait(guard).unwrap_or_else(|e| e.into_inner()));
            }
            s.parked.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = s.generation.load(Ordering::Acquire);
        if !join_job(s) {
            continue;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            if catch_unwind(AssertUnwindSafe(|| take_tasks(s, job))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.entered.fetch_sub(1, Ordering::Release);
    }
}

/// Enters the current job if it still takes workers in; the worker then must leave it
/// (decrement `entered`) when done. A worker that saw job k's generation may enter job k + 1
/// instead, if k closed meanwhile: it then runs k + 1's tasks, as it would have next.
fn join_job(s: &Shared) -> bool {
    let mut now = s.entered.load(Ordering::SeqCst);
    loop {
        if now & OPEN == 0 {
            return false;
        }
        match s.entered.compare_exchange_weak(now, now + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(actual) => now = actual,
        }
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        {
            let _g = self.shared.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Makes the calling thread run only on CPU time the compute threads leave: on Linux the
/// lowest priority (nice 19) for this thread alone; elsewhere nothing changes.
pub fn yield_cpu_to_compute() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux, `who` 0 with PRIO_PROCESS names
    // the calling thread. A failure leaves the priority as it was, which is only slower.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in [1, 2, 3, 8] {
            let pool = ComputePool::new(threads);
            for n in [0, 1, 2, 7, 100, 1000] {
                let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "threads {threads} n {n}");
            }
        }
    }

    /// Jobs after idle gaps long enough for the workers to park: the caller often finishes
    /// before a worker enters, and a late worker must neither run a finished job's tasks nor
    /// miss the next job's.
    #[test]
    fn workers_that_wake_late_run_only_current_jobs() {
        let pool = ComputePool::new(3);
        let jobs = 300;
        let counts: Vec<Vec<AtomicUsize>> = (0..jobs).map(|_| (0..4).map(|_| AtomicUsize::new(0)).collect()).collect();
        for (j, job_counts) in counts.iter().enumerate() {
            if j % 3 == 0 {
                std::thread::sleep(SPIN_TIME * 2);
            }
            pool.run(job_counts.len(), &|i| {
                job_counts[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        std::thread::sleep(SPIN_TIME * 2);
        for (j, job_counts) in counts.iter().enumerate() {
            assert!(job_counts.iter().all(|c| c.load(Ordering::Relaxed) == 1), "job {j}");
        }
    }

    #[test]
    fn chunks_cover_the_output_in_whole_granules() {
        let pool = ComputePool::new(3);
        let mut out = vec![0.0f32; 1000];
        pool.for_each_chunk(&mut out, 8, &|start, chunk| {
            assert_eq!(start % 8, 0);
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = (start + j) as f32;
            }
        });
        assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
    }

    #[test]
    fn small_jobs_get_fewer_chunks() {
        let pool = ComputePool::new(2);
        assert_eq!(pool.chunks_per_thread(0), 1);
        assert_eq!(pool.chunks_per_thread(3 * MIN_CHUNK_BYTES), 1);
        assert_eq!(pool.chunks_per_thread(6 * MIN_CHUNK_BYTES), 3);
        assert_eq!(pool.chunks_per_thread(usize::MAX / 4), MAX_CHUNKS_PER_THREAD);
    }

    #[test]
    fn chunks_of_parts_stay_within_their_part() {
        for threads in [1, 2, 3] {
            let pool = ComputePool::new(threads);
            let (mut a, mut b, mut c) = (vec![0u32; 64], vec![0u32; 0], vec![0u32; 20]);
            pool.for_each_chunk_of_parts(&mut [&mut a, &mut b, &mut c], 8, 4, &|part, start, chunk| {
                assert_eq!(start % 8, 0);
                assert!(!chunk.is_empty());
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v += (part * 1000 + start + j) as u32 + 1;
                }
            });
            assert!(a.iter().enumerate().all(|(i, &v)| v == i as u32 + 1), "threads {threads}");
            assert!(c.iter().enumerate().all(|(i, &v)| v == (2000 + i) as u32 + 1), "threads {threads}");
        }
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = ComputePool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(16, &|i| assert!(i != 5))));
        assert!(r.is_err());
        let total = AtomicUsize::new(0);
        pool.run(16, &|_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 16);
    }

    /// What the first job after an idle gap (the worker parked) costs the caller, two tasks of
    /// 10 µs: `cargo test --release parked_job_latency -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; prints µs per job"]
    fn parked_job_latency() {
        let pool = ComputePool::new(2);
        let busy = |us: u64| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_micros(us) {
                std::hint::spin_loop();
            }
        };
        for round in 0..3 {
            let mut times: Vec<f64> = (0..200)
                .map(|_| {
                    std::thread::sleep(SPIN_TIME * 6);
                    let start = Instant::now();
                    pool.run(2, &|_| busy(10));
                    start.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            times.sort_by(f64::total_cmp);
            println!("round {round}: median {:.1} µs, p90 {:.1} µs", times[100], times[180]);
        }
    }

    /// What one small job costs the caller (wake, two tasks, wait), over back-to-back jobs as a
    /// forward pass issues them: `cargo test --release pool_job_overhead -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; prints ns per job"]
    fn pool_job_overhead() {
        let pool = ComputePool::new(2);
        let sink = AtomicUsize::new(0);
        for round in 0..3 {
            let jobs = 200_000;
            let start = Instant::now();
            for _ in 0..jobs {
                pool.run(2, &|i| {
                    sink.fetch_add(i, Ordering::Relaxed);
                });
            }
            println!(
                "round {round}: {:.0} ns per job of two tasks, two threads",
                start.elapsed().as_nanos() as f64 / jobs as f64
            );
        }
    }
}
