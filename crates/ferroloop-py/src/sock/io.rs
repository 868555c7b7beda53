//! The `sock_*` operations: the stdlib's checks, the first try, the wait for the fd, and the
//! retries from its callback (the module comment of `sock/mod.rs`).

use super::coro::iter_send;
use super::{is_retry, Kind, SockOp, Stage, Step};
use crate::loop_core::LoopCore;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyMemoryView, PySlice, PyString, PyTuple};
use rustix::io::Errno;
use rustix::net::RecvFlags;
use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::os::fd::RawFd;

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

/// `(socket.socket, _socket.socket.recv)`, looked up once.
fn socket_type(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    SOCKET_TYPE.get_or_try_init(py, || {
        let cls = py.import("socket")?.getattr("socket")?;
        let recv = py.import("_socket")?.getattr("socket")?.getattr("recv")?;
        Ok((cls.unbind(), recv.unbind()))
    })
}

/// `sock_connect`'s resolution step without its coroutine, when it is known to finish at once.
///
/// The stdlib's `sock_connect` awaits `self._ensure_resolved(address, family=sock.family,
/// type=sock.type, proto=sock.proto, loop=self)` for an AF_INET/AF_INET6 socket. For an address
/// whose host is already numeric (what `create_connection` hands it, after its own resolution)
/// that coroutine returns `[_ipaddr_info(host, port, family, type, proto, *address[2:])]` without
/// suspending; `socket.socket`'s `family` and `type` properties each build an enum member on the
/// way (three Python frames apiece), and the coroutine is one more object and frame. Here, for
/// an exact `socket.socket`, an exact tuple of at least two items and the stock
/// `_ensure_resolved` (not replaced on the loop's class or instance), `base_events._ipaddr_info`
/// (read from the module at each call, so a patch of it takes effect) is called directly with
/// the socket's raw `_socket.socket` fields, which the enums only wrap: equal values, and the
/// returned address, the only part used, does not contain them. When it answers `None` (a
/// hostname) the coroutine runs as before, so `getaddrinfo` is reached exactly as on the stock
/// loop. Errors from `_ipaddr_info` propagate as they would from inside the coroutine.
struct ConnectFast {
    /// `_socket.socket`'s getset descriptors `family`, `type`, `proto`.
    raw: [Py<PyAny>; 3],
    /// `base_events.BaseEventLoop._ensure_resolved` (ferroloop's loop borrows it).
    ensure_resolved: Py<PyAny>,
    base_events: Py<PyAny>,
}

#[derive(Clone, Copy)]
enum Raw {
    Family = 0,
    Type = 1,
    Proto = 2,
}

static CONNECT_FAST: PyOnceLock<ConnectFast> = PyOnceLock::new();

impl ConnectFast {
    fn get(py: Python<'_>) -> PyResult<&ConnectFast> {
        CONNECT_FAST.get_or_try_init(py, || {
            let raw_cls = py.import("_socket")?.getattr("socket")?;
            let desc = |name: &str| -> PyResult<Py<PyAny>> {
                Ok(raw_cls.getattr("__dict__")?.get_item(name)?.unbind())
            };
            let base_events = py.import("asyncio.base_events")?;
            Ok(ConnectFast {
                raw: [desc("family")?, desc("type")?, desc("proto")?],
                ensure_resolved: base_events
                    .getattr("BaseEventLoop")?
                    .getattr("_ensure_resolved")?
                    .unbind(),
                base_events: base_events.into_any().unbind(),
            })
        })
    }

    /// The C field behind `sock.family`/`sock.type`/`sock.proto` (`sock` is a `_socket.socket`).
    fn raw<'py>(&self, sock: &Bound<'py, PyAny>, which: Raw) -> PyResult<Bound<'py, PyAny>> {
        let py = sock.py();
        self.raw[which as usize]
            .bind(py)
            .call_method1(intern!(py, "__get__"), (sock,))
    }

    /// The resolved address when `_ensure_resolved` would return `_ipaddr_info`'s answer at once
    /// (the struct's comment); `None`: run the coroutine.
    fn numeric_address<'py>(
        &self,
        lp: &Bound<'py, LoopCore>,
        sock: &Bound<'py, PyAny>,
        address: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = sock.py();
        let Ok(address) = address.cast_exact::<PyTuple>() else {
            return Ok(None);
        };
        if address.len() < 2 {
            return Ok(None);
        }
        let method = lp.as_any().getattr(intern!(py, "_ensure_resolved"))?;
        match method.getattr(intern!(py, "__func__")) {
            Ok(f) if f.is(self.ensure_resolved.bind(py)) => {}
            _ => return Ok(None),
        }
        let mut args = vec![address.get_item(0)?, address.get_item(1)?];
        args.push(self.raw(sock, Raw::Family)?);
        args.push(self.raw(sock, Raw::Type)?);
        args.push(self.raw(sock, Raw::Proto)?);
        args.extend(address.iter().skip(2));
        let info = self
            .base_events
            .bind(py)
            .getattr(intern!(py, "_ipaddr_info"))?
            .call1(PyTuple::new(py, args)?)?;
        if info.is_none() {
            return Ok(None);
        }
        Ok(Some(info.get_item(4)?))
    }
}

/// The outcome of one try of the operation.
pub(super) enum Attempt {
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
    let (cls, recv) = socket_type(py).ok()?;
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

/// Constants of `<sys/socket.h>` on Linux (the only platform ferroloop supports).
mod libc_af {
    pub const INET: i64 = 2;
    pub const INET6: i64 = 10;
    pub const SOL_SOCKET: i64 = 1;
    pub const SO_ERROR: i64 = 4;
}

impl SockOp {
    /// The first step: the checks, then the operation tried once.
    pub(super) fn start(slf: &Bound<'_, Self>) -> PyResult<Step> {
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
                let fast = ConnectFast::get(py)?;
                let exact = sock.get_type().is(socket_type(py)?.0.bind(py));
                let family: i64 = if exact {
                    fast.raw(&sock, Raw::Family)?.extract()?
                } else {
                    sock.getattr(intern!(py, "family"))?.extract()?
                };
                if family == libc_af::INET || family == libc_af::INET6 {
                    if exact {
                        if let Some(address) =
                            fast.numeric_address(&lp, &sock, &me.arg(py, false))?
                        {
                            let old = me.st.borrow_mut(py).a.replace(address.unbind());
                            drop(old);
                            return Self::connect(slf, &lp, &sock);
                        }
                    }
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
    pub(super) fn connect(
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
        let sock = me.sock(py)?;
        let handle = LoopCore::add_sock_fd_handle(lp, fd, &sock, cb, me.kind.is_reader())?;
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

    /// The operation retried from the fd's callback; `None` when it would still block.
    pub(super) fn retry_io(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
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
