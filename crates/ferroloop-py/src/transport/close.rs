//! The end of a connection, native: `_read_ready__on_eof`, `close` and `_call_connection_lost`
//! of `selector_events._SelectorTransport` / `_SelectorSocketTransport`, each the stdlib's steps
//! in the stdlib's order, with the same objects read and assigned.
//!
//! A server of short connections ran these as seven Python frames per connection (the EOF
//! handler, `close` (two on 3.12+), `_call_connection_lost` twice through `super()`,
//! `socket.close` and `socket._real_close`). Now:
//!
//! * **EOF** (`on_eof`, from the read path when `recv` returns nothing): while the transport's
//!   class still has the stdlib's `_read_ready__on_eof` (configured once, compared by identity,
//!   so a subclass's override is called instead), the debug log line, `protocol.eof_received()`
//!   (an exception other than `SystemExit`/`KeyboardInterrupt` goes to `_fatal_error` with the
//!   stdlib's message), then `loop._remove_reader(fd)` if it asked to stay open, else `close()`:
//!   natively while the class's `close` is `_transport.py`'s own, else the override.
//! * **close** (`TransportCore.close(transport)`, what `_SelectorSocketTransport.close` calls):
//!   3.12+ first drops the read and write callbacks (`_read_ready_cb`, `_write_ready` set to
//!   `None` on the instance), then `_SelectorTransport.close`: `_closing`, the reader removed,
//!   and with nothing left to write, `_conn_lost`, the writer removed and
//!   `loop.call_soon(transport._call_connection_lost, None)`: the handle holds the transport's
//!   bound method, so its repr names `_SelectorSocketTransport._call_connection_lost`, as the
//!   stdlib's does.
//! * **connection_lost** (`TransportCore._call_connection_lost(transport, exc)`): both levels of
//!   the stdlib's function. `protocol.connection_lost(exc)` when the protocol is connected; then,
//!   as its `finally:` block, with the protocol's exception (if it raised) as the exception being
//!   handled, so that one raised meanwhile chains to it exactly as in the stdlib
//!   (`__context__`, `sys.exc_info()`): `sock.close()`, `_sock`, `_protocol`, `_loop` set to
//!   `None` (each old value let go at its assignment), `server._detach()` (3.13:
//!   `server._detach(transport)`) and `_server = None`. Only if all of that went through, the
//!   sendfile waiter's `ConnectionError("Connection is closed by peer")`.
//!   `sock.close()` on a plain `socket.socket` whose `close` and `_real_close` are still the
//!   `socket` module's is what they do (`_closed = True`, then `_socket.socket.close` unless
//!   `_io_refs` is positive), without their two frames.
//! * **`__del__`** (`TransportFinalizer`, the class's `__del__`): CPython's finalizer looks it up
//!   on every transport it frees. On a transport that no longer holds its socket (every
//!   connection that was closed), where the stdlib's `__del__` does nothing, it answers a native
//!   function that does nothing, without a Python frame; on any other (an unclosed transport:
//!   the `ResourceWarning`, closing the socket, 3.13's `_detach`), the stdlib's bound `__del__`.
//!   Looked up on the class, it is the stdlib's function.
//!
//! What differs, and only in how it looks: a traceback through these paths shows
//! `_transport.py`'s one-line `close` / `_call_connection_lost` instead of the stdlib's frames
//! (an exception from `eof_received` shows no frame of the EOF handler, as one from
//! `data_received` shows none of the read handler), and in debug mode the repr of the handle
//! that calls `_call_connection_lost` gives `_transport.py` as the function's source.

use super::state::TransportAttribute;
use super::{names, TransportCore};
use crate::loop_state::while_handling;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// What the native end of a connection compares against and needs (`configure`).
pub(super) struct CloseConfig {
    /// The stdlib's `_read_ready__on_eof` as borrowed onto the transport class.
    on_eof: Py<PyAny>,
    /// `_transport._SelectorSocketTransport.close` (which calls `TransportCore.close`).
    close: Py<PyAny>,
    /// 3.12+: `close` first sets `_read_ready_cb` and `_write_ready` to `None`.
    drops_callbacks: bool,
    /// 3.13+: `Server._detach(transport)`; before: `Server._detach()`.
    tracks_clients: bool,
    /// `socket.socket`, its `close` and `_real_close`, and `_socket.socket.close`.
    socket_class: Py<PyAny>,
    socket_close: Py<PyAny>,
    socket_real_close: Py<PyAny>,
    c_close: Py<PyAny>,
}

