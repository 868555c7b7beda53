//! The `epoll_wait` fallback of `Poller::wait`, used where `epoll_pwait2` is missing (ENOSYS,
//! kernels before 5.11) or refused (EPERM, seccomp filters).
//!
//! Most tests force the fallback in this process (`force_epoll_wait`; every test binary is its
//! own process, so the other test files keep `epoll_pwait2`) and check the poller's contract on
//! it: timeouts rounded up to whole milliseconds and never early, zero timeouts that only poll,
//! level-triggered readiness, the waker, EINTR reported as `Interrupted`.
//!
//! The automatic switch is checked in child processes (this binary run again on one test, with
//! `CHILD_ENV` set), where the mode is still undecided: one under `FERROLOOP_EPOLL=wait`, and one
//! per errno under a seccomp filter that makes `epoll_pwait2` fail with ENOSYS, EPERM or EINVAL
//! (the last must be reported, not taken as a reason to switch).
//!
//! Timing checks use generous upper bounds and medians: the CI machine has 2 noisy cores.

mod common;
use common::{install_noop_sigusr1_handler, median, pair, timed_wait, turn, Waiter, READ, WRITE};
use ferroloop_core::poller::{force_epoll_wait, uses_epoll_wait};
use ferroloop_core::Readiness;
use ferroloop_core::{Events, Poller};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Set (to the test's parameter) in the environment of a child run of this binary.
const CHILD_ENV: &str = "FERROLOOP_TEST_FALLBACK_CHILD";

/// A poller whose waits use `epoll_wait`.
fn fallback_waiter() -> Waiter {
    force_epoll_wait();
    assert!(uses_epoll_wait());
    Waiter::new()
}

// ---- timeouts, rounded up to whole milliseconds ----

#[test]
fn sub_millisecond_timeout_never_returns_early() {
    let mut p = fallback_waiter();
    let d = Duration::from_micros(200);
    let samples: Vec<Duration> = (0..31).map(|_| timed_wait(&mut p, d)).collect();
    for el in &samples {
        assert!(*el >= d, "wait(200us) returned early, after {el:?}");
        // Rounded up to 1 ms, not down to 0 (a poll): the kernel waits the whole millisecond.
        assert!(
            *el >= Duration::from_millis(1),
            "wait(200us) was not rounded up to 1 ms: {el:?}"
        );
    }
    let med = median(samples);
    assert!(
        med < Duration::from_millis(50),
        "median wait(200us) {med:?}"
    );
}

#[test]
fn timeouts_elapse_and_round_up() {
    let mut p = fallback_waiter();
    for (d, at_least) in [
        (Duration::from_nanos(1), Duration::from_millis(1)),
        (Duration::from_millis(1), Duration::from_millis(1)),
        (Duration::from_micros(1500), Duration::from_millis(2)),
        (Duration::from_millis(10), Duration::from_millis(10)),
        (Duration::from_micros(20_001), Duration::from_millis(21)),
    ] {
        let el = timed_wait(&mut p, d);
        assert!(el >= at_least, "wait({d:?}) returned after {el:?}");
        assert!(el < d + Duration::from_secs(1), "wait({d:?}) took {el:?}");
    }
}

#[test]
fn zero_timeout_only_polls() {
    let mut p = fallback_waiter();
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
fn huge_timeouts_are_capped_not_rejected() {
    let mut p = fallback_waiter();
    for d in [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_millis(i32::MAX as u64 + 1),
    ] {
        p.waker().wake().expect("wake");
        let t = Instant::now();
        p.wait(Some(d)).expect("wait with a huge timeout");
        p.drain(|_| {});
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}

// ---- the waker ----

#[test]
fn waker_ends_an_unbounded_wait_from_another_thread() {
    let mut p = fallback_waiter();
    let waker = p.waker();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().expect("wake");
    });
    let t = Instant::now();
    p.wait(None).expect("wait(None)");
    let el = t.elapsed();
    h.join().expect("waker thread");
    p.drain(|r| panic!("the waker's token leaked out as {r:?}"));
    assert!(el < Duration::from_secs(5), "the wake-up took {el:?}");
    // The wake-up was consumed: the next wait times out.
    let el = timed_wait(&mut p, Duration::from_millis(20));
    assert!(el >= Duration::from_millis(20), "{el:?}");
}

// ---- readiness ----

#[test]
fn readiness_is_level_triggered() {
    let mut p = fallback_waiter();
    let (mut a, mut b) = pair();
    p.add(a.as_raw_fd(), 7, READ).expect("add");
    assert_eq!(turn(&mut p, Duration::ZERO), vec![]);
    b.write_all(b"xy").expect("write");
    let ready = Readiness {
        token: 7,
        read: true,
        write: false,
    };
    for _ in 0..3 {
        assert_eq!(turn(&mut p, Duration::from_secs(5)), vec![ready]);
    }
    let mut buf = [0u8; 2];
    a.read_exact(&mut buf).expect("read");
    assert_eq!(turn(&mut p, Duration::from_millis(20)), vec![]);

    p.modify(a.as_raw_fd(), 8, WRITE).expect("modify");
    assert_eq!(
        turn(&mut p, Duration::from_secs(5)),
        vec![Readiness {
            token: 8,
            read: false,
            write: true
        }]
    );
    p.delete(a.as_raw_fd()).expect("delete");
    assert_eq!(turn(&mut p, Duration::from_millis(20)), vec![]);
}

#[test]
fn readable_wait_ends_before_its_timeout_and_hang_up_wakes_both() {
    let mut p = fallback_waiter();
    let (a, b) = pair();
    p.add(a.as_raw_fd(), 3, READ).expect("add");
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(b);
    });
    let t = Instant::now();
    let got = turn(&mut p, Duration::from_secs(10));
    let el = t.elapsed();
    h.join().expect("closer");
    assert_eq!(
        got,
        vec![Readiness {
            token: 3,
            read: true,
            write: true
        }],
        "hang-up wakes both directions"
    );
    assert!(el < Duration::from_secs(5), "{el:?}");
}

