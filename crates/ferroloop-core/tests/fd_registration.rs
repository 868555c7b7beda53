//! The fd table keeps epoll's registrations in step with its callbacks: `add` on an fd's first
//! callback, `modify` when one is added or removed while the other stays, `delete` when both are
//! gone; ENOENT on `modify` (fd closed and its number reused) retried as `add`; a refused
//! registration undone in the table; ENOENT/EBADF on removal tolerated.

mod common;

use common::host::{noop, TestLoop};
use common::{pair, Item, BOTH, READ, WRITE};
use ferroloop_core::{Direction, FdTable, Interest, Registry};
use std::cell::RefCell;
use std::io;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

/// An epoll double that records every call and answers from a script (default: success).
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
    /// Errors to answer, in order, before succeeding again: `(call name, errno)`.
    fail: RefCell<Vec<(&'static str, i32)>>,
}

impl Recorder {
    fn answer(&self, call: &'static str) -> io::Result<()> {
        let mut fail = self.fail.borrow_mut();
        if fail.first().is_some_and(|(c, _)| *c == call) {
            let (_, errno) = fail.remove(0);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

fn show(i: Interest) -> &'static str {
    match (i.read, i.write) {
        (true, true) => "RW",
        (true, false) => "R",
        (false, true) => "W",
        (false, false) => "-",
    }
}

impl Registry for Recorder {
    fn add(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("add {fd} {}", show(interest)));
        self.answer("add")
    }
    fn modify(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("mod {fd} {}", show(interest)));
        self.answer("mod")
    }
    fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.calls.borrow_mut().push(format!("del {fd}"));
        self.answer("del")
    }
}

fn item(id: u32) -> Item {
    Item {
        id,
        cancelled: Rc::default(),
        scheduled: Rc::default(),
        unscheduled_calls: Rc::default(),
    }
}

#[test]
fn reader_then_writer_then_removals_update_the_interest() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    assert!(t.set(&reg, 7, Direction::Read, item(1)).unwrap().is_none());
    assert!(t.set(&reg, 7, Direction::Write, item(2)).unwrap().is_none());
    assert_eq!(reg.take(), ["add 7 R", "mod 7 RW"]);
    assert_eq!(t.get(7).unwrap().interest(), BOTH);

    let r = t.remove(Some(&reg), 7, Direction::Read).unwrap().unwrap();
    assert_eq!(r.id, 1);
    assert_eq!(reg.take(), ["mod 7 W"]);
    assert_eq!(t.get(7).unwrap().interest(), WRITE);

    let w = t.remove(Some(&reg), 7, Direction::Write).unwrap().unwrap();
    assert_eq!(w.id, 2);
    assert_eq!(reg.take(), ["del 7"], "the last callback gone: deleted");
    assert!(t.get(7).is_none() && t.is_empty());

    assert!(t.remove(Some(&reg), 7, Direction::Write).unwrap().is_none());
    assert!(reg.take().is_empty(), "nothing to remove: no syscall");
}

#[test]
fn replacing_a_callback_hands_back_the_old_one() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 3, Direction::Read, item(1)).unwrap();
    let old = t.set(&reg, 3, Direction::Read, item(2)).unwrap();
    assert_eq!(old.map(|o| o.id), Some(1));
    assert_eq!(reg.take(), ["add 3 R", "mod 3 R"]);
    assert_eq!(t.get(3).unwrap().reader.as_ref().map(|r| r.id), Some(2));
}

#[test]
fn a_reused_fd_number_is_registered_again() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 5, Direction::Read, item(1)).unwrap();
    reg.take();
    reg.fail.borrow_mut().push(("mod", libc::ENOENT));
    t.set(&reg, 5, Direction::Write, item(2)).unwrap();
    assert_eq!(reg.take(), ["mod 5 RW", "add 5 RW"]);
}

