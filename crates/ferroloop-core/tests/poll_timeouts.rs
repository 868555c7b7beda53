//! `Poller::wait` honours its timeout (sub-millisecond included), and fd readiness is
//! level-triggered: readable, writable, hang-up, add/delete errors and the registration count.
//! A signal delivered during a wait ends it with `ErrorKind::Interrupted`.
//!
//! Timing checks use generous upper bounds and medians: the CI machine has 2 noisy cores.

mod common;
use common::{
    install_noop_sigusr1_handler, median, pair, timed_wait, turn, Waiter, BOTH, READ, WRITE,
};
use ferroloop_core::{Events, Interest, Poller, Readiness};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

fn os_error(r: std::io::Result<()>) -> i32 {
    r.expect_err("expected an OS error")
        .raw_os_error()
        .expect("raw os error")
}

// ---- timeouts ----

#[test]
fn timeout_elapses_with_nothing_ready() {
    let mut p = Waiter::new();
    for ms in [1u64, 10, 50] {
        let d = Duration::from_millis(ms);
        let el = timed_wait(&mut p, d);
        assert!(el >= d, "wait({d:?}) returned early, after {el:?}");
        assert!(el < d + Duration::from_secs(1), "wait({d:?}) took {el:?}");
    }
}

#[test]
fn sub_millisecond_timeout_is_not_rounded_up() {
    let mut p = Waiter::new();
    let d = Duration::from_micros(200);
    let samples: Vec<Duration> = (0..31).map(|_| timed_wait(&mut p, d)).collect();
    for el in &samples {
        assert!(*el >= d, "wait(200us) returned early, after {el:?}");
    }
    let med = median(samples);
    // A millisecond-granularity backend (epoll_wait) would take >= 1 ms every time.
    assert!(
        med < Duration::from_micros(800),
        "median wait(200us) took {med:?}"
    );
}

#[test]
fn zero_timeout_returns_at_once() {
    let mut p = Waiter::new();
    let (a, _b) = pair();
    p.add(a.as_raw_fd(), 1, READ).expect("add");
    let samples: Vec<Duration> = (0..31)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(turn(&mut p, Duration::ZERO), vec![]);
            t.elapsed()
        })
        .collect();
    let med = median(samples);
    assert!(
        med < Duration::from_micros(500),
        "median zero-timeout wait took {med:?}"
    );
}

#[test]
fn huge_timeouts_are_accepted() {
    // Durations beyond i64 seconds are clamped, not rejected (EINVAL) or wrapped to negative.
    let mut p = Waiter::new();
    for d in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(i64::MAX as u64),
    ] {
        p.waker().wake().expect("wake");
        let t = Instant::now();
        p.wait(Some(d)).expect("wait with a huge timeout");
        p.drain(|_| {});
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}

// ---- readiness ----

#[test]
fn readable_after_peer_writes_and_level_triggered() {
    let mut p = Waiter::new();
    let (mut a, mut b) = pair();
    p.add(a.as_raw_fd(), 7, READ).expect("add");
    assert_eq!(turn(&mut p, Duration::ZERO), vec![], "nothing written yet");

    b.write_all(b"xy").expect("write");
    let ready = Readiness {
        token: 7,
        read: true,
        write: false,
    };
    assert_eq!(turn(&mut p, Duration::from_secs(5)), vec![ready]);
    // Level-triggered: not drained, so reported again, on every turn.
    for _ in 0..3 {
        assert_eq!(turn(&mut p, Duration::from_secs(5)), vec![ready]);
    }
    // Partly drained: still readable.
    let mut buf = [0u8; 1];
    a.read_exact(&mut buf).expect("read");
    assert_eq!(turn(&mut p, Duration::from_secs(5)), vec![ready]);
    // Fully drained: the wait times out.
    a.read_exact(&mut buf).expect("read");
    assert_eq!(turn(&mut p, Duration::from_millis(20)), vec![]);
}

#[test]
fn readable_wait_ends_before_its_timeout() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 3, READ).expect("add");
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        (&b).write_all(b"z").expect("write");
        b
    });
    let t = Instant::now();
    let got = turn(&mut p, Duration::from_secs(10));
    let el = t.elapsed();
    let _b = h.join().expect("writer");
    assert_eq!(
        got,
        vec![Readiness {
            token: 3,
            read: true,
            write: false
        }]
    );
    assert!(
        el < Duration::from_secs(5),
        "readiness took {el:?} to end the wait"
    );
}

#[test]
fn write_interest_on_a_writable_socket() {
    let mut p = Waiter::new();
    let (a, _b) = pair();
    p.add(a.as_raw_fd(), 11, WRITE).expect("add");
    let w = Readiness {
        token: 11,
        read: false,
        write: true,
    };
    assert_eq!(turn(&mut p, Duration::from_secs(5)), vec![w]);
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![w],
        "level-triggered"
    );
}

#[test]
fn read_and_write_interest_together() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 5, BOTH).expect("add");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 5,
            read: false,
            write: true
        }]
    );
    (&b).write_all(b"q").expect("write");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 5,
            read: true,
            write: true
        }]
    );
}

