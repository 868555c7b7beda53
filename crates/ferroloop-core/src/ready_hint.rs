//! The readiness hint: skipping a zero-timeout `epoll_wait` that would find nothing.
//!
//! A turn with callbacks ready polls with a zero timeout before it runs them, as the stdlib's
//! `_run_once` does. When the loop watches fds that stay idle (a listening socket, idle
//! keep-alive connections) while coroutines yield with `await asyncio.sleep(0)`, every turn
//! pays one `epoll_pwait2` (about 350 ns in these VMs) to learn that nothing happened. Skipping
//! the poll on a timer (rloop skips it for up to 250 µs) changes when a reader runs after a local
//! write, which the stdlib's order makes observable. This hint skips it only when the kernel
//! says that nothing can be ready.
//!
//! # How
//!
//! A one-shot `IORING_OP_POLL_ADD` on the epoll fd itself, through a small io_uring. The epoll
//! fd turns readable exactly when an item is queued on its ready list, and every such queueing
//! (`ep_poll_callback` for a wake-up, `EPOLL_CTL_ADD`/`MOD` of a ready fd) wakes the epoll fd's
//! own pollers: io_uring's wake-up handler then sets `IORING_SQ_TASKRUN` in the ring's shared
//! memory (the ring is set up with `COOP_TASKRUN | TASKRUN_FLAG`), and the completion is posted
//! at the thread's next kernel transition. So "the completion queue is empty and `TASKRUN` is
//! clear" is two loads from shared memory, and it means "epoll's ready list gained nothing since
//! the poll was armed". The poll is armed only right after a zero-timeout wait that returned no
//! event (and io_uring checks readiness once more when it arms it), so the ready list was empty
//! then: a skipped wait would have returned nothing too. The wake-up happens synchronously
//! inside the syscall that makes an fd ready, so a callback that writes to a local socket makes
//! the reader run at the same turn as on the stock loop.
//!
//! The hint is one-shot and armed lazily, after [`ARM_AFTER`] zero-timeout waits in a row found
//! nothing; it is disarmed by its first completion. So a loop that polls, finds an event, runs it
//! and blocks (a busy server) never arms it and pays nothing for it, and a loop that spins over
//! idle fds pays one `io_uring_enter` per quiet stretch instead of one wait per turn. Each
//! completion costs the kernel one task-work run, which is why the poll is not multishot: a
//! multishot poll added 300-500 ns to every event delivery in a measurement on this machine,
//! more than the wait it saves.
//!
//! # Safety nets
//!
//! - At most [`MAX_SKIPS`] waits in a row are skipped; the next one is real. If that wait finds
//!   an event that the hint did not announce (checked again after the wait, so a wake-up racing
//!   with it is not counted), the hint is switched off for this loop for good
//!   ([`EventLoop::hint_stats`](crate::EventLoop::hint_stats)).
//! - No ring is made until a loop has a quiet stretch; a loop that never has one costs nothing.
//! - The ring is made with `COOP_TASKRUN`, so the completion never interrupts a blocking syscall
//!   of the thread with a forced wake-up.
//! - Anything unexpected (`io_uring_setup` missing, ENOSYS before Linux 5.1, EINVAL before 5.19,
//!   which lacks the flags, EPERM from a seccomp filter or `kernel.io_uring_disabled`, ENOMEM
//!   from a memlock limit) switches the hint off for the process, and every zero-timeout wait is
//!   then real, as before. `FERROLOOP_IO_URING=0` in the environment does the same from the
//!   start (read once per process).
//! - After `fork()`, the child shares the parent's ring memory: a child never reads or arms an
//!   inherited ring (a `pthread_atfork` counter), it drops it and polls for real.
//! - The completion's task work belongs to the thread that armed the poll: run by another
//!   thread, the loop would see `TASKRUN` set until the arming thread enters the kernel, and
//!   for good once that thread has exited (measured: after a loop ran once in a thread that
//!   then exited, it never skipped a wait again). So a ring serves only the thread that made
//!   it: a wait on another thread is real, and that thread's next quiet stretch makes its own
//!   ring (closing the old one cancels its poll).

use io_uring::{opcode, types, IoUring};
use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Once;