static CLOSE_CONFIG: PyOnceLock<CloseConfig> = PyOnceLock::new();

/// From `TransportCore._configure(...)`, called once by `_transport.py` at import: the
/// transport class's `_read_ready__on_eof` and `close`, as it has them then.
pub(super) fn configure(
    py: Python<'_>,
    transport_class: &Bound<'_, PyAny>,
    drops_callbacks: bool,
    tracks_clients: bool,
) -> PyResult<()> {
    let socket_class = py.import("socket")?.getattr("socket")?;
    let config = CloseConfig {
        on_eof: transport_class.getattr("_read_ready__on_eof")?.unbind(),
        close: transport_class.getattr("close")?.unbind(),
        drops_callbacks,
        tracks_clients,
        socket_close: socket_class.getattr("close")?.unbind(),
        socket_real_close: socket_class.getattr("_real_close")?.unbind(),
        socket_class: socket_class.unbind(),
        c_close: py
            .import("_socket")?
            .getattr("socket")?
            .getattr("close")?
            .unbind(),
    };
    // A second call (a reloaded module) keeps the first configuration: the same objects.
    let _ = CLOSE_CONFIG.set(py, config);
    Ok(())
}

fn config(py: Python<'_>) -> PyResult<&CloseConfig> {
    CLOSE_CONFIG
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("TransportCore._configure was not called"))
}

impl TransportCore {
    /// `self._loop` (the object; `None` once the connection is lost, as in the stdlib).
    fn loop_object<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.st.borrow(py).loop_ {
            Some(l) => l.bind(py).clone(),
            None => py.None().into_bound(py),
        }
    }

    /// `_read_ready__on_eof` (module comment).
    pub(super) fn on_eof(&self, py: Python<'_>) -> PyResult<()> {
        let c = config(py)?;
        let transport = self.transport(py);
        let on_eof = names::read_ready_on_eof(py);
        if !transport.get_type().getattr(on_eof)?.is(c.on_eof.bind(py)) {
            transport.call_method0(on_eof)?;
            return Ok(());
        }
        if self
            .loop_object(py)
            .call_method0(intern!(py, "get_debug"))?
            .is_truthy()?
        {
            self.debug_log(py, "%r received EOF")?;
        }
        let res = self.protocol(py).call_method0(intern!(py, "eof_received"));
        let Some(keep_open) =
            self.protocol_call(py, res, "Fatal error: protocol.eof_received() call failed.")?
        else {
            return Ok(());
        };
        if keep_open.is_truthy()? {
            let fd = self.st.borrow(py).fd;
            self.loop_object(py)
                .call_method1(intern!(py, "_remove_reader"), (fd,))?;
            return Ok(());
        }
        let close = intern!(py, "close");
        if transport.get_type().getattr(close)?.is(c.close.bind(py)) {
            self.close_impl(py, &transport)
        } else {
            transport.call_method0(close)?;
            Ok(())
        }
    }

    /// `_SelectorSocketTransport.close` of the running version (module comment).
    pub(super) fn close_impl(&self, py: Python<'_>, transport: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = config(py)?;
        if c.drops_callbacks {
            transport.setattr(intern!(py, "_read_ready_cb"), py.None())?;
            transport.setattr(names::write_ready(py), py.None())?;
        }
        let fd = {
            let mut st = self.st.borrow_mut(py);
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            st.fd
        };
        self.loop_object(py)
            .call_method1(intern!(py, "_remove_reader"), (fd,))?;
        if self.buffer.get().size(py) == 0 {
            self.st.borrow_mut(py).conn_lost += 1;
            self.loop_object(py)
                .call_method1(intern!(py, "_remove_writer"), (fd,))?;
            let callback = transport.getattr(names::call_connection_lost(py))?;
            self.loop_object(py)
                .call_method1(intern!(py, "call_soon"), (callback, py.None()))?;
        }
        Ok(())
    }

    /// `_SelectorSocketTransport._call_connection_lost(exc)` with `super()`'s (module comment).
    pub(super) fn call_connection_lost_impl(
        &self,
        py: Python<'_>,
        transport: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = config(py)?;
        let lost = if self.st.borrow(py).protocol_connected {
            self.protocol(py)
                .call_method1(intern!(py, "connection_lost"), (exc,))
                .map(drop)
        } else {
            Ok(())
        };
        let released = match lost.as_ref() {
            Err(e) => while_handling(py, e, || self.release(py, c, transport)),
            Ok(()) => self.release(py, c, transport),
        };
        // An exception of the `finally:` block replaces the protocol's (chained to it above).
        released?;
        lost?;
        let waiter = self
            .st
            .borrow(py)
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py));
        if let Some(waiter) = waiter {
            let e = PyConnectionError::new_err("Connection is closed by peer");
            waiter
                .bind(py)
                .call_method1(names::set_exception(py), (e.into_value(py),))?;
        }
        Ok(())
    }

    /// The `finally:` block of `_SelectorTransport._call_connection_lost`. Each old value is let
    /// go at its assignment, outside the borrow (its `__del__` may read this transport).
    fn release(
        &self,
        py: Python<'_>,
        c: &CloseConfig,
        transport: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let sock = self.st.borrow(py).sock.as_ref().map(|s| s.clone_ref(py));
        match &sock {
            Some(sock) => close_socket(c, sock.bind(py))?,
            None => {
                py.None().bind(py).call_method0(intern!(py, "close"))?; // the stdlib's AttributeError
            }
        }
        drop(sock);
        let old = self.st.borrow_mut(py).sock.take();
        drop(old);
        let old = self.st.borrow_mut(py).protocol.take();
        drop(old);
        // `_loop = None`: as its descriptor does (state.rs), the core also lets go of the
        // transport, which is finished.
        let (old_loop, old_transport) = {
            let mut st = self.st.borrow_mut(py);
            (st.loop_.take(), st.transport.take())
        };
        drop(old_loop);
        drop(old_transport);
        let server = self.st.borrow(py).server.as_ref().map(|s| s.clone_ref(py));
        if let Some(server) = server {
            let server = server.bind(py);
            if c.tracks_clients {
                server.call_method1(intern!(py, "_detach"), (transport,))?;
            } else {
                server.call_method0(intern!(py, "_detach"))?;
            }
            let old = self.st.borrow_mut(py).server.take();
            drop(old);
        }
        Ok(())
    }
}

