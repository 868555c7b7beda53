//! A stream transport's constructor, native: `selector_events._SelectorTransport.__init__` and
//! `_SelectorSocketTransport.__init__` as one call (`TransportCore._setup`, called by
//! `_transport._SelectorSocketTransport.__init__`).
//!
//! It runs once per connection, and on a server that accepts short connections the Python of
//! the stdlib's two constructors was most of the Python run per connection: two `__init__`
//! frames, `set_protocol`, `_set_nodelay`, `trsock.TransportSocket.__init__`, and
//! `WeakValueDictionary.__setitem__` with `KeyedRef.__new__`/`__init__`. Here each step is the
//! stdlib's, in the stdlib's order, with the same objects as results:
//!
//! 1. the core (`TransportCore`, the socket's fd read once), put in the instance's `__dict__`
//!    with the core's bound `write` (and, 3.12+, `writelines`) (`_transport.py`'s docstring);
//! 2. `_extra`: the given dict (or a new one) with `socket` (a `trsock.TransportSocket`),
//!    `sockname` and, unless given, `peername` (`None` when the socket answers `OSError`); for a
//!    plain `socket.socket` of `AF_INET`/`AF_INET6`, `sockname` is `getsockname(2)` on the fd,
//!    made into the tuple `sock.getsockname()` returns (`accept.rs`'s `makesockaddr`), with no
//!    method call;
//! 3. `set_protocol(protocol)` (the class's method when a subclass replaced it);
//! 4. `_server` and `server._attach()` (3.13: `server._attach(transport)`);
//! 5. `loop._transports[fd] = transport`: for the loop's own `WeakValueDictionary`, the entry
//!    `__setitem__` would make (`KeyedRef(transport, d._remove, fd)` in `d.data`), made with
//!    `weakref.ref.__new__` and the `key` slot; anything else (pending removals while the dict
//!    is iterated, another mapping) through `__setitem__` itself;
//! 6. `base_events._set_nodelay(sock)`, with the socket's C fields read directly for a plain
//!    `socket.socket` (its `family`/`type` properties build enums), and then `TCP_NODELAY` set
//!    on the fd (`setsockopt(2)`, an error raised as `sock.setsockopt` raises it);
//! 7. `loop.call_soon(protocol.connection_made, transport)`, then the core's `_add_reader` with
//!    `_read_ready`, then the waiter's `_set_result_unless_cancelled`.
//!
//! `TransportCore._make(cls, ...)` (what `loop._make_socket_transport` calls) makes the object
//! as calling the class would, without the `__init__` frame while that `__init__` is
//! `_transport.py`'s own: `cls.__new__(cls)`, then these steps.
//!
//! The version-dependent parts (3.12's `writelines`, 3.13's `_attach(transport)`) and the stdlib
//! objects used come from `_transport.py` once, through [`configure`] (`_compat.py` holds the
//! switches).

use super::names;
use super::sys::{errno_error, with_fd};
use super::TransportCore;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

/// What the constructor needs from the stdlib and the running version (`configure`).
pub(super) struct Config {
    /// 3.13+: `Server._attach(transport)`; before: `Server._attach()`.
    tracks_clients: bool,
    /// 3.12+: the transport publishes the core's `writelines` too.
    native_writelines: bool,
    /// `asyncio.trsock.TransportSocket` and its `__init__` when configured (the fast path makes
    /// the object only while that `__init__` is still the class's own).
    transport_socket: Py<PyAny>,
    transport_socket_init: Py<PyAny>,
    /// `asyncio.protocols.BufferedProtocol`.
    buffered_protocol: Py<PyAny>,
    /// The transport class's own `set_protocol` (called natively unless a subclass replaced it).
    set_protocol: Py<PyAny>,
    /// The transport class's own `__init__` (`_make` skips its frame while a class has it).
    init: Py<PyAny>,
    /// `asyncio.futures._set_result_unless_cancelled`.
    set_result_unless_cancelled: Py<PyAny>,
    /// `asyncio.base_events._set_nodelay`, for sockets that are not plain `socket.socket`s.
    set_nodelay: Py<PyAny>,
    /// `socket.socket`, and the C getters of `_socket.socket`'s `family`, `type`, `proto`.
    socket_class: Py<PyAny>,
    c_family: Py<PyAny>,
    c_type: Py<PyAny>,
    c_proto: Py<PyAny>,
    /// `weakref.WeakValueDictionary`, `weakref.KeyedRef`, `weakref.ref.__new__`.
    weak_value_dict: Py<PyAny>,
    keyed_ref: Py<PyAny>,
    ref_new: Py<PyAny>,
}

