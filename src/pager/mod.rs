//! The Memory64 pager: a `WeightSource` that keeps only part of a model's weights resident,
//! under a byte budget, with a prefetch thread loading the next units while one computes.
//!
//! A unit is one transformer layer or the output head. `plan` decides which units stay
//! resident and which stream; this module owns the cache state, the loads and the thread.
//! Streamed units are loaded either by copying their tensors into an owned buffer with
//! positioned reads (`Read`: portable, I/O errors come back as errors, freed memory goes back to
//! the OS) or by mapping their pages in and later dropping them (`Map`: no copy, Linux madvise;
//! elsewhere pages are only touched). Units resident for good are copied and rearranged for
//! the kernels as resident weights are (`weights::rearrangement`), where that rearranges any of
//! their matrices: with Read as they load, with Map after the load by a thread of their own
//! that runs on CPU time the forward passes leave.

mod plan;

pub use plan::EvictionPolicy;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::mapping;
use crate::model::weights::{
    merged_spans, rearrangement, GuardBytes, HeadGuard, HeadTensors, LayerGuard, LayerTensors, TensorTable,
    WeightSource, WeightStats,
};
use crate::quant;
use crate::tensor::{GgmlType, WeightLayout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMethod {
    /// Positioned reads into owned buffers.
    Read,
    /// MADV_POPULATE_READ on the mapping, MADV_DONTNEED to release.
    Map,
}

impl LoadMethod {
    /// Map on Linux: measured on Qwen2.5-Coder-1.5B at half its weights (2 threads, the file
    /// freshly cached), it decodes at 0.91x resident against 0.11x for Read, which pays a copy
    /// and fresh page faults per load; and MADV_POPULATE_READ reports read errors as errors, so
    /// they still reach JS. Elsewhere Read, the portable path that frees memory for certain.
    pub const DEFAULT: LoadMethod = if cfg!(target_os = "linux") { LoadMethod::Map } else { LoadMethod::Read };
}

#[derive(Clone, Debug)]
pub struct PagerOptions {
    pub budget_bytes: u64,
    pub prefetch: usize,
    pub method: LoadMethod,
    pub policy: EvictionPolicy,
}

/// One unit's tensors: where they are in the file and where they go in its buffer.
struct Unit {
    /// Absolute file ranges of its tensors.
    ranges: Vec<(u64, u64)>,
    /// The same ranges merged across the padding between tensors, `(offset, len)`: what Map
    /// populates and releases. A release per tensor split a 2 MiB mapping at every small
    /// tensor's ends, each split flushing the TLB of every core the compute threads run on.
    spans: Vec<(u64, u64)>,
    bytes: u64,
    /// For each of `ranges`, how a buffer of the unit rearranges it, if it does (resident for
    /// good only).
    rearrange: Vec<Option<(GgmlType, usize)>>,
    /// The unit's tensors as it loads: offsets into its buffer (Read) or the file (Map).
    tensors: UnitTensors,
    /// Map, resident for good, with a matrix rearranged: its tensors in the copy the copying
    /// thread makes of it after the load (`PagedWeights::start_copies`).
    copy: Option<UnitTensors>,
}

#[derive(Clone)]
enum UnitTensors {
    Layer(Box<LayerTensors>),
    Head(HeadTensors),
}

impl UnitTensors {
    /// Part `u` of `table` (a layer, or the head after the last one) where the file has it.
    fn in_file(table: &TensorTable, u: usize) -> Self {
        match table.layers.get(u) {
            Some(layer) => UnitTensors::Layer(Box::new(layer.clone())),
            None => UnitTensors::Head(table.head.clone()),
        }
    }

    /// These tensors placed as `packed` says, which lists them in `all()`'s order (that of
    /// `TensorTable::parts`).
    fn relocated(&self, packed: &[TensorInfo]) -> Self {
        let mut out = self.clone();
        let place = |(t, p): (&mut TensorInfo, &TensorInfo)| *t = p.clone();
        match &mut out {
            UnitTensors::Layer(layer) => layer.all_mut().zip(packed).for_each(place),
            UnitTensors::Head(head) => head.all_mut().zip(packed).for_each(place),
        }
        out
    }
}

/// A unit's buffer in Read mode: an anonymous mapping of its own, so that dropping it unmaps
/// the memory at once (heap allocations of a few tens of MB can stay in malloc's arenas and
/// keep counting in the resident set after they are freed).
type UnitBuffer = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Default)]
struct UnitState {
    data: Option<UnitBuffer>,
    /// Map mode: pages are populated (no buffer).
    mapped: bool,
    loading: bool,
    in_use: usize,
    by_prefetch: bool,
    last_use: u64,
}