#[test]
fn a_refused_registration_leaves_the_table_as_it_was() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    reg.fail.borrow_mut().push(("add", libc::EPERM));
    let (e, back) = t.set(&reg, 9, Direction::Read, item(1)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert_eq!(back.id, 1);
    assert!(t.is_empty());

    t.set(&reg, 9, Direction::Read, item(2)).unwrap();
    reg.fail.borrow_mut().push(("mod", libc::EBADF));
    let (_, back) = t.set(&reg, 9, Direction::Write, item(3)).unwrap_err();
    assert_eq!(back.id, 3);
    let e = t.get(9).unwrap();
    assert_eq!(e.reader.as_ref().map(|r| r.id), Some(2));
    assert!(e.writer.is_none());
}

#[test]
fn removal_tolerates_a_closed_fd() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 4, Direction::Read, item(1)).unwrap();
    t.set(&reg, 4, Direction::Write, item(2)).unwrap();
    reg.fail.borrow_mut().push(("mod", libc::EBADF));
    assert!(t.remove(Some(&reg), 4, Direction::Read).unwrap().is_some());
    reg.fail.borrow_mut().push(("del", libc::ENOENT));
    assert!(t.remove(Some(&reg), 4, Direction::Write).unwrap().is_some());
    assert!(t.is_empty());

    // Any other modify error is reported, with the callback (out of the table all the same).
    t.set(&reg, 4, Direction::Read, item(3)).unwrap();
    t.set(&reg, 4, Direction::Write, item(4)).unwrap();
    reg.fail.borrow_mut().push(("mod", libc::ENOMEM));
    let (e, cb) = t.remove(Some(&reg), 4, Direction::Read).unwrap_err();
    assert_eq!((e.raw_os_error(), cb.id), (Some(libc::ENOMEM), 3));
    assert!(t.get(4).unwrap().reader.is_none());
}

/// The same sequence against the real epoll, observed through the callbacks a turn queues: a
/// connected socket that is both readable and writable.
#[test]
fn epoll_interest_follows_the_table() {
    let lp = TestLoop::new();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();

    lp.watch(fd, Direction::Read, "reader", noop);
    lp.run_once();
    assert_eq!(lp.take_log(), ["reader"]);

    lp.watch(fd, Direction::Write, "writer", noop);
    lp.run_once();
    assert_eq!(lp.take_log(), ["reader", "writer"]);

    assert!(lp.unwatch(fd, Direction::Read));
    lp.run_once();
    assert_eq!(lp.take_log(), ["writer"]);

    assert!(lp.unwatch(fd, Direction::Write));
    assert!(lp.ev().fds().is_empty());
    assert_deleted_from_epoll(&lp, fd);
    lp.stopping.set(true);
    lp.run_once();
    assert!(lp.take_log().is_empty());
}

/// `fd` is no longer registered with the loop's epoll: registering it afresh succeeds (it would
/// fail with EEXIST otherwise); the registration made here is deleted again.
fn assert_deleted_from_epoll(lp: &TestLoop, fd: RawFd) {
    let poller = lp.ev().poller().unwrap().clone();
    poller
        .add(fd, fd as u64, READ)
        .expect("fd no longer registered");
    poller.delete(fd).unwrap();
}

#[test]
fn a_suspended_reader_lingers_and_resumes_without_a_syscall() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 6, Direction::Read, item(1)).unwrap();
    reg.take();
    let old = t.suspend(6, Direction::Read).unwrap();
    assert_eq!(old.id, 1);
    assert!(reg.take().is_empty(), "suspending makes no syscall");
    let e = t.get(6).unwrap();
    assert!(e.reader.is_none(), "the reader is out of the table");
    assert_eq!(e.registered(), READ, "epoll still watches the fd");
    assert!(t
        .resume(&reg, 6, Direction::Read, item(2))
        .unwrap()
        .is_none());
    assert!(
        reg.take().is_empty(),
        "resuming while it lingers makes no syscall"
    );
    assert_eq!(t.get(6).unwrap().reader.as_ref().map(|r| r.id), Some(2));
    assert!(t.get(6).unwrap().lingering().is_empty());
}

