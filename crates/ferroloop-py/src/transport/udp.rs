//! The per-datagram half of ferroloop's datagram (UDP) transport.
//!
//! `python/ferroloop/_udp.py` defines the transport class users see: a subclass of the stdlib's
//! `selector_events._SelectorDatagramTransport`, so its state (`_conn_lost`, `_buffer`,
//! `_address`, `_protocol`, ...) is the stdlib's, in the instance `__dict__`, and every rare path
//! (close, abort, `_fatal_error`, `_sendto_ready`, buffering on `EAGAIN`, flow control,
//! `get_write_buffer_size`, repr) is the stdlib's own method. `DatagramCore` replaces two methods
//! of each instance, published in its `__dict__`:
//!
//! * `_read_ready`, the fd's reader callback: `recvfrom` into a per-thread buffer, then
//!   `protocol.datagram_received(bytes, addr)`; `protocol.error_received(OSError)` for a socket
//!   error (an ICMP error on a connected socket), as the stdlib. Unlike the stdlib (one datagram
//!   per readiness) it reads up to `MAX_BATCH` datagrams while more are queued, as libuv (so
//!   uvloop) does: one wake-up and one `epoll_wait` for a burst. Datagrams keep their order; the
//!   batch stops at the first would-block, at an error (after `error_received`, as a readiness
//!   of its own would), when `datagram_received` raises (the exception goes to the loop's
//!   handler, as the stdlib's), and as soon as the protocol closed, aborted or paused the
//!   transport. What differs: callbacks the protocol schedules with `call_soon` run after the
//!   batch rather than between two datagrams.
//! * `sendto(data, addr=None)`: the socket at once (`send` on a connected socket, else `sendto`).
//!
//! The native path is taken only where it is certainly the stdlib's: an `AF_INET` socket, a
//! contiguous non-empty bytes-like `data`, nothing buffered, the connection not lost, and an
//! address that is either the connected one or a `(str, int)` pair whose host is a dotted quad
//! (what `socket.sendto` would accept without a name lookup). Anything else (another family, an
//! empty datagram, a host name, `''`, a wrong type, a full socket buffer: `EAGAIN`) calls the
//! stdlib's own function (`_SelectorDatagramTransport.sendto` / `._read_ready`) with the same
//! arguments, so messages, buffering, logging and version differences (3.13's empty datagrams
//! and header bytes) stay CPython's. On `EAGAIN` the stdlib's `sendto` tries the socket once
//! more (a datagram is all or nothing, so nothing is sent twice) and then buffers.
//!
//! The `(host, port)` tuple of the last peer is kept and handed out again while that peer keeps
//! sending (tuples are immutable; only `is` could tell), and `sendto` to that very tuple skips
//! parsing it.

use super::sys::{errno_error, is_exit, is_retry, with_fd, RawBuffer};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketAddrV4};
use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::gil::GilCell;
use crate::loop_state::{exception_value, while_handling};

/// `selector_events._SelectorTransport.max_size`: the most one `recvfrom` takes.
const MAX_READ: usize = 256 * 1024;

/// The most datagrams read per readiness (libuv's, hence uvloop's, figure).
const MAX_BATCH: usize = 32;

thread_local! {
    /// The receive buffer of every datagram transport run by this thread's loop; each read is
    /// copied into a `bytes` before any Python code runs.
    static RECV_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_READ].into_boxed_slice());
}

/// What the core holds (set at creation; `connected` just after, `peer` with each new peer).
struct DState {
    /// The Python transport (`_udp.py`).
    transport: Option<Py<PyAny>>,
    /// Its `__dict__`, where the stdlib's attributes live (`_conn_lost`, `_buffer`, ...).
    dict: Option<Py<PyDict>>,
    /// `_SelectorDatagramTransport.sendto` and `._read_ready`, the stdlib's functions.
    py_sendto: Option<Py<PyAny>>,
    py_read_ready: Option<Py<PyAny>>,
    /// The last peer's address and the tuple made for it.
    peer: Option<(SocketAddrV4, Py<PyAny>)>,
    /// The socket is `AF_INET`: addresses are converted here.
    inet: bool,
    /// `_extra['peername']` was set at creation: `send`, not `sendto`.
    connected: bool,
}

