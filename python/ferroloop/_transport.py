"""ferroloop's TCP and Unix stream transport: native reads and writes, the stdlib's rare paths.

``_SelectorSocketTransport`` is what ``loop.create_connection``, ``create_server``,
``create_unix_connection``, ``create_unix_server``, ``connect_accepted_socket`` and the streams
API hand out for stream sockets (TLS runs the stdlib's ``SSLProtocol`` over it). It is a subclass
of ``asyncio.transports._FlowControlMixin`` and ``asyncio.Transport``, as the stdlib's own class
is, so ``isinstance`` checks and the stdlib's sendfile fallback (which requires a
``_FlowControlMixin``) accept it.

Where the work is done:

* **Per packet, in Rust** (``_native.TransportCore``, ``crates/ferroloop-py/src/transport/``):
  the fd's reader callback (``recv`` then ``protocol.data_received``, or ``get_buffer`` /
  ``recv`` into it / ``buffer_updated`` for a ``BufferedProtocol``), ``write`` (the socket first,
  the buffer for the rest), ``writelines`` (3.12+), the writer callback (one ``sendmsg`` over the
  buffered pieces), ``pause_writing``/``resume_writing`` at the water marks,
  ``get_write_buffer_size``, ``is_closing``, and ``_add_reader`` (which registers the reader
  in the loop's fd table from Rust; ``__init__`` schedules it with ``call_soon`` after
  ``connection_made``, as the stdlib does), and ``is_reading``/``pause_reading``/
  ``resume_reading`` (the stdlib's logic; pausing cancels the reader but leaves epoll's
  registration lingering, so a prompt resume makes no ``epoll_ctl`` call: ``transport/read.rs``
  and ``ferroloop_core::fd_table``). The core's ``write`` (and, 3.12+, ``writelines``) is put in each
  instance's ``__dict__`` by the constructor: ``transport.write(data)`` is then a single call
  into Rust, and code that replaces ``transport.write`` on an instance (tests do) still can. The
  other methods are published the same way on their first lookup (``_Published``), so a
  connection pays only for what it uses.
* **The end of a connection, in Rust** (``transport/close.rs``): the reader's EOF
  (``_read_ready__on_eof``'s steps, while the class has the stdlib's), ``close`` and
  ``_call_connection_lost``, and ``__del__`` for a closed transport (the stdlib's for an
  unclosed one). The class's ``close`` and ``_call_connection_lost`` are one-line
  functions calling the core, so that the handle ``close`` schedules holds the transport's bound
  ``_call_connection_lost`` (its repr names it as the stdlib's does) and a subclass's override
  still wins. 3.12+'s ``close`` also drops the read/write callbacks first, as the stdlib's does
  (``_compat.TRANSPORT_CLOSE_DROPS_CALLBACKS``).
* **Everything else, the stdlib's own functions** (``_borrowing.borrow_into``, which fails
  ``import ferroloop`` when a name is missing): ``selector_events._SelectorTransport``'s and
  ``_SelectorSocketTransport``'s ``abort``, ``_force_close``, ``_fatal_error``,
  ``_read_ready__on_eof`` (called instead of the native EOF steps in a subclass that replaces
  it), ``write_eof``, the sendfile waiters, ``__repr__`` and ``__del__``, and
  ``_SelectorTransport``'s ``close`` and ``_call_connection_lost`` (what a subclass's
  ``super()`` reaches from the layer above), plus, inherited, ``_FlowControlMixin``'s buffer
  limits and ``BaseTransport.get_extra_info`` (and 3.11's ``WriteTransport.writelines``). Their
  messages, logging and version differences are CPython's own. The private attributes each of
  them reads and assigns, per Python version, are in ``tests/borrowed_manifest/<version>.toml``
  (``tests/test_borrowed_manifest.py`` regenerates it and checks they all exist here).
* **One state.** Those functions read and assign the private attributes they always did
  (``_closing``, ``_conn_lost``, ``_protocol``, ``_sock``, ``_loop``, ``_buffer``, ...). Here each
  is a native data descriptor over the Rust core's field (``TransportCore._attributes()``; the
  fields and their names are declared once, in ``transport/state.rs``), so both halves see the
  same value. ``_buffer`` is the native write buffer: ``len()`` (unsent bytes), truth and
  ``clear()``.
* **Version differences kept:** 3.11 inherits ``WriteTransport.writelines`` (``b''.join`` then
  ``self.write``); 3.12+ gets the native one with 3.12's messages. ``Server._attach``/``_detach``
  take the transport on 3.13 only (``_compat.SERVER_ATTACH_TAKES_TRANSPORT``, as every version
  switch, by ``sys.version_info`` in ``_compat.py``).

Deviations, each deliberate (``docs/semantics.md``):

* A ``bytearray`` or ``memoryview`` passed to ``write`` is copied when it has to be buffered (as
  3.11's ``bytearray`` buffer does; 3.12+ keeps a view, so a later change by the caller would
  change what is sent). An exact ``bytes`` is kept by reference.
* 3.12's ``writelines`` does not call ``pause_writing`` when it overfills the buffer; this one
  does, as ``write`` does.
* Reads take up to ``max_size`` (256 KiB) at once, as the stdlib's do, into a buffer shared by
  the thread's transports (or, after a read that filled ``max_size``, straight into a new
  ``bytes``); ``data_received`` gets a ``bytes`` of exactly what arrived. Changing
  ``max_size`` on a transport has no effect.
"""

