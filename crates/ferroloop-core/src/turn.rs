//! One turn of the loop (CPython's `BaseEventLoop._run_once`), generic over its embedder.
//!
//! 1. drop cancelled timers (compacting when they pile up);
//! 2. wait for I/O: zero timeout when callbacks are ready or the loop is stopping, else until the
//!    earliest timer (at most [`MAXIMUM_SELECT_TIMEOUT`]), else forever; a turn that must not
//!    block and watches no fd skips the syscall; a blocking wait goes through [`Host::wait`]
//!    (the binding releases the GIL there); a signal ends the wait and [`Host::check_signals`]
//!    runs at once;
//! 3. ready fds queue their reader/writer callbacks (a fired cancelled one is unregistered
//!    instead); readiness of the [`SIGNAL_TOKEN`] calls [`Host::signalled`]; due timers
//!    (`when < now + clock_resolution`) are queued;
//! 4. run exactly the callbacks ready at that point ([`Host::run`]), skipping cancelled ones.
//!
//! The loop is reached only through [`Host::with_loop`], in short borrows that never span a
//! wait or a callback, so a callback can schedule more (the binding's loop state is a
//! `RefCell`). Everything is static dispatch: the per-callback path is one borrow to pop, one
//! `is_cancelled`, one [`Host::run`] and one [`Host::done`], as inlined as the embedder's.
//!
//! [`MAXIMUM_SELECT_TIMEOUT`]: crate::event_loop::MAXIMUM_SELECT_TIMEOUT
//! [`SIGNAL_TOKEN`]: crate::event_loop::SIGNAL_TOKEN

use crate::callback::Callback;
use crate::clock::Clock;
use crate::event_loop::EventLoop;
use crate::poller::{Events, Poller};
use std::io;
use std::ops::DerefMut;
use std::time::Duration;

/// What a turn needs from the code embedding the loop (the Python binding, or a test).
pub trait Host {
    /// What the loop's queues hold.
    type Callback: Callback;
    /// The loop's clock.
    type Clock: Clock;
    /// What a callback, a signal handler or a failed wait reports.
    type Error;
    /// Exclusive access to the wait's event buffer, for the wait and dispatch steps only.
    type Events<'a>: DerefMut<Target = Events>
    where
        Self: 'a;

    /// Runs `f` on the loop, borrowed for `f`'s duration only. Never called re-entrantly by the
    /// turn; `f` never calls back into the host except through the `dup` of
    /// [`clone_callback`](Self::clone_callback).
    fn with_loop<R>(&self, f: impl FnOnce(&mut EventLoop<Self::Callback, Self::Clock>) -> R) -> R;

    /// True once `stop()` was called: the turn does not block.
    fn stopping(&self) -> bool;

    /// The event buffer (locked for the wait and the dispatch).
    fn events(&self) -> Self::Events<'_>;

    /// Waits on `poller` for at most `timeout` (`None`: forever), for a turn that may block. The
    /// binding releases the GIL around [`Poller::wait`] and counts the time as idle. Zero-timeout
    /// polls do not come here: the turn calls the poller itself.
    fn wait(
        &self,
        poller: &Poller,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()>;

    /// A second reference to `cb`, queued while the fd table keeps its own.
    fn clone_callback(&self, cb: &Self::Callback) -> Self::Callback;

    /// Runs `cb` (not cancelled). An error ends the turn, after `cb` is [`done`](Self::done).
    fn run(&self, cb: &Self::Callback) -> Result<(), Self::Error>;

    /// `cb` left the ready queue (run or skipped). The turn drops it right after.
    fn done(&self, cb: &Self::Callback);

    /// The loop let go of `cb` for good: a cancelled timer dropped from the heap, a cancelled fd
    /// callback unregistered. Called for every such callback before any of them is dropped.
    fn release(&self, cb: &Self::Callback);

    /// The wait was ended by a signal (`EINTR`): run the pending signal handlers now.
    fn check_signals(&self) -> Result<(), Self::Error>;

    /// The [`SIGNAL_TOKEN`](crate::event_loop::SIGNAL_TOKEN) fd was ready: drain it and run the
    /// pending signal handlers.
    fn signalled(&self) -> Result<(), Self::Error>;

    /// The error a failed wait or `epoll_ctl` is reported as.
    fn io_error(&self, e: io::Error) -> Self::Error;

    /// A turn starts (metrics).
    #[inline]
    fn turn_started(&self) {}

    /// The turn finished polling at `now` (metrics: the busy stretch starts).
    #[inline]
    fn polled(&self, now: f64) {
        let _ = now;
    }
}

/// Releases every callback in `v`, then drops them all.
fn release_all<H: Host>(host: &H, v: Vec<H::Callback>) {
    for cb in &v {
        host.release(cb);
    }
    drop(v);
}

/// One turn (see the module docs).
pub fn run_once<H: Host>(host: &H) -> Result<(), H::Error> {
    host.turn_started();

    // 1. Cancelled timers out, timeout in. What is removed is dropped after the borrow ends:
    //    dropping a callback may run code that schedules callbacks.
    let stopping = host.stopping();
    let mut removed = Vec::new();
    let wait = host.with_loop(|l| l.prepare(stopping, &mut removed));
    release_all(host, removed);

    // 2. Wait for I/O, then 3a. queue the callbacks of ready fds.
    if let Some(poller) = wait.poller {
        let mut events = host.events();
        let zero = wait.timeout == Some(Duration::ZERO);
        let res = if zero {
            poller.wait(&mut events, wait.timeout)
        } else {
            host.wait(&poller, &mut events, wait.timeout)
        };
        let zero_wait_ok = zero && res.is_ok();
        match res {
            Ok(()) => {}
            // A signal ended the wait: run its handler now (Ctrl-C raises here).
            Err(e) if e.kind() == io::ErrorKind::Interrupted => host.check_signals()?,
            Err(e) => return Err(host.io_error(e)),
        }
        let mut released = Vec::new();
        let found = host.with_loop(|l| {
            l.dispatch(
                &poller,
                &mut events,
                zero_wait_ok,
                |cb| host.clone_callback(cb),
                &mut released,
            )
        });
        drop(events);
        release_all(host, released);
        // The signal wakeup fd fired, whichever thread the kernel delivered the signal to.
        if found.signalled {
            host.signalled()?;
        }
        if let Some(e) = found.error {
            return Err(host.io_error(e));
        }
    }

    // 3b. Queue the due timers.
    let now = host.with_loop(|l| l.queue_due());
    host.polled(now);

    // 4. Run what is ready now; callbacks scheduled meanwhile wait for the next turn.
    let n = host.with_loop(|l| l.ready_len());
    for _ in 0..n {
        let Some(cb) = host.with_loop(|l| l.pop_ready()) else {
            break;
        };
        let res = if cb.is_cancelled() {
            Ok(())
        } else {
            host.run(&cb)
        };
        host.done(&cb);
        drop(cb);
        res?;
    }
    Ok(())
}
