//! The readiness hint (`ready_hint.rs`): a zero-timeout wait is skipped only when it would have
//! found nothing. Every way an fd can become ready while the hint is armed must end the skipping
//! at the very next wait: a write from this thread, a write from another thread (seen as soon as
//! that thread's `write` returned), registering an fd that is already ready, widening a
//! registration to a direction that is ready, and the waker; and so on every thread that runs
//! the poller, one after another. A wait that may block is never
//! skipped, and the safety net makes one wait in every `MAX_SKIPS + 1` real.
//!
//! These tests need a kernel that lets this process use io_uring (5.19+); where it does not, the
//! hint is off and the tests check that no wait is skipped instead.
//!
//! The hint belongs to the loop (`EventLoop::prepare` asks it before a zero-timeout wait,
//! `EventLoop::dispatch` tells it what the wait found); [`Hinted`] pairs it with a poller in the
//! same way. The loop-level behaviour (the stock loop's order of readers and callbacks, metrics,
//! fork, the environment switch) is in `tests/test_wait_hint.py`.

use ferroloop_core::ready_hint::{self, Hint, ARM_AFTER, MAX_SKIPS};
use ferroloop_core::{Events, Interest, Poller, Readiness};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ: Interest = Interest {
    read: true,
    write: false,
};

/// A poller and its readiness hint, used as the loop's turn uses them.
struct Hinted {
    hint: Hint,
    p: Poller,
}

impl std::ops::Deref for Hinted {
    type Target = Poller;
    fn deref(&self) -> &Poller {
        &self.p
    }
}

impl Hinted {
    fn waits_skipped(&self) -> u64 {
        self.hint.skipped
    }

    fn hint_missed(&self) -> u64 {
        self.hint.missed
    }
}

/// A zero-timeout turn's wait: skipped when the hint proves it empty, else real and reported.
fn poll(h: &mut Hinted, ev: &mut Events) -> Vec<Readiness> {
    let mut out = Vec::new();
    if h.hint.try_skip() {
        return out;
    }
    h.p.wait(ev, Some(Duration::ZERO)).unwrap();
    h.hint.after_zero_wait(h.p.as_fd().as_raw_fd(), ev.len());
    h.p.drain(ev, |r| out.push(r));
    out
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A poller watching one idle fd, polled until the hint skips waits (if it can).
fn quiet_poller() -> (Hinted, Events, UnixStream, UnixStream) {
    let mut p = Hinted {
        hint: Hint::default(),
        p: Poller::new().unwrap(),
    };
    let mut ev = Events::new();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 1, READ).unwrap();
    for _ in 0..(ARM_AFTER + 3) {
        assert!(poll(&mut p, &mut ev).is_empty());
    }
    (p, ev, a, b)
}

/// True when this process can use the hint; otherwise the tests check that nothing is skipped.
fn hint_works(p: &Hinted) -> bool {
    let works = p.waits_skipped() > 0;
    if !works {
        assert!(
            !ready_hint::available(),
            "io_uring is usable but no wait was skipped"
        );
    }
    works
}

#[test]
fn idle_fds_let_zero_timeout_waits_be_skipped() {
    let (mut p, mut ev, _a, _b) = quiet_poller();
    if !hint_works(&p) {
        return;
    }
    let before = p.waits_skipped();
    for _ in 0..(3 * MAX_SKIPS) {
        assert!(poll(&mut p, &mut ev).is_empty());
    }
    let skipped = (p.waits_skipped() - before) as u32;
    // The safety net: one real wait in every MAX_SKIPS + 1.
    assert!(skipped >= 3 * MAX_SKIPS - 3, "{skipped}");
    assert!(skipped < 3 * MAX_SKIPS, "{skipped}");
    assert_eq!(p.hint_missed(), 0);
}

#[test]
fn a_local_write_is_seen_by_the_next_wait() {
    let (mut p, mut ev, a, mut b) = quiet_poller();
    for round in 0..20 {
        b.write_all(b"x").unwrap();
        let got = poll(&mut p, &mut ev);
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert!(got[0].read && got[0].token == 1);
        let mut buf = [0u8; 8];
        assert_eq!((&a).read_some(&mut buf), 1);
        // Quiet again, long enough to re-arm.
        for _ in 0..(ARM_AFTER + 2) {
            assert!(poll(&mut p, &mut ev).is_empty(), "round {round}");
        }
    }
    assert_eq!(p.hint_missed(), 0);
    hint_works(&p);
}

trait ReadSome {
    fn read_some(self, buf: &mut [u8]) -> usize;
}

impl ReadSome for &UnixStream {
    fn read_some(self, buf: &mut [u8]) -> usize {
        use std::io::Read;
        let mut s = self;
        s.read(buf).unwrap()
    }
}

