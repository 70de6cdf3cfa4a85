//! Which units (layers, the output head) stay resident and which stream through the prefetch
//! slots, and which unit to evict: pure decisions over sizes and positions, unit-tested alone.
//!
//! A forward pass visits units in a fixed cycle (layer 0..n-1, then the head, then layer 0 of
//! the next token). On a cycle, LRU evicts exactly the unit that is needed soonest, so with any
//! cache smaller than the whole model it never hits. Instead we keep a fixed set resident for
//! good and evict, among the others, the unit whose next use is farthest away (Belady's choice,
//! exact here because the order is known).

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// A fixed resident set, the rest streamed with farthest-next-use eviction.
    FixedAndStream,
    /// Plain least-recently-used over all units (kept as the baseline it is measured against).
    Lru,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Per unit: resident for good.
    pub pinned: Vec<bool>,
    pub pinned_bytes: u64,
}

/// Chooses the fixed resident set: the largest units first, as long as the units left to
/// stream still fit, for any `prefetch + 1` consecutive units of the cycle, beside it (so that
/// prefetching is never starved). A budget that holds the largest unit alone still works, with
/// prefetches skipped when they do not fit.
pub fn plan(unit_bytes: &[u64], budget: u64, prefetch: usize, policy: EvictionPolicy) -> Result<Plan> {
    let largest = unit_bytes.iter().copied().max().unwrap_or(0);
    if largest > budget {
        return Err(Error::invalid_option(
            "memoryBudget",
            format!("{budget} bytes cannot hold the largest layer or output head ({largest} bytes)"),
        ));
    }
    let mut pinned = vec![false; unit_bytes.len()];
    let mut pinned_bytes = 0u64;
    if policy == EvictionPolicy::FixedAndStream {
        let mut order: Vec<usize> = (0..unit_bytes.len()).collect();
        order.sort_by_key(|&u| std::cmp::Reverse(unit_bytes[u]));
        for &u in &order {
            pinned[u] = true;
            if pinned_bytes + unit_bytes[u] + stream_window(unit_bytes, &pinned, prefetch + 1) <= budget {
                pinned_bytes += unit_bytes[u];
            } else {
                pinned[u] = false;
            }
        }
    }
    Ok(Plan { pinned, pinned_bytes })
}

/// The most bytes that streamed (not pinned) units take in any `len` consecutive positions of
/// the cycle: what the current unit and its prefetches need at once.
fn stream_window(unit_bytes: &[u64], pinned: &[bool], len: usize) -> u64 {
    let n = unit_bytes.len();
    (0..n)
        .map(|start| (0..len.min(n)).map(|k| (start + k) % n).filter(|&u| !pinned[u]).map(|u| unit_bytes[u]).sum())
        .max()
        .unwrap_or(0)
}

/// Distance, in units visited, from `from` to the next use of `unit` on a cycle of `n`.
pub fn distance(from: usize, unit: usize, n: usize) -> usize {
    (unit + n - from) % n
}

/// Per unit, what eviction looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    pub unit: usize,
    pub last_use: u64,
}

