//! ferroloop's event-loop core, with no Python in it: the loop's logic, not only its containers.
//!
//! Everything here is generic over what a callback is ([`Callback`]) and over the clock
//! ([`Clock`]), so `cargo test -p ferroloop-core` drives whole turns with plain closures and a
//! [`ManualClock`]. The Python binding (`ferroloop-py`) instantiates these with Python handles
//! and implements [`Host`] as glue: reference counting, GC tracking, the GIL, calls into Python.
//!
//! - [`callback`]: the [`Callback`] trait the containers need.
//! - [`clock`]: the loop's clock, the same one `time.monotonic()` reads, and a manual one.
//! - [`ready`]: the FIFO of callbacks ready to run, drained one turn at a time.
//! - [`timers`]: the timer heap (O(log n) schedule, O(1) lazy cancel, compaction).
//! - [`poller`]: level-triggered epoll with a cross-thread [`poller::Waker`].
//! - [`ready_hint`]: the io_uring hint that lets a zero-timeout wait be skipped when the kernel
//!   says nothing can be ready.
//! - [`fd_table`]: reader/writer callbacks per fd, kept in step with epoll's registrations.
//! - [`event_loop`]: [`EventLoop`], the state of a loop, and the steps of a turn; the
//!   wait-timeout rule.
//! - [`turn`]: [`run_once`], one turn, and [`Host`], what it needs from its embedder.

pub mod callback;
pub mod clock;
pub mod event_loop;
pub mod fd_table;
pub mod poller;
pub mod ready;
pub mod ready_hint;
pub mod timers;
pub mod turn;

pub use callback::Callback;
pub use clock::{Clock, ManualClock, MonotonicClock, OffsetClock};
pub use event_loop::{
    wait_timeout, Dispatched, EventLoop, Wait, MAXIMUM_SELECT_TIMEOUT, SIGNAL_TOKEN,
};
pub use fd_table::{Direction, FdEntry, FdTable, Registry};
pub use poller::{Events, Interest, Poller, Readiness, Waker};
pub use ready::ReadyQueue;
pub use timers::TimerHeap;
pub use turn::{run_once, Host};