/// Zero-timeout waits in a row that found nothing before the poll is armed.
pub const ARM_AFTER: u32 = 2;
/// Waits skipped in a row at most; the next one is real.
pub const MAX_SKIPS: u32 = 64;

/// [`MODE`]: `FERROLOOP_IO_URING` not read yet.
const MODE_UNDECIDED: u8 = 0;
/// [`MODE`]: the hint may be used.
const MODE_ON: u8 = 1;
/// [`MODE`]: never make a ring in this process (disabled, or io_uring refused once).
const MODE_OFF: u8 = 2;

/// Whether this process may make rings. Relaxed: it publishes no other memory.
static MODE: AtomicU8 = AtomicU8::new(MODE_UNDECIDED);

/// The environment variable that switches the hint off when set to `0`.
const MODE_ENV: &str = "FERROLOOP_IO_URING";

/// Bumped in every child after `fork()` (`pthread_atfork`).
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

/// The last thread token handed out ([`thread_token`]).
static LAST_THREAD: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's token; 0 until asked.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// A number that no other thread of the process has, now or before (a thread-local's address
/// or `pthread_self()` may be reused by a thread started after another one exited).
fn thread_token() -> u64 {
    THREAD.with(|t| match t.get() {
        0 => {
            let token = LAST_THREAD.fetch_add(1, Ordering::Relaxed) + 1;
            t.set(token);
            token
        }
        token => token,
    })
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        MODE_UNDECIDED => {
            let wanted = match std::env::var_os(MODE_ENV) {
                Some(v) if v == "0" => MODE_OFF,
                _ => MODE_ON,
            };
            match MODE.compare_exchange(
                MODE_UNDECIDED,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => wanted == MODE_ON,
                Err(current) => current == MODE_ON,
            }
        }
        m => m == MODE_ON,
    }
}

/// True when this process may still use the hint (not switched off by `FERROLOOP_IO_URING=0`,
/// io_uring not refused so far).
pub fn available() -> bool {
    enabled()
}

enum State {
    /// Counting zero-timeout waits in a row that found nothing.
    Idle { quiet: u32 },
    /// The poll is pending on the epoll fd; `skipped` waits were skipped since the last real one.
    Armed { skipped: u32 },
    /// Never again for this loop.
    Off,
}

/// The hint of one poller (see the [module docs](self)). Owned by the loop
/// ([`EventLoop`](crate::EventLoop)), which consults it in [`prepare`](crate::EventLoop::prepare)
/// and [`dispatch`](crate::EventLoop::dispatch), under its embedder's exclusive borrow.
pub struct Hint {
    ring: Option<IoUring>,
    generation: u32,
    /// The [`thread_token`] of the thread that made `ring`.
    owner: u64,
    state: State,
    /// Waits skipped, for the loop's metrics and the tests.
    pub skipped: u64,
    /// Real waits that found an event the hint had not announced (then the hint is off).
    pub missed: u64,
}

impl Default for Hint {
    fn default() -> Self {
        Self {
            ring: None,
            generation: 0,
            owner: 0,
            state: State::Idle { quiet: 0 },
            skipped: 0,
            missed: 0,
        }
    }
}

impl Hint {
    /// True when something may have become ready since the poll was armed: a completion is
    /// queued, or its task work is pending.
    fn fired(ring: &mut IoUring) -> bool {
        ring.submission().taskrun() || !ring.completion().is_empty()
    }

    /// Called before a zero-timeout wait on `epoll`: true when the wait can be skipped, i.e. it
    /// would return no event. False means: wait for real, then call
    /// [`after_zero_wait`](Self::after_zero_wait).
    pub fn try_skip(&mut self) -> bool {
        let State::Armed { skipped } = self.state else {
            return false;
        };
        if self.generation != FORK_GENERATION.load(Ordering::Relaxed) || !enabled() {
            self.switch_off();
            return false;
        }
        if self.owner != thread_token() {
            // Another thread armed this poll (module docs): wait for real; this thread's next
            // quiet stretch makes its own ring.
            self.ring = None;
            self.state = State::Idle { quiet: 0 };
            return false;
        }
        let Some(ring) = self.ring.as_mut() else {
            self.state = State::Off;
            return false;
        };
        if Self::fired(ring) {
            // Consume the completion (the poll is one-shot: it is done) and wait for real. A
            // pending task work posts its completion at the wait's syscall; it is consumed at
            // the next check or the next arming.
            ring.completion().for_each(drop);
            self.state = State::Idle { quiet: 0 };
            return false;
        }
        if skipped >= MAX_SKIPS {
            // The safety net: one real wait, still armed.
            self.state = State::Armed { skipped: 0 };
            return false;
        }
        self.state = State::Armed {
            skipped: skipped + 1,
        };
        self.skipped += 1;
        true
    }