#[test]
fn a_full_buffer_grows_and_reports_every_fd() {
    const N: usize = 260;
    let mut p = fallback_waiter();
    let pairs: Vec<_> = (0..N).map(|_| pair()).collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        p.add(a.as_raw_fd(), i as u64, READ).expect("add");
        (&*b).write_all(b"x").expect("write");
    }
    let first = turn(&mut p, Duration::from_secs(5));
    assert_eq!(first.len(), 256, "the initial buffer fills up");
    let mut seen = vec![false; N];
    for r in first.iter().chain(&turn(&mut p, Duration::from_secs(5))) {
        assert!(r.read && !r.write, "{r:?}");
        seen[r.token as usize] = true;
    }
    assert!(seen.iter().all(|&s| s), "some fds were never reported");
    assert_eq!(turn(&mut p, Duration::from_secs(5)).len(), N);
}

// ---- signals ----

#[test]
fn signal_during_wait_is_interrupted_and_the_poller_still_works() {
    install_noop_sigusr1_handler();
    let done = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let h = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut p = fallback_waiter();
            let (a, b) = pair();
            p.add(a.as_raw_fd(), 1, READ).expect("add");
            started_tx.send(()).expect("send");
            let t = Instant::now();
            let r = p.wait(Some(Duration::from_secs(20)));
            let el = t.elapsed();
            done.store(true, Ordering::SeqCst);
            // Stay alive until the signalling thread stops, so its pthread_t stays valid.
            let _ = release_rx.recv();
            // After EINTR the poller works as before.
            (&b).write_all(b"x").expect("write");
            let after = turn(&mut p, Duration::from_secs(5));
            (r.map_err(|e| e.kind()), el, after)
        })
    };
    started_rx.recv().expect("recv");
    let begin = Instant::now();
    // A signal that lands before the thread enters epoll_wait is handled and lost, so keep
    // sending until the wait ends.
    while !done.load(Ordering::SeqCst) && begin.elapsed() < Duration::from_secs(30) {
        // SAFETY: the thread is not joined until after this loop, so its pthread_t is valid.
        let rc = unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0);
        thread::sleep(Duration::from_millis(10));
    }
    drop(release_tx);
    let (result, el, after) = h.join().expect("waiting thread");
    assert_eq!(
        result,
        Err(ErrorKind::Interrupted),
        "wait ended with {result:?} after {el:?}"
    );
    assert!(el < Duration::from_secs(10), "{el:?}");
    assert_eq!(
        after,
        vec![Readiness {
            token: 1,
            read: true,
            write: false
        }]
    );
}

// ---- the automatic switch, in child processes ----

