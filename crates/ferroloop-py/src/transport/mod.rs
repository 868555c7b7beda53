//! The per-packet half of ferroloop's TCP and Unix stream transports.
//!
//! `python/ferroloop/_transport.py` defines the transport class users see: a subclass of
//! `asyncio.transports._FlowControlMixin` and `asyncio.Transport` (so `isinstance` checks and the
//! stdlib's sendfile fallback accept it), whose rare paths (abort, fatal errors, `write_eof`,
//! sendfile waiters, repr) are the stdlib's own functions. Its state, everything done once per
//! read or write, and the ordinary end of a connection (EOF, `close`, `connection_lost`) live
//! here in `TransportCore`:
//!
//! * `state.rs`: the fields, declared once (`transport_state!`), and the descriptors that make
//!   them the Python class's private attributes (`transport._closing` is the core's `closing`).
//! * `read.rs`: `_add_reader` (into the loop's fd table, Rust to Rust) and `_read_ready`, the
//!   fd's reader callback. One `recv` into a per-thread buffer, then
//!   `protocol.data_received(bytes)`; for a `BufferedProtocol`, `get_buffer(-1)`, `recv` straight
//!   into the buffer it returned, `buffer_updated(n)`.
//! * `write.rs`: `write` / `writelines` try the socket at once and buffer only what it did not
//!   take; the writer callback `_write_ready` sends the buffer with one `sendmsg`;
//!   `pause_writing`/`resume_writing` at the high and low water marks. `buffer.rs`: the buffer.
//! * `close.rs`: the end of a connection, `_read_ready__on_eof`, `close` and
//!   `_call_connection_lost`, the stdlib's steps without its Python frames.
//! * `accept.rs`: `accept_nonblocking`, one `accept` on a listening TCP socket for
//!   `_accept.py`'s loop, the new socket non-blocking from the start; `accept_connections`, the
//!   whole accept loop and each connection's set-up for a plain TCP server without TLS.
//! * `names.rs`: every Python name called from here. `sys.rs`: fds, buffers, errno.
//!
//! The Python class publishes the core's bound methods in each instance's `__dict__` (`write`
//! in the constructor, the others on first lookup), so that `transport.write(data)` is one
//! vectorcall into Rust (and a test can still monkeypatch `transport.write`).
//!
//! Error paths follow `selector_events._SelectorSocketTransport` line by line: `BlockingIOError`
//! and `InterruptedError` are retried on the next readiness, any other exception goes to the
//! transport's `_fatal_error(exc, message)` with the stdlib's message, and `SystemExit` /
//! `KeyboardInterrupt` propagate out of the callback.

mod accept;
mod buffer;
mod close;
mod names;
mod read;
mod setup;
mod state;
mod sys;
mod udp;
mod write;

pub use accept::{accept_connections, accept_nonblocking, configure_accept};
pub use buffer::WriteBuffer;
pub use close::TransportFinalizer;
pub use udp::DatagramCore;

use crate::gil::GilCell;
use crate::loop_core::LoopCore;
use crate::loop_state::{exception_value, while_handling};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};
use rustix::io::Errno;
use state::{TState, TransportAttribute};
use std::os::fd::RawFd;
use sys::{errno_error, is_exit};

/// The native state and hot paths of a socket transport (module comment).
#[pyclass(frozen, module = "ferroloop._native", name = "TransportCore")]
pub struct TransportCore {
    st: GilCell<TState>,
    buffer: Py<WriteBuffer>,
}

