//! ferroloop's event-loop core, with no Python in it.
//!
//! Everything here is generic over what a callback or timer is, so `cargo test -p ferroloop-core`
//! exercises timer ordering, cancellation and compaction, the ready queue and the poller with plain
//! Rust values. The Python binding (`ferroloop-py`) instantiates these with Python handles.
//!
//! - [`clock`]: the loop's clock, the same one `time.monotonic()` reads.
//! - [`ready`]: the FIFO of callbacks ready to run, drained one turn at a time.
//! - [`timers`]: the timer heap (O(log n) schedule, O(1) lazy cancel, compaction).
//! - [`poller`]: level-triggered epoll with a cross-thread [`poller::Waker`].

pub mod clock;
pub mod poller;
pub mod ready;
pub mod timers;

pub use poller::{Events, Interest, Poller, Readiness, Waker};
pub use ready::ReadyQueue;
pub use timers::{TimerEntry, TimerHeap};