/// Runs this test binary again on the one test `name`, with `CHILD_ENV=param` and `env` set
/// and `FERROLOOP_EPOLL` otherwise removed, and checks that the test ran and passed.
fn run_child(name: &str, param: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_ENV, param)
        .env_remove("FERROLOOP_EPOLL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} ({param}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// The child side: `Some(param)` in a child run, `None` in the normal run (the test then passes
/// without doing anything; the parent test runs it for real).
fn child_param() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

#[test]
fn env_var_selects_epoll_wait_from_the_start() {
    run_child("child_env_var", "wait", &[("FERROLOOP_EPOLL", "wait")]);
    run_child("child_env_var", "other", &[("FERROLOOP_EPOLL", "pwait2")]);
    run_child("child_env_var", "unset", &[]);
}

#[test]
fn child_env_var() {
    let Some(param) = child_param() else { return };
    // Read once, at the first wait or query; the poller then works either way.
    assert_eq!(
        uses_epoll_wait(),
        param == "wait",
        "FERROLOOP_EPOLL ({param})"
    );
    let mut p = Waiter::new();
    let el = timed_wait(&mut p, Duration::from_micros(200));
    assert!(el >= Duration::from_micros(200), "{el:?}");
    if param == "wait" {
        assert!(el >= Duration::from_millis(1), "not rounded up: {el:?}");
    }
    assert_eq!(uses_epoll_wait(), param == "wait");
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod seccomp {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }

    /// Makes `epoll_pwait2` fail with `errno` in the calling thread (and threads it creates),
    /// as an old kernel (ENOSYS) or a container runtime's seccomp profile (EPERM) does.
    fn refuse_epoll_pwait2(errno: i32) {
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let mut prog = [
            stmt(ld, std::mem::offset_of!(libc::seccomp_data, arch) as u32),
            jeq(AUDIT_ARCH, 0, 3),
            stmt(ld, std::mem::offset_of!(libc::seccomp_data, nr) as u32),
            jeq(libc::SYS_epoll_pwait2 as u32, 0, 1),
            stmt(
                ret,
                libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA),
            ),
            stmt(ret, libc::SECCOMP_RET_ALLOW),
        ];
        let fprog = libc::sock_fprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: plain prctl calls; `fprog` points to `prog`, a valid filter program that
        // outlives the call (the kernel copies it). The filter only affects this test process,
        // a child run of the test binary on one test.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog
                ),
                0,
                "installing the seccomp filter failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    #[test]
    fn enosys_switches_to_epoll_wait() {
        run_child("seccomp::child_refused", &libc::ENOSYS.to_string(), &[]);
    }

    #[test]
    fn eperm_switches_to_epoll_wait() {
        run_child("seccomp::child_refused", &libc::EPERM.to_string(), &[]);
    }

    #[test]
    fn other_errors_are_reported_and_switch_nothing() {
        run_child("seccomp::child_other_error", &libc::EINVAL.to_string(), &[]);
    }

    #[test]
    fn child_refused() {
        let Some(param) = child_param() else { return };
        let errno: i32 = param.parse().expect("errno");
        refuse_epoll_pwait2(errno);
        assert!(!uses_epoll_wait(), "undecided, so epoll_pwait2 first");

        // The first wait is refused and retried at once with epoll_wait: its readiness is
        // reported, with no error.
        let poller = Poller::new().expect("poller");
        let mut events = Events::new();
        let (a, b) = pair();
        poller.add(a.as_raw_fd(), 5, READ).expect("add");
        (&b).write_all(b"x").expect("write");
        poller
            .wait(&mut events, Some(Duration::from_secs(5)))
            .expect("the refused wait is retried, not reported");
        let mut got = Vec::new();
        poller.drain(&mut events, |r| got.push(r));
        assert_eq!(
            got,
            vec![Readiness {
                token: 5,
                read: true,
                write: false
            }]
        );
        assert!(uses_epoll_wait(), "the process switched to epoll_wait");

        // A second poller in another thread (which inherits the filter) waits the whole timeout,
        // rounded up, without being refused again.
        thread::spawn(|| {
            let mut p = Waiter::new();
            for d in [Duration::from_micros(200), Duration::from_millis(20)] {
                let el = timed_wait(&mut p, d);
                assert!(el >= d.max(Duration::from_millis(1)), "wait({d:?}): {el:?}");
            }
        })
        .join()
        .expect("second poller");
    }

    #[test]
    fn child_other_error() {
        let Some(param) = child_param() else { return };
        let errno: i32 = param.parse().expect("errno");
        refuse_epoll_pwait2(errno);
        let mut p = Waiter::new();
        let err = p
            .wait(Some(Duration::from_millis(1)))
            .expect_err("the error is reported");
        assert_eq!(err.raw_os_error(), Some(errno));
        assert!(!uses_epoll_wait(), "errno {errno} must not switch backends");
    }
}
