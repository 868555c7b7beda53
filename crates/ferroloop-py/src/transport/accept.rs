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
//!
//! [`accept_connections`] is the whole accept loop of a plain TCP server without TLS, the
//! listening socket's reader (`_accept.py`'s `_watch_listening` registers it): up to `backlog`
//! accepts per readiness, and each connection set up at once, as `_accept.py`'s
//! `_accept_connection_now` does it, without a Python frame per connection:
//! `protocol_factory()` and the transport, in a copy of the current context (entered with
//! `PyContext_Enter`, as a handle's), the transport by `TransportCore._make` while the loop's
//! `_make_socket_transport` is ferroloop's own (else that method is called). What stays in
//! Python: a loop in debug mode at the readiness runs `_accept_connection` itself (its log line
//! per connection, its reports), an `accept` error goes to `loop._accept_failed` (the stdlib's
//! except clauses and the back-off), and an error while setting a connection up is reported
//! as `_accept_connection_now` reports it (in debug mode only).

use super::sys::{errno_error, is_exit};
use super::TransportCore;
use crate::loop_state::{exception_value, while_handling};
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyModule, PyString, PyTuple};
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

/// What [`accept_connections`] needs from `_net.py`: ferroloop's own
/// `_make_socket_transport` function, and the module whose `_SOCKET_TRANSPORT` is the class
/// that function makes (read at each connection, as that function reads it, so a patch of it
/// takes effect).
static MAKE: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

/// `_native.configure_accept(make_socket_transport, net_module)`: called once by `_net.py`.
#[pyfunction]
pub fn configure_accept(py: Python<'_>, make_socket_transport: Py<PyAny>, net_module: Py<PyAny>) {
    // A second call (a reloaded module) keeps the first: the same objects.
    let _ = MAKE.set(py, (make_socket_transport, net_module));
}

/// One accepted connection, or the queue empty; the error is what `sock.accept()` raised.
fn accept_one<'py>(
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

/// `_accept.py`'s `_accept_connection_now(protocol_factory, conn, {'peername': addr}, server)`,
/// in a copy of the current context (module comment).
fn set_up<'py>(
    lp: &Bound<'py, PyAny>,
    protocol_factory: &Bound<'py, PyAny>,
    conn: &Bound<'py, PyAny>,
    addr: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = lp.py();
    let extra = PyDict::new(py);
    extra.set_item(intern!(py, "peername"), addr)?;
    let ctx = crate::loop_state::copy_context(py)?.into_bound(py);
    let mut protocol = None;
    let made = crate::loop_state::in_context(py, ctx.as_ptr(), || {
        let p = protocol.insert(protocol_factory.call0()?);
        make_transport(lp, conn, p, &extra, server).map(drop)
    });
    let Err(exc) = made else {
        return Ok(());
    };
    if is_exit(py, &exc) {
        return Err(exc);
    }
    if lp.getattr(intern!(py, "_debug"))?.is_truthy()? {
        let context = PyDict::new(py);
        context.set_item(
            "message",
            "Error on transport creation for incoming connection",
        )?;
        context.set_item("exception", exception_value(py, &exc))?;
        if let Some(p) = protocol {
            context.set_item("protocol", p)?;
        }
        // Inside the stdlib's `except BaseException as exc:` clause.
        while_handling(py, &exc, || {
            lp.call_method1(intern!(py, "call_exception_handler"), (context,))
        })?;
    }
    Ok(())
}

/// `loop._make_socket_transport(conn, protocol, extra=extra, server=server)`: the class made
/// by `TransportCore._make` directly while that method is `_net.py`'s own.
fn make_transport<'py>(
    lp: &Bound<'py, PyAny>,
    conn: &Bound<'py, PyAny>,
    protocol: &Bound<'py, PyAny>,
    extra: &Bound<'py, PyDict>,
    server: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = lp.py();
    let name = intern!(py, "_make_socket_transport");
    if let Some((own, net)) = MAKE.get(py) {
        if lp.get_type().getattr(name)?.is(own.bind(py)) {
            let cls = net.bind(py).getattr(intern!(py, "_SOCKET_TRANSPORT"))?;
            return TransportCore::make_impl(
                py,
                &cls,
                lp,
                conn,
                protocol,
                None,
                Some(extra.as_any()),
                Some(server),
            );
        }
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "extra"), extra)?;
    kwargs.set_item(intern!(py, "server"), server)?;
    lp.call_method(name, (conn, protocol), Some(&kwargs))
}

/// The reader of a listening plain TCP `socket.socket` served without TLS: the accept loop of
/// `_accept.py`'s `_accept_connection`, natively (module comment). `family`, `type_` and
/// `proto` are the listening socket's.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn accept_connections<'py>(
    lp: &Bound<'py, PyAny>,
    protocol_factory: &Bound<'py, PyAny>,
    sock: &Bound<'py, PyAny>,
    server: &Bound<'py, PyAny>,
    backlog: i64,
    family: i32,
    type_: i32,
    proto: i32,
) -> PyResult<()> {
    let py = lp.py();
    if lp.getattr(intern!(py, "_debug"))?.is_truthy()? {
        // Debug mode: the Python loop, with its log line per connection.
        let none = py.None();
        lp.call_method1(
            intern!(py, "_accept_connection"),
            (protocol_factory, sock, none, server, backlog),
        )?;
        return Ok(());
    }
    for _ in 0..backlog.max(0) {
        match accept_one(sock, family, type_, proto) {
            Ok(None) => return Ok(()),
            Ok(Some((conn, addr))) => set_up(lp, protocol_factory, &conn, &addr, server)?,
            // Not raised by `sock.accept()` itself (a signal handler's exception): as it is.
            Err(e) if !e.is_instance_of::<PyOSError>(py) => return Err(e),
            Err(e) => {
                // The except clauses of the Python loop, and the back-off (`_accept.py`).
                let none = py.None();
                let value = exception_value(py, &e);
                while_handling(py, &e, || {
                    lp.call_method1(
                        intern!(py, "_accept_failed"),
                        (value, protocol_factory, sock, none, server, backlog),
                    )
                })?;
                return Ok(());
            }
        }
    }
    Ok(())
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
    accept_one(sock, family, type_, proto)
}
