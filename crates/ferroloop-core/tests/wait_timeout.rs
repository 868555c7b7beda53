//! The wait-timeout rule of a turn (CPython's `_run_once`): zero when callbacks are ready or the
//! loop is stopping; else until the earliest live timer, never negative and at most
//! `MAXIMUM_SELECT_TIMEOUT`; else forever. A turn that must not block and watches no fd skips
//! the syscall.

mod common;

use common::host::{noop, TestLoop, START};
use ferroloop_core::{wait_timeout, Direction, MAXIMUM_SELECT_TIMEOUT};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn secs(s: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(s))
}

#[test]
fn the_rule_alone() {
    let now = || 100.0;
    assert_eq!(
        wait_timeout(false, false, None, now),
        Some(Duration::ZERO),
        "ready"
    );
    assert_eq!(
        wait_timeout(true, true, Some(200.0), now),
        Some(Duration::ZERO),
        "stopping"
    );
    assert_eq!(
        wait_timeout(true, false, Some(102.5), now),
        secs(2.5),
        "earliest timer"
    );
    assert_eq!(
        wait_timeout(true, false, Some(99.0), now),
        Some(Duration::ZERO),
        "overdue"
    );
    assert_eq!(wait_timeout(true, false, None, now), None, "forever");
    assert_eq!(
        wait_timeout(
            true,
            false,
            Some(100.0 + 10.0 * MAXIMUM_SELECT_TIMEOUT),
            now
        ),
        secs(MAXIMUM_SELECT_TIMEOUT),
        "clamped to a day"
    );
    assert_eq!(
        wait_timeout(true, false, Some(f64::NEG_INFINITY), now),
        Some(Duration::ZERO),
        "a NaN deadline is keyed -inf: due at once"
    );
}

#[test]
fn ready_callbacks_make_the_wait_zero() {
    let lp = TestLoop::new();
    lp.call_later(5.0, "timer", noop);
    lp.call_soon("soon", noop);
    assert_eq!(lp.ev().wait_timeout(false), Some(Duration::ZERO));
    lp.run_once();
    assert_eq!(lp.take_log(), ["soon"]);
    assert!(
        lp.waits.borrow().is_empty(),
        "a zero-timeout turn never blocks"
    );
    assert_eq!(lp.now(), START, "and the clock did not move");
}

#[test]
fn stopping_makes_the_wait_zero() {
    let lp = TestLoop::new();
    lp.call_later(5.0, "timer", noop);
    lp.stopping.set(true);
    assert_eq!(lp.ev().wait_timeout(true), Some(Duration::ZERO));
    lp.run_once();
    assert!(lp.waits.borrow().is_empty());
    assert!(lp.take_log().is_empty());
}

#[test]
fn the_wait_lasts_until_the_earliest_live_timer() {
    let lp = TestLoop::new();
    let early = lp.call_later(1.0, "early", noop);
    lp.call_later(7.25, "late", noop);
    lp.call_later(3.5, "mid", noop);
    lp.cancel(&early); // purged before the timeout is computed
    lp.run_once();
    assert_eq!(*lp.waits.borrow(), [secs(3.5)]);
    assert_eq!(lp.take_log(), ["mid"]);
}

#[test]
fn no_timer_and_nothing_ready_waits_forever() {
    let lp = TestLoop::new();
    assert_eq!(lp.ev().wait_timeout(false), None);
    lp.run_once();
    assert_eq!(*lp.waits.borrow(), [None]);
}

#[test]
fn a_far_timer_is_clamped_to_a_day() {
    let lp = TestLoop::new();
    lp.call_later(3.0 * MAXIMUM_SELECT_TIMEOUT, "far", noop);
    lp.run_once();
    assert_eq!(*lp.waits.borrow(), [secs(MAXIMUM_SELECT_TIMEOUT)]);
    assert!(
        lp.take_log().is_empty(),
        "woke up early, as the stdlib does, and waits again"
    );
    lp.run_once();
    lp.run_once();
    assert_eq!(lp.take_log(), ["far"]);
}

#[test]
fn a_non_blocking_turn_without_fds_skips_the_syscall() {
    let lp = TestLoop::new();
    lp.call_soon("soon", noop);
    let mut removed = Vec::new();
    let wait = lp.ev().prepare(false, &mut removed);
    assert_eq!(wait.timeout, Some(Duration::ZERO));
    assert!(wait.poller.is_none(), "no fd watched: nothing to poll");

    // With an fd watched the same turn polls (zero timeout), to queue its callbacks.
    let (a, _b) = common::pair();
    lp.watch(a.as_raw_fd(), Direction::Write, "w", noop);
    let wait = lp.ev().prepare(false, &mut removed);
    assert_eq!(wait.timeout, Some(Duration::ZERO));
    assert!(wait.poller.is_some());

    // A turn that may block always waits, fd or not.
    let lp = TestLoop::new();
    let wait = lp.ev().prepare(false, &mut removed);
    assert_eq!(wait.timeout, None);
    assert!(wait.poller.is_some());
}