impl TransportCore {
    /// The Python transport object.
    fn transport<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.st.borrow(py).transport {
            Some(t) => t.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn protocol<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.st.borrow(py).protocol {
            Some(p) => p.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    fn loop_core<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, LoopCore>> {
        let lp = self
            .st
            .borrow(py)
            .loop_
            .as_ref()
            .map(|l| l.bind(py).clone());
        match lp {
            Some(l) => Ok(l.cast_into::<LoopCore>()?),
            None => Err(PyRuntimeError::new_err("the transport has no event loop")),
        }
    }

    /// The socket's fd, asked of the socket object itself: a socket closed behind the
    /// transport's back gives `EBADF` (as `sock.send` would) instead of a reused number.
    fn live_fd(&self, py: Python<'_>) -> PyResult<RawFd> {
        let sock = self.st.borrow(py).sock.as_ref().map(|s| s.clone_ref(py));
        let Some(sock) = sock else {
            return Err(errno_error(Errno::BADF));
        };
        let fd: RawFd = sock.bind(py).call_method0(names::fileno(py))?.extract()?;
        if fd < 0 {
            return Err(errno_error(Errno::BADF));
        }
        Ok(fd)
    }

    /// `transport._fatal_error(exc, message)`.
    /// `self._fatal_error(exc, message)`, called as the stdlib calls it: inside the `except`
    /// clause that caught `exc` (the exception handler sees it in `sys.exc_info()`).
    fn fatal(&self, py: Python<'_>, exc: PyErr, message: &str) -> PyResult<()> {
        let value = exception_value(py, &exc);
        while_handling(py, &exc, || {
            self.transport(py)
                .call_method1(names::fatal_error(py), (value, message))
        })?;
        Ok(())
    }

    /// A protocol call's outcome: on failure other than SystemExit/KeyboardInterrupt,
    /// `_fatal_error`.
    fn protocol_call<'py>(
        &self,
        py: Python<'py>,
        res: PyResult<Bound<'py, PyAny>>,
        message: &str,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match res {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_exit(py, &e) => Err(e),
            Err(e) => {
                self.fatal(py, e, message)?;
                Ok(None)
            }
        }
    }
}

/// What Python calls: each entry is the stdlib method of the same name, implemented in the file
/// named in the module comment (one `#[pymethods]` block per class).
#[pymethods]
impl TransportCore {
    #[new]
    fn py_new(
        py: Python<'_>,
        transport: Py<PyAny>,
        loop_: Py<PyAny>,
        sock: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let fd: RawFd = sock.call_method0(names::fileno(py))?.extract()?;
        let mut st = TState::initial();
        st.transport = Some(transport);
        st.loop_ = Some(loop_);
        st.sock = Some(sock.unbind());
        st.fd = fd;
        Ok(TransportCore {
            st: GilCell::new(st),
            buffer: Py::new(py, WriteBuffer::default())?,
        })
    }

    /// The descriptors of the stdlib's private attributes (`_loop`, `_closing`, ..., `_buffer`)
    /// by name, for the Python transport class (`state.rs`).
    #[staticmethod]
    fn _attributes(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        TransportAttribute::all(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: called by CPython's collector as tp_traverse, with the GIL held; the token
        // only borrows the transport's state (gil.rs, `traverse_token`).
        let py = unsafe { crate::gil::traverse_token() };
        if let Some(st) = self.st.borrow_for_traverse(py) {
            st.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let taken = self.st.borrow_mut(py).take_objects();
            drop(taken); // outside the borrow
        });
    }

    /// The transport class and the stdlib objects and version switches its native half uses
    /// (setup.rs, close.rs), once, by `_transport.py`.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn _configure(
        py: Python<'_>,
        transport_class: Bound<'_, PyAny>,
        tracks_clients: bool,
        native_writelines: bool,
        close_drops_callbacks: bool,
        transport_socket: Bound<'_, PyAny>,
        buffered_protocol: Bound<'_, PyAny>,
        set_result_unless_cancelled: Bound<'_, PyAny>,
        set_nodelay: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        setup::configure(
            py,
            &transport_class,
            tracks_clients,
            native_writelines,
            transport_socket,
            buffered_protocol,
            set_result_unless_cancelled,
            set_nodelay,
        )?;
        close::configure(py, &transport_class, close_drops_callbacks, tracks_clients)
    }

