//! `Waker::wake()` from any thread ends the poller's current wait (or its next one), and a burst
//! of wake-ups is consumed by one turn: no stale wake-up ends a later wait early.

mod common;
use common::Waiter;
use ferroloop_core::{Readiness, Waker};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Drains the last wait; the waker's own readiness must never reach the caller.
fn drain(p: &mut Waiter) -> Vec<Readiness> {
    let mut v = Vec::new();
    p.drain(|r| v.push(r));
    v
}

/// Waits with `timeout`, drains, and returns how long the wait took.
fn timed_turn(p: &mut Waiter, timeout: Option<Duration>) -> Duration {
    let t = Instant::now();
    p.wait(timeout).expect("wait");
    let el = t.elapsed();
    assert_eq!(drain(p), vec![], "the waker's token leaked to the caller");
    el
}

#[test]
fn waker_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Waker>();
}

#[test]
fn wake_from_another_thread_ends_an_unbounded_wait() {
    let mut p = Waiter::new();
    let waker = p.waker();
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        let woke_at = Instant::now();
        waker.wake().expect("wake");
        tx.send(woke_at).expect("send");
    });
    let start = Instant::now();
    p.wait(None).expect("wait");
    let returned_at = Instant::now();
    assert_eq!(drain(&mut p), vec![]);
    let woke_at = rx.recv().expect("recv");
    h.join().expect("waker thread");
    assert!(
        returned_at.duration_since(start) >= Duration::from_millis(50),
        "wait(None) returned before anyone woke it"
    );
    let latency = returned_at.saturating_duration_since(woke_at);
    assert!(
        latency < Duration::from_secs(1),
        "wait ended {latency:?} after the wake"
    );
}

#[test]
fn every_wake_after_a_drain_ends_the_next_wait() {
    // If a consumed wake-up left the "pending" flag set, later wakes would be swallowed and these
    // waits would run to their 10 s timeout.
    let mut p = Waiter::new();
    let waker = p.waker();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        while go_rx.recv().is_ok() {
            thread::sleep(Duration::from_millis(1));
            waker.wake().expect("wake");
        }
    });
    for i in 0..50 {
        go_tx.send(()).expect("send");
        let el = timed_turn(&mut p, Some(Duration::from_secs(10)));
        assert!(
            el < Duration::from_secs(5),
            "round {i}: wake was lost ({el:?})"
        );
    }
    drop(go_tx);
    h.join().expect("waker thread");
}

#[test]
fn wake_before_wait_ends_the_next_wait_at_once() {
    let mut p = Waiter::new();
    let waker = p.waker();
    waker.wake().expect("wake");
    let el = timed_turn(&mut p, Some(Duration::from_secs(10)));
    assert!(el < Duration::from_secs(1), "pre-wait wake ignored: {el:?}");
    // Consumed: the next wait times out.
    let el = timed_turn(&mut p, Some(Duration::from_millis(50)));
    assert!(
        el >= Duration::from_millis(50),
        "stale wake-up ended the wait after {el:?}"
    );
}

#[test]
fn wake_before_an_unbounded_wait() {
    let mut p = Waiter::new();
    p.waker().wake().expect("wake");
    // Would hang forever if the wake-up were lost; the harness would then time the test out.
    let el = timed_turn(&mut p, None);
    assert!(el < Duration::from_secs(1), "{el:?}");
}

#[test]
fn many_wakes_coalesce_into_one_turn() {
    let mut p = Waiter::new();
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let waker = p.waker();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for _ in 0..1000 {
                    waker.wake().expect("wake");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("waker thread");
    }
    let el = timed_turn(&mut p, Some(Duration::from_secs(10)));
    assert!(el < Duration::from_secs(1), "{el:?}");
    // All 4000 wake-ups were consumed by that one turn.
    for timeout_ms in [20u64, 100] {
        let d = Duration::from_millis(timeout_ms);
        let el = timed_turn(&mut p, Some(d));
        assert!(el >= d, "stale wake-up ended a {d:?} wait after {el:?}");
    }
}

#[test]
fn wakes_racing_with_turns_leave_no_stale_wakeup() {
    let mut p = Waiter::new();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let waker = p.waker();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    waker.wake().expect("wake");
                    n += 1;
                    if n % 64 == 0 {
                        thread::yield_now();
                    }
                }
                n
            })
        })
        .collect();
    let mut turns = 0;
    // A lost wake-up leaves `pending` set with the eventfd drained: every later wake() then skips
    // its write and this wait runs to its timeout although wakes never stop.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let el = timed_turn(&mut p, Some(Duration::from_secs(3)));
        assert!(
            el < Duration::from_millis(2500),
            "wake lost while racing: {el:?}"
        );
        turns += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let wakes: u32 = handles
        .into_iter()
        .map(|h| h.join().expect("waker thread"))
        .sum();
    assert!(turns > 0 && wakes > 0);
    // A wake-up may still be pending from the last burst; at most one turn consumes it.
    timed_turn(&mut p, Some(Duration::ZERO));
    let d = Duration::from_millis(50);
    let el = timed_turn(&mut p, Some(d));
    assert!(
        el >= d,
        "stale wake-up after {wakes} wakes / {turns} turns: {el:?}"
    );
}

#[test]
fn waker_outlives_its_poller() {
    let p = Waiter::new();
    let waker = p.waker();
    drop(p);
    waker.wake().expect("wake after the poller is gone");
    waker.clone().wake().expect("coalesced wake");
}
