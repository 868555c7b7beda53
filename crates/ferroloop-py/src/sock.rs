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
//!   writer) registered once in the loop's fd table (`LoopCore::add_fd_handle`, whose callback is
//!   this object's `_io_ready`), and the future's `add_done_callback(_fut_done)`, which removes
//!   the registration when the future completes any other way (cancellation), as the stdlib's
//!   `_sock_read_done`/`_sock_write_done` do. The awaitable then delegates `send`/`throw` to the
//!   future's `__await__` iterator, as `await fut` does. When `_io_ready` completes the future
//!   itself it takes its done callback back and unregisters the fd at once (what that callback
//!   would have done one callback later), so the common path schedules nothing extra.
//! * `sock_sendall` keeps sending from where the socket stopped (a `memoryview` slice, as the
//!   stdlib) until all is sent; `sock_connect` first awaits `loop._ensure_resolved(...)` for
//!   AF_INET/AF_INET6 sockets, then connects, and on `EINPROGRESS` waits for writability and reads
//!   `SO_ERROR` (`OSError(err, 'Connect call failed <address>')`).
//!
//! `collections.abc.Coroutine.register(SockOp)` (`_loop.py`) makes `asyncio.iscoroutine` true, so
//! `create_task`, `ensure_future`, `wait_for` and `run_until_complete` accept it.

use crate::gil::GilCell;
use crate::handle::Handle;
use crate::loop_core::LoopCore;
use pyo3::exceptions::{
    PyBlockingIOError, PyInterruptedError, PyKeyboardInterrupt, PyOSError, PyRuntimeError,
    PyRuntimeWarning, PyStopIteration, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyMemoryView, PySlice, PyString, PyTuple};
use pyo3::{ffi, intern, PyTraverseError, PyVisit};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::os::fd::RawFd;

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

/// `ssl.SSLSocket`, or None where `ssl` cannot be imported (`base_events` sets `ssl = None`).
static SSL_SOCKET: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

/// `base_events._check_ssl_socket(sock)`.
fn check_ssl_socket(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let cls = SSL_SOCKET.get_or_init(py, || {
        py.import("ssl")
            .and_then(|m| m.getattr("SSLSocket"))
            .ok()
            .map(Bound::unbind)
    });
    if let Some(cls) = cls {
        if sock.is_instance(cls.bind(py))? {
            return Err(PyTypeError::new_err("Socket cannot be of type SSLSocket"));
        }
    }
    Ok(())
}

/// The largest `n` that `sock_recv` reads natively (larger ones go through `sock.recv(n)`).
const MAX_FAST_RECV: usize = 256 * 1024;

thread_local! {
    /// `sock_recv`'s read buffer: what arrived is copied into an exact `bytes` at once, so one
    /// buffer per thread serves every call (`sock.recv(n)` would allocate `n` bytes and shrink).
    static RECV_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_FAST_RECV].into_boxed_slice());
}

/// `socket.socket` and the `recv` it inherits from `_socket.socket`.
static SOCKET_TYPE: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

/// The outcome of one try of the operation.
enum Attempt {
    Done(Py<PyAny>),
    /// Would block (`BlockingIOError`) or interrupted (`InterruptedError`): wait for the fd.
    Again,
}