/// The unit to evict among `candidates` (resident, unused, not pinned), for a pass now at
/// `cursor`; units within `protect` positions ahead of it are never chosen.
pub fn victim(
    policy: EvictionPolicy,
    candidates: impl Iterator<Item = Candidate>,
    cursor: usize,
    protect: usize,
    n: usize,
) -> Option<usize> {
    let eligible = candidates.filter(|c| distance(cursor, c.unit, n) > protect);
    match policy {
        EvictionPolicy::FixedAndStream => eligible.max_by_key(|c| distance(cursor, c.unit, n)).map(|c| c.unit),
        EvictionPolicy::Lru => eligible.min_by_key(|c| c.last_use).map(|c| c.unit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `tokens` forward passes over a cycle of units through a cache of `budget` bytes
    /// and returns (loads, hits); no prefetch, to count what the policy alone achieves.
    fn simulate(sizes: &[u64], budget: u64, policy: EvictionPolicy, tokens: usize) -> (usize, usize) {
        let n = sizes.len();
        let p = plan(sizes, budget, 0, policy).unwrap();
        let mut resident: Vec<Option<u64>> = vec![None; n];
        let mut used = 0u64;
        let (mut loads, mut hits, mut clock) = (0, 0, 0u64);
        for _ in 0..tokens {
            for u in 0..n {
                clock += 1;
                if resident[u].is_some() {
                    hits += 1;
                    resident[u] = Some(clock);
                    continue;
                }
                while used + sizes[u] > budget {
                    let candidates = (0..n)
                        .filter(|&v| v != u && !p.pinned[v])
                        .filter_map(|v| resident[v].map(|t| Candidate { unit: v, last_use: t }));
                    let v = victim(policy, candidates, u, 0, n).expect("budget holds one unit");
                    resident[v] = None;
                    used -= sizes[v];
                }
                resident[u] = Some(clock);
                used += sizes[u];
                loads += 1;
                assert!(used <= budget);
            }
        }
        (loads, hits)
    }

    #[test]
    fn lru_never_hits_on_a_cycle_and_the_fixed_set_does() {
        let sizes = vec![10u64; 12];
        let (lru_loads, lru_hits) = simulate(&sizes, 60, EvictionPolicy::Lru, 10);
        let (fixed_loads, fixed_hits) = simulate(&sizes, 60, EvictionPolicy::FixedAndStream, 10);
        assert_eq!(lru_hits, 6 - 6, "LRU on a cycle: after warm-up every access misses");
        assert_eq!(lru_loads, 120);
        // 5 units pinned, 1 slot streams the other 7: 7 loads per token after the first.
        assert_eq!(fixed_hits, 5 * 9);
        assert_eq!(fixed_loads, 120 - 45);
    }

    #[test]
    fn plan_pins_the_largest_units_that_leave_room_to_stream() {
        let sizes = [30, 10, 10, 10, 50];
        let p = plan(&sizes, 100, 1, EvictionPolicy::FixedAndStream).unwrap();
        // 50, then 30 (the widest streamed pair left is 10 + 10), then one 10 that leaves the
        // other two 10s apart (no pair wider than 10); a fourth would not leave room for that.
        assert_eq!(p.pinned, [true, false, true, false, true]);
        assert_eq!(p.pinned_bytes, 90);
        assert!(p.pinned_bytes + stream_window(&sizes, &p.pinned, 2) <= 100);
        let lru = plan(&sizes, 100, 1, EvictionPolicy::Lru).unwrap();
        assert!(lru.pinned.iter().all(|&x| !x));
    }

    #[test]
    fn the_budget_must_hold_the_largest_unit() {
        let err = plan(&[10, 40, 10], 39, 1, EvictionPolicy::FixedAndStream).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_OPTION");
        let p = plan(&[10, 40, 10], 40, 1, EvictionPolicy::FixedAndStream).unwrap();
        assert_eq!(p.pinned_bytes, 0);
    }

    #[test]
    fn stream_windows_wrap_around_the_cycle() {
        let sizes = [5, 1, 1, 7];
        assert_eq!(stream_window(&sizes, &[false; 4], 2), 12);
        assert_eq!(stream_window(&sizes, &[true, false, false, false], 2), 8);
    }

    #[test]
    fn victims_are_farthest_in_the_cycle_and_never_protected() {
        let c = |unit| Candidate { unit, last_use: unit as u64 };
        let all = [c(0), c(1), c(2), c(5), c(7)];
        // At cursor 3 on a cycle of 8: next uses are 0→5, 1→6, 2→7, 5→2, 7→4 positions away.
        assert_eq!(victim(EvictionPolicy::FixedAndStream, all.into_iter(), 3, 0, 8), Some(2));
        assert_eq!(victim(EvictionPolicy::Lru, all.into_iter(), 3, 0, 8), Some(0));
        // Protecting 2 ahead of cursor 6 excludes 7 (1 ahead) but not 0 (2 ahead is the limit).
        assert_eq!(victim(EvictionPolicy::FixedAndStream, [c(7)].into_iter(), 6, 2, 8), None);
    }
}
