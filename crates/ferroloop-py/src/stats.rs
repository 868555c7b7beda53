//! Loop metrics for `loop.stats()`: counters and where the time goes. Always on unless the
//! `diagnostics` cargo feature is disabled (only done to measure what they cost).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters for `loop.stats()`; cheap enough to be always on.
///
/// Only the thread running the loop (holding the GIL) increments them, so an increment is a
/// plain load and store ([`bump`]), not a locked read-modify-write; atomics only make them `Sync`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) turns: AtomicU64,
    pub(crate) callbacks: AtomicU64,
}

/// Increments a counter that has a single writer.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    if cfg!(feature = "diagnostics") {
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// Where the loop's time goes, for `loop.stats()`. Measured with at most one clock read per turn
/// beyond those the turn needs anyway (the read before a wait that may block, which costs nothing
/// next to the syscall).
#[derive(Default, Clone, Copy)]
pub(crate) struct TimeStats {
    /// Seconds spent running, over every `run_forever`, up to the start of the current run.
    pub(crate) run_total: f64,
    /// Start of the current run, if one is in progress.
    pub(crate) run_started: Option<f64>,
    /// Seconds spent waiting in epoll (blocking waits only; a zero-timeout poll counts as busy).
    pub(crate) idle: f64,
    /// Longest time the loop went without returning to its poll: one turn's callbacks, timers
    /// and bookkeeping.
    pub(crate) longest_stall: f64,
    /// When the previous turn finished polling (the start of its busy part).
    pub(crate) busy_since: Option<f64>,
}

impl TimeStats {
    /// The turn is about to wait, possibly blocking: the busy stretch ends here.
    #[inline]
    pub(crate) fn end_busy(&mut self, now: f64) {
        if let Some(t) = self.busy_since.take() {
            self.longest_stall = self.longest_stall.max(now - t);
        }
    }
}