    /// Called after a real zero-timeout wait on `epoll` that returned `found` events.
    pub fn after_zero_wait(&mut self, epoll: RawFd, found: usize) {
        match self.state {
            State::Off => {}
            State::Idle { quiet } => {
                if found > 0 {
                    self.state = State::Idle { quiet: 0 };
                } else if quiet + 1 >= ARM_AFTER {
                    self.arm(epoll);
                } else {
                    self.state = State::Idle { quiet: quiet + 1 };
                }
            }
            State::Armed { .. } => {
                // A safety-net wait: the hint said nothing fired. An event it did not announce
                // means it cannot be trusted here, unless the wake-up raced with the wait (its
                // flag is set by now, on whichever core it ran).
                if found > 0 {
                    let announced = self.ring.as_mut().is_some_and(Self::fired);
                    if announced {
                        if let Some(ring) = self.ring.as_mut() {
                            ring.completion().for_each(drop);
                        }
                        self.state = State::Idle { quiet: 0 };
                    } else {
                        self.missed += 1;
                        self.state = State::Off;
                        self.ring = None;
                    }
                }
            }
        }
    }

    /// A wait that may block is about to start: the quiet stretch is over.
    pub fn before_blocking_wait(&mut self) {
        if let State::Idle { quiet } = &mut self.state {
            *quiet = 0;
        }
    }

    /// Off for good (the counters stay). In a child after `fork()` the ring is the parent's copy:
    /// dropping it unmaps the child's mapping and closes the child's fd only; the parent's ring
    /// lives on.
    pub fn switch_off(&mut self) {
        self.state = State::Off;
        self.ring = None;
    }

    fn arm(&mut self, epoll: RawFd) {
        if !enabled() {
            self.state = State::Off;
            return;
        }
        if self.ring.is_some() && self.owner != thread_token() {
            self.ring = None; // another thread's ring (module docs)
        }
        if self.ring.is_none() {
            match make_ring() {
                Ok(ring) => {
                    self.ring = Some(ring);
                    self.generation = FORK_GENERATION.load(Ordering::Relaxed);
                    self.owner = thread_token();
                }
                Err(_) => {
                    // Refused or missing: the same answer for every ring of the process.
                    MODE.store(MODE_OFF, Ordering::Relaxed);
                    self.state = State::Off;
                    return;
                }
            }
        }
        if self.generation != FORK_GENERATION.load(Ordering::Relaxed) {
            self.switch_off();
            return;
        }
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        // Completions left from an earlier arming (a task work that ran at the last wait).
        ring.completion().for_each(drop);
        if ring.submission().taskrun() {
            // Task work of an earlier arming is still pending for another thread (the loop ran
            // there before): the flag would announce it at once. Try again after a quiet
            // stretch.
            self.state = State::Idle { quiet: 0 };
            return;
        }
        let poll = opcode::PollAdd::new(types::Fd(epoll), libc::POLLIN as u32)
            .build()
            .user_data(0);
        // The loop that owns this hint drops the ring before its poller (its field order, and
        // `EventLoop::close` switches the hint off first), which cancels the request, so the
        // epoll fd outlives it (the kernel also holds its own reference to the polled file).
        // SAFETY: the entry points into no user memory (a poll on an fd number): nothing has to
        // outlive the request but the fd, which does (above).
        let pushed = unsafe { ring.submission().push(&poll) }.is_ok();
        if pushed && ring.submit().is_ok() {
            self.state = State::Armed { skipped: 0 };
        } else {
            self.state = State::Off;
            self.ring = None;
        }
    }
}

/// A two-entry ring with cooperative task work and the `TASKRUN` flag (Linux 5.19+).
fn make_ring() -> io::Result<IoUring> {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic counter, which is
        // async-signal-safe and so may run in a child right after fork().
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(2)
}
