//! What the core needs to know about a callback it holds.
//!
//! The ready queue, the timer heap and the fd table hold values of one type `H: Callback`: in the
//! Python binding a reference to a `Handle`, in the tests a plain closure behind an `Rc`. The core
//! never calls a callback itself; the turn hands it to its [`Host`](crate::turn::Host), which
//! runs it (see `turn.rs`).

/// A callback as the loop's containers see it.
pub trait Callback {
    /// True once the callback was cancelled: the turn skips it, the timer heap drops it, and a
    /// cancelled fd callback is unregistered when its fd next fires.
    fn is_cancelled(&self) -> bool;

    /// Told when a timer leaves the heap (due, or dropped because cancelled), so that a later
    /// `cancel()` knows it no longer counts towards [`TimerHeap::cancelled`] (CPython's
    /// `TimerHandle._scheduled`). Callbacks that are never timers can ignore it.
    ///
    /// [`TimerHeap::cancelled`]: crate::timers::TimerHeap::cancelled
    fn set_unscheduled(&self) {}
}