impl UnitState {
    fn resident(&self) -> bool {
        self.data.is_some() || self.mapped
    }
}

struct Cache {
    units: Vec<UnitState>,
    resident: u64,
    peak: u64,
    /// Unit the forward pass is at.
    cursor: usize,
    clock: u64,
}

struct Shared {
    file: Arc<GgufFile>,
    units: Vec<Unit>,
    pinned: Vec<bool>,
    options: PagerOptions,
    cache: Mutex<Cache>,
    changed: Condvar,
    /// Bumped when a generation stops: queued prefetches of older epochs are dropped.
    epoch: AtomicU64,
    loads: AtomicU64,
    hits: AtomicU64,
    prefetch_hits: AtomicU64,
    stall_ns: AtomicU64,
    bytes_read: AtomicU64,
    /// Copies of mapped units resident for good (`copy_mapped`): bytes made, and how many are left.
    copied_bytes: AtomicU64,
    copies_left: AtomicU64,
    /// The weights are being dropped: the copying thread skips the copies it has not begun.
    closing: AtomicBool,
}

pub struct PagedWeights {
    shared: Arc<Shared>,
    table: TensorTable,
    prefetch_tx: Option<Sender<Prefetch>>,
    thread: Option<JoinHandle<()>>,
    /// The thread copying the mapped units resident for good, where any is.
    copier: Option<JoinHandle<()>>,
}

/// Tensors of a unit packed into one buffer, each at a 64-byte boundary.
fn pack(tensors: &[&TensorInfo]) -> (Vec<(u64, u64)>, Vec<TensorInfo>, u64) {
    pack_as(tensors, &vec![None; tensors.len()])
}

/// [`pack`], with the tensors `rearrange` names rearranged in the buffer.
fn pack_as(
    tensors: &[&TensorInfo],
    rearrange: &[Option<(GgmlType, usize)>],
) -> (Vec<(u64, u64)>, Vec<TensorInfo>, u64) {
    let mut at = 0u64;
    let mut ranges = Vec::new();
    let mut packed = Vec::new();
    for (t, how) in tensors.iter().zip(rearrange) {
        ranges.push((t.offset, t.size));
        let layout = if how.is_some() { WeightLayout::Interleaved8 } else { t.layout };
        packed.push(TensorInfo { offset: at, layout, ..(*t).clone() });
        at = (at + t.size).div_ceil(64) * 64;
    }
    (ranges, packed, at)
}

/// The smallest budget a model can be paged in: its largest unit, packed as the pager packs it.
pub fn smallest_budget(table: &TensorTable) -> u64 {
    table.parts().map(|tensors| pack(&tensors).2).max().unwrap_or(0)
}

/// Work for the prefetch thread: load `unit` ahead of the pass, unless the epoch has moved on.
struct Prefetch {
    unit: usize,
    epoch: u64,
}

