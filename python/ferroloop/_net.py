"""Networking, TLS, UDP, pipes and subprocesses for ferroloop.Loop: the stdlib's own code.

Every method here is the installed stdlib's own function, used as a method of ``Loop``
(``_borrowing.borrow_into``, one ``borrow`` per name, which fails ``import ferroloop`` when a name
is missing; the two names that exist on some versions only are declared in ``_borrowed.py``):
the selector transports, ``Server``, the SSL protocol, the pipe and subprocess transports, their
messages and their version differences (3.11, 3.12, 3.13) are then CPython's by construction.

That code is not limited to the loop's public API: it reads and assigns the private attributes
of ``BaseEventLoop`` and ``BaseSelectorEventLoop`` (``_check_closed``, ``_transports``,
``_make_socket_transport``, ``_sock_recv``, ``_start_serving``, ...; 3.13's ``_stop_serving``
also ``_unix_server_sockets``). The exact list for each Python version, function by function, is
``tests/borrowed_manifest/<version>.toml``, which ``tests/test_borrowed_manifest.py`` regenerates
from the installed stdlib; the same test checks that each private attribute read exists on a
``Loop``. What ferroloop provides for that code:

* fd watching: ``_add_reader(fd, cb, *args)`` / ``_remove_reader(fd)`` and the writer pair,
  returning the handle / a bool, replacing and cancelling a previous handle, cancelling the handle
  on removal. ``LoopCore`` (Rust) does exactly that (``selector_events._add_reader`` semantics).
* ``self._transports``: fd -> transport (a ``WeakValueDictionary``) that transports register in
  and ``_ensure_fd_no_transport`` checks; set in ``Loop.__init__``. The public
  ``add_reader``/``add_writer``/``remove_reader``/``remove_writer`` call
  ``_ensure_fd_no_transport`` first, as ``selector_events`` does.
* ``self._unix_server_sockets`` (3.13+): listening Unix sockets whose path ``_stop_serving``
  unlinks; set in ``Loop.__init__``.
* the other private methods that code calls on ``self``: the borrowed functions themselves,
  layered as below.

Adaptations (each one faithful, none changes behaviour):

* **Class layering.** The borrowed functions are grouped in three classes that mirror the stdlib
  hierarchy, ``_BaseNetworking`` (``base_events.BaseEventLoop``) <- ``_SelectorNetworking``
  (``selector_events.BaseSelectorEventLoop``) <- ``NetworkingMixin``
  (``unix_events._UnixSelectorEventLoop``), so that a subclass's override wins exactly as in the
  stdlib (e.g. ``_sock_sendfile_native`` of unix_events over base_events').
* **Zero-argument ``super()``.** A function that calls ``super()`` carries a ``__class__`` cell
  naming its stdlib class (3.13's ``_UnixSelectorEventLoop._stop_serving`` does); ``super()``
  would then fail, ``Loop`` not being that class. Such functions are borrowed as a copy of the
  very same code object whose ``__class__`` cell names the layer they are borrowed into, so
  ``super()`` continues with the next layer: the stdlib's own MRO step (``borrow_into`` passes
  ``super_layer=`` the layer).
* **``_make_ssl_transport``** builds the stdlib's ``_SelectorSocketTransport`` by name: it is
  borrowed with ``globals={"_SelectorSocketTransport": ...}`` (a copy seeing ferroloop's stream
  transport under that name, over a snapshot of ``selector_events``' globals).
* **``loop._selector``.** The transports' ``__repr__`` (and the pipe transports') ask
  ``loop._selector.get_key(fd).events`` whether their fd is polled for reading/writing
  (``selector_events._test_selector_event``). ferroloop has no ``selectors`` object: its epoll
  table lives in Rust. ``_selector`` is a read-only view over that table (``_FdTableView``:
  ``get_key``, ``get_map().get``/``[]``/``in``), built from ``LoopCore._fd_callbacks(fd)``,
  whose keys carry the same ``events`` mask and ``(reader, writer)`` data as a selector's. It
  has no ``register``/``select``: ferroloop's table is changed only through the loop's methods.
* **One read buffer per loop.** The stdlib socket transport reads with ``sock.recv(max_size)``,
  which allocates a fresh 256 KiB ``bytes`` for every read and then shrinks it: about half the
  server CPU of a 1 KiB echo on this machine (glibc maps, remaps and unmaps the block each time).
  ``_PySocketTransport`` below is the stdlib class with only that step changed: it reads into a
  buffer the loop reuses and hands ``data_received`` a ``bytes`` of exactly what arrived, as
  uvloop does (same errors, same ``max_size``). It is the fallback selected by
  ``FERROLOOP_PY_TRANSPORTS=1``; the default stream transport is the native one
  (``_transport.py``), also under TLS (``_make_ssl_transport``, below).
* **The self-pipe** (``_ssock``/``_csock``) is not used by any borrowed method here; the loop
  keeps its own, created on first use (``Loop._csock``).
* **Subprocesses.** All three versions' ``_make_subprocess_transport`` get their child watcher
  from the policy (``events.get_child_watcher()``): 3.11's default is ``ThreadedChildWatcher``
  (a waitpid thread that calls ``loop.call_soon_threadsafe``), 3.12+'s is ``PidfdChildWatcher``
  where available (``loop._add_reader(pidfd, ...)`` on the running loop) else the threaded one.
  Both talk to the loop through the API above, so the stdlib code is used unchanged; a policy
  that is ferroloop's (``EventLoopPolicy`` subclasses the default policy) or the stock one both
  work.
"""

