//! The loop's state and the steps of one turn, generic over the callback type and the clock.
//!
//! [`EventLoop`] owns the ready queue, the timer heap, the fd table (kept in step with epoll) and
//! the poller. Each step of a turn is a method; [`turn::run_once`](crate::turn::run_once)
//! sequences them with the waits and callback runs that need the embedder (the Python binding
//! releases the GIL around the wait and must not hold its borrow of the loop while a callback
//! runs, since callbacks schedule more callbacks):
//!
//! 1. [`prepare`](EventLoop::prepare): drop cancelled timers, compute the wait's timeout
//!    ([`wait_timeout`]) and whether to poll at all (a zero-timeout poll is skipped when no fd
//!    is watched, or when the loop's [readiness hint](crate::ready_hint) proves it would find
//!    nothing);
//! 2. the wait (the embedder's, through the poller);
//! 3. [`dispatch`](EventLoop::dispatch): readiness queues fd callbacks (and a zero-timeout
//!    wait's outcome goes to the hint); then
//!    [`queue_due`](EventLoop::queue_due): due timers are queued;
//! 4. [`ready_len`](EventLoop::ready_len) then that many [`pop_ready`](EventLoop::pop_ready):
//!    exactly the callbacks ready at that point run.

use crate::callback::Callback;
use crate::clock::{Clock, MonotonicClock};
use crate::fd_table::{Direction, FdTable};
use crate::poller::{Events, Poller};
use crate::ready::ReadyQueue;
use crate::ready_hint::Hint;
use crate::timers::TimerHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// CPython's `base_events.MAXIMUM_SELECT_TIMEOUT`: never wait longer than a day at once.
pub const MAXIMUM_SELECT_TIMEOUT: f64 = 24.0 * 3600.0;

/// The epoll token under which an embedder may register one extra fd outside the fd table (the
/// binding's signal wakeup pipe, whose readiness means a signal arrived):
/// [`dispatch`](EventLoop::dispatch) reports it as [`Dispatched::signalled`] and queues nothing.
/// Fd tokens are fd numbers (at most `i32::MAX`); the poller's waker uses `u64::MAX`.
pub const SIGNAL_TOKEN: u64 = u64::MAX - 1;

