//! The loop clock reads `CLOCK_MONOTONIC` (as `time.monotonic()` does) and never goes
//! backwards; `ManualClock` moves only when told to.

use ferroloop_core::clock::{self, Clock, ManualClock, MonotonicClock};
use std::time::{Duration, Instant};

#[test]
fn monotonic_never_decreases() {
    let mut prev = clock::monotonic();
    for _ in 0..100_000 {
        let now = clock::monotonic();
        assert!(now >= prev, "clock went backwards: {prev} -> {now}");
        prev = now;
    }
}

#[test]
fn monotonic_advances_with_instant() {
    let t0 = clock::monotonic();
    let i0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let t1 = clock::monotonic();
    let elapsed = i0.elapsed().as_secs_f64();
    let dt = t1 - t0;
    assert!(
        dt >= 0.050,
        "monotonic advanced only {dt}s over a 50 ms sleep"
    );
    // Both read CLOCK_MONOTONIC; the only difference is the gap between the paired reads.
    assert!(
        (dt - elapsed).abs() < 0.010,
        "monotonic {dt}s vs Instant {elapsed}s"
    );
}

#[test]
fn monotonic_is_clock_monotonic_in_seconds() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let before = clock::monotonic();
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let after = clock::monotonic();
    assert_eq!(rc, 0);
    let libc_now = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    assert!(
        before - 1e-6 <= libc_now && libc_now <= after + 1e-6,
        "{before} <= {libc_now} <= {after} does not hold: not the same clock"
    );
}

#[test]
fn resolution_is_fine_grained() {
    let r = clock::resolution();
    assert!(r > 0.0 && r <= 1e-3, "resolution {r}");
}

#[test]
fn monotonic_clock_trait_reads_the_same_clock() {
    let c: &dyn Clock = &MonotonicClock;
    let a = clock::monotonic();
    let b = c.now();
    let d = clock::monotonic();
    assert!(a <= b && b <= d);
}

#[test]
fn manual_clock_moves_only_when_advanced() {
    let c = ManualClock::new(100.0);
    assert_eq!(c.now(), 100.0);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(c.now(), 100.0, "a manual clock does not follow real time");
    c.advance(0.25);
    assert_eq!(c.now(), 100.25);
    c.advance(0.0);
    assert_eq!(c.now(), 100.25);
    for _ in 0..4 {
        c.advance(1e-3);
    }
    assert!((c.now() - 100.254).abs() < 1e-9);
    assert_eq!(ManualClock::default().now(), 0.0);
    let dynamic: Box<dyn Clock> = Box::new(ManualClock::new(-3.0));
    assert_eq!(dynamic.now(), -3.0);
}
