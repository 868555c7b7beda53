//! The timer heap: `call_later` / `call_at`.
//!
//! Scheduling is O(log n). Cancelling is O(1): the caller marks its entry cancelled and calls
//! [`TimerHeap::note_cancelled`]; the entry stays in the heap and is dropped lazily, either when
//! it reaches the top or by a compaction pass once cancelled entries pile up. The thresholds are
//! CPython's (`base_events._MIN_SCHEDULED_TIMER_HANDLES = 100` and
//! `_MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5`), so memory use under schedule+cancel churn
//! matches the stdlib's.
//!
//! Entries with equal deadlines come out in the order they were scheduled (a sequence number breaks
//! ties), which the stdlib's `heapq` does not promise but every test expects.

use crate::callback::Callback;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Below this many scheduled timers, never compact (CPython: `_MIN_SCHEDULED_TIMER_HANDLES`).
pub const MIN_SCHEDULED_FOR_COMPACTION: usize = 100;
/// Compact once more than this fraction of scheduled timers are cancelled
/// (CPython: `_MIN_CANCELLED_TIMER_HANDLES_FRACTION`).
pub const CANCELLED_FRACTION_FOR_COMPACTION: f64 = 0.5;

struct Slot<T> {
    /// The deadline used for ordering: `when`, with NaN mapped to -inf. CPython's heap treats a NaN
    /// deadline as due at once (every comparison with it is false), and so does this one.
    key: f64,
    /// Insertion order, to keep equal deadlines first-in first-out.
    seq: u64,
    item: T,
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .total_cmp(&self.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of timers ordered by deadline, with lazy cancellation.
pub struct TimerHeap<T> {
    heap: BinaryHeap<Slot<T>>,
    next_seq: u64,
    /// How many entries still in `heap` are cancelled. Kept exact by the owner calling
    /// [`note_cancelled`](Self::note_cancelled) once per cancel of a still-scheduled timer, and by
    /// this heap decrementing it whenever it drops a cancelled entry.
    cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }
}

impl<T: Callback> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `item` for `when` (seconds on the loop clock).
    pub fn push(&mut self, when: f64, item: T) {
        // `+ 0.0` turns -0.0 into 0.0: `total_cmp` orders -0.0 before 0.0, which would break FIFO
        // among deadlines that compare equal.
        let key = if when.is_nan() {
            f64::NEG_INFINITY
        } else {
            when + 0.0
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Slot { key, seq, item });
    }

    /// Records that one scheduled timer was cancelled.
    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Entries in the heap, cancelled ones included (CPython's `len(loop._scheduled)`).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Cancelled entries still held.
    pub fn cancelled(&self) -> usize {
        self.cancelled
    }

    /// Removes cancelled entries: all of them when they are more than half of a heap of over 100
    /// (one O(n) rebuild), otherwise only those at the top. Removed entries are pushed onto
    /// `removed` rather than dropped, so that a caller holding a lock can drop them after releasing
    /// it (dropping a Python object may run arbitrary code). Call once per loop turn, before
    /// [`next_deadline`](Self::next_deadline).
    pub fn purge_cancelled(&mut self, removed: &mut Vec<T>) {
        let n = self.heap.len();
        if n > MIN_SCHEDULED_FOR_COMPACTION
            && self.cancelled as f64 / n as f64 > CANCELLED_FRACTION_FOR_COMPACTION
        {
            let slots = std::mem::take(&mut self.heap).into_vec();
            let mut kept = Vec::with_capacity(n - self.cancelled);
            for slot in slots {
                if slot.item.is_cancelled() {
                    slot.item.set_unscheduled();
                    removed.push(slot.item);
                } else {
                    kept.push(slot);
                }
            }
            self.heap = BinaryHeap::from(kept);
            self.cancelled = 0;
        } else {
            while self.heap.peek().is_some_and(|s| s.item.is_cancelled()) {
                let slot = self.heap.pop().expect("peeked");
                slot.item.set_unscheduled();
                self.cancelled = self.cancelled.saturating_sub(1);
                removed.push(slot.item);
            }
        }
    }

    /// The earliest deadline among the entries (after a purge, the earliest live timer's).
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|s| s.key)
    }

    /// Pops every entry due before `end` (CPython: `when < now + clock_resolution`), earliest
    /// first, handing each to `sink`. Cancelled entries found on the way are handed over too, as
    /// CPython moves them to its ready queue and skips them there; only the count is adjusted.
    pub fn pop_due(&mut self, end: f64, mut sink: impl FnMut(T)) {
        while self.heap.peek().is_some_and(|s| s.key < end) {
            let slot = self.heap.pop().expect("peeked");
            slot.item.set_unscheduled();
            if slot.item.is_cancelled() {
                self.cancelled = self.cancelled.saturating_sub(1);
            }
            sink(slot.item);
        }
    }

    /// Removes every entry (`loop.close()`), returning them so the caller can drop them where it
    /// is safe to.
    pub fn take_all(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|s| s.item)
            .collect()
    }

    /// Iterates over the entries in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|s| &s.item)
    }
}