impl DState {
    fn objects(&mut self) -> Vec<Py<PyAny>> {
        let mut v: Vec<Py<PyAny>> = Vec::new();
        v.extend(self.transport.take());
        v.extend(self.dict.take().map(|d| d.into_any()));
        v.extend(self.py_sendto.take());
        v.extend(self.py_read_ready.take());
        v.extend(self.peer.take().map(|(_, t)| t));
        v
    }
}

/// The native hot paths of a datagram transport (module comment).
#[pyclass(frozen, module = "ferroloop._native", name = "DatagramCore")]
pub struct DatagramCore {
    st: GilCell<DState>,
}

/// What a native path found: done, or the stdlib's function must do it.
enum Outcome {
    Done,
    Stdlib,
}

/// A `bytes` of `data`, failing with `MemoryError` instead of panicking.
fn new_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `data` is a valid slice of `data.len()` bytes (at most 256 KiB, so the length fits
    // a Py_ssize_t), the GIL is held (`py`), and a non-null result is a new reference we own.
    unsafe {
        let p = ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as ffi::Py_ssize_t);
        Bound::from_owned_ptr_or_err(py, p)
    }
}

/// `(host, port)` as `socket.recvfrom` gives it for an `AF_INET` address.
fn inet_tuple<'py>(py: Python<'py>, addr: &SocketAddrV4) -> PyResult<Bound<'py, PyAny>> {
    let host = addr.ip().to_string();
    // SAFETY: `host` is valid UTF-8 of its length (a dotted quad), the GIL is held; non-null
    // results are new references we own (`from_owned_ptr_or_err`).
    let (host, port) = unsafe {
        let h =
            ffi::PyUnicode_FromStringAndSize(host.as_ptr().cast(), host.len() as ffi::Py_ssize_t);
        let h = Bound::from_owned_ptr_or_err(py, h)?;
        let p = ffi::PyLong_FromLong(addr.port().into());
        (h, Bound::from_owned_ptr_or_err(py, p)?)
    };
    Ok(PyTuple::new(py, [host, port])?.into_any())
}

/// The address `socket.sendto` would build from `addr` on an `AF_INET` socket, when it is an exact
/// `(str, int)` pair with a dotted-quad host and a port in range; `None` for anything else
/// (left to the socket module: names, `''`, `'<broadcast>'`, errors).
fn parse_inet(addr: &Bound<'_, PyAny>) -> Option<SocketAddrV4> {
    let t = addr.cast_exact::<PyTuple>().ok()?;
    if t.len() != 2 {
        return None;
    }
    let host = t.get_item(0).ok()?;
    let port = t.get_item(1).ok()?;
    let host = host.cast_exact::<PyString>().ok()?;
    let port = port.cast_exact::<PyInt>().ok()?;
    let port: u16 = port.extract().ok()?;
    let ip: Ipv4Addr = host.to_str().ok()?.parse().ok()?;
    Some(SocketAddrV4::new(ip, port))
}

impl DatagramCore {
    /// The transport's `__dict__` (where the stdlib's attributes are).
    fn dict<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyDict>> {
        self.st.borrow(py).dict.as_ref().map(|d| d.bind(py).clone())
    }