#[test]
fn modify_changes_interest_and_token() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    (&b).write_all(b"q").expect("write");
    p.add(a.as_raw_fd(), 1, READ).expect("add");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 1,
            read: true,
            write: false
        }]
    );
    p.modify(a.as_raw_fd(), 2, WRITE).expect("modify");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 2,
            read: false,
            write: true
        }]
    );
    p.modify(a.as_raw_fd(), 3, Interest::default())
        .expect("modify to nothing");
    assert_eq!(turn(&mut p, Duration::from_millis(20)), vec![]);
    assert!(Interest::default().is_empty() && !READ.is_empty() && !WRITE.is_empty());
    let (c, _d) = pair();
    assert_eq!(os_error(p.modify(c.as_raw_fd(), 4, READ)), libc::ENOENT);
}

#[test]
fn peer_hang_up_reports_read_readiness() {
    let mut p = Waiter::new();
    let (mut a, b) = pair();
    p.add(a.as_raw_fd(), 9, READ).expect("add");
    assert_eq!(turn(&mut p, Duration::ZERO), vec![]);
    drop(b);
    let got = turn(&mut p, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].token, 9);
    assert!(got[0].read, "hang-up must wake the reader: {got:?}");
    // EPOLLHUP wakes both directions, as CPython's EpollSelector maps it.
    assert!(got[0].write, "hang-up must wake a writer too: {got:?}");
    // The reader then sees EOF.
    let mut buf = [0u8; 8];
    assert_eq!(a.read(&mut buf).expect("read"), 0);
    // Still reported (level-triggered) until the fd is unregistered.
    assert_eq!(turn(&mut p, Duration::from_secs(5)).len(), 1);
}

#[test]
fn each_fd_reports_its_own_token_and_the_buffer_grows() {
    // More ready fds than the initial event buffer (256): every fd is reported within two turns,
    // and once the buffer has grown, in one.
    const N: usize = 260;
    let mut p = Waiter::new();
    let pairs: Vec<_> = (0..N).map(|_| pair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        p.add(a.as_raw_fd(), i as u64, READ).expect("add");
        (&*b).write_all(b"x").expect("write");
    }
    let mut seen = vec![false; N];
    let first = turn(&mut p, Duration::from_secs(5));
    let second = turn(&mut p, Duration::from_secs(5));
    for r in first.iter().chain(&second) {
        assert!(r.read && !r.write, "{r:?}");
        seen[r.token as usize] = true;
    }
    assert!(seen.iter().all(|&s| s), "some fds were never reported");
    let third = turn(&mut p, Duration::from_secs(5));
    assert_eq!(
        third.len(),
        N,
        "after growing, one turn reports every ready fd"
    );
}

// ---- registration ----

#[test]
fn add_of_a_closed_fd_is_ebadf() {
    let p = Waiter::new();
    let (a, _b) = pair();
    // Duplicate to a high fd number and close it: tests running in parallel open fds from the
    // lowest free number, so nobody reuses this one before the add.
    // SAFETY: F_DUPFD on an fd we own; the result is closed right away and not used otherwise.
    let high = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_DUPFD, 900) };
    assert!(high >= 900, "fcntl(F_DUPFD) failed");
    // SAFETY: `high` is our own fd from the line above and nothing else refers to it.
    assert_eq!(unsafe { libc::close(high) }, 0);
    assert_eq!(os_error(p.add(high, 1, READ)), libc::EBADF);
}

#[test]
fn add_twice_is_eexist() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 1, READ).expect("add");
    assert_eq!(os_error(p.add(a.as_raw_fd(), 2, WRITE)), libc::EEXIST);
    // The failed add left the first registration as it was: token 1, read only.
    (&b).write_all(b"x").expect("write");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 1,
            read: true,
            write: false
        }]
    );
}

#[test]
fn add_of_a_regular_file_is_eperm() {
    let p = Waiter::new();
    let f = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).expect("open");
    assert_eq!(os_error(p.add(f.as_raw_fd(), 1, READ)), libc::EPERM);
}

#[test]
fn delete_then_no_events() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 4, READ).expect("add");
    (&b).write_all(b"x").expect("write");
    assert_eq!(turn(&mut p, Duration::from_secs(5)).len(), 1);
    p.delete(a.as_raw_fd()).expect("delete");
    assert_eq!(
        turn(&mut p, Duration::from_millis(20)),
        vec![],
        "deleted fd still reported"
    );
    // It can be registered again.
    p.add(a.as_raw_fd(), 5, READ).expect("re-add");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 5,
            read: true,
            write: false
        }]
    );
}

