//! The `sock_*` coroutines, native: `loop.sock_recv(sock, n)` & co. return a `SockOp`, a
//! coroutine-like awaitable that follows `selector_events.BaseSelectorEventLoop`'s `async def`
//! line by line (the same on 3.11, 3.12 and 3.13, so no version switch).
//!
//! * **Lazy**, like a coroutine: calling `loop.sock_recv(sock, n)` does nothing; the checks
//!   (`_check_ssl_socket`, debug mode's "the socket must be non-blocking") and the first try of
//!   the operation run on the first `send(None)` / `__next__`. When the socket answers at once the
//!   awaitable finishes right there (`StopIteration(result)`): no future, no `partial`, no epoll
//!   registration.
//! * The operation is the socket object's own method (`sock.recv(n)`, `sock.send(data)`, ...), so
//!   argument checks, timeouts, errors and their messages are the `socket` module's, exactly as
//!   the stdlib calls them.
//! * **Would block** (`BlockingIOError`/`InterruptedError`): a loop future, the fd's reader (or
//!   writer) registered once in the loop's fd table (`LoopCore::add_sock_fd_handle`, whose callback is
//!   this object's `_io_ready`), and the future's `add_done_callback(_fut_done)`, which removes
//!   the registration when the future completes any other way (cancellation), as the stdlib's
//!   `_sock_read_done`/`_sock_write_done` do. The awaitable then delegates `send`/`throw` to the
//!   future's `__await__` iterator, as `await fut` does. When `_io_ready` completes the future
//!   itself it takes its done callback back and unregisters the fd's callback at once (what that
//!   callback would have done one callback later), so the common path schedules nothing extra.
//!   After a success epoll's registration is left lingering for the next wait of the same
//!   socket object, which then makes no `epoll_ctl` call (`fd_watch.rs`, "sock_*
//!   registrations"); a cancelled or failed wait removes it for real.
//! * `sock_sendall` keeps sending from where the socket stopped (a `memoryview` slice, as the
//!   stdlib) until all is sent; `sock_connect` first awaits `loop._ensure_resolved(...)` for
//!   AF_INET/AF_INET6 sockets (for a numeric host, `_ipaddr_info`'s answer without the
//!   coroutine: `io.rs`, `ConnectFast`), then connects, and on `EINPROGRESS` waits for
//!   writability and reads `SO_ERROR` (`OSError(err, 'Connect call failed <address>')`).
//!
//! Files: this one holds the object and the coroutine protocol (`send`, `throw`, `close`, the
//! fd and future callbacks); `io.rs` the operations (checks, the first try, the wait, the
//! retries); `coro.rs` the delegation to the awaited future's iterator.
//!
//! `collections.abc.Coroutine.register(SockOp)` (`_loop.py`) makes `asyncio.iscoroutine` true, so
//! `create_task`, `ensure_future`, `wait_for` and `run_until_complete` accept it.

use crate::gil::GilCell;
use crate::handle::Handle;
use crate::loop_core::LoopCore;
use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyKeyboardInterrupt, PyRuntimeError, PyRuntimeWarning,
    PySystemExit, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{intern, PyTraverseError, PyVisit};
use std::os::fd::RawFd;

mod coro;
mod coro_method;
pub(crate) use coro_method::coroutine_method;
mod io;

use coro::{classify, iter_send, stop_iteration};