    /// An attribute of the stdlib's, from the instance dict.
    fn attr<'py>(
        d: &Bound<'py, PyDict>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        d.get_item(name)
    }

    /// The socket's fd, asked of `self._sock` (a socket closed behind the transport's back gives
    /// `EBADF`, as `sock.recvfrom` would); `None` when `_sock` is not a socket-like object.
    fn live_fd(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<Option<Result<RawFd, Errno>>> {
        let Some(sock) = Self::attr(d, intern!(py, "_sock"))? else {
            return Ok(None);
        };
        if sock.is_none() {
            return Ok(None);
        }
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        Ok(Some(if fd < 0 { Err(Errno::BADF) } else { Ok(fd) }))
    }

    /// `self._protocol.error_received(exc)`.
    fn error_received(py: Python<'_>, d: &Bound<'_, PyDict>, e: Errno) -> PyResult<()> {
        let protocol =
            Self::attr(d, intern!(py, "_protocol"))?.unwrap_or_else(|| py.None().into_bound(py));
        // Inside the stdlib's `except OSError as exc:` clause.
        let err = errno_error(e);
        let value = exception_value(py, &err);
        while_handling(py, &err, || {
            protocol.call_method1(intern!(py, "error_received"), (value,))
        })?;
        Ok(())
    }

    /// Up to `MAX_BATCH` datagrams, while the transport keeps reading (module comment).
    fn read_native(&self, py: Python<'_>) -> PyResult<Outcome> {
        let Some(d) = self.dict(py) else {
            return Ok(Outcome::Stdlib);
        };
        match Self::attr(&d, intern!(py, "_conn_lost"))? {
            Some(v) if v.is_truthy()? => return Ok(Outcome::Done),
            Some(_) => {}
            None => return Ok(Outcome::Stdlib),
        }
        let fd = match Self::live_fd(py, &d)? {
            None => return Ok(Outcome::Stdlib),
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                Self::error_received(py, &d, e)?;
                return Ok(Outcome::Done);
            }
        };
        if !self.read_one(py, &d, fd)? {
            return Ok(Outcome::Done);
        }
        for _ in 1..MAX_BATCH {
            // The protocol ran: it may have closed the transport, or the socket itself (whose
            // fd number could then name another file already).
            if !Self::still_reading(py, &d)?
                || !matches!(Self::live_fd(py, &d)?, Some(Ok(f)) if f == fd)
            {
                break;
            }
            if !self.read_one(py, &d, fd)? {
                break;
            }
        }
        Ok(Outcome::Done)
    }

    /// After a `datagram_received`: the transport was neither closed, aborted nor paused
    /// (`_conn_lost`, `_closing`, 3.12+'s `_paused`), and its socket is the same.
    fn still_reading(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<bool> {
        for name in [
            intern!(py, "_conn_lost"),
            intern!(py, "_closing"),
            intern!(py, "_paused"),
        ] {
            if let Some(v) = Self::attr(d, name)? {
                if v.is_truthy()? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// One `recvfrom` and its protocol call; false when the socket had nothing more (or an
    /// error, reported to `error_received`).
    fn read_one(&self, py: Python<'_>, d: &Bound<'_, PyDict>, fd: RawFd) -> PyResult<bool> {
        let recv = |buf: &mut [u8]| {
            with_fd(fd, |fd| {
                rustix::net::recvfrom(fd, &mut *buf, RecvFlags::empty())
            })
            .map(|(n, _, addr)| (new_bytes(py, &buf[..n]), addr))
        };
        let res = RECV_BUF.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => recv(&mut buf[..]),
            // Only a read re-entered from a finalizer run by the allocation above could find
            // the buffer taken: it gets one of its own.
            Err(_) => recv(&mut vec![0u8; MAX_READ][..]),
        });
        let (data, addr) = match res {
            Ok(r) => r,
            Err(e) if is_retry(e) => return Ok(false),
            Err(e) => {
                Self::error_received(py, d, e)?;
                return Ok(false);
            }
        };
        let data = match data {
            Ok(b) => b,
            Err(e) => {
                self.fatal(py, e, "Fatal read error on datagram transport")?;
                return Ok(false);
            }
        };
        let addr = match addr.map(SocketAddrV4::try_from) {
            None => py.None().into_bound(py),
            Some(Ok(a)) => match self.peer_tuple(py, &a) {
                Ok(t) => t,
                Err(e) => {
                    self.fatal(py, e, "Fatal read error on datagram transport")?;
                    return Ok(false);
                }
            },
            // Not an AF_INET address on an AF_INET socket: cannot happen; the datagram is
            // delivered with what `socket` gives for an unknown family's empty address.
            Some(Err(_)) => py.None().into_bound(py),
        };
        let protocol =
            Self::attr(d, intern!(py, "_protocol"))?.unwrap_or_else(|| py.None().into_bound(py));
        protocol.call_method1(intern!(py, "datagram_received"), (data, addr))?;
        Ok(true)
    }

    /// The tuple for `addr`: the last peer's when it is the same address.
    fn peer_tuple<'py>(&self, py: Python<'py>, addr: &SocketAddrV4) -> PyResult<Bound<'py, PyAny>> {
        if let Some((a, t)) = &self.st.borrow(py).peer {
            if a == addr {
                return Ok(t.bind(py).clone());
            }
        }
        let t = inet_tuple(py, addr)?;
        let old = self
            .st
            .borrow_mut(py)
            .peer
            .replace((*addr, t.clone().unbind()));
        drop(old); // after the borrow
        Ok(t)
    }

    /// `transport._fatal_error(exc, message)` (SystemExit/KeyboardInterrupt propagate).
    fn fatal(&self, py: Python<'_>, e: PyErr, message: &str) -> PyResult<()> {
        if is_exit(py, &e) {
            return Err(e);
        }
        let t = self
            .st
            .borrow(py)
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        if let Some(t) = t {
            // Inside the stdlib's `except BaseException as exc:` clause.
            let value = exception_value(py, &e);
            while_handling(py, &e, || {
                t.bind(py)
                    .call_method1(intern!(py, "_fatal_error"), (value, message))
            })?;
        }
        Ok(())
    }

    fn sendto_native(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Outcome> {
        let (inet, connected) = {
            let st = self.st.borrow(py);
            (st.inet, st.connected)
        };
        if !(data.is_instance_of::<PyBytes>()
            || data.is_instance_of::<PyByteArray>()
            || data.is_instance_of::<PyMemoryView>())
        {
            return Ok(Outcome::Stdlib);
        }
        let Some(d) = self.dict(py) else {
            return Ok(Outcome::Stdlib);
        };
        match Self::attr(&d, intern!(py, "_conn_lost"))? {
            Some(v) if !v.is_truthy()? => {}
            _ => return Ok(Outcome::Stdlib),
        }
        match Self::attr(&d, intern!(py, "_buffer"))? {
            Some(b) if !b.is_truthy()? => {}
            _ => return Ok(Outcome::Stdlib),
        }
        let Some(address) = Self::attr(&d, intern!(py, "_address"))? else {
            return Ok(Outcome::Stdlib);
        };
        let addr = match addr {
            Some(a) if a.is_none() => None,
            a => a,
        };
        let target = if address.is_truthy()? {
            match addr {
                None => {}
                Some(a) if a.is(&address) => {}
                Some(_) => return Ok(Outcome::Stdlib), // compared (and maybe refused) there
            }
            &address
        } else {
            match addr {
                Some(a) => a,
                None if connected => &address, // unused: `send` ignores it
                None => return Ok(Outcome::Stdlib), // the socket module's TypeError, there
            }
        };
        let dest = if connected {
            None
        } else {
            if !inet {
                return Ok(Outcome::Stdlib);
            }
            let cached = {
                let st = self.st.borrow(py);
                st.peer
                    .as_ref()
                    .and_then(|(a, t)| target.is(t.bind(py)).then_some(*a))
            };
            match cached.or_else(|| parse_inet(target)) {
                Some(a) => Some(a),
                None => return Ok(Outcome::Stdlib),
            }
        };
        let Ok(raw) = RawBuffer::get(data, false) else {
            return Ok(Outcome::Stdlib); // not contiguous: the socket module's error, there
        };
        if raw.len() == 0 {
            return Ok(Outcome::Stdlib); // dropped (3.11, 3.12) or sent (3.13+): the stdlib's
        }
        let fd = match Self::live_fd(py, &d)? {
            None => return Ok(Outcome::Stdlib),
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                drop(raw);
                Self::error_received(py, &d, e)?;
                return Ok(Outcome::Done);
            }
        };
        let res = with_fd(fd, |fd| match &dest {
            None => rustix::net::send(fd, raw.as_slice(), SendFlags::empty()),
            Some(a) => rustix::net::sendto(fd, raw.as_slice(), SendFlags::empty(), a),
        });
        drop(raw);
        match res {
            Ok(_) => Ok(Outcome::Done),
            // The stdlib tries once more, then registers the writer and buffers.
            Err(e) if is_retry(e) => Ok(Outcome::Stdlib),
            Err(e) => {
                Self::error_received(py, &d, e)?;
                Ok(Outcome::Done)
            }
        }
    }

    /// The stdlib's function (`sendto` or `_read_ready`) and the transport; `None` once the
    /// collector cleared the core (the transport is being destroyed).
    fn stdlib<'py>(
        &self,
        py: Python<'py>,
        read: bool,
    ) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let st = self.st.borrow(py);
        let f = if read {
            &st.py_read_ready
        } else {
            &st.py_sendto
        };
        Some((
            f.as_ref()?.bind(py).clone(),
            st.transport.as_ref()?.bind(py).clone(),
        ))
    }
}