/// The wait-timeout rule of a turn (CPython's `_run_once`): zero when callbacks are ready or the
/// loop is stopping, else until the earliest deadline (never negative, at most
/// [`MAXIMUM_SELECT_TIMEOUT`]), else forever (`None`). `next_deadline` must be a live timer's
/// (cancelled ones purged first).
pub fn wait_timeout(
    ready_is_empty: bool,
    stopping: bool,
    next_deadline: Option<f64>,
    now: impl FnOnce() -> f64,
) -> Option<Duration> {
    if !ready_is_empty || stopping {
        Some(Duration::ZERO)
    } else if let Some(when) = next_deadline {
        let secs = (when - now()).clamp(0.0, MAXIMUM_SELECT_TIMEOUT);
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// What [`EventLoop::prepare`] decided about the wait.
#[derive(Debug)]
pub struct Wait {
    /// The timeout ([`wait_timeout`]); `None` waits until an fd or the waker fires.
    pub timeout: Option<Duration>,
    /// The poller to wait on; `None` when the turn skips the syscall (it must not block, and no
    /// fd is watched or the readiness hint proved the poll empty) or the loop is closed.
    pub poller: Option<Arc<Poller>>,
}

/// What [`EventLoop::dispatch`] found besides fd readiness.
#[derive(Debug, Default)]
pub struct Dispatched {
    /// The [`SIGNAL_TOKEN`] registration was ready.
    pub signalled: bool,
    /// An `epoll_ctl` error while unregistering a cancelled fd callback (not ENOENT/EBADF).
    pub error: Option<io::Error>,
}

/// The loop's state: what is ready, what is scheduled, what is watched.
pub struct EventLoop<H, K = MonotonicClock> {
    /// Callbacks to run, in order; a turn runs those queued when its run step starts.
    ready: ReadyQueue<H>,
    /// `call_at` timers, with lazy cancellation.
    timers: TimerHeap<H>,
    /// Watched fds; an fd is registered with `poller` exactly when it has an entry.
    fds: FdTable<H>,
    /// The readiness hint of the zero-timeout waits on `poller` ([`ready_hint`](crate::ready_hint)).
    /// It lives here, not in the shared poller, so that a turn consults it under the embedder's
    /// exclusive borrow of the loop: no lock, no reference count, no event buffer for a turn
    /// whose poll it skips. Declared before `poller`, so its ring, which polls the epoll fd, is
    /// dropped (and its request cancelled) first.
    hint: Hint,
    /// `None` once the loop is closed (the epoll fd and the waker's eventfd are then closed).
    /// Shared so that a wait can run while the embedder does not borrow the loop.
    poller: Option<Arc<Poller>>,
    clock: K,
    /// Timers due within this of now run now (`time.get_clock_info('monotonic').resolution`).
    clock_resolution: f64,
}

impl<H: Callback, K: std::fmt::Debug> std::fmt::Debug for EventLoop<H, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("ready", &self.ready.len())
            .field("timers", &self.timers.len())
            .field("poller", &self.poller)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<H: Callback, K: Clock> EventLoop<H, K> {
    /// A loop waiting on `poller`, reading `clock`.
    pub fn new(poller: Poller, clock: K, clock_resolution: f64) -> Self {
        Self {
            ready: ReadyQueue::new(),
            timers: TimerHeap::new(),
            fds: FdTable::new(),
            hint: Hint::default(),
            poller: Some(Arc::new(poller)),
            clock,
            clock_resolution,
        }
    }

    /// The loop's clock.
    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// The poller, until the loop is closed.
    pub fn poller(&self) -> Option<&Arc<Poller>> {
        self.poller.as_ref()
    }

    /// Zero-timeout waits the readiness hint skipped, and real waits that found an event it had
    /// not announced (each switches it off for this loop; expected to stay 0). Kept after
    /// [`close`](Self::close).
    pub fn hint_stats(&self) -> (u64, u64) {
        (self.hint.skipped, self.hint.missed)
    }

    /// The ready queue.
    pub fn ready(&self) -> &ReadyQueue<H> {
        &self.ready
    }

    /// The timer heap.
    pub fn timers(&self) -> &TimerHeap<H> {
        &self.timers
    }

    /// The fd table.
    pub fn fds(&self) -> &FdTable<H> {
        &self.fds
    }

    /// Queues `cb` to run in the next turn (`call_soon`).
    #[inline]
    pub fn call_soon(&mut self, cb: H) {
        self.ready.push(cb);
    }

    /// Schedules `cb` for `when` on the loop clock (`call_at`).
    #[inline]
    pub fn call_at(&mut self, when: f64, cb: H) {
        self.timers.push(when, cb);
    }

    /// Records that a timer still in the heap was cancelled (counts towards compaction).
    #[inline]
    pub fn timer_cancelled(&mut self) {
        self.timers.note_cancelled();
    }

    /// Makes `cb` the `dir` callback of `fd` ([`FdTable::set`]); fails with `cb` back when epoll
    /// refuses the fd, or with `NotConnected` when the loop is closed.
    pub fn set_fd(
        &mut self,
        fd: RawFd,
        dir: Direction,
        cb: H,
    ) -> Result<Option<H>, (io::Error, H)> {
        match &self.poller {
            Some(p) => self.fds.set(&**p, fd, dir, cb),
            None => Err((io::ErrorKind::NotConnected.into(), cb)),
        }
    }

    /// Takes the `dir` callback of `fd` out of the table ([`FdTable::remove`]).
    pub fn remove_fd(&mut self, fd: RawFd, dir: Direction) -> Result<Option<H>, (io::Error, H)> {
        self.fds.remove(self.poller.as_deref(), fd, dir)
    }

    /// Takes the `dir` callback of `fd` out of the table but leaves epoll's registration
    /// lingering ([`FdTable::suspend`]: a transport's `pause_reading`). No syscall.
    pub fn suspend_fd(&mut self, fd: RawFd, dir: Direction) -> Option<H> {
        self.fds.suspend(fd, dir)
    }

    /// True when `fd` has no `dir` callback but epoll's registration for it lingers
    /// ([`suspend_fd`](Self::suspend_fd)).
    pub fn fd_lingers(&self, fd: RawFd, dir: Direction) -> bool {
        self.fds.get(fd).is_some_and(|e| {
            let l = e.lingering();
            e.slot(dir).is_none()
                && match dir {
                    Direction::Read => l.read,
                    Direction::Write => l.write,
                }
        })
    }

    /// Drops whatever lingers for `fd` for real ([`FdTable::lapse`]: `modify`, or `delete` when
    /// no callback is left; errors ignored, the fd may be closed already).
    pub fn lapse_fd(&mut self, fd: RawFd) {
        if let Some(p) = &self.poller {
            self.fds.lapse(&**p, fd);
        }
    }

    /// Makes `cb` the `dir` callback of `fd` again after [`suspend_fd`](Self::suspend_fd)
    /// ([`FdTable::resume`]: no syscall while the registration lingers).
    pub fn resume_fd(
        &mut self,
        fd: RawFd,
        dir: Direction,
        cb: H,
    ) -> Result<Option<H>, (io::Error, H)> {
        match &self.poller {
            Some(p) => self.fds.resume(&**p, fd, dir, cb),
            None => Err((io::ErrorKind::NotConnected.into(), cb)),
        }
    }

    /// The timeout of this turn's wait ([`wait_timeout`]); call after purging cancelled timers.
    pub fn wait_timeout(&self, stopping: bool) -> Option<Duration> {
        wait_timeout(
            self.ready.is_empty(),
            stopping,
            self.timers.next_deadline(),
            || self.clock.now(),
        )
    }

    /// Step 1: drops cancelled timers (onto `removed`, for the caller to release and drop outside
    /// its borrow) and decides the wait. A turn that must not block skips the syscall when it
    /// watches no fd (wake-ups from other threads queue their callback themselves), or when the
    /// readiness hint proves that the poll would find nothing. A zero-timeout wait that does
    /// happen must be reported to [`dispatch`](Self::dispatch) with `zero_wait_ok`.
    pub fn prepare(&mut self, stopping: bool, removed: &mut Vec<H>) -> Wait {
        self.timers.purge_cancelled(removed);
        let timeout = self.wait_timeout(stopping);
        let poll = if timeout == Some(Duration::ZERO) {
            !self.fds.is_empty() && !self.hint.try_skip()
        } else {
            self.hint.before_blocking_wait();
            true
        };
        Wait {
            timeout,
            poller: if poll { self.poller.clone() } else { None },
        }
    }

    /// Step 3a: queues the reader/writer callbacks of the fds `poller` reported ready (a copy
    /// made by `dup`: the table keeps its own), and reports the [`SIGNAL_TOKEN`]. A cancelled fd
    /// callback that fires is unregistered instead (`selector_events._process_events`); it goes
    /// onto `released` for the caller to release and drop outside its borrow. An fd whose
    /// suspended interest lingers is deregistered for real once it was reported ready
    /// [`LINGER_WAKEUPS`](crate::fd_table::LINGER_WAKEUPS) times (no spinning while paused).
    /// `zero_wait_ok`: the wait was a zero-timeout one that succeeded; what it found goes to the
    /// readiness hint first.
    pub fn dispatch(
        &mut self,
        poller: &Poller,
        events: &mut Events,
        zero_wait_ok: bool,
        mut dup: impl FnMut(&H) -> H,
        released: &mut Vec<H>,
    ) -> Dispatched {
        if zero_wait_ok {
            self.hint
                .after_zero_wait(poller.as_fd().as_raw_fd(), events.len());
        }
        let mut out = Dispatched::default();
        let mut stale: Vec<(RawFd, Direction)> = Vec::new();
        let mut lapsed: Vec<RawFd> = Vec::new();
        let Self { ready, fds, .. } = self;
        poller.drain(events, |r| {
            if r.token == SIGNAL_TOKEN {
                out.signalled = true;
                return;
            }
            let fd = r.token as RawFd;
            let Some(entry) = fds.get(fd) else { return };
            for (hit, dir) in [(r.read, Direction::Read), (r.write, Direction::Write)] {
                if let (true, Some(cb)) = (hit, entry.slot(dir)) {
                    if cb.is_cancelled() {
                        stale.push((fd, dir));
                    } else {
                        ready.push(dup(cb));
                    }
                }
            }
            if fds.linger_hit(fd, r.read, r.write) {
                lapsed.push(fd);
            }
        });
        for fd in lapsed {
            self.fds.lapse(poller, fd);
        }
        for (fd, dir) in stale {
            match self.fds.remove(Some(poller), fd, dir) {
                Ok(Some(cb)) => released.push(cb),
                Ok(None) => {}
                Err((e, cb)) => {
                    released.push(cb);
                    out.error.get_or_insert(e);
                }
            }
        }
        out
    }

    /// Step 3b: queues the timers due now (`when < now + clock_resolution`, CPython's rule),
    /// earliest first, and returns the `now` it used.
    pub fn queue_due(&mut self) -> f64 {
        let now = self.clock.now();
        let end = now + self.clock_resolution;
        let Self { ready, timers, .. } = self;
        timers.pop_due(end, |t| ready.push(t));
        now
    }

    /// Step 4: how many callbacks the run step must run: those ready now. Callbacks they
    /// schedule wait for the next turn.
    #[inline]
    pub fn ready_len(&self) -> usize {
        self.ready.turn_len()
    }

    /// Step 4: the next callback to run.
    #[inline]
    pub fn pop_ready(&mut self) -> Option<H> {
        self.ready.pop()
    }

    /// Takes every callback the loop holds (ready, timers, fd callbacks), for the caller to
    /// release and drop where it is safe to; the poller stays (the binding's `__clear__`).
    pub fn take_callbacks(&mut self) -> Vec<H> {
        let mut all: Vec<H> = self.ready.take_all().into();
        for t in self.timers.take_all() {
            t.set_unscheduled();
            all.push(t);
        }
        all.extend(self.fds.take_all());
        all
    }

    /// Closes the loop: every callback is taken (as [`take_callbacks`](Self::take_callbacks))
    /// and the poller is handed back to be dropped (its fds close when the last `Arc` goes).
    pub fn close(&mut self) -> (Vec<H>, Option<Arc<Poller>>) {
        // The hint's ring polls the epoll fd: gone with it (its counters stay).
        self.hint.switch_off();
        (self.take_callbacks(), self.poller.take())
    }
}