import os
import selectors
import sys
from asyncio import base_events, selector_events, unix_events

from . import _native, _transport, _udp
from ._accept import AcceptMixin
from ._borrowing import borrow, borrow_into

__all__ = ["NetworkingMixin"]


class _BaseNetworking:
    """``base_events.BaseEventLoop``: the public coroutines (address resolution, happy eyeballs,
    servers, sendfile fallbacks, TLS upgrade, UDP, pipes, subprocesses). They build transports
    through the ``_make_*_transport`` factories defined by the layers below."""


borrow_into(
    _BaseNetworking,
    base_events.BaseEventLoop,
    [
        # TCP / Unix stream connections and servers
        "_ensure_resolved",
        "_connect_sock",
        "create_connection",
        "_create_connection_transport",
        "_create_server_getaddrinfo",
        "create_server",
        "connect_accepted_socket",
        # sendfile: the native path is overridden below; the fallback is a read/write loop
        "sendfile",
        "_sendfile_native",
        "_sendfile_fallback",
        "sock_sendfile",
        "_sock_sendfile_native",
        "_sock_sendfile_fallback",
        "_check_sendfile_params",
        # TLS upgrade of an existing transport
        "start_tls",
        # UDP
        "create_datagram_endpoint",
        # pipes and subprocesses
        "connect_read_pipe",
        "connect_write_pipe",
        "_log_subprocess",
        "subprocess_shell",
        "subprocess_exec",
    ],
)


class _SelectorNetworking(AcceptMixin, _BaseNetworking):
    """``selector_events.BaseSelectorEventLoop``: the socket transports over ``_add_reader`` &
    co., accepting connections (``_start_serving`` and ``_accept_connection`` are ferroloop's,
    ``_accept.py``), the ``sock_*`` coroutines, sendfile on a transport."""


borrow_into(
    _SelectorNetworking,
    selector_events.BaseSelectorEventLoop,
    [
        # transport factories (stream, TLS and datagram transports are set below: ferroloop's own
        # classes)
        "_ensure_fd_no_transport",
        # servers (_start_serving and _accept_connection: _accept.py; this one is for TLS)
        "_accept_connection2",
        "_stop_serving",
        # loop.sendfile() on a socket transport: pause it, then sock_sendfile
        "_sendfile_native",
    ],
)


# The low-level socket operations, sock_recv & co., are native (LoopCore's, sock/). With
# FERROLOOP_PY_SOCK=1 in the environment they are the stdlib's coroutines instead (to compare, or
# to rule the native ones out of a bug): borrowed here, and put on Loop by _loop.py (its native
# base comes first in its MRO). tests/borrowed_manifest records the default (native) set.
PY_SOCK = os.environ.get("FERROLOOP_PY_SOCK") == "1"
SOCK_COROUTINES = (
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
)
if PY_SOCK:
    borrow_into(
        _SelectorNetworking,
        selector_events.BaseSelectorEventLoop,
        [
            *SOCK_COROUTINES,
            "_sock_recv",
            "_sock_recv_into",
            "_sock_recvfrom",
            "_sock_recvfrom_into",
            "_sock_read_done",
            "_sock_sendall",
            "_sock_sendto",
            "_sock_write_done",
            "_sock_connect",
            "_sock_connect_cb",
            "_sock_accept",
        ],
    )


class _PySocketTransport(selector_events._SelectorSocketTransport):
    """The stdlib's socket transport, reading into the loop's reusable buffer (module docstring).
    Used only when ``FERROLOOP_PY_TRANSPORTS=1`` (the native one is ``_transport.py``'s);
    ``tests/test_py_transport_fallback.py`` runs the stream transport tests on it."""

    def _read_ready__data_received(self):
        if self._conn_lost:
            return
        view = self._loop._recv_view
        max_size = self.max_size
        try:
            if len(view) == max_size:
                n = self._sock.recv_into(view)
                data = view[:n].tobytes() if n else b""
            else:
                data = self._sock.recv(max_size)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return

        if not data:
            self._read_ready__on_eof()
            return

        try:
            self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")