impl PagedWeights {
    /// Plans residency and loads the units that stay resident for good (reporting progress).
    pub fn new(
        file: Arc<GgufFile>,
        table: TensorTable,
        options: PagerOptions,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self> {
        let parts: Vec<Vec<&TensorInfo>> = table.parts().collect();
        let sizes: Vec<u64> = parts.iter().map(|infos| pack(infos).2).collect();
        let plan = plan::plan(&sizes, options.budget_bytes, options.prefetch, options.policy)?;
        let n = parts.len();
        let mut units = Vec::with_capacity(n);
        for (u, infos) in parts.iter().enumerate() {
            // Resident for good, a unit is copied: laid out as resident weights are, its matrices
            // read at their speed, and from memory of the process's own whichever pages the
            // file's cache got (on a VM, the same file cache decoded at 5.6-11 tok/s as it was
            // read into one place or another; Qwen2.5-1.5B at half its weights, one thread, in a
            // slow place: 6.0 tok/s mapped, 6.8 with its 270 MB resident for good copied).
            let pinned = plan.pinned[u];
            let rearrange: Vec<_> = infos.iter().map(|t| if pinned { rearrangement(t) } else { None }).collect();
            let (ranges, packed, bytes) = pack_as(infos, &rearrange);
            let in_file = UnitTensors::in_file(&table, u);
            let in_buffer = in_file.relocated(&packed);
            let (tensors, copy) = match options.method {
                LoadMethod::Read => (in_buffer, None),
                LoadMethod::Map => (in_file, rearrange.iter().any(Option::is_some).then_some(in_buffer)),
            };
            let spans = merged_spans(ranges.iter().copied());
            units.push(Unit { ranges, spans, bytes, rearrange, tensors, copy });
        }
        let shared = Arc::new(Shared {
            file,
            units,
            pinned: plan.pinned.clone(),
            options,
            cache: Mutex::new(Cache {
                units: (0..n).map(|_| UnitState::default()).collect(),
                resident: 0,
                peak: 0,
                cursor: 0,
                clock: 0,
            }),
            changed: Condvar::new(),
            epoch: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            prefetch_hits: AtomicU64::new(0),
            stall_ns: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            copies_left: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });

        let total = plan.pinned_bytes;
        let mut done = 0;
        progress(0, total);
        for u in (0..n).filter(|&u| plan.pinned[u]) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Aborted);
            }
            shared.acquire(u, false)?;
            shared.release_use(u);
            done += shared.units[u].bytes;
            progress(done, total);
        }
        // Loading the resident set is not a cache hit or a stall of any forward pass.
        shared.loads.store(0, Ordering::Relaxed);
        shared.stall_ns.store(0, Ordering::Relaxed);

        let (tx, rx) = crossbeam_channel::unbounded::<Prefetch>();
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("chord-prefetch".into())
            .spawn(move || prefetch_loop(&worker, &rx))
            .map_err(|e| Error::Io { path: "prefetch thread".into(), source: e })?;
        let mut weights = PagedWeights { shared, table, prefetch_tx: Some(tx), thread: Some(thread), copier: None };
        weights.copier = weights.start_copies()?;
        Ok(weights)
    }

    /// Starts the copies of the mapped units resident for good, in forward order, on a thread
    /// of their own at the lowest priority: the prefetch thread serves the passes meanwhile,
    /// and where the passes take every core the copy takes only the time they leave.
    /// Qwen2.5-1.5B at half its weights, an 8-token prompt right after the load, 2 threads on 2
    /// cores (5 runs each): first token 0.18-0.25 s and the next 15 at 14.2-14.9 tok/s, against
    /// 0.26-0.30 s and 11.6-12.3 tok/s (stalling 20 ms on loads) when the prefetch thread made
    /// the copy before serving any prefetch, and 0.16-0.20 s, 14.5-15.5 tok/s with no copy.
    fn start_copies(&self) -> Result<Option<JoinHandle<()>>> {
        let copies: Vec<usize> =
            (0..self.shared.units.len()).filter(|&u| self.shared.units[u].copy.is_some()).collect();
        if copies.is_empty() {
            return Ok(None);
        }
        self.shared.copies_left.store(copies.len() as u64, Ordering::Relaxed);
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("chord-pin-copy".into())
            .spawn(move || {
                crate::pool::yield_cpu_to_compute();
                for unit in copies {
                    shared.copy_mapped(unit);
                }
            })
            .map(Some)
            .map_err(|e| Error::Io { path: "a thread to copy the resident layers".into(), source: e })
    }

    /// Asks the prefetch thread for the `prefetch` units after `unit` in forward order.
    fn prefetch_after(&self, unit: usize) {
        let Some(tx) = &self.prefetch_tx else { return };
        let n = self.shared.units.len();
        let epoch = self.shared.epoch.load(Ordering::Relaxed);
        for k in 1..=self.shared.options.prefetch {
            let next = (unit + k) % n;
            if !self.shared.pinned[next] {
                let _ = tx.send(Prefetch { unit: next, epoch });
            }
        }
    }

    /// What a guard of acquired `unit` reads: its buffer, or the mapped file; and its tensors
    /// there.
    fn guard_parts(&self, unit: usize) -> (GuardBytes<'_>, &UnitTensors) {
        let u = &self.shared.units[unit];
        match self.shared.lock().units[unit].data.clone() {
            Some(buffer) => (GuardBytes::Shared(buffer), u.copy.as_ref().unwrap_or(&u.tensors)),
            None => (GuardBytes::Borrowed(self.shared.file.mapped().bytes()), &u.tensors),
        }
    }
}