/// `sock.recv(n)` done here, when that is exactly what the call would do: `sock` is a plain
/// `socket.socket` whose class's `recv` is `_socket.socket.recv`, non-blocking
/// (`gettimeout() == 0.0`, so the socket module would make one `recv` call), and `n` is an int
/// in `0..=256 KiB`. Then: one `recv(2)` into the thread's buffer, `EINTR` retried after the
/// signal handlers ran (PEP 475, as the socket module), `EAGAIN` a wait without an exception
/// object, any other error `OSError(errno, strerror)` as the socket module raises it. `None`:
/// not applicable, call the method.
fn fast_recv(sock: &Bound<'_, PyAny>, n: &Bound<'_, PyAny>) -> Option<PyResult<Attempt>> {
    let py = sock.py();
    let (cls, recv) = SOCKET_TYPE
        .get_or_try_init(py, || -> PyResult<_> {
            let cls = py.import("socket")?.getattr("socket")?;
            let recv = py.import("_socket")?.getattr("socket")?.getattr("recv")?;
            Ok((cls.unbind(), recv.unbind()))
        })
        .ok()?;
    let ty = sock.get_type();
    if !ty.is(cls.bind(py)) {
        return None;
    }
    match ty.getattr(intern!(py, "recv")) {
        Ok(m) if m.is(recv.bind(py)) => {}
        _ => return None,
    }
    let n = n.cast::<PyInt>().ok()?.extract::<usize>().ok()?;
    if n > MAX_FAST_RECV {
        return None;
    }
    match sock.call_method0(intern!(py, "gettimeout")) {
        Ok(t) => match t.cast::<PyFloat>() {
            Ok(f) if f.value() == 0.0 => {}
            _ => return None,
        },
        Err(e) => return Some(Err(e)),
    }
    let fd: RawFd = match sock
        .call_method0(intern!(py, "fileno"))
        .and_then(|f| f.extract())
    {
        Ok(fd) => fd,
        Err(e) => return Some(Err(e)),
    };
    if fd < 0 {
        // A closed socket: what recv(-1) answers (BorrowedFd cannot hold -1).
        return Some(Err(crate::loop_state::os_error(
            std::io::Error::from_raw_os_error(Errno::BADF.raw_os_error()),
        )));
    }
    loop {
        let res = RECV_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            // Why the fd stays open for the call: it is what `sock.fileno()` returned just
            // above, with the GIL held since then; `sock` owns it and closing it needs the GIL,
            // which the syscall below never gives up.
            // SAFETY: as above, `fd` (not -1: checked above) is open for the whole borrow.
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::net::recv(bfd, &mut buf[..n], RecvFlags::empty())
                .map(|(got, _)| PyBytes::new(py, &buf[..got]).into_any().unbind())
        });
        return Some(match res {
            Ok(data) => Ok(Attempt::Done(data)),
            Err(e) if e == Errno::INTR => {
                if let Err(e) = py.check_signals() {
                    Err(e)
                } else {
                    continue;
                }
            }
            Err(e) if e == Errno::AGAIN || e == Errno::WOULDBLOCK => Ok(Attempt::Again),
            Err(e) => Err(crate::loop_state::os_error(
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )),
        });
    }
}

/// `sock.<name>(*args)`, with would-block / interrupted as `Attempt::Again`.
fn call_op<'py, A>(
    sock: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    args: A,
) -> PyResult<Attempt>
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let py = sock.py();
    match sock.call_method1(name, args) {
        Ok(v) => Ok(Attempt::Done(v.unbind())),
        Err(e) if is_retry(py, &e) => Ok(Attempt::Again),
        Err(e) => Err(e),
    }
}