static CONFIG: PyOnceLock<Config> = PyOnceLock::new();

/// `TransportCore._configure(...)`: called once by `_transport.py` at import.
// One argument per stdlib object and switch: a struct would only be built to be taken apart.
#[allow(clippy::too_many_arguments)]
pub(super) fn configure(
    py: Python<'_>,
    transport_class: &Bound<'_, PyAny>,
    tracks_clients: bool,
    native_writelines: bool,
    transport_socket: Bound<'_, PyAny>,
    buffered_protocol: Bound<'_, PyAny>,
    set_result_unless_cancelled: Bound<'_, PyAny>,
    set_nodelay: Bound<'_, PyAny>,
) -> PyResult<()> {
    let csock = py.import("_socket")?.getattr("socket")?;
    let getter = |name: &str| -> PyResult<Py<PyAny>> {
        Ok(csock.getattr(name)?.getattr("__get__")?.unbind())
    };
    let weakref = py.import("weakref")?;
    let config = Config {
        tracks_clients,
        native_writelines,
        transport_socket_init: transport_socket.getattr("__init__")?.unbind(),
        transport_socket: transport_socket.unbind(),
        buffered_protocol: buffered_protocol.unbind(),
        set_protocol: transport_class.getattr("set_protocol")?.unbind(),
        init: transport_class.getattr("__init__")?.unbind(),
        set_result_unless_cancelled: set_result_unless_cancelled.unbind(),
        set_nodelay: set_nodelay.unbind(),
        socket_class: py.import("socket")?.getattr("socket")?.unbind(),
        c_family: getter("family")?,
        c_type: getter("type")?,
        c_proto: getter("proto")?,
        weak_value_dict: weakref.getattr("WeakValueDictionary")?.unbind(),
        keyed_ref: weakref.getattr("KeyedRef")?.unbind(),
        ref_new: weakref.getattr("ref")?.getattr("__new__")?.unbind(),
    };
    // A second call (a reloaded module) keeps the first configuration: the same objects.
    let _ = CONFIG.set(py, config);
    Ok(())
}

fn config(py: Python<'_>) -> PyResult<&Config> {
    CONFIG
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("TransportCore._configure was not called"))
}

/// `sock.<name>()`, `None` on `OSError` (`_SelectorTransport.__init__`'s sockname/peername).
fn address_or_none<'py>(
    sock: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    match sock.call_method0(name) {
        Ok(a) => Ok(a),
        Err(e) if e.is_instance_of::<PyOSError>(py) => Ok(py.None().into_bound(py)),
        Err(e) => Err(e),
    }
}

/// `trsock.TransportSocket(sock)`: its `__init__` only sets the `_sock` slot, so while that
/// `__init__` is the one configured the object is made with `__new__` and the slot set.
fn transport_socket<'py>(c: &Config, sock: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    let cls = c.transport_socket.bind(py);
    if cls
        .getattr(intern!(py, "__init__"))?
        .is(c.transport_socket_init.bind(py))
    {
        let obj = cls.call_method1(intern!(py, "__new__"), (cls,))?;
        obj.setattr(intern!(py, "_sock"), sock)?;
        Ok(obj)
    } else {
        cls.call1((sock,))
    }
}