/// Releases its unit's use when the forward pass is done with it.
struct UseToken {
    shared: Arc<Shared>,
    unit: usize,
}

impl Drop for UseToken {
    fn drop(&mut self) {
        self.shared.release_use(self.unit);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `unit` resident and marks it in use. `prefetch` loads skip instead of waiting.
    /// Returns false when a prefetch found no room.
    fn acquire(&self, unit: usize, prefetch: bool) -> Result<bool> {
        let n = self.units.len();
        let bytes = self.units[unit].bytes;
        let started = Instant::now();
        let mut waited = false;
        let mut cache = self.lock();
        loop {
            let state = &cache.units[unit];
            if state.resident() {
                if prefetch {
                    return Ok(false);
                }
                if !waited {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    if state.by_prefetch {
                        self.prefetch_hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                break;
            }
            // A request the pass has already gone by (the prefetch thread fell behind): loading
            // it now would only evict what the pass needs next.
            let ahead = plan::distance(cache.cursor, unit, n);
            if prefetch && (ahead == 0 || ahead > self.options.prefetch) {
                return Ok(false);
            }
            if state.loading {
                if prefetch {
                    return Ok(false);
                }
                waited = true;
                cache = self.changed.wait(cache).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Protect the units the forward pass needs next from our own evictions.
            let from = if prefetch { cache.cursor } else { unit };
            let protect = if prefetch { plan::distance(cache.cursor, unit, n) } else { self.options.prefetch };
            // A forward pass may take what prefetching reserved rather than wait for nothing.
            let room = self.make_room(&mut cache, bytes, from, protect)
                || (!prefetch && self.make_room(&mut cache, bytes, unit, 0));
            if !room {
                if prefetch {
                    return Ok(false);
                }
                waited = true;
                cache = self.changed.wait(cache).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            cache.units[unit].loading = true;
            cache.resident += bytes;
            cache.peak = cache.peak.max(cache.resident);
            drop(cache);
            let loaded = self.load(unit);
            cache = self.lock();
            cache.units[unit].loading = false;
            match loaded {
                Ok(data) => {
                    cache.units[unit].mapped = data.is_none();
                    cache.units[unit].data = data;
                    cache.units[unit].by_prefetch = prefetch;
                    self.loads.fetch_add(1, Ordering::Relaxed);
                    self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
                    self.changed.notify_all();
                }
                Err(e) => {
                    cache.resident -= bytes;
                    self.changed.notify_all();
                    return Err(e);
                }
            }
            if prefetch {
                return Ok(true);
            }
            waited = true;
            break;
        }
        cache.clock += 1;
        let clock = cache.clock;
        let state = &mut cache.units[unit];
        state.in_use += 1;
        state.by_prefetch = false;
        state.last_use = clock;
        cache.cursor = unit;
        if waited {
            self.stall_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn release_use(&self, unit: usize) {
        let mut cache = self.lock();
        cache.units[unit].in_use -= 1;
        self.changed.notify_all();
    }

    /// Evicts unpinned, unused units until `bytes` more fit the budget.
    fn make_room(&self, cache: &mut Cache, bytes: u64, from: usize, protect: usize) -> bool {
        let n = self.units.len();
        while cache.resident + bytes > self.options.budget_bytes {
            let candidates = cache
                .units
                .iter()
                .enumerate()
                .filter(|(u, s)| s.resident() && s.in_use == 0 && !self.pinned[*u])
                .map(|(unit, s)| plan::Candidate { unit, last_use: s.last_use });
            let Some(v) = plan::victim(self.options.policy, candidates, from, protect, n) else {
                return false;
            };
            cache.units[v].data = None;
            self.unmap(cache, v);
            cache.resident -= self.units[v].bytes;
        }
        true
    }

    /// Map mode: gives back the pages of unit `v` (evicted, or replaced by a copy) if it is
    /// mapped, whole 2 MiB pages only where they are shared with a unit still mapped. Dropping
    /// part of a 2 MiB mapping splits it: a TLB flush on every core the process runs on, and the
    /// rest of that page mapped 4 KiB at a time from then on. Qwen2.5-1.5B at a 256 MB budget
    /// split 1.65 pages a load, since units start and end anywhere in a huge page. A shared page
    /// is given back whole by the last of its units to go, so what stays mapped beyond the
    /// budget is under 2 MiB each side of a mapped unit.
    fn unmap(&self, cache: &mut Cache, v: usize) {
        if !std::mem::take(&mut cache.units[v].mapped) {
            return;
        }
        let held = |page: u64| {
            self.units.iter().enumerate().any(|(u, unit)| {
                let state = &cache.units[u];
                u != v
                    && (state.mapped || state.loading)
                    && unit.spans.iter().any(|&(offset, len)| offset < page + HUGE_PAGE && page < offset + len)
            })
        };
        for &span in &self.units[v].spans {
            if let Some((offset, len)) = whole_pages_to_release(span, held) {
                self.file.mapped().release(offset, len);
            }
        }
    }

    /// Reads a unit in: Some(buffer) for Read, None (pages populated) for Map.
    fn load(&self, unit: usize) -> Result<Option<UnitBuffer>> {
        let u = &self.units[unit];
        let file = self.file.mapped();
        if self.options.method == LoadMethod::Map {
            for &(offset, len) in &u.spans {
                file.populate(offset, len)?;
            }
            return Ok(None);
        }
        self.read_buffer(unit).map(Some)
    }

    /// A buffer holding `unit`'s tensors read from the file, rearranged as its `rearrange` says.
    fn read_buffer(&self, unit: usize) -> Result<UnitBuffer> {
        let (u, file) = (&self.units[unit], self.file.mapped());
        const WHAT: &str = "anonymous memory for a layer";
        let mut buf = mapping::weights_buffer(u.bytes, WHAT)?;
        let (mut at, mut scratch) = (0usize, Vec::new());
        for (&(offset, len), how) in u.ranges.iter().zip(&u.rearrange) {
            let tensor = &mut buf[at..at + len as usize];
            file.read_at(offset, tensor)?;
            if let &Some((ty, cols)) = how {
                quant::interleave_rows8(ty, cols, tensor, &mut scratch);
            }
            at = (at + len as usize).div_ceil(64) * 64;
        }
        Ok(Arc::new(mapping::seal_weights_buffer(buf, WHAT)?))
    }

    /// Reads mapped `unit` (resident for good) into a buffer, which passes read from
    /// then on, and gives back its pages of the file once no pass reads them. Errors leave it
    /// mapped; a pass reading it meets them itself.
    fn copy_mapped(&self, unit: usize) {
        let copied = if self.closing.load(Ordering::Relaxed) { None } else { self.read_buffer(unit).ok() };
        let Some(buffer) = copied else {
            self.copies_left.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let mut cache = self.lock();
        cache.units[unit].data = Some(buffer);
        while cache.units[unit].in_use > 0 {
            cache = self.changed.wait(cache).unwrap_or_else(|e| e.into_inner());
        }
        self.unmap(&mut cache, unit);
        self.copied_bytes.fetch_add(self.units[unit].bytes, Ordering::Relaxed);
        self.copies_left.fetch_sub(1, Ordering::Relaxed);
    }
}

const HUGE_PAGE: u64 = mapping::HUGE_PAGE as u64;

/// The part of `span` (`(offset, len)` in the file) to give back so that no 2 MiB page is split:
/// rounded out to whole 2 MiB pages, except at an end whose page `held` (by its start) says
/// another unit still maps; None when nothing is left.
fn whole_pages_to_release(span: (u64, u64), held: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
    let (offset, len) = span;
    let mut start = offset / HUGE_PAGE * HUGE_PAGE;
    if start < offset && held(start) {
        start += HUGE_PAGE;
    }
    let mut end = (offset + len).next_multiple_of(HUGE_PAGE);
    if end > offset + len && held(end - HUGE_PAGE) {
        end -= HUGE_PAGE;
    }
    (start < end).then(|| (start, end - start))
}

fn prefetch_loop(shared: &Arc<Shared>, rx: &Receiver<Prefetch>) {
    for Prefetch { unit, epoch } in rx.iter() {
        if epoch != shared.epoch.load(Ordering::Relaxed) {
            continue;
        }
        // Errors are not reported here: the forward pass loads the unit itself and surfaces them.
        if let Ok(true) = shared.acquire(unit, true) {
            shared.changed.notify_all();
        }
    }
}

impl WeightSource for PagedWeights {
    fn layer(&self, index: usize) -> Result<LayerGuard<'_>> {
        self.shared.acquire(index, false)?;
        let token = UseToken { shared: self.shared.clone(), unit: index };
        self.prefetch_after(index);
        let (bytes, UnitTensors::Layer(tensors)) = self.guard_parts(index) else { panic!("unit {index} is a layer") };
        Ok(LayerGuard::new(bytes, Cow::Borrowed(tensors), Some(Box::new(token))))
    }

    fn head(&self) -> Result<HeadGuard<'_>> {
        let index = self.shared.units.len() - 1;
        self.shared.acquire(index, false)?;
        let token = UseToken { shared: self.shared.clone(), unit: index };
        self.prefetch_after(index);
        let (bytes, UnitTensors::Head(tensors)) = self.guard_parts(index) else { panic!("the last unit is the head") };
        Ok(HeadGuard::new(bytes, tensors, Some(Box::new(token))))
    }

    fn embed(&self, token: u32, out: &mut [f32]) -> Result<()> {
        let t = &self.table.token_embd;
        let row_bytes = t.size / t.dims[1];
        let mut row = vec![0u8; row_bytes as usize];
        self.shared.file.mapped().read_at(t.offset + token as u64 * row_bytes, &mut row)?;
        quant::dequantize_row(t.ty, &row, out);
        Ok(())
    }

    fn idle(&self) {
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
    }

    fn check_file(&self) -> Result<()> {
        self.shared.file.mapped().check()
    }

    fn stats(&self) -> WeightStats {
        let s = &self.shared;
        let cache = s.lock();
        WeightStats {
            paged: true,
            copied: s.copied_bytes.load(Ordering::Relaxed) > 0,
            copied_bytes: s.copied_bytes.load(Ordering::Relaxed),
            copying: s.copies_left.load(Ordering::Relaxed) > 0,
            budget_bytes: s.options.budget_bytes,
            resident_bytes: cache.resident,
            peak_resident_bytes: cache.peak,
            layer_loads: s.loads.load(Ordering::Relaxed),
            layer_hits: s.hits.load(Ordering::Relaxed),
            prefetch_hits: s.prefetch_hits.load(Ordering::Relaxed),
            stall_ms: s.stall_ns.load(Ordering::Relaxed) as f64 / 1e6,
            bytes_read: s.bytes_read.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PagedWeights {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        self.prefetch_tx.take();
        // The copier stops after the unit it is copying (tens of ms), and waits for no pass.
        for t in [self.thread.take(), self.copier.take()].into_iter().flatten() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;
    use crate::testutil::{write_tiny_llama, TempPath};

    fn paged(path: &std::path::Path, budget_fraction: f64, prefetch: usize) -> PagedWeights {
        let file = Arc::new(GgufFile::open(path).unwrap());
        let mut config = ModelConfig::from_gguf(&file).unwrap();
        config.n_vocab = 256;
        let table = TensorTable::resolve(&file, &config).unwrap();
        let budget = (table.total_bytes() as f64 * budget_fraction) as u64;
        let options = PagerOptions {
            budget_bytes: budget,
            prefetch,
            method: LoadMethod::Read,
            policy: EvictionPolicy::FixedAndStream,
        };
        PagedWeights::new(file, table, options, &AtomicBool::new(false), &mut |_, _| {}).unwrap()
    }

    #[test]
    fn prefetches_queued_before_idle_are_dropped() {
        let file = TempPath::new("idle");
        write_tiny_llama(file.path(), 8);
        let weights = paged(file.path(), 0.45, 4);
        let loads_before = weights.stats().layer_loads;
        {
            // Hold the cache so the prefetch thread cannot finish anything while we queue.
            let _held = weights.shared.lock();
            weights.prefetch_after(0);
            weights.idle();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        // At most the one request the thread had already taken before idle() can have loaded.
        assert!(weights.stats().layer_loads - loads_before <= 1);
    }

    #[test]
    fn prefetches_the_pass_has_gone_by_are_skipped() {
        let file = TempPath::new("stale");
        write_tiny_llama(file.path(), 8);
        let weights = paged(file.path(), 0.45, 2);
        drop(weights.layer(5).unwrap());
        let unit = (0..8).find(|&u| u != 5 && !weights.shared.pinned[u] && !weights.shared.lock().units[u].resident());
        let Some(behind) = unit.filter(|&u| plan::distance(5, u, 9) > 2) else {
            panic!("the test model needs a streamed layer outside the prefetch window")
        };
        assert!(!weights.shared.acquire(behind, true).unwrap(), "a prefetch behind the pass loaded");
        // The unit itself, not the load counter: the prefetch thread may still be loading the
        // window after layer 5 (it did under qemu, between two reads of the counter).
        let cache = weights.shared.lock();
        assert!(!cache.units[behind].resident() && !cache.units[behind].loading, "unit {behind} was loaded");
        drop(cache);
        // Within the window a prefetch still loads (unless the thread got there first).
        let next = (6..9).find(|&u| !weights.shared.pinned[u]).expect("a streamed unit after layer 5");
        let _ = weights.shared.acquire(next, true).unwrap();
        // One look under one lock: the thread may finish its load between two.
        let cache = weights.shared.lock();
        assert!(cache.units[next].resident() || cache.units[next].loading);
    }

    #[test]
    fn releases_split_no_huge_page_another_unit_maps() {
        const MB: u64 = 1 << 20;
        let nobody = |_: u64| false;
        // Alone in its pages: rounded out to whole pages at both ends.
        assert_eq!(whole_pages_to_release((3 * MB, 6 * MB), nobody), Some((2 * MB, 8 * MB)));
        // The page at either end still mapped by a neighbour: kept whole.
        let first_held = |page: u64| page == 2 * MB;
        assert_eq!(whole_pages_to_release((3 * MB, 6 * MB), first_held), Some((4 * MB, 6 * MB)));
        let last_held = |page: u64| page == 8 * MB;
        assert_eq!(whole_pages_to_release((3 * MB, 6 * MB), last_held), Some((2 * MB, 6 * MB)));
        // Ends already on page boundaries ask nobody.
        let all_held = |_: u64| true;
        assert_eq!(whole_pages_to_release((2 * MB, 4 * MB), all_held), Some((2 * MB, 4 * MB)));
        // A span inside one shared page leaves it to the neighbour.
        assert_eq!(whole_pages_to_release((MB / 2, MB), all_held), None);
        assert_eq!(whole_pages_to_release((MB / 2, MB), nobody), Some((0, 2 * MB)));
    }

    #[test]
    fn guards_keep_their_layer_resident_under_pressure() {
        let file = TempPath::new("pin");
        write_tiny_llama(file.path(), 8);
        let weights = paged(file.path(), 0.3, 1);
        let held = weights.layer(3).unwrap();
        let before = held.weights().wq.data.to_vec();
        // Cycle through every other layer several times: layer 3 must not be evicted meanwhile.
        for _ in 0..3 {
            for l in (0..8).filter(|&l| l != 3) {
                drop(weights.layer(l).unwrap());
            }
        }
        assert_eq!(held.weights().wq.data, &before[..]);
        assert!(weights.shared.lock().units[3].resident(), "a layer in use was evicted");
        let s = weights.stats();
        assert!(s.peak_resident_bytes <= s.budget_bytes);
    }
}