#[test]
fn delete_removes_only_that_fd() {
    let mut p = Waiter::new();
    let pairs: Vec<_> = (0..3).map(|_| pair()).collect();
    let fds: Vec<RawFd> = pairs.iter().map(|(a, _)| a.as_raw_fd()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        p.add(a.as_raw_fd(), i as u64, READ).expect("add");
        (&*b).write_all(b"x").expect("write");
    }
    let tokens = |p: &mut Waiter| {
        let mut t: Vec<u64> = turn(p, Duration::from_secs(5))
            .iter()
            .map(|r| r.token)
            .collect();
        t.sort_unstable();
        t
    };
    assert_eq!(tokens(&mut p), vec![0, 1, 2]);
    p.delete(fds[1]).expect("delete");
    assert_eq!(tokens(&mut p), vec![0, 2]);
    // Deleting an fd that is not registered fails with ENOENT and disturbs nothing.
    assert_eq!(os_error(p.delete(fds[1])), libc::ENOENT);
    assert_eq!(tokens(&mut p), vec![0, 2]);
    p.delete(fds[0]).expect("delete");
    p.delete(fds[2]).expect("delete");
    assert_eq!(turn(&mut p, Duration::from_millis(20)), vec![]);
}

#[test]
fn fd_closed_while_registered_is_dropped_by_the_kernel() {
    let mut p = Waiter::new();
    let (a, b) = pair();
    let fd = a.as_raw_fd();
    p.add(fd, 8, READ).expect("add");
    drop(a); // Closing the only fd for the socket drops the registration in the kernel.
    let _ = (&b).write_all(b"x"); // may fail with EPIPE; irrelevant
    assert!(turn(&mut p, Duration::from_millis(20))
        .iter()
        .all(|r| r.token != 8));
    // The number may have been reused by a parallel test: EBADF or ENOENT, an error either way.
    assert!(p.delete(fd).is_err());
}

#[test]
fn fds_can_be_added_from_another_thread_during_a_wait() {
    // Every Poller method takes &self: epoll_ctl from another thread reaches the ongoing wait.
    let poller = Arc::new(Poller::new().expect("poller"));
    let (a, b) = pair();
    (&b).write_all(b"x").expect("write");
    let h = {
        let poller = Arc::clone(&poller);
        let fd = a.as_raw_fd();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            poller.add(fd, 21, READ).expect("add from another thread");
        })
    };
    let mut events = Events::new();
    let t = Instant::now();
    poller
        .wait(&mut events, Some(Duration::from_secs(10)))
        .expect("wait");
    let el = t.elapsed();
    let mut got = Vec::new();
    poller.drain(&mut events, |r| got.push(r));
    h.join().expect("adder");
    assert_eq!(
        got,
        vec![Readiness {
            token: 21,
            read: true,
            write: false
        }]
    );
    assert!(el < Duration::from_secs(5), "{el:?}");
    drop(a);
}

// ---- signals ----

#[test]
fn signal_during_wait_is_interrupted() {
    install_noop_sigusr1_handler();
    let started = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let h = {
        let (started, done) = (Arc::clone(&started), Arc::clone(&done));
        thread::spawn(move || {
            let mut p = Waiter::new();
            started.store(true, Ordering::SeqCst);
            let t = Instant::now();
            let r = p.wait(Some(Duration::from_secs(20)));
            let el = t.elapsed();
            done.store(true, Ordering::SeqCst);
            // Stay alive until the signalling thread stops, so its pthread_t stays valid.
            let _ = release_rx.recv();
            (r.map_err(|e| e.kind()), el)
        })
    };
    while !started.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    let begin = Instant::now();
    // A signal that lands before the thread enters epoll is handled and lost, so keep sending
    // until the wait ends.
    while !done.load(Ordering::SeqCst) && begin.elapsed() < Duration::from_secs(30) {
        // SAFETY: the thread is not joined until after this loop, so its pthread_t is valid.
        let rc = unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0);
        thread::sleep(Duration::from_millis(10));
    }
    drop(release_tx);
    let (result, el) = h.join().expect("waiting thread");
    assert_eq!(
        result,
        Err(ErrorKind::Interrupted),
        "wait ended with {result:?} after {el:?}"
    );
    assert!(
        el < Duration::from_secs(10),
        "the signal did not end the wait promptly: {el:?}"
    );
}

#[test]
fn poller_is_usable_after_an_interrupted_wait() {
    install_noop_sigusr1_handler();
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let mut p = Waiter::new();
        let (a, b) = pair();
        p.add(a.as_raw_fd(), 1, READ).expect("add");
        // Signal ourselves: the handler runs right away, then the wait is interrupted by a
        // second signal sent from the main thread while blocked.
        tx.send(()).expect("send");
        let mut interrupted = false;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            match p.wait(Some(Duration::from_secs(20))) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    interrupted = true;
                    break;
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(()) => p.drain(|r| panic!("unexpected readiness {r:?}")),
            }
        }
        // After EINTR the poller works as before.
        (&b).write_all(b"x").expect("write");
        p.wait(Some(Duration::from_secs(5)))
            .expect("wait after EINTR");
        let mut got = Vec::new();
        p.drain(|r| got.push(r));
        (interrupted, got)
    });
    rx.recv().expect("recv");
    while !h.is_finished() {
        // SAFETY: the thread is not joined until after this loop, so its pthread_t is valid.
        unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
        thread::sleep(Duration::from_millis(10));
    }
    let (interrupted, got) = h.join().expect("thread");
    assert!(interrupted);
    assert_eq!(
        got,
        vec![Readiness {
            token: 1,
            read: true,
            write: false
        }]
    );
}
