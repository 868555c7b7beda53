//! The loop clock.
//!
//! `loop.time()` must be comparable with `time.monotonic()` (CPython reads `CLOCK_MONOTONIC` and
//! returns seconds as a float), so the loop reads the same clock rather than counting from loop
//! creation. Tests that must not sleep use [`ManualClock`].

use rustix::time::{clock_gettime, ClockId};
use std::cell::Cell;

/// A source of the current time in seconds.
pub trait Clock {
    /// The current time, in seconds, on a clock that never goes backwards.
    fn now(&self) -> f64;
}

/// `CLOCK_MONOTONIC`, as `time.monotonic()` reads it.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> f64 {
        monotonic()
    }
}

/// `CLOCK_MONOTONIC` in seconds, computed as CPython computes `time.monotonic()`.
#[inline]
pub fn monotonic() -> f64 {
    let ts = clock_gettime(ClockId::Monotonic);
    // CPython converts to integer nanoseconds (an int64, `_PyTime_t`) and divides by 1e9; do
    // the same so the two agree. i64 nanoseconds cover 292 years of uptime, and converting an
    // i64 to f64 is one instruction where an i128 takes a library call.
    let ns = ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64;
    ns as f64 / 1e9
}

/// The clock's resolution in seconds (`time.get_clock_info('monotonic').resolution`).
pub fn resolution() -> f64 {
    let ts = rustix::time::clock_getres(ClockId::Monotonic);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A clock that only moves when told to: for tests that must not sleep.
/// The monotonic clock shifted by an offset that its owner sets: the binding's clock, so that a
/// loop whose `time()` is replaced in Python (tests patch it, as aiohttp's do) runs its timers
/// against that time, as the stdlib loop does (its turn calls `self.time()`). The offset is zero
/// unless `time` is replaced.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset: Cell<f64>,
}

impl OffsetClock {
    /// Seconds added to the monotonic clock.
    pub fn set_offset(&self, offset: f64) {
        self.offset.set(offset);
    }
}

impl Clock for OffsetClock {
    #[inline]
    fn now(&self) -> f64 {
        monotonic() + self.offset.get()
    }
}

#[derive(Debug, Default)]
pub struct ManualClock {
    now: Cell<f64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: f64) -> Self {
        Self {
            now: Cell::new(start),
        }
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: f64) {
        self.now.set(self.now.get() + secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        self.now.get()
    }
}