#[test]
fn a_lingering_fd_reported_ready_twice_is_deregistered() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 6, Direction::Read, item(1)).unwrap();
    t.suspend(6, Direction::Read).unwrap();
    reg.take();
    assert!(
        !t.linger_hit(6, false, true),
        "a write report does not count for a read linger"
    );
    assert!(!t.linger_hit(6, true, false), "the first report is ignored");
    assert!(t.linger_hit(6, true, false), "the second one lapses it");
    t.lapse(&reg, 6);
    assert_eq!(reg.take(), ["del 6"]);
    assert!(t.is_empty());
    // Resuming now registers for real.
    t.resume(&reg, 6, Direction::Read, item(2)).unwrap();
    assert_eq!(reg.take(), ["add 6 R"]);

    // With a writer registered, the lapse keeps the writer's interest.
    t.set(&reg, 6, Direction::Write, item(3)).unwrap();
    t.suspend(6, Direction::Read).unwrap();
    reg.take();
    t.linger_hit(6, true, true);
    assert!(t.linger_hit(6, true, true));
    t.lapse(&reg, 6);
    assert_eq!(reg.take(), ["mod 6 W"]);
}

#[test]
fn any_other_change_drops_what_lingers() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 8, Direction::Read, item(1)).unwrap();
    t.suspend(8, Direction::Read).unwrap();
    reg.take();
    // Removing the (already suspended) reader deregisters for real, and reports no callback.
    assert!(t.remove(Some(&reg), 8, Direction::Read).unwrap().is_none());
    assert_eq!(reg.take(), ["del 8"]);
    assert!(t.is_empty());

    // A plain set always makes its syscall (the fd may have been closed and its number reused).
    t.set(&reg, 8, Direction::Read, item(2)).unwrap();
    t.suspend(8, Direction::Read).unwrap();
    reg.take();
    t.set(&reg, 8, Direction::Read, item(3)).unwrap();
    assert_eq!(reg.take(), ["mod 8 R"]);
    assert!(t.get(8).unwrap().lingering().is_empty());
}

#[test]
fn the_owner_replacing_its_callback_makes_no_syscall() {
    let reg = Recorder::default();
    let mut t = FdTable::new();
    t.set(&reg, 9, Direction::Write, item(1)).unwrap();
    reg.take();
    let old = t.resume(&reg, 9, Direction::Write, item(2)).unwrap();
    assert_eq!(old.map(|o| o.id), Some(1));
    assert!(reg.take().is_empty());
    // Not registered at all: resume is a plain set.
    t.resume(&reg, 10, Direction::Read, item(3)).unwrap();
    assert_eq!(reg.take(), ["add 10 R"]);
}

/// The loop's view of a lingering registration (what the binding's `sock_*` waits check before
/// trusting one): `fd_lingers` while only the suspended interest is left, not once a callback
/// is back or the interest lapsed; `lapse_fd` deletes it from epoll for real.
#[test]
fn the_loop_reports_and_lapses_a_lingering_registration() {
    let lp = TestLoop::new();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    assert!(
        !lp.ev().fd_lingers(fd, Direction::Read),
        "not watched at all"
    );
    lp.watch(fd, Direction::Read, "reader", noop);
    assert!(
        !lp.ev().fd_lingers(fd, Direction::Read),
        "a callback is registered"
    );
    let old = lp.ev().suspend_fd(fd, Direction::Read);
    assert!(old.is_some());
    assert!(lp.ev().fd_lingers(fd, Direction::Read));
    assert!(
        !lp.ev().fd_lingers(fd, Direction::Write),
        "only the suspended direction"
    );
    lp.ev().lapse_fd(fd);
    assert!(!lp.ev().fd_lingers(fd, Direction::Read));
    assert!(lp.ev().fds().is_empty());
    assert_deleted_from_epoll(&lp, fd);
    // A lapse with nothing lingering changes nothing.
    lp.watch(fd, Direction::Read, "reader", noop);
    lp.ev().lapse_fd(fd);
    assert!(lp.ev().fds().get(fd).is_some_and(|e| e.reader.is_some()));
    assert!(lp.unwatch(fd, Direction::Read));
}
