//! A loop driven by the core's own turn (`run_once`) with plain closures as callbacks and a
//! manual clock: what the Python binding does with handles, minus Python.
//!
//! A blocking wait never sleeps: [`TestLoop`] records its timeout, moves the manual clock forward
//! by it (as if the wait had timed out) and polls epoll with a zero timeout instead.

use ferroloop_core::{run_once, Callback, Direction, EventLoop, Events, Host, ManualClock, Poller};
use std::cell::{Cell, RefCell, RefMut};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

/// What a test callback does when run: it gets the loop, to schedule more.
pub type Body = Box<dyn FnMut(&TestLoop)>;

/// A callback: a name for the run log, a closure, and the flags the loop reads.
pub struct Cb {
    pub name: String,
    pub cancelled: Cell<bool>,
    /// In the timer heap (set by `call_later`, cleared by the heap's `set_unscheduled`).
    pub scheduled: Cell<bool>,
    body: RefCell<Option<Body>>,
}

/// The loop's reference to a callback (the binding's `HandleRef`).
#[derive(Clone)]
pub struct CbRef(pub Rc<Cb>);

impl Callback for CbRef {
    fn is_cancelled(&self) -> bool {
        self.0.cancelled.get()
    }
    fn set_unscheduled(&self) {
        self.0.scheduled.set(false);
    }
}

/// The test's embedder of an [`EventLoop`].
pub struct TestLoop {
    pub ev: RefCell<EventLoop<CbRef, ManualClock>>,
    events: RefCell<Events>,
    pub stopping: Cell<bool>,
    /// Names of the callbacks run, in order.
    pub log: RefCell<Vec<String>>,
    /// The timeout of every wait that could block (zero-timeout polls are not recorded).
    pub waits: RefCell<Vec<Option<Duration>>>,
    /// Names of the callbacks the loop let go of for good (`Host::release`).
    pub released: RefCell<Vec<String>>,
    /// How many times the signal token fired (`Host::signalled`).
    pub signalled: Cell<u32>,
}

/// The manual clock's reading when a test starts.
pub const START: f64 = 1000.0;
/// The clock resolution the tests use (a timer due within it of now runs now).
pub const RESOLUTION: f64 = 1e-9;

impl TestLoop {
    pub fn new() -> Self {
        Self {
            ev: RefCell::new(EventLoop::new(
                Poller::new().expect("poller"),
                ManualClock::new(START),
                RESOLUTION,
            )),
            events: RefCell::new(Events::new()),
            stopping: Cell::new(false),
            log: RefCell::default(),
            waits: RefCell::default(),
            released: RefCell::default(),
            signalled: Cell::new(0),
        }
    }

    pub fn ev(&self) -> RefMut<'_, EventLoop<CbRef, ManualClock>> {
        self.ev.borrow_mut()
    }

    pub fn now(&self) -> f64 {
        use ferroloop_core::Clock;
        self.ev.borrow().clock().now()
    }

    pub fn advance(&self, secs: f64) {
        self.ev.borrow().clock().advance(secs);
    }

    fn cb(name: &str, body: impl FnMut(&TestLoop) + 'static) -> CbRef {
        CbRef(Rc::new(Cb {
            name: name.to_owned(),
            cancelled: Cell::new(false),
            scheduled: Cell::new(false),
            body: RefCell::new(Some(Box::new(body))),
        }))
    }

    /// `call_soon`: a callback that logs its name and then runs `body`.
    pub fn call_soon(&self, name: &str, body: impl FnMut(&TestLoop) + 'static) -> CbRef {
        let cb = Self::cb(name, body);
        self.ev().call_soon(cb.clone());
        cb
    }

    /// `call_later`.
    pub fn call_later(
        &self,
        delay: f64,
        name: &str,
        body: impl FnMut(&TestLoop) + 'static,
    ) -> CbRef {
        let when = self.now() + delay;
        self.call_at(when, name, body)
    }

    /// `call_at`.
    pub fn call_at(&self, when: f64, name: &str, body: impl FnMut(&TestLoop) + 'static) -> CbRef {
        let cb = Self::cb(name, body);
        cb.0.scheduled.set(true);
        self.ev().call_at(when, cb.clone());
        cb
    }

    /// `handle.cancel()`: a timer still in the heap counts towards compaction.
    pub fn cancel(&self, cb: &CbRef) {
        if !cb.0.cancelled.replace(true) && cb.0.scheduled.get() {
            self.ev().timer_cancelled();
        }
    }

    /// `add_reader`/`add_writer`; the callback it replaced is cancelled, as in selector_events.
    pub fn watch(
        &self,
        fd: RawFd,
        dir: Direction,
        name: &str,
        body: impl FnMut(&TestLoop) + 'static,
    ) -> CbRef {
        let cb = Self::cb(name, body);
        let res = self.ev().set_fd(fd, dir, cb.clone());
        match res {
            Ok(Some(old)) => old.0.cancelled.set(true),
            Ok(None) => {}
            Err((e, _)) => panic!("set_fd({fd}, {dir:?}): {e}"),
        }
        cb
    }

    /// `remove_reader`/`remove_writer`: true when there was one (now cancelled).
    pub fn unwatch(&self, fd: RawFd, dir: Direction) -> bool {
        let res = self.ev().remove_fd(fd, dir);
        match res {
            Ok(Some(old)) => {
                old.0.cancelled.set(true);
                true
            }
            Ok(None) => false,
            Err((e, _)) => panic!("remove_fd({fd}, {dir:?}): {e}"),
        }
    }

    /// One turn of the core's `run_once`.
    pub fn run_once(&self) {
        run_once(self).expect("turn");
    }

    /// The names run since the last call.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

impl Host for TestLoop {
    type Callback = CbRef;
    type Clock = ManualClock;
    type Error = String;
    type Events<'a> = RefMut<'a, Events>;

    fn with_loop<R>(&self, f: impl FnOnce(&mut EventLoop<CbRef, ManualClock>) -> R) -> R {
        f(&mut self.ev.borrow_mut())
    }

    fn stopping(&self) -> bool {
        self.stopping.get()
    }

    fn events(&self) -> RefMut<'_, Events> {
        self.events.borrow_mut()
    }

    fn wait(
        &self,
        poller: &Poller,
        events: &mut Events,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        self.waits.borrow_mut().push(timeout);
        if let Some(t) = timeout {
            // The loop is not borrowed during the wait: the host may touch it.
            self.advance(t.as_secs_f64());
        }
        poller.wait(events, Some(Duration::ZERO))
    }

    fn clone_callback(&self, cb: &CbRef) -> CbRef {
        cb.clone()
    }

    fn run(&self, cb: &CbRef) -> Result<(), String> {
        self.log.borrow_mut().push(cb.0.name.clone());
        // Taken out while it runs, so that it may reach its own `Cb` (an fd callback runs again
        // on later turns).
        let body = cb.0.body.borrow_mut().take();
        if let Some(mut body) = body {
            body(self);
            cb.0.body.borrow_mut().get_or_insert(body);
        }
        Ok(())
    }

    fn done(&self, _cb: &CbRef) {}

    fn release(&self, cb: &CbRef) {
        self.released.borrow_mut().push(cb.0.name.clone());
    }

    fn check_signals(&self) -> Result<(), String> {
        Ok(())
    }

    fn signalled(&self) -> Result<(), String> {
        self.signalled.set(self.signalled.get() + 1);
        Ok(())
    }

    fn io_error(&self, e: io::Error) -> String {
        e.to_string()
    }
}

/// A callback body that does nothing (the run log records it).
pub fn noop(_: &TestLoop) {}
