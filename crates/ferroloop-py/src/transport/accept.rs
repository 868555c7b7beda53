//! Accepting one connection on a listening TCP socket: `conn, addr = sock.accept()` then
//! `conn.setblocking(False)`, as `selector_events`' accept loop does it, in one call and without
//! an exception when the queue is empty (`_accept.py` calls it up to `backlog` times per
//! readiness).
//!
//! * `accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: the fd is non-blocking and close-on-exec from
//!   the start (`socket.accept` makes it close-on-exec, `setblocking(False)` non-blocking, with
//!   one more syscall).
//! * The `socket.socket` is `socket.socket(family, type | SOCK_NONBLOCK, proto, fd)` with the
//!   listening socket's family, type and proto, as `socket.accept` builds it (`SOCK_NONBLOCK` in
//!   the type makes CPython set its timeout to 0.0 without an `ioctl`; `conn.type` has the flag
//!   stripped, as always).
//!   While `socket.socket.__init__` is still the `socket` module's own, the object is made as
//!   that `__init__` makes it, without its Python frame: `socket.socket.__new__`, then
//!   `_socket.socket.__init__(conn, family, type, proto, fd)`, then `_io_refs = 0` and
//!   `_closed = False`.
//! * The address is what CPython's `makesockaddr` builds: `(host, port)` for IPv4 (the dotted
//!   quad), `(host, port, flowinfo, scope_id)` for IPv6, with `host` from `socket.inet_ntop`
//!   (CPython's own call). Other families are not handled here (`_accept.py` keeps
//!   `sock.accept()` for them).
//! * `EINTR` is retried after running the signal handlers (PEP 475, as `socket.accept` does);
//!   would-block answers `None`; any other error raises the `OSError` `socket.accept` would.

use super::sys::errno_error;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyModule, PyString, PyTuple};
use rustix::io::Errno;
use rustix::net::{SocketAddrAny, SocketFlags};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

static SOCKET: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
/// `socket.socket.__init__` and `_socket.socket.__init__`, as the first accept found them.
static INITS: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

/// The `socket` module (its `socket` class is read at each call, so a patch takes effect).
fn socket_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(SOCKET
        .get_or_try_init(py, || PyModule::import(py, "socket").map(Bound::unbind))?
        .bind(py))
}

/// `socket_class(family, type, proto, fd)` (module comment). The socket object owns the fd once
/// its `_socket.socket.__init__` went through; before that, an error closes it (`fd` dropped).
fn new_socket<'py>(
    socket_class: &Bound<'py, PyAny>,
    family: i32,
    type_: i32,
    proto: i32,
    fd: OwnedFd,
) -> PyResult<Bound<'py, PyAny>> {
    let py = socket_class.py();
    let (init, c_init) = INITS.get_or_try_init(py, || -> PyResult<_> {
        let module = socket_module(py)?;
        let python_init = module.getattr("socket")?.getattr("__init__")?;
        let c_init = py
            .import("_socket")?
            .getattr("socket")?
            .getattr("__init__")?;
        Ok((python_init.unbind(), c_init.unbind()))
    })?;
    let raw = fd.as_raw_fd();
    if !socket_class
        .getattr(intern!(py, "__init__"))?
        .is(init.bind(py))
    {
        let conn = socket_class.call1((family, type_, proto, raw))?;
        let _ = fd.into_raw_fd();
        return Ok(conn);
    }
    let conn = socket_class.call_method1(intern!(py, "__new__"), (socket_class,))?;
    c_init.bind(py).call1((&conn, family, type_, proto, raw))?;
    let _ = fd.into_raw_fd();
    conn.setattr(intern!(py, "_io_refs"), 0)?;
    conn.setattr(intern!(py, "_closed"), false)?;
    Ok(conn)
}

/// `accept4(fd, SOCK_NONBLOCK | SOCK_CLOEXEC)`, retried on `EINTR` after the signal handlers ran.
fn accept4(py: Python<'_>, fd: RawFd) -> PyResult<Option<(OwnedFd, Option<SocketAddrAny>)>> {
    loop {
        // SAFETY: `fd` is what the listening socket object returned from `fileno()` just
        // before, with the GIL held since then; closing that socket needs the GIL, which this
        // call (no Python code) never gives up, so the fd stays open for the borrow.
        let lfd = unsafe { BorrowedFd::borrow_raw(fd) };
        match rustix::net::acceptfrom_with(lfd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(pair) => return Ok(Some(pair)),
            Err(Errno::INTR) => py.check_signals()?,
            Err(e) if e == Errno::AGAIN || e == Errno::WOULDBLOCK => return Ok(None),
            Err(e) => return Err(errno_error(e)),
        }
    }
}

/// What `inet_ntop(AF_INET)` writes: the dotted quad, each octet in decimal without leading
/// zeros (`Ipv4Addr`'s `Display` says the same, through the formatting machinery, which cost
/// more than the rest of the address's conversion).
fn dotted_quad(octets: [u8; 4]) -> ([u8; 15], usize) {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    (buf, n)
}

/// An address as CPython's `makesockaddr` builds it for `AF_INET` and `AF_INET6`; `None` for
/// anything else (the peer's here, the socket's own in `setup.rs`).
pub(super) fn address<'py>(
    py: Python<'py>,
    addr: Option<SocketAddrAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    if let Ok(v4) = SocketAddrV4::try_from(addr.clone()) {
        let (buf, len) = dotted_quad(v4.ip().octets());
        let host = std::str::from_utf8(&buf[..len])
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let t = PyTuple::new(
            py,
            [
                PyString::new(py, host).into_any(),
                v4.port().into_pyobject(py)?.into_any(),
            ],
        )?;
        return Ok(Some(t.into_any()));
    }
    if let Ok(v6) = SocketAddrV6::try_from(addr) {
        let socket = socket_module(py)?;
        let af_inet6 = socket.getattr(intern!(py, "AF_INET6"))?;
        let packed = PyBytes::new(py, &v6.ip().octets());
        let host = socket.call_method1(intern!(py, "inet_ntop"), (af_inet6, packed))?;
        let t = PyTuple::new(
            py,
            [
                host,
                v6.port().into_pyobject(py)?.into_any(),
                v6.flowinfo().into_pyobject(py)?.into_any(),
                v6.scope_id().into_pyobject(py)?.into_any(),
            ],
        )?;
        return Ok(Some(t.into_any()));
    }
    Ok(None)
}

/// `conn, addr = sock.accept(); conn.setblocking(False)` for a listening `AF_INET`/`AF_INET6`
/// `socket.socket` of the given family, type and proto (module comment); `None` when no
/// connection is waiting.
#[pyfunction]
pub fn accept_nonblocking<'py>(
    sock: &Bound<'py, PyAny>,
    family: i32,
    type_: i32,
    proto: i32,
) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = sock.py();
    let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
    if fd < 0 {
        return Err(errno_error(Errno::BADF));
    }
    let Some((conn_fd, addr)) = accept4(py, fd)? else {
        return Ok(None);
    };
    let nonblock = SocketFlags::NONBLOCK.bits() as i32;
    let socket_class = socket_module(py)?.getattr(intern!(py, "socket"))?;
    let conn = new_socket(&socket_class, family, type_ | nonblock, proto, conn_fd)?;
    let addr = match address(py, addr)? {
        Some(a) => a,
        None => conn.call_method0(intern!(py, "getpeername"))?,
    };
    Ok(Some((conn, addr)))
}
