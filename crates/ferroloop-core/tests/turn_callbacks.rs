//! What one turn of the core's `run_once` runs: exactly the callbacks ready when its run step
//! starts (those they schedule wait for the next turn), in order: already-ready callbacks, then
//! fd callbacks, then due timers; cancelled ones skipped. Fd callbacks run on every turn while
//! their fd stays ready (level-triggered), a cancelled one is unregistered when its fd fires, and
//! the signal token is reported to the host.

mod common;

use common::host::{noop, TestLoop};
use common::pair;
use ferroloop_core::{Direction, Interest, SIGNAL_TOKEN};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;

#[test]
fn callbacks_scheduled_during_a_turn_wait_for_the_next_turn() {
    let lp = TestLoop::new();
    lp.call_soon("a", |lp| {
        lp.call_soon("a-child", |lp| {
            lp.call_soon("a-grandchild", noop);
        });
    });
    lp.call_soon("b", noop);
    lp.run_once();
    assert_eq!(lp.take_log(), ["a", "b"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["a-child"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["a-grandchild"]);
    lp.run_once();
    assert!(lp.take_log().is_empty());
}

#[test]
fn a_callback_rescheduling_itself_cannot_starve_the_poll() {
    let lp = TestLoop::new();
    fn again(lp: &TestLoop) {
        lp.call_soon("spin", again);
    }
    lp.call_soon("spin", again);
    let (a, _b) = pair();
    lp.watch(a.as_raw_fd(), Direction::Write, "writable", noop);
    lp.run_once();
    assert_eq!(lp.take_log(), ["spin", "writable"]);
    lp.run_once();
    assert_eq!(lp.take_log(), ["spin", "writable"]);
}

#[test]
fn ready_then_fd_then_due_timer_order_and_cancelled_skipped() {
    let lp = TestLoop::new();
    let (a, _b) = pair();
    lp.call_later(0.0, "timer", noop);
    lp.call_soon("soon", noop);
    let skipped = lp.call_soon("cancelled", noop);
    lp.cancel(&skipped);
    lp.watch(a.as_raw_fd(), Direction::Write, "fd", noop);
    lp.run_once();
    assert_eq!(lp.take_log(), ["soon", "fd", "timer"]);
}

/// A writer in the style of a transport's `_write_ready`: one chunk per turn, and it removes
/// itself once its buffer is empty.
#[test]
fn a_writer_drains_over_several_turns_then_unregisters() {
    let lp = TestLoop::new();
    let (a, mut b) = pair();
    let fd = a.as_raw_fd();
    let pending = Rc::new(Cell::new(3u32));
    let p = pending.clone();
    lp.watch(fd, Direction::Write, "write_ready", move |lp| {
        (&a).write_all(b"chunk").unwrap();
        p.set(p.get() - 1);
        if p.get() == 0 {
            assert!(lp.unwatch(fd, Direction::Write));
        }
    });
    for left in [2, 1, 0] {
        lp.run_once();
        assert_eq!(lp.take_log(), ["write_ready"]);
        assert_eq!(pending.get(), left);
    }
    assert!(lp.ev().fds().is_empty());
    lp.stopping.set(true);
    lp.run_once();
    assert!(lp.take_log().is_empty(), "unregistered: no more runs");
    let mut got = [0u8; 15];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"chunkchunkchunk");
}

#[test]
fn a_cancelled_fd_callback_is_unregistered_when_its_fd_fires() {
    let lp = TestLoop::new();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    let r = lp.watch(fd, Direction::Write, "writer", noop);
    lp.watch(fd, Direction::Read, "reader", noop);
    lp.cancel(&r); // cancelled directly, not removed
    lp.run_once();
    assert!(lp.take_log().is_empty());
    assert_eq!(*lp.released.borrow(), ["writer"]);
    let e = lp.ev();
    let entry = e.fds().get(fd).expect("the reader stays");
    assert!(entry.writer.is_none() && entry.reader.is_some());
    assert_eq!(
        entry.interest(),
        Interest {
            read: true,
            write: false
        }
    );
}

#[test]
fn the_signal_token_is_reported_to_the_host() {
    let lp = TestLoop::new();
    let (a, mut b) = pair();
    let poller = lp.ev().poller().unwrap().clone();
    poller
        .add(
            a.as_raw_fd(),
            SIGNAL_TOKEN,
            Interest {
                read: true,
                write: false,
            },
        )
        .unwrap();
    b.write_all(&[2]).unwrap(); // SIGINT's number, as CPython's C handler writes it
                                // The token is outside the fd table: a turn that must not block and watches no fd skips
                                // the syscall, and the signal waits for the next turn that polls.
    lp.call_soon("soon", noop);
    lp.run_once();
    assert_eq!(lp.signalled.get(), 0);
    lp.run_once();
    assert_eq!(lp.signalled.get(), 1);
    assert_eq!(lp.take_log(), ["soon"], "nothing queued for the token");
}