/// `selector_events._ensure_fd_no_transport(fd)` for an int fd: `loop._transports` is a
/// `WeakValueDictionary`, looked up in its `data` dict (a dead reference counts as absent, as
/// `__getitem__` says); anything else goes through the loop's own method.
fn ensure_fd_no_transport(lp: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<()> {
    let py = lp.py();
    let transports = lp.getattr(intern!(py, "_transports"))?;
    let data = match transports.getattr(intern!(py, "data")) {
        Ok(d) => d,
        Err(_) => {
            lp.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
            return Ok(());
        }
    };
    let Ok(data) = data.cast_into::<PyDict>() else {
        lp.call_method1(intern!(py, "_ensure_fd_no_transport"), (fd,))?;
        return Ok(());
    };
    let Some(wr) = data.get_item(fd)? else {
        return Ok(());
    };
    let transport = wr.call0()?;
    if transport.is_none() {
        return Ok(());
    }
    if !transport
        .call_method0(intern!(py, "is_closing"))?
        .is_truthy()?
    {
        return Err(PyRuntimeError::new_err(format!(
            "File descriptor {fd} is used by transport {}",
            transport.repr()?
        )));
    }
    Ok(())
}

/// `StopIteration(value)`: the coroutine returned `value` (a tuple is one value, not the args).
fn stop_iteration(value: Py<PyAny>) -> PyErr {
    PyStopIteration::new_err((value,))
}

/// `iterator.send(value)` through `PyIter_Send` (`tp_iternext` for None, as `await` does).
fn iter_send(sub: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Step> {
    let py = sub.py();
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: the GIL is held (we have `py`); both pointers are live borrowed references for the
    // call; PyIter_Send stores a new reference in `result` for PYGEN_NEXT/PYGEN_RETURN and NULL
    // with an exception set for PYGEN_ERROR.
    let status = unsafe { ffi::PyIter_Send(sub.as_ptr(), value.as_ptr(), &mut result) };
    match status {
        ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new reference (above).
            Ok(Step::Yield(
                unsafe { Bound::from_owned_ptr(py, result) }.unbind(),
            ))
        }
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: a new reference (above).
            Ok(Step::Return(
                unsafe { Bound::from_owned_ptr(py, result) }.unbind(),
            ))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

/// The result of a Python `throw` call on a delegate: a yielded value, its return (a
/// `StopIteration`'s value) or an error.
fn classify(py: Python<'_>, r: PyResult<Bound<'_, PyAny>>) -> PyResult<Step> {
    match r {
        Ok(v) => Ok(Step::Yield(v.unbind())),
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            let v = e.value(py).getattr(intern!(py, "value"))?;
            Ok(Step::Return(v.unbind()))
        }
        Err(e) => Err(e),
    }
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

    /// The first step: the checks, then the operation tried once.
    fn start(slf: &Bound<'_, Self>) -> PyResult<Step> {
        let py = slf.py();
        let me = slf.get();
        let lp = me.loop_(py)?;
        let sock = me.sock(py)?;
        check_ssl_socket(&sock)?;
        if lp.get().debug() {
            let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
            if timeout.ne(0)? {
                return Err(PyValueError::new_err("the socket must be non-blocking"));
            }
        }
        match me.kind {
            Kind::Recv | Kind::RecvInto | Kind::RecvFrom | Kind::RecvFromInto | Kind::SendTo => {
                if me.kind == Kind::RecvFromInto {
                    let nbytes = me.arg(py, true);
                    if !nbytes.is_truthy()? {
                        let n = me.arg(py, false).len()?;
                        me.st.borrow_mut(py).b = Some(n.into_pyobject(py)?.into_any().unbind());
                    }
                }
                match me.try_io(py, &sock, true)? {
                    Attempt::Done(v) => Ok(Step::Return(v)),
                    Attempt::Again => Self::wait(slf, &lp, &sock),
                }
            }
            Kind::SendAll => {
                let data = me.arg(py, false);
                let n = match sock.call_method1(intern!(py, "send"), (&data,)) {
                    Ok(n) => n,
                    Err(e) if is_retry(py, &e) => PyInt::new(py, 0).into_any(),
                    Err(e) => return Err(e),
                };
                if n.eq(data.len()?)? {
                    return Ok(Step::Return(py.None()));
                }
                let view = PyMemoryView::from(&data)?;
                let pos: usize = n.extract()?;
                {
                    let mut st = me.st.borrow_mut(py);
                    st.b = Some(view.into_any().unbind());
                    st.pos = pos;
                }
                Self::wait(slf, &lp, &sock)
            }
            Kind::Accept => {
                let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
                match Self::accept(&sock) {
                    Ok(v) => Ok(Step::Return(v)),
                    Err(e) if is_retry(py, &e) => Self::wait_fd(slf, &lp, fd),
                    Err(e) => Err(e),
                }
            }
            Kind::Connect => {
                let family: i64 = sock.getattr(intern!(py, "family"))?.extract()?;
                if family == libc_af::INET || family == libc_af::INET6 {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "family"), sock.getattr(intern!(py, "family"))?)?;
                    kwargs.set_item(intern!(py, "type"), sock.getattr(intern!(py, "type"))?)?;
                    kwargs.set_item(intern!(py, "proto"), sock.getattr(intern!(py, "proto"))?)?;
                    kwargs.set_item(intern!(py, "loop"), &lp)?;
                    let coro = lp
                        .as_any()
                        .getattr(intern!(py, "_ensure_resolved"))?
                        .call((me.arg(py, false),), Some(&kwargs))?;
                    {
                        let mut st = me.st.borrow_mut(py);
                        st.sub = Some(coro.clone().unbind());
                        st.stage = Stage::Resolving;
                    }
                    let r = iter_send(&coro, &py.None().into_bound(py));
                    Self::after_sub(slf, r)
                } else {
                    Self::connect(slf, &lp, &sock)
                }
            }
        }
    }

    /// `conn, address = sock.accept(); conn.setblocking(False)`.
    fn accept(sock: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = sock.py();
        let pair = sock.call_method0(intern!(py, "accept"))?;
        let (conn, address): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
        conn.call_method1(intern!(py, "setblocking"), (false,))?;
        Ok(PyTuple::new(py, [conn, address])?.into_any().unbind())
    }

    /// `_sock_connect(fut, sock, address)`: connect now, or wait for writability.
    fn connect(
        slf: &Bound<'_, Self>,
        lp: &Bound<'_, LoopCore>,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<Step> {
        let py = slf.py();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let address = slf.get().arg(py, false);
        match sock.call_method1(intern!(py, "connect"), (address,)) {
            Ok(_) => Ok(Step::Return(py.None())),
            Err(e) if is_retry(py, &e) => Self::wait_fd(slf, lp, fd),
            Err(e) => Err(e),
        }
    }

    /// Would block: the fd of `sock.fileno()` is watched (after the first try, as the stdlib).
    fn wait(
        slf: &Bound<'_, Self>,
        lp: &Bound<'_, LoopCore>,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<Step> {
        let py = slf.py();
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        Self::wait_fd(slf, lp, fd)
    }

    /// A future; the fd's reader/writer (`_io_ready`); the future's done callback (`_fut_done`);
    /// then `await fut`.
    fn wait_fd(slf: &Bound<'_, Self>, lp: &Bound<'_, LoopCore>, fd: RawFd) -> PyResult<Step> {
        let py = slf.py();
        let me = slf.get();
        let fut = LoopCore::create_future(lp)?;
        ensure_fd_no_transport(lp.as_any(), fd)?;
        let cb = slf.getattr(intern!(py, "_io_ready"))?;
        let handle = LoopCore::add_fd_handle(lp, fd, cb, PyTuple::empty(py), me.kind.is_reader())?;
        let done_cb = slf.getattr(intern!(py, "_fut_done"))?;
        fut.call_method1(intern!(py, "add_done_callback"), (&done_cb,))?;
        let sub = fut.call_method0(intern!(py, "__await__"))?;
        {
            let mut st = me.st.borrow_mut(py);
            st.fd = fd;
            st.fut = Some(fut.unbind());
            st.handle = Some(handle);
            st.done_cb = Some(done_cb.unbind());
            st.sub = Some(sub.clone().unbind());
            st.stage = Stage::Waiting;
        }
        let r = iter_send(&sub, &py.None().into_bound(py));
        Self::after_sub(slf, r)
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

    /// The operation retried from the fd's callback; `None` when it would still block.
    fn retry_io(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let sock = self.sock(py)?;
        match self.kind {
            Kind::Recv | Kind::RecvInto | Kind::RecvFrom | Kind::RecvFromInto | Kind::SendTo => {
                match self.try_io(py, &sock, false)? {
                    Attempt::Done(v) => Ok(Some(v)),
                    Attempt::Again => Ok(None),
                }
            }
            Kind::Accept => Self::accept(&sock).map(Some),
            Kind::SendAll => {
                let view = self.arg(py, true);
                let start = self.st.borrow(py).pos;
                let slice = PySlice::new(py, start as isize, isize::MAX, 1);
                let n: usize = sock
                    .call_method1(intern!(py, "send"), (view.get_item(slice)?,))?
                    .extract()?;
                let pos = start + n;
                if pos == view.len()? {
                    return Ok(Some(py.None()));
                }
                self.st.borrow_mut(py).pos = pos;
                Ok(None)
            }
            Kind::Connect => {
                let err: i64 = sock
                    .call_method1(
                        intern!(py, "getsockopt"),
                        (libc_af::SOL_SOCKET, libc_af::SO_ERROR),
                    )?
                    .extract()?;
                if err != 0 {
                    let address = self.arg(py, false);
                    let msg = format!("Connect call failed {}", address.str()?);
                    let exc = py.get_type::<PyOSError>().call1((err, msg))?;
                    return Err(PyErr::from_value(exc));
                }
                Ok(Some(py.None()))
            }
        }
    }

    /// One try of a receive (or `sendto`): the first one (`sock_sendto` passes no flags) or one
    /// from the fd's callback (`sock.sendto(data, 0, address)`, as `_sock_sendto`).
    fn try_io(&self, py: Python<'_>, sock: &Bound<'_, PyAny>, first: bool) -> PyResult<Attempt> {
        match self.kind {
            Kind::Recv => {
                let n = self.arg(py, false);
                if let Some(r) = fast_recv(sock, &n) {
                    return r;
                }
                call_op(sock, intern!(py, "recv"), (n,))
            }
            Kind::RecvInto => call_op(sock, intern!(py, "recv_into"), (self.arg(py, false),)),
            Kind::RecvFrom => call_op(sock, intern!(py, "recvfrom"), (self.arg(py, false),)),
            Kind::RecvFromInto => call_op(
                sock,
                intern!(py, "recvfrom_into"),
                (self.arg(py, false), self.arg(py, true)),
            ),
            Kind::SendTo if first => call_op(
                sock,
                intern!(py, "sendto"),
                (self.arg(py, false), self.arg(py, true)),
            ),
            Kind::SendTo => call_op(
                sock,
                intern!(py, "sendto"),
                (self.arg(py, false), 0, self.arg(py, true)),
            ),
            _ => Err(PyRuntimeError::new_err("not a receive")),
        }
    }
}

/// Constants of `<sys/socket.h>` on Linux (the only platform ferroloop supports).
mod libc_af {
    pub const INET: i64 = 2;
    pub const INET6: i64 = 10;
    pub const SOL_SOCKET: i64 = 1;
    pub const SO_ERROR: i64 = 4;
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
        let (lp, fd, done_cb) = {
            let st = me.st.borrow(py);
            (
                st.loop_.as_ref().map(|l| l.clone_ref(py)),
                st.fd,
                st.done_cb.as_ref().map(|c| c.clone_ref(py)),
            )
        };
        if let Some(cb) = &done_cb {
            fut.call_method1(intern!(py, "remove_done_callback"), (cb,))?;
        }
        let old_cb = me.st.borrow_mut(py).done_cb.take();
        drop(old_cb);
        match outcome {
            Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        if let Some(lp) = lp {
            LoopCore::remove_fd_callback(lp.bind(py), fd, me.kind.is_reader())?;
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