    /// `cls(loop, sock, protocol, waiter, extra, server)`, without the `__init__` frame while
    /// `cls.__init__` is the transport class's own (setup.rs).
    #[staticmethod]
    #[pyo3(signature = (cls, loop_, sock, protocol, waiter=None, extra=None, server=None))]
    #[allow(clippy::too_many_arguments)]
    fn _make<'py>(
        py: Python<'py>,
        cls: &Bound<'py, PyAny>,
        loop_: &Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
        server: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make_impl(py, cls, loop_, sock, protocol, waiter, extra, server)
    }

    /// The transport class's `__del__` over the stdlib's (close.rs, `TransportFinalizer`).
    #[staticmethod]
    fn _finalizer(stdlib_del: Py<PyAny>) -> close::TransportFinalizer {
        close::TransportFinalizer::new(stdlib_del)
    }

    /// `_SelectorSocketTransport.close()` of the running version (close.rs).
    fn close(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        self.close_impl(py, transport)
    }

    /// `_SelectorSocketTransport._call_connection_lost(exc)` and `super()`'s (close.rs).
    fn _call_connection_lost(
        &self,
        py: Python<'_>,
        transport: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.call_connection_lost_impl(py, transport, exc)
    }

    /// The socket transport's constructor (`_SelectorTransport.__init__` and
    /// `_SelectorSocketTransport.__init__`, setup.rs).
    #[staticmethod]
    #[pyo3(signature = (transport, loop_, sock, protocol, waiter=None, extra=None, server=None))]
    #[allow(clippy::too_many_arguments)]
    fn _setup(
        py: Python<'_>,
        transport: &Bound<'_, PyAny>,
        loop_: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        waiter: Option<&Bound<'_, PyAny>>,
        extra: Option<&Bound<'_, PyAny>>,
        server: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        Self::setup_impl(py, transport, loop_, sock, protocol, waiter, extra, server)
    }

    /// `transport.set_protocol(protocol)` (setup.rs).
    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_impl(py, protocol)
    }

    /// `set_protocol`: the protocol, whether it is a `BufferedProtocol`, and `_protocol_connected`.
    fn _set_protocol(&self, py: Python<'_>, protocol: Py<PyAny>, buffered: bool) {
        let old = {
            let mut st = self.st.borrow_mut(py);
            st.buffered = buffered;
            st.protocol_connected = true;
            st.protocol.replace(protocol)
        };
        drop(old);
    }

    /// `_SelectorTransport._add_reader(fd, callback)` (read.rs). The stdlib's socket transport
    /// functions call it with these two arguments only.
    fn _add_reader(&self, py: Python<'_>, fd: RawFd, callback: Bound<'_, PyAny>) -> PyResult<()> {
        self.add_reader_impl(py, fd, callback)
    }

    /// The fd's reader callback (`_SelectorSocketTransport._read_ready`, read.rs).
    fn _read_ready(&self, py: Python<'_>) -> PyResult<()> {
        self.read_ready_impl(py)
    }

    /// `transport.is_reading()` (read.rs).
    fn is_reading(&self, py: Python<'_>) -> bool {
        self.is_reading_impl(py)
    }

    /// `transport.pause_reading()`: the registration lingers for a prompt resume (read.rs).
    fn pause_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.pause_reading_impl(py)
    }

    /// `transport.resume_reading()` (read.rs).
    fn resume_reading(&self, py: Python<'_>) -> PyResult<()> {
        self.resume_reading_impl(py)
    }

    /// `transport.write(data)` (write.rs).
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_impl(slf, data)
    }

    /// `transport.writelines(list_of_data)`, 3.12+ (write.rs).
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::writelines_impl(slf, list_of_data)
    }

    /// The fd's writer callback (`_SelectorSocketTransport._write_ready`, write.rs).
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_ready_impl(slf)
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.buffer.get().size(py)
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.st.borrow(py).closing
    }
}