/// Which coroutine of `BaseSelectorEventLoop` an awaitable is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Recv,
    RecvInto,
    RecvFrom,
    RecvFromInto,
    SendAll,
    SendTo,
    Accept,
    Connect,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Recv => "sock_recv",
            Kind::RecvInto => "sock_recv_into",
            Kind::RecvFrom => "sock_recvfrom",
            Kind::RecvFromInto => "sock_recvfrom_into",
            Kind::SendAll => "sock_sendall",
            Kind::SendTo => "sock_sendto",
            Kind::Accept => "sock_accept",
            Kind::Connect => "sock_connect",
        }
    }

    fn is_reader(self) -> bool {
        matches!(
            self,
            Kind::Recv | Kind::RecvInto | Kind::RecvFrom | Kind::RecvFromInto | Kind::Accept
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Created, not started: nothing done yet.
    Init,
    /// `sock_connect` awaiting `loop._ensure_resolved(...)` (`sub` is that coroutine).
    Resolving,
    /// Awaiting the future (`sub` is its `__await__` iterator).
    Waiting,
    /// Finished (returned, raised or closed).
    Done,
}

struct OpState {
    stage: Stage,
    /// A Python call of this object is in progress (`ValueError: coroutine already executing`).
    running: bool,
    loop_: Option<Py<LoopCore>>,
    sock: Option<Py<PyAny>>,
    /// `n` / `buf` / `data` / `address`, by kind.
    a: Option<Py<PyAny>>,
    /// `nbytes` (recvfrom_into) / `address` (sendto) / the `memoryview` (sendall).
    b: Option<Py<PyAny>>,
    /// sendall: how much of the view is sent.
    pos: usize,
    fd: RawFd,
    fut: Option<Py<PyAny>>,
    handle: Option<Py<Handle>>,
    done_cb: Option<Py<PyAny>>,
    /// What `send`/`throw` are delegated to while suspended.
    sub: Option<Py<PyAny>>,
}

impl OpState {
    fn objects(&self) -> [Option<&Py<PyAny>>; 7] {
        [
            self.sock.as_ref(),
            self.a.as_ref(),
            self.b.as_ref(),
            self.fut.as_ref(),
            self.done_cb.as_ref(),
            self.sub.as_ref(),
            None,
        ]
    }

    /// Everything this object references, taken out (to be dropped after the borrow ends).
    fn take_all(&mut self) -> Vec<Py<PyAny>> {
        let mut v: Vec<Py<PyAny>> = [
            self.sock.take(),
            self.a.take(),
            self.b.take(),
            self.fut.take(),
            self.done_cb.take(),
            self.sub.take(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(h) = self.handle.take() {
            v.push(h.into_any());
        }
        if let Some(l) = self.loop_.take() {
            v.push(l.into_any());
        }
        v
    }
}

/// A native `sock_*` coroutine (module comment).
#[pyclass(frozen, weakref, module = "ferroloop._native", name = "SockOp")]
pub struct SockOp {
    kind: Kind,
    st: GilCell<OpState>,
}

/// The outcome of one step: a value yielded to the awaiting task, or the coroutine's result.
enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

fn is_retry(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PyBlockingIOError>(py) || e.is_instance_of::<PyInterruptedError>(py)
}

fn is_exit(py: Python<'_>, e: &PyErr) -> bool {
    e.is_instance_of::<PySystemExit>(py) || e.is_instance_of::<PyKeyboardInterrupt>(py)
}

impl SockOp {
    pub(crate) fn create(
        lp: &Bound<'_, LoopCore>,
        kind: Kind,
        sock: Py<PyAny>,
        a: Option<Py<PyAny>>,
        b: Option<Py<PyAny>>,
    ) -> SockOp {
        SockOp {
            kind,
            st: GilCell::new(OpState {
                stage: Stage::Init,
                running: false,
                loop_: Some(lp.clone().unbind()),
                sock: Some(sock),
                a,
                b,
                pos: 0,
                fd: -1,
                fut: None,
                handle: None,
                done_cb: None,
                sub: None,
            }),
        }
    }

    fn loop_<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        match &self.st.borrow(py).loop_ {
            Some(l) => Ok(l.bind(py).clone()),
            None => Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            )),
        }
    }

    fn sock<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.st.borrow(py).sock {
            Some(s) => Ok(s.bind(py).clone()),
            None => Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            )),
        }
    }

    fn arg<'py>(&self, py: Python<'py>, second: bool) -> Bound<'py, PyAny> {
        let st = self.st.borrow(py);
        let o = if second { &st.b } else { &st.a };
        match o {
            Some(o) => o.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    /// The coroutine finished: it keeps nothing alive any more (the objects are dropped after
    /// the borrow ends).
    fn finish(&self, py: Python<'_>) {
        let taken = {
            let mut st = self.st.borrow_mut(py);
            st.stage = Stage::Done;
            st.take_all()
        };
        drop(taken);
    }

    /// What the delegate answered: a yield passes through; a return ends the wait (or, for
    /// `sock_connect`, the address resolution: then the connect).
    fn after_sub(slf: &Bound<'_, Self>, r: PyResult<Step>) -> PyResult<Step> {
        let py = slf.py();
        let me = slf.get();
        match r? {
            Step::Yield(v) => Ok(Step::Yield(v)),
            Step::Return(v) => {
                let stage = me.st.borrow(py).stage;
                if stage == Stage::Resolving {
                    let resolved = v.bind(py);
                    let address = resolved.get_item(0)?.get_item(4)?;
                    let old = {
                        let mut st = me.st.borrow_mut(py);
                        st.sub = None;
                        st.stage = Stage::Init;
                        st.a.replace(address.unbind())
                    };
                    drop(old);
                    let lp = me.loop_(py)?;
                    let sock = me.sock(py)?;
                    Self::connect(slf, &lp, &sock)
                } else {
                    Ok(Step::Return(v))
                }
            }
        }
    }

    /// One step of the coroutine protocol, with "already executing" and the end handled.
    fn step(
        slf: &Bound<'_, Self>,
        f: impl FnOnce(&Bound<'_, Self>, Stage) -> PyResult<Step>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let stage = {
            let mut st = me.st.borrow_mut(py);
            if st.running {
                return Err(PyValueError::new_err("coroutine already executing"));
            }
            st.running = true;
            st.stage
        };
        let r = f(slf, stage);
        me.st.borrow_mut(py).running = false;
        match r {
            Ok(Step::Yield(v)) => Ok(v),
            Ok(Step::Return(v)) => {
                me.finish(py);
                Err(stop_iteration(v))
            }
            Err(e) => {
                // A coroutine that raised is finished; while the future's done callback is still
                // to run (a cancellation), it keeps what that callback needs (it then drops it).
                let keep = {
                    let st = me.st.borrow(py);
                    st.stage == Stage::Waiting && st.done_cb.is_some()
                };
                if keep {
                    me.finish_keep_io(py);
                } else {
                    me.finish(py);
                }
                Err(e)
            }
        }
    }

    /// Finished by an exception while waiting: the fd's callback and the future's done callback
    /// still hold what they need (`sock`, args, future); only the delegate is dropped.
    fn finish_keep_io(&self, py: Python<'_>) {
        let sub = {
            let mut st = self.st.borrow_mut(py);
            st.stage = Stage::Done;
            st.sub.take()
        };
        drop(sub);
    }

    fn resume_send(
        slf: &Bound<'_, Self>,
        value: &Bound<'_, PyAny>,
        stage: Stage,
    ) -> PyResult<Step> {
        let py = slf.py();
        match stage {
            Stage::Init => {
                if !value.is_none() {
                    return Err(PyTypeError::new_err(
                        "can't send non-None value to a just-started coroutine",
                    ));
                }
                Self::start(slf)
            }
            Stage::Resolving | Stage::Waiting => {
                let sub = slf
                    .get()
                    .st
                    .borrow(py)
                    .sub
                    .as_ref()
                    .map(|s| s.clone_ref(py));
                match sub {
                    Some(sub) => {
                        let r = iter_send(sub.bind(py), value);
                        Self::after_sub(slf, r)
                    }
                    None => Err(PyRuntimeError::new_err(
                        "cannot reuse already awaited coroutine",
                    )),
                }
            }
            Stage::Done => Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            )),
        }
    }
}