/// `loop._transports[fd] = transport` (module comment, step 5).
fn register(
    c: &Config,
    lp: &Bound<'_, PyAny>,
    fd: i32,
    transport: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = lp.py();
    let d = lp.getattr(intern!(py, "_transports"))?;
    if d.get_type().is(c.weak_value_dict.bind(py))
        && !d.getattr(intern!(py, "_pending_removals"))?.is_truthy()?
    {
        let remove = d.getattr(intern!(py, "_remove"))?;
        let r = c
            .ref_new
            .bind(py)
            .call1((c.keyed_ref.bind(py), transport, remove))?;
        r.setattr(intern!(py, "key"), fd)?;
        d.getattr(intern!(py, "data"))?.set_item(fd, r)?;
        Ok(())
    } else {
        d.set_item(fd, transport)
    }
}

// Linux's values, as `socket` exposes them.
const AF_INET: i64 = 2;
const AF_INET6: i64 = 10;
const SOCK_STREAM: i64 = 1;
const IPPROTO_TCP: i64 = 6;

/// The family of a plain `socket.socket` (its C field); `None` for any other socket object,
/// whose methods are then called as the stdlib calls them.
fn plain_family(c: &Config, sock: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let py = sock.py();
    if !sock.get_type().is(c.socket_class.bind(py)) {
        return Ok(None);
    }
    Ok(Some(c.c_family.bind(py).call1((sock,))?.extract()?))
}

/// `sock.getsockname()`, `None` on `OSError` (module comment, step 2): natively on `fd` for a
/// plain `AF_INET`/`AF_INET6` socket (`family`, from [`plain_family`]).
fn sockname<'py>(
    sock: &Bound<'py, PyAny>,
    fd: i32,
    family: Option<i64>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sock.py();
    if matches!(family, Some(AF_INET | AF_INET6)) {
        return match with_fd(fd, |fd| rustix::net::getsockname(fd)) {
            Ok(addr) => match super::accept::address(py, Some(addr))? {
                Some(a) => Ok(a),
                // Not an inet address after all: what the socket object itself answers.
                None => address_or_none(sock, intern!(py, "getsockname")),
            },
            // `sock.getsockname()` would raise this OSError: `None`, as the stdlib has it.
            Err(_) => Ok(py.None().into_bound(py)),
        };
    }
    address_or_none(sock, intern!(py, "getsockname"))
}

/// `base_events._set_nodelay(sock)` (module comment, step 6); `family` from [`plain_family`].
fn set_nodelay(c: &Config, sock: &Bound<'_, PyAny>, fd: i32, family: Option<i64>) -> PyResult<()> {
    let py = sock.py();
    let Some(family) = family else {
        c.set_nodelay.bind(py).call1((sock,))?;
        return Ok(());
    };
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let type_: i64 = c.c_type.bind(py).call1((sock,))?.extract()?;
    let proto: i64 = c.c_proto.bind(py).call1((sock,))?.extract()?;
    if type_ == SOCK_STREAM && proto == IPPROTO_TCP {
        // `sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)`, on the fd.
        with_fd(fd, |fd| rustix::net::sockopt::set_tcp_nodelay(fd, true)).map_err(errno_error)?;
    }
    Ok(())
}