/// `sock.close()`: for a plain `socket.socket` with the `socket` module's `close` and
/// `_real_close`, their two steps; otherwise the method.
fn close_socket(c: &CloseConfig, sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let cls = sock.get_type();
    if !cls.is(c.socket_class.bind(py))
        || !cls
            .getattr(intern!(py, "close"))?
            .is(c.socket_close.bind(py))
        || !cls
            .getattr(intern!(py, "_real_close"))?
            .is(c.socket_real_close.bind(py))
    {
        sock.call_method0(intern!(py, "close"))?;
        return Ok(());
    }
    // socket.socket.close: `self._closed = True; if self._io_refs <= 0: self._real_close()`,
    // and _real_close is `_socket.socket.close(self)`.
    sock.setattr(intern!(py, "_closed"), true)?;
    if sock.getattr(intern!(py, "_io_refs"))?.le(0)? {
        c.c_close.bind(py).call1((sock,))?;
    }
    Ok(())
}

/// The transport class's `__del__` (module comment).
#[pyclass(frozen, module = "ferroloop._native", name = "TransportFinalizer")]
pub struct TransportFinalizer {
    /// The stdlib's `__del__`, borrowed onto the transport class.
    stdlib: Py<PyAny>,
}

/// What a finished transport's `__del__` is: nothing to do.
#[pyfunction]
#[pyo3(name = "__del__")]
fn finished_transport_del() {}

static FINISHED_DEL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl TransportFinalizer {
    pub(super) fn new(stdlib: Py<PyAny>) -> Self {
        TransportFinalizer { stdlib }
    }
}

#[pymethods]
impl TransportFinalizer {
    /// The stdlib's `__del__` this one stands over (what `tests/test_borrowed_manifest.py` records).
    #[getter]
    fn __wrapped__(&self, py: Python<'_>) -> Py<PyAny> {
        self.stdlib.clone_ref(py)
    }

    fn __get__(
        &self,
        py: Python<'_>,
        instance: &Bound<'_, PyAny>,
        owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if instance.is_none() {
            return Ok(self.stdlib.clone_ref(py)); // looked up on the class
        }
        if let Some(core) = TransportAttribute::core_of(instance)? {
            if core.get().st.borrow(py).sock.is_none() {
                let noop = FINISHED_DEL.get_or_try_init(py, || -> PyResult<_> {
                    Ok(wrap_pyfunction!(finished_transport_del, py)?
                        .into_any()
                        .unbind())
                })?;
                return Ok(noop.clone_ref(py));
            }
        }
        Ok(self
            .stdlib
            .bind(py)
            .call_method1(intern!(py, "__get__"), (instance, owner))?
            .unbind())
    }
}