impl Drop for SockOp {
    /// Never started (neither awaited, closed nor thrown into): `RuntimeWarning: coroutine
    /// '...' was never awaited`, as CPython warns for a coroutine (without its origin, which
    /// debug mode tracks for real coroutines only).
    fn drop(&mut self) {
        let kind = self.kind;
        Python::attach(|py| {
            let never_started = self
                .st
                .borrow_for_traverse(py)
                .is_some_and(|st| st.stage == Stage::Init);
            if !never_started {
                return;
            }
            // The exception being raised, if any, is kept (a dealloc may run inside a raise).
            let saved = PyErr::take(py);
            let msg = format!(
                "coroutine 'BaseSelectorEventLoop.{}' was never awaited",
                kind.name()
            );
            if let Ok(msg) = std::ffi::CString::new(msg) {
                let category = py.get_type::<PyRuntimeWarning>();
                if let Err(e) = PyErr::warn(py, &category, &msg, 1) {
                    e.write_unraisable(py, None);
                }
            }
            if let Some(e) = saved {
                e.restore(py);
            }
        });
    }
}

#[pymethods]
impl SockOp {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let none = slf.py().None().into_bound(slf.py());
        Self::step(slf, |s, stage| Self::resume_send(s, &none, stage))
    }

    #[pyo3(signature = (value, /))]
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Self::step(slf, |s, stage| Self::resume_send(s, value, stage))
    }

    #[pyo3(signature = (typ, val=None, tb=None, /))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        Self::step(slf, |s, stage| {
            let sub = s.get().st.borrow(py).sub.as_ref().map(|x| x.clone_ref(py));
            match (stage, sub) {
                (Stage::Resolving | Stage::Waiting, Some(sub)) => {
                    let sub = sub.bind(py);
                    let args = match (val, tb) {
                        (None, None) => PyTuple::new(py, [typ])?,
                        (Some(v), None) => PyTuple::new(py, [typ, v])?,
                        (v, Some(t)) => PyTuple::new(
                            py,
                            [
                                typ.clone(),
                                v.cloned().unwrap_or_else(|| py.None().into_bound(py)),
                                t.clone(),
                            ],
                        )?,
                    };
                    let r = classify(py, sub.call_method1(intern!(py, "throw"), args));
                    Self::after_sub(s, r)
                }
                _ => {
                    // Not started, or finished: the exception is raised as given (a
                    // generator's throw), and the coroutine is finished.
                    let err = match val {
                        Some(v)
                            if !v.is_none()
                                && v.is_instance_of::<pyo3::exceptions::PyBaseException>() =>
                        {
                            PyErr::from_value(v.clone())
                        }
                        Some(v) if !v.is_none() => PyErr::from_value(typ.call1((v,))?),
                        _ => PyErr::from_value(typ.clone()),
                    };
                    if let Some(t) = tb {
                        if !t.is_none() {
                            if let Ok(t) = t.cast::<pyo3::types::PyTraceback>() {
                                err.set_traceback(py, Some(t.clone()));
                            }
                        }
                    }
                    Err(err)
                }
            }
        })
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (stage, sub) = {
            let st = me.st.borrow(py);
            (st.stage, st.sub.as_ref().map(|s| s.clone_ref(py)))
        };
        match stage {
            Stage::Init => me.finish(py),
            Stage::Done => {}
            Stage::Resolving | Stage::Waiting => {
                if me.st.borrow(py).running {
                    return Err(PyValueError::new_err("coroutine already executing"));
                }
                if let Some(sub) = sub {
                    if let Ok(close) = sub.bind(py).getattr(intern!(py, "close")) {
                        close.call0()?;
                    }
                }
                if stage == Stage::Resolving {
                    me.finish(py);
                } else {
                    me.finish_keep_io(py);
                }
            }
        }
        Ok(())
    }

    /// The fd's reader/writer callback: `_sock_recv(fut, sock, n)` & co.
    fn _io_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let fut = match &me.st.borrow(py).fut {
            Some(f) => f.bind(py).clone(),
            None => return Ok(()),
        };
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let outcome = match me.retry_io(py) {
            Ok(None) => return Ok(()),
            Ok(Some(v)) => Ok(v),
            Err(e) if is_retry(py, &e) => return Ok(()),
            Err(e) if is_exit(py, &e) => return Err(e),
            Err(e) => Err(e),
        };
        // Completed here: take the done callback back and unregister now (what the callback
        // would have done), then complete the future.
        let (lp, fd, done_cb, sock) = {
            let st = me.st.borrow(py);
            (
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.done_cb.as_ref().map(|c| c.clone_ref(py)),
                st.sock.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let succeeded = outcome.is_ok();
        if let Some(cb) = &done_cb {
            fut.call_method1(intern!(py, "remove_done_callback"), (cb,))?;
        }
        let old_cb = me.st.borrow_mut(py).done_cb.take();
        drop(old_cb);
        match outcome {
            Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        // Done waiting: after a success the registration lingers for this socket's next wait
        // (fd_watch.rs, "sock_* registrations"); after an error it goes, as in the stdlib.
        if let Some(lp) = lp {
            match sock {
                Some(sock) if succeeded => {
                    LoopCore::linger_sock_fd(lp.bind(py), fd, sock.bind(py), me.kind.is_reader())?
                }
                _ => LoopCore::remove_fd_callback(lp.bind(py), fd, me.kind.is_reader())?,
            };
        }
        Ok(())
    }

    /// The future's done callback when it completed some other way (cancelled):
    /// `_sock_read_done(fd, fut, handle=handle)` / `_sock_write_done`.
    fn _fut_done(slf: &Bound<'_, Self>, _fut: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (lp, fd, cancelled) = {
            let st = me.st.borrow(py);
            (
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.handle.as_ref().map(|h| h.get().is_cancelled()),
            )
        };
        if cancelled != Some(true) {
            if let Some(lp) = lp {
                let name = if me.kind.is_reader() {
                    intern!(py, "remove_reader")
                } else {
                    intern!(py, "remove_writer")
                };
                lp.bind(py).call_method1(name, (fd,))?;
            }
        }
        // Nothing runs this op's I/O any more: if its coroutine has ended, drop what it held.
        let old_cb = me.st.borrow_mut(py).done_cb.take();
        drop(old_cb);
        if me.st.borrow(py).stage == Stage::Done {
            me.finish(py);
        }
        Ok(())
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        self.kind.name()
    }

    #[getter]
    fn __qualname__(&self) -> String {
        format!("BaseSelectorEventLoop.{}", self.kind.name())
    }

    #[getter]
    fn cr_running(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).running
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        format!(
            "<ferroloop coroutine BaseSelectorEventLoop.{} at {:#x}>",
            slf.get().kind.name(),
            slf.as_ptr() as usize
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows this object's state (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        if let Some(st) = self.st.borrow_for_traverse(py) {
            for o in st.objects().into_iter().flatten() {
                visit.call(o)?;
            }
            if let Some(h) = &st.handle {
                visit.call(h)?;
            }
            if let Some(l) = &st.loop_ {
                visit.call(l)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = {
                let mut st = self.st.borrow_mut(py);
                st.stage = Stage::Done;
                st.take_all()
            };
            drop(taken);
        });
    }
}
