//! Shared test helpers: a timer entry with observable flags, owned the way the loop owns its
//! `TimerHandle`s.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod host;

use ferroloop_core::{Callback, Events, Interest, Poller, Readiness, TimerHeap};
use std::cell::Cell;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;
use std::time::Instant;

/// A timer as the heap sees it. The `Rc<Cell<_>>` flags are shared with the [`Handle`] the test
/// keeps, so the test can cancel it and observe what the heap did to it.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: u32,
    pub cancelled: Rc<Cell<bool>>,
    pub scheduled: Rc<Cell<bool>>,
    /// How many times the heap called `set_unscheduled` on this entry.
    pub unscheduled_calls: Rc<Cell<u32>>,
}

impl Callback for Item {
    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }
    fn set_unscheduled(&self) {
        self.scheduled.set(false);
        self.unscheduled_calls.set(self.unscheduled_calls.get() + 1);
    }
}

/// The test's side of a timer (CPython's `TimerHandle` seen from user code).
pub type Handle = Item;

/// Schedules a new timer `id` at `when`, returning the handle kept by the test.
pub fn schedule(heap: &mut TimerHeap<Item>, id: u32, when: f64) -> Handle {
    let item = Item {
        id,
        cancelled: Rc::new(Cell::new(false)),
        scheduled: Rc::new(Cell::new(true)),
        unscheduled_calls: Rc::new(Cell::new(0)),
    };
    heap.push(when, item.clone());
    item
}

/// Cancels as the loop does: mark cancelled, and count it only if it is still in the heap.
pub fn cancel(heap: &mut TimerHeap<Item>, handle: &Handle) {
    if !handle.cancelled.get() {
        handle.cancelled.set(true);
        if handle.scheduled.get() {
            heap.note_cancelled();
        }
    }
}

/// Pops everything due before `end` and returns the ids the loop would run, in pop order:
/// `pop_due` hands cancelled entries over too, and the caller skips them (as CPython's
/// `_run_once` skips cancelled handles it moved to the ready queue).
pub fn pop_ids(heap: &mut TimerHeap<Item>, end: f64) -> Vec<u32> {
    pop_raw(heap, end)
        .into_iter()
        .filter(|it| !it.cancelled.get())
        .map(|it| it.id)
        .collect()
}

/// Pops everything due before `end`, cancelled entries included, in pop order.
pub fn pop_raw(heap: &mut TimerHeap<Item>, end: f64) -> Vec<Item> {
    let mut out = Vec::new();
    heap.pop_due(end, |it| out.push(it));
    out
}

/// One `purge_cancelled` pass, returning the ids of the entries it removed.
pub fn purge(heap: &mut TimerHeap<Item>) -> Vec<u32> {
    let mut removed = Vec::new();
    heap.purge_cancelled(&mut removed);
    removed.iter().map(|it| it.id).collect()
}

/// A small deterministic generator (xorshift64*), so the tests need no `rand`.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A poller with its event buffer, as the one waiting thread holds them.
pub struct Waiter {
    pub poller: Poller,
    pub events: Events,
}

impl Waiter {
    pub fn new() -> Self {
        Self {
            poller: Poller::new().expect("poller"),
            events: Events::new(),
        }
    }
    pub fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.poller.wait(&mut self.events, timeout)
    }
    pub fn drain(&mut self, sink: impl FnMut(Readiness)) {
        self.poller.drain(&mut self.events, sink)
    }
}

impl std::ops::Deref for Waiter {
    type Target = Poller;
    fn deref(&self) -> &Poller {
        &self.poller
    }
}

pub const READ: Interest = Interest {
    read: true,
    write: false,
};
pub const WRITE: Interest = Interest {
    read: false,
    write: true,
};
pub const BOTH: Interest = Interest {
    read: true,
    write: true,
};

/// One wait of at most `timeout`, and what it reported.
pub fn turn(p: &mut Waiter, timeout: Duration) -> Vec<Readiness> {
    p.wait(Some(timeout)).expect("wait");
    let mut v = Vec::new();
    p.drain(|r| v.push(r));
    v
}

/// How long one wait of `timeout` took, with nothing registered.
pub fn timed_wait(p: &mut Waiter, timeout: Duration) -> Duration {
    let t = Instant::now();
    p.wait(Some(timeout)).expect("wait");
    let el = t.elapsed();
    p.drain(|r| panic!("nothing is registered, yet {r:?} was reported"));
    el
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// A SIGUSR1 handler that does nothing, so that a signal ends a wait with EINTR.
pub fn install_noop_sigusr1_handler() {
    // SAFETY: a zeroed `sigaction` is a valid value; the handler is async-signal-safe (it does
    // nothing), and installing the same handler repeatedly is harmless.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        // SA_RESTART on purpose: epoll waits are never restarted, whatever the flag says.
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}