# The stream transport: native (_transport.py) unless FERROLOOP_PY_TRANSPORTS=1 asks for the
# stdlib-derived Python one above (to compare the two, or to rule the native one out of a bug).
_SOCKET_TRANSPORT = (
    _PySocketTransport
    if os.environ.get("FERROLOOP_PY_TRANSPORTS") == "1"
    else _transport._SelectorSocketTransport
)


_make_transport = _native.TransportCore._make

# The stdlib's _make_ssl_transport builds its own _SelectorSocketTransport by name under the
# SSLProtocol: the same function, seeing ferroloop's transport under that name.
_SelectorNetworking._make_ssl_transport = borrow(
    selector_events.BaseSelectorEventLoop,
    "_make_ssl_transport",
    globals={"_SelectorSocketTransport": _SOCKET_TRANSPORT},
)

# The datagram transport: native (_udp.py) unless FERROLOOP_PY_TRANSPORTS=1; the stdlib's
# _make_datagram_transport, seeing it under the name it builds.
_SelectorNetworking._make_datagram_transport = borrow(
    selector_events.BaseSelectorEventLoop,
    "_make_datagram_transport",
    globals={
        "_SelectorDatagramTransport": selector_events._SelectorDatagramTransport
        if os.environ.get("FERROLOOP_PY_TRANSPORTS") == "1"
        else _udp._SelectorDatagramTransport
    },
)


class NetworkingMixin(_SelectorNetworking):
    """``unix_events._UnixSelectorEventLoop``: Unix sockets, pipes, subprocesses and
    ``os.sendfile``. The base of ``ferroloop.Loop`` that provides networking (see the module
    docstring for what it needs from the loop and what is adapted)."""

    @property
    def _recv_view(self):
        # The read buffer shared by this loop's socket transports (created on first use; the
        # loop runs one callback at a time and data_received gets a copy).
        view = self.__dict__.get("_recv_view_cache")
        if view is None:
            view = memoryview(bytearray(selector_events._SelectorTransport.max_size))
            self.__dict__["_recv_view_cache"] = view
        return view

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        # `_SOCKET_TRANSPORT(self, sock, ...)`, without the native class's `__init__` frame.
        return _make_transport(_SOCKET_TRANSPORT, self, sock, protocol, waiter, extra, server)

    @property
    def _selector(self):
        # What transports' __repr__ reads (see _FdTableView); None once the loop is closed, as
        # BaseSelectorEventLoop.close() leaves it.
        return None if self.is_closed() else _FdTableView(self)


# The native accept loop (transport/accept.rs) makes the transport itself while a loop's
# `_make_socket_transport` is this one.
_native.configure_accept(NetworkingMixin._make_socket_transport, sys.modules[__name__])


borrow_into(
    NetworkingMixin,
    unix_events._UnixSelectorEventLoop,
    [
        "_make_read_pipe_transport",
        "_make_write_pipe_transport",
        "_make_subprocess_transport",
        "_child_watcher_callback",
        "create_unix_connection",
        "create_unix_server",
        # sendfile(2) on sockets
        "_sock_sendfile_native",
        "_sock_sendfile_native_impl",
        "_sock_add_cancellation_callback",
        "_sock_sendfile_update_filepos",
        # 3.13+: also unlinks the path of a listening Unix socket (calls super()._stop_serving)
        "_stop_serving",
    ],
)


class _FdTableView:
    """A read-only ``selectors.BaseSelector`` look-alike over the loop's native fd table.

    Only the queries that stdlib code makes of ``loop._selector`` are provided: ``get_key(fd)``
    (``selector_events._test_selector_event``) and ``get_map()`` lookups. Keys are
    ``selectors.SelectorKey(fileobj, fd, events, (reader_handle, writer_handle))``, like
    ``BaseSelectorEventLoop``'s.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fileobj):
        key = self._key(fileobj)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return key

    def get_map(self):
        return _FdTableMap(self)

    def _key(self, fileobj):
        fd = selectors._fileobj_to_fd(fileobj)
        reader, writer = self._loop._fd_callbacks(fd)
        events = (selectors.EVENT_READ if reader is not None else 0) | (
            selectors.EVENT_WRITE if writer is not None else 0
        )
        if not events:
            return None
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))

    def __repr__(self):
        return f"<ferroloop fd table of {self._loop!r}>"


class _FdTableMap:
    """``get_map()`` of ``_FdTableView``: lookups only (the native table is not enumerated)."""

    __slots__ = ("_view",)

    def __init__(self, view):
        self._view = view

    def get(self, fileobj, default=None):
        key = self._view._key(fileobj)
        return default if key is None else key

    def __getitem__(self, fileobj):
        return self._view.get_key(fileobj)

    def __contains__(self, fileobj):
        return self._view._key(fileobj) is not None
