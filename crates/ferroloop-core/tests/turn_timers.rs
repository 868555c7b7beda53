//! Timers through whole turns of the core's `run_once`, on a manual clock: they run in deadline
//! order across turns (FIFO among equal deadlines), only once due (`when < now + resolution`),
//! and cancelled ones are purged from the top of the heap, or compacted away once they are more
//! than half of over 100, and released.

mod common;

use common::host::{noop, TestLoop, RESOLUTION, START};

#[test]
fn timers_run_in_deadline_order_across_turns() {
    let lp = TestLoop::new();
    lp.call_later(3.0, "t3", noop);
    lp.call_later(1.0, "t1", noop);
    lp.call_later(2.0, "t2a", noop);
    lp.call_later(2.0, "t2b", noop);
    lp.call_later(0.0, "t0", noop);

    // Each blocking wait moves the manual clock to the earliest deadline.
    lp.run_once();
    assert_eq!(lp.take_log(), ["t0"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["t1"]);
    assert_eq!(lp.now(), START + 1.0);
    lp.run_once();
    assert_eq!(
        lp.take_log(),
        ["t2a", "t2b"],
        "equal deadlines: first scheduled first"
    );
    lp.run_once();
    assert_eq!(lp.take_log(), ["t3"]);
    assert!(lp.ev().timers().is_empty());
}

#[test]
fn a_timer_runs_only_once_due() {
    let lp = TestLoop::new();
    lp.call_at(START + 5.0, "later", noop);
    // Due within the clock resolution of now: runs now (CPython's rule).
    lp.call_at(START + RESOLUTION / 2.0, "within-resolution", noop);
    lp.stopping.set(true); // the turn must not block, so the clock does not move
    lp.run_once();
    assert_eq!(lp.take_log(), ["within-resolution"]);
    lp.advance(4.0);
    lp.run_once();
    assert!(lp.take_log().is_empty());
    lp.advance(1.0);
    lp.run_once();
    assert_eq!(lp.take_log(), ["later"]);
}

#[test]
fn timers_scheduled_by_a_timer_wait_for_their_own_deadline() {
    let lp = TestLoop::new();
    lp.call_later(1.0, "first", |lp| {
        lp.call_later(0.0, "zero-delay", noop);
        lp.call_later(1.0, "one-second", noop);
    });
    lp.run_once();
    assert_eq!(lp.take_log(), ["first"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["zero-delay"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["one-second"]);
    assert_eq!(lp.now(), START + 2.0);
}

#[test]
fn cancelled_timers_at_the_top_are_purged_and_released() {
    let lp = TestLoop::new();
    let a = lp.call_later(1.0, "a", noop);
    let b = lp.call_later(2.0, "b", noop);
    lp.call_later(3.0, "c", noop);
    let d = lp.call_later(4.0, "d", noop);
    lp.cancel(&a);
    lp.cancel(&b);
    lp.cancel(&d); // not at the top: stays until it surfaces
    assert_eq!(lp.ev().timers().cancelled(), 3);

    lp.run_once();
    assert_eq!(*lp.released.borrow(), ["a", "b"]);
    assert!(!a.0.scheduled.get() && !b.0.scheduled.get());
    // The wait went to the first live timer, not to a cancelled one.
    assert_eq!(
        lp.waits.borrow()[0],
        Some(std::time::Duration::from_secs(3))
    );
    assert_eq!(lp.take_log(), ["c"]);
    assert_eq!(lp.ev().timers().len(), 1);

    lp.run_once();
    assert_eq!(*lp.released.borrow(), ["a", "b", "d"]);
    assert!(lp.ev().timers().is_empty());
    assert_eq!(lp.ev().timers().cancelled(), 0);
    assert!(lp.take_log().is_empty());
}

#[test]
fn cancelled_timers_are_compacted_when_they_pile_up() {
    let lp = TestLoop::new();
    let mut handles = Vec::new();
    for i in 0..150 {
        handles.push(lp.call_later(10.0 + i as f64, &format!("t{i}"), noop));
    }
    // 101 of 150 cancelled, none at the top: more than half of over 100.
    for h in handles.iter().skip(1).take(101) {
        lp.cancel(h);
    }
    lp.stopping.set(true);
    lp.run_once();
    assert_eq!(lp.released.borrow().len(), 101, "one compaction pass");
    assert_eq!(lp.ev().timers().len(), 49);
    assert_eq!(lp.ev().timers().cancelled(), 0);

    // Below the threshold, cancelled entries wait until they reach the top.
    let lp = TestLoop::new();
    let mut handles = Vec::new();
    for i in 0..150 {
        handles.push(lp.call_later(10.0 + i as f64, &format!("t{i}"), noop));
    }
    for h in handles.iter().skip(1).take(75) {
        lp.cancel(h);
    }
    lp.stopping.set(true);
    lp.run_once();
    assert!(lp.released.borrow().is_empty());
    assert_eq!(lp.ev().timers().len(), 150);
    assert_eq!(lp.ev().timers().cancelled(), 75);
}

#[test]
fn a_timer_cancelled_after_it_came_due_is_skipped_not_counted() {
    let lp = TestLoop::new();
    let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
    let s = slot.clone();
    // Both come due in the same turn; the first cancels the second, already in the ready queue.
    lp.call_later(1.0, "canceller", move |lp| {
        lp.cancel(s.borrow().as_ref().expect("scheduled"));
    });
    *slot.borrow_mut() = Some(lp.call_later(1.0, "victim", noop));
    lp.advance(2.0);
    lp.run_once();
    assert_eq!(
        lp.take_log(),
        ["canceller"],
        "the cancelled timer is skipped"
    );
    assert_eq!(
        lp.ev().timers().cancelled(),
        0,
        "out of the heap: not counted"
    );
}