from asyncio import base_events, constants, futures, protocols, selector_events, transports
from asyncio import trsock

from . import _compat, _native
from ._borrowing import borrow_into

__all__ = ["_SelectorSocketTransport"]

# 3.13's Server tracks its clients: _attach(transport) / _detach(transport).
_SERVER_TRACKS_CLIENTS = _compat.SERVER_ATTACH_TAKES_TRANSPORT
# 3.12+ defines its own writelines (one sendmsg over every piece).
_NATIVE_WRITELINES = _compat.TRANSPORT_WRITELINES


class _Published:
    """A method of the transport class that is also one of the core's (`TransportCore`): looked
    up on an instance, it puts the core's bound method in the instance's `__dict__` and returns
    it, so that every later lookup is a dict hit and the call goes straight to Rust. A non-data
    descriptor: an assignment on the instance (a test's replacement) takes precedence, and a
    deletion brings this one back. Looked up on the class, it is the plain function."""

    __slots__ = ("__func__", "__name__")

    def __init__(self, func):
        self.__func__ = func
        self.__name__ = func.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self.__func__
        d = instance.__dict__
        core = d.get("_core")
        if core is None:  # the constructor failed before creating the core
            return self.__func__.__get__(instance, owner)
        method = d[self.__name__] = getattr(core, self.__name__)
        return method


class _TransportLayer(transports._FlowControlMixin, transports.Transport):
    """``selector_events._SelectorTransport``: the stdlib's functions over the native state."""

    max_size = 256 * 1024  # as the stdlib's class says; reads take up to this much at once

    # The stdlib's private attributes (_loop, _sock, _closing, ..., _buffer) are set on the class
    # below: native descriptors over the core's fields, declared once in Rust.

    # The constructor is the subclass's (one native call: `TransportCore._setup`).

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    # `transport.write` and (3.12+) `writelines` are the core's bound methods, put in each
    # instance's `__dict__` by `__init__`; the functions here are what `transport.write` finds
    # again after a replacement is deleted, and what `type(t).write(t, data)` calls.
    def write(self, data):
        self._core.write(data)

    if _NATIVE_WRITELINES:

        def writelines(self, list_of_data):
            self._core.writelines(list_of_data)

    # The core's other methods, published in the instance's `__dict__` on first use.
    @_Published
    def _read_ready(self):
        self._core._read_ready()

    @_Published
    def _write_ready(self):
        self._core._write_ready()

    @_Published
    def _add_reader(self, fd, callback):
        self._core._add_reader(fd, callback)

    @_Published
    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    @_Published
    def is_closing(self):
        return self._core.is_closing()

    @_Published
    def is_reading(self):
        return self._core.is_reading()

    @_Published
    def pause_reading(self):
        self._core.pause_reading()

    @_Published
    def resume_reading(self):
        self._core.resume_reading()


borrow_into(
    _TransportLayer,
    selector_events._SelectorTransport,
    [
        "__repr__",
        "abort",
        "get_protocol",
        "close",
        "__del__",
        "_fatal_error",
        "_force_close",
        "_call_connection_lost",
    ],
)

# `__del__` over the stdlib's: nothing runs in Python for a transport that was closed
# (transport/close.rs, `TransportFinalizer`); `_TransportLayer.__del__` is still the stdlib's
# function.
_TransportLayer.__del__ = _native.TransportCore._finalizer(vars(_TransportLayer)["__del__"])

# The stdlib's private attributes, each a data descriptor over the field of the instance's core
# (`transport._closing` is the core's `closing`): the fields and their names are listed once, in
# crates/ferroloop-py/src/transport/state.rs. _loop, _protocol_paused, _high_water and
# _low_water override _FlowControlMixin's slots.
for _name, _attribute in _native.TransportCore._attributes().items():
    setattr(_TransportLayer, _name, _attribute)
del _name, _attribute


class _SelectorSocketTransport(_TransportLayer):
    """ferroloop's TCP and Unix stream transport (see the module docstring)."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # selector_events._SelectorTransport.__init__ and _SelectorSocketTransport.__init__, in
        # their order, in one native call (transport/setup.rs): the core and the published
        # `write`, `_extra` (socket, sockname, peername), `set_protocol`, the server's
        # `_attach`, `loop._transports`, TCP_NODELAY, then `connection_made`, the reader and the
        # waiter scheduled with `call_soon` (`_eof` and `_empty_waiter` start False/None in the
        # core).
        _setup(self, loop, sock, protocol, waiter, extra, server)

    # The end of a connection (transport/close.rs): the version's `close` and both levels of
    # `_call_connection_lost`, in the core.
    def close(self):
        self._core.close(self)

    def _call_connection_lost(self, exc):
        self._core._call_connection_lost(self, exc)


borrow_into(
    _SelectorSocketTransport,
    selector_events._SelectorSocketTransport,
    [
        "_read_ready__on_eof",
        "write_eof",
        "can_write_eof",
        "_make_empty_waiter",
        "_reset_empty_waiter",
    ],
)

_setup = _native.TransportCore._setup
# The class, what the native half needs from the stdlib, and the running version's switches.
_native.TransportCore._configure(
    _SelectorSocketTransport,
    _SERVER_TRACKS_CLIENTS,
    _NATIVE_WRITELINES,
    _compat.TRANSPORT_CLOSE_DROPS_CALLBACKS,
    trsock.TransportSocket,
    protocols.BufferedProtocol,
    futures._set_result_unless_cancelled,
    base_events._set_nodelay,
)