#[pymethods]
impl DatagramCore {
    /// `DatagramCore(transport, inet, stdlib_sendto, stdlib_read_ready)`: `inet` when the
    /// socket is `AF_INET`; the stdlib's `sendto` and `_read_ready` functions.
    #[new]
    fn py_new(
        transport: Bound<'_, PyAny>,
        inet: bool,
        stdlib_sendto: Py<PyAny>,
        stdlib_read_ready: Py<PyAny>,
    ) -> PyResult<Self> {
        let py = transport.py();
        let dict = transport
            .getattr(intern!(py, "__dict__"))?
            .cast_into::<PyDict>()?
            .unbind();
        Ok(DatagramCore {
            st: GilCell::new(DState {
                transport: Some(transport.unbind()),
                dict: Some(dict),
                py_sendto: Some(stdlib_sendto),
                py_read_ready: Some(stdlib_read_ready),
                peer: None,
                inet,
                connected: false,
            }),
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows the core's state (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        if let Some(st) = self.st.borrow_for_traverse(py) {
            visit.call(&st.transport)?;
            visit.call(&st.dict)?;
            visit.call(&st.py_sendto)?;
            visit.call(&st.py_read_ready)?;
            if let Some((_, t)) = &st.peer {
                visit.call(t)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = self.st.borrow_mut(py).objects();
            drop(taken); // outside the borrow
        });
    }

    /// Whether `_extra['peername']` is set (known once `_SelectorTransport.__init__` ran; no
    /// datagram is sent or read before: both wait for `connection_made`).
    fn _set_connected(&self, py: Python<'_>, connected: bool) {
        self.st.borrow_mut(py).connected = connected;
    }

    /// The fd's reader callback (`_SelectorDatagramTransport._read_ready`).
    fn _read_ready(&self, py: Python<'_>) -> PyResult<()> {
        let inet = self.st.borrow(py).inet;
        if inet {
            if let Outcome::Done = self.read_native(py)? {
                return Ok(());
            }
        }
        if let Some((f, t)) = self.stdlib(py, true) {
            f.call1((t,))?;
        }
        Ok(())
    }

    /// `transport.sendto(data, addr=None)`.
    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        addr: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Outcome::Done = self.sendto_native(py, data, addr)? {
            return Ok(());
        }
        let addr = match addr {
            Some(a) => a.clone(),
            None => py.None().into_bound(py),
        };
        if let Some((f, t)) = self.stdlib(py, false) {
            f.call1((t, data, addr))?;
        }
        Ok(())
    }
}