#[test]
fn a_write_from_another_thread_is_seen_once_it_returned() {
    let (mut p, mut ev, a, b) = quiet_poller();
    let b = Arc::new(b);
    for round in 0..50 {
        let written = Arc::new(AtomicBool::new(false));
        let t = {
            let (b, written) = (b.clone(), written.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(200));
                (&*b).write_all(b"y").unwrap();
                written.store(true, Ordering::Release);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen_after_write = None;
        while Instant::now() < deadline {
            // Read the flag before the wait: if the write had returned, the wait must see it.
            let was_written = written.load(Ordering::Acquire);
            let got = poll(&mut p, &mut ev);
            if !got.is_empty() {
                seen_after_write = Some(true);
                break;
            }
            assert!(!was_written, "round {round}: a finished write was not seen");
        }
        t.join().unwrap();
        assert_eq!(seen_after_write, Some(true), "round {round}");
        let mut buf = [0u8; 8];
        assert_eq!((&a).read_some(&mut buf), 1);
        for _ in 0..(ARM_AFTER + 2) {
            assert!(poll(&mut p, &mut ev).is_empty());
        }
    }
    assert_eq!(p.hint_missed(), 0);
    hint_works(&p);
}

#[test]
fn registering_a_ready_fd_is_seen_by_the_next_wait() {
    let (mut p, mut ev, _a, _b) = quiet_poller();
    let (c, mut d) = pair();
    d.write_all(b"z").unwrap();
    p.add(c.as_raw_fd(), 2, READ).unwrap();
    let got = poll(&mut p, &mut ev);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].token, 2);
    assert_eq!(p.hint_missed(), 0);
    hint_works(&p);
}

#[test]
fn widening_to_a_ready_direction_is_seen_by_the_next_wait() {
    let (mut p, mut ev, a, _b) = quiet_poller();
    p.modify(
        a.as_raw_fd(),
        1,
        Interest {
            read: true,
            write: true,
        },
    )
    .unwrap();
    let got = poll(&mut p, &mut ev);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].write && !got[0].read, "{got:?}");
    hint_works(&p);
}

#[test]
fn a_wake_up_from_another_thread_ends_the_skipping() {
    let (mut p, mut ev, _a, _b) = quiet_poller();
    let waker = p.waker();
    std::thread::spawn(move || waker.wake().unwrap())
        .join()
        .unwrap();
    // The waker's readiness is consumed by the poller, so no event reaches the caller, but the
    // wait must be real: the skip counter does not move.
    let before = p.waits_skipped();
    assert!(poll(&mut p, &mut ev).is_empty());
    assert_eq!(p.waits_skipped(), before);
    hint_works(&p);
}

#[test]
fn a_blocking_wait_is_never_skipped_and_ends_the_quiet_stretch() {
    let (mut p, mut ev, _a, _b) = quiet_poller();
    let before = p.waits_skipped();
    // The turn tells the hint before a wait that may block, then waits for real.
    p.hint.before_blocking_wait();
    let t = Instant::now();
    p.wait(&mut ev, Some(Duration::from_millis(20))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(p.waits_skipped(), before);
}

#[test]
fn a_poller_moved_between_threads_keeps_skipping_on_each() {
    // The armed poll's task work belongs to the thread that armed it. Measured with a single
    // ring: once a thread that had armed it exited, the ring answered "maybe ready" for good
    // on the threads after it. Each thread now makes its own ring. Here the poller arms on
    // this thread, then runs on two threads in turn that each see a write, stay quiet and
    // exit with the poll armed, then here again.
    fn round(p: &mut Hinted, ev: &mut Events, a: &UnixStream, b: &UnixStream) -> u64 {
        let start = p.waits_skipped();
        for _ in 0..(ARM_AFTER + 3) {
            assert!(poll(p, ev).is_empty());
        }
        (&*b).write_all(b"x").unwrap();
        assert_eq!(poll(p, ev).len(), 1, "the write is seen by the next wait");
        let mut buf = [0u8; 8];
        let _ = (&*a).read(&mut buf).unwrap();
        for _ in 0..(ARM_AFTER + 10) {
            assert!(poll(p, ev).is_empty());
        }
        p.waits_skipped() - start
    }
    let (p, ev, a, b) = quiet_poller();
    if !hint_works(&p) {
        return;
    }
    let shared = Arc::new((std::sync::Mutex::new((p, ev)), a, b));
    let run = |s: &(std::sync::Mutex<(Hinted, Events)>, UnixStream, UnixStream)| {
        let mut g = s.0.lock().unwrap();
        let (p, ev) = &mut *g;
        round(p, ev, &s.1, &s.2)
    };
    let mut skipped = Vec::new();
    for _ in 0..2 {
        let s = Arc::clone(&shared);
        skipped.push(std::thread::spawn(move || run(&s)).join().unwrap());
    }
    skipped.push(run(&shared));
    // Each round has at least 2 + 10 quiet waits after its arming (less the arming waits).
    assert!(skipped.iter().all(|&n| n >= 10), "{skipped:?}");
    assert_eq!(shared.0.lock().unwrap().0.hint_missed(), 0);
}