impl TransportCore {
    /// `cls(loop, sock, protocol, waiter, extra, server)` (module comment).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn make_impl<'py>(
        py: Python<'py>,
        cls: &Bound<'py, PyAny>,
        lp: &Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        protocol: &Bound<'py, PyAny>,
        waiter: Option<&Bound<'py, PyAny>>,
        extra: Option<&Bound<'py, PyAny>>,
        server: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = config(py)?;
        let none = py.None().into_bound(py);
        let or_none = |o: Option<&Bound<'py, PyAny>>| o.unwrap_or(&none).clone();
        if !cls.getattr(intern!(py, "__init__"))?.is(c.init.bind(py)) {
            return cls.call1((
                lp,
                sock,
                protocol,
                or_none(waiter),
                or_none(extra),
                or_none(server),
            ));
        }
        let transport = cls.call_method1(intern!(py, "__new__"), (cls,))?;
        Self::setup_impl(py, &transport, lp, sock, protocol, waiter, extra, server)?;
        Ok(transport)
    }

    /// `TransportCore._setup(transport, loop, sock, protocol, waiter, extra, server)` (module
    /// comment).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn setup_impl(
        py: Python<'_>,
        transport: &Bound<'_, PyAny>,
        lp: &Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
        protocol: &Bound<'_, PyAny>,
        waiter: Option<&Bound<'_, PyAny>>,
        extra: Option<&Bound<'_, PyAny>>,
        server: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let c = config(py)?;
        // 1. The core, in the instance's __dict__ with its write (and writelines).
        let core = Bound::new(
            py,
            TransportCore::py_new(
                py,
                transport.clone().unbind(),
                lp.clone().unbind(),
                sock.clone(),
            )?,
        )?;
        let fd = core.get().st.borrow(py).fd;
        let d = transport
            .getattr(intern!(py, "__dict__"))?
            .cast_into::<PyDict>()?;
        d.set_item(names::core(py), &core)?;
        d.set_item(intern!(py, "write"), core.getattr(intern!(py, "write"))?)?;
        if c.native_writelines {
            d.set_item(
                intern!(py, "writelines"),
                core.getattr(intern!(py, "writelines"))?,
            )?;
        }
        // 2. _extra.
        let extra = match extra {
            Some(e) if !e.is_none() => e.clone(),
            _ => PyDict::new(py).into_any(),
        };
        transport.setattr(intern!(py, "_extra"), &extra)?;
        extra.set_item(names::socket(py), transport_socket(c, sock)?)?;
        let family = plain_family(c, sock)?;
        extra.set_item(intern!(py, "sockname"), sockname(sock, fd, family)?)?;
        let peername = intern!(py, "peername");
        if !extra.contains(peername)? {
            extra.set_item(peername, address_or_none(sock, intern!(py, "getpeername"))?)?;
        }
        // 3. set_protocol (the class's own, natively, unless a subclass replaced it).
        let set_protocol = intern!(py, "set_protocol");
        if transport
            .get_type()
            .getattr(set_protocol)?
            .is(c.set_protocol.bind(py))
        {
            core.get().set_protocol_impl(py, protocol)?;
        } else {
            transport.call_method1(set_protocol, (protocol,))?;
        }
        // 4. The server.
        if let Some(server) = server.filter(|s| !s.is_none()) {
            transport.setattr(intern!(py, "_server"), server)?;
            if c.tracks_clients {
                server.call_method1(intern!(py, "_attach"), (transport,))?;
            } else {
                server.call_method0(intern!(py, "_attach"))?;
            }
        }
        // 5. loop._transports[fd] = transport.
        register(c, lp, fd, transport)?;
        // 6. TCP_NODELAY.
        set_nodelay(c, sock, fd, family)?;
        // 7. connection_made, then reading, then the waiter, each one turn later.
        let call_soon = lp.getattr(intern!(py, "call_soon"))?;
        let protocol = transport.getattr(intern!(py, "_protocol"))?;
        call_soon.call1((protocol.getattr(intern!(py, "connection_made"))?, transport))?;
        call_soon.call1((
            core.getattr(intern!(py, "_add_reader"))?,
            fd,
            core.getattr(names::read_ready(py))?,
        ))?;
        if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
            call_soon.call1((c.set_result_unless_cancelled.bind(py), waiter, py.None()))?;
        }
        Ok(())
    }

    /// `set_protocol(protocol)`'s native half: the protocol, and whether it is a
    /// `BufferedProtocol` (`isinstance`, as the stdlib checks it).
    pub(super) fn set_protocol_impl(
        &self,
        py: Python<'_>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = config(py)?;
        let buffered = protocol.is_instance(c.buffered_protocol.bind(py))?;
        self._set_protocol(py, protocol.clone().unbind(), buffered);
        Ok(())
    }
}
