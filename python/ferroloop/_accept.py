"""Accepting connections: the stdlib's accept loop, with a plain TCP/Unix connection set up at once.

The stdlib (``selector_events.BaseSelectorEventLoop``) accepts up to ``backlog`` connections per
readiness of the listening socket and, for each, creates a task running the coroutine
``_accept_connection2``: ``protocol_factory()``, a waiter future, the transport (which schedules
``connection_made`` and its reader with ``call_soon``, then the waiter's result), ``await waiter``.
That task, its coroutine and its future are most of the Python run per connection.

ferroloop's ``_accept_connection`` is the same loop, but a connection without TLS is set up
synchronously, right after its ``accept``, and, on a plain TCP ``socket.socket``, the ``accept``
is native (``_native.accept_nonblocking``, ``transport/accept.rs``): ``accept4`` with
``SOCK_NONBLOCK | SOCK_CLOEXEC`` makes the ``socket.socket`` ``sock.accept()`` would, already
non-blocking as ``conn.setblocking(False)`` leaves it, with the same address tuple, and an empty
queue answers ``None`` instead of raising ``BlockingIOError``. Then: ``protocol_factory()`` and
the transport, in a copy of the current context (what the task would have run in: callbacks the
transport schedules see the same context). ``connection_made`` is still called by ``call_soon`` after the transport's
constructor, then the reader is added, in the stdlib's order.

For a plain TCP ``socket.socket`` without TLS (what ``create_server`` makes for a host and port),
the listening socket's reader is that whole loop in Rust (``_native.accept_connections``,
``transport/accept.rs``): the accepts, the context copy, ``protocol_factory()`` and the transport,
with no Python frame per connection. It hands back to this module what is not per connection:
a loop in debug mode runs ``_accept_connection`` below, and an ``accept`` error goes to
``_accept_failed`` (the except clauses and the back-off). What stays the stdlib's:

* errors while setting a connection up are reported only in debug mode, with the stdlib's
  context (``'Error on transport creation for incoming connection'``, ``exception``, and
  ``protocol``/``transport`` when they exist), ``SystemExit``/``KeyboardInterrupt`` propagate;
* ``accept`` errors: would-block, ``EINTR`` and ``ECONNABORTED`` end the loop; ``EMFILE``,
  ``ENFILE``, ``ENOBUFS``, ``ENOMEM`` remove the reader and retry after ``ACCEPT_RETRY_DELAY``
  with the stdlib's exception-handler context (``'socket.accept() out of system resource'``,
  ``exception``, ``socket``); any other error propagates to the loop's handler;
* TLS connections: the stdlib's ``_accept_connection2`` task (the handshake needs it);
* the debug log line per accepted connection.

Deliberate differences (``docs/semantics.md``):

* the connection's protocol and transport are created in the turn of the ``accept``, not one turn
  later, and no task appears in ``asyncio.all_tasks()`` for it; so a connection accepted just
  before ``asyncio.run()`` ends is not closed by the cancellation of that task (there is none):
  like any connection already set up, it is closed by its protocol or when collected;
* running out of descriptors is reported once per episode: the retries that fail again stay
  silent, and the next report comes only after an ``accept`` went through (or found the queue
  empty). The stdlib reports every retry, once a second, for as long as it lasts.
"""

import _socket
import contextvars
import errno
import socket
from asyncio import constants, trsock
from asyncio.log import logger

from ._native import accept_connections as _accept_connections
from ._native import accept_nonblocking as _accept_nonblocking

__all__ = ["AcceptMixin"]

_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# The listening socket's family and type as the C fields hold them (`sock.family` and
# `sock.type` wrap them in enums).
_sock_family = _socket.socket.family.__get__
_sock_type = _socket.socket.type.__get__


class AcceptMixin:
    """``_start_serving`` and ``_accept_connection`` of ``selector_events.BaseSelectorEventLoop``
    (module docstring); ``_accept_connection2`` (TLS) and ``_stop_serving`` stay borrowed."""

    def _start_serving(self, protocol_factory, sock,
                       sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        self._watch_listening(protocol_factory, sock, sslcontext, server, backlog,
                              ssl_handshake_timeout, ssl_shutdown_timeout)

    def _watch_listening(self, protocol_factory, sock, sslcontext, server, backlog,
                         ssl_handshake_timeout, ssl_shutdown_timeout):
        # The listening socket's reader: for a plain TCP socket.socket without TLS, the whole
        # accept loop in Rust (`_native.accept_connections`, transport/accept.rs: the loop
        # below and `_accept_connection_now` without their frames; debug mode, accept errors
        # and the back-off come back here); else `_accept_connection`.
        if (not sslcontext and type(sock) is socket.socket
                and _sock_family(sock) in _INET_FAMILIES):
            self._add_reader(sock.fileno(), _accept_connections,
                             self, protocol_factory, sock, server, backlog,
                             _sock_family(sock), _sock_type(sock), sock.proto)
        else:
            self._add_reader(sock.fileno(), self._accept_connection,
                             protocol_factory, sock, sslcontext, server, backlog,
                             ssl_handshake_timeout, ssl_shutdown_timeout)

    def _accept_connection(
            self, protocol_factory, sock,
            sslcontext=None, server=None, backlog=100,
            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
            _retrying=False):
        # Called once per turn in which the listening socket is readable; several connections
        # may be waiting, so up to `backlog` are accepted (https://bugs.python.org/issue27906).
        # A plain TCP socket.socket: `_native.accept_nonblocking` (module docstring).
        native = type(sock) is socket.socket and _sock_family(sock) in _INET_FAMILIES
        if native:
            family, type_, proto = _sock_family(sock), _sock_type(sock), sock.proto
        for _ in range(backlog):
            try:
                if native:
                    accepted = _accept_nonblocking(sock, family, type_, proto)
                    if accepted is None:
                        return None  # the accept queue is empty
                    conn, addr = accepted
                    if self._debug:
                        logger.debug("%r got a new connection from %r: %r",
                                     server, addr, conn)
                else:
                    conn, addr = sock.accept()
                    if self._debug:
                        logger.debug("%r got a new connection from %r: %r",
                                     server, addr, conn)
                    conn.setblocking(False)
            except OSError as exc:
                return self._accept_failed(exc, protocol_factory, sock, sslcontext, server,
                                           backlog, ssl_handshake_timeout,
                                           ssl_shutdown_timeout, _retrying)
            else:
                _retrying = False
                extra = {'peername': addr}
                if sslcontext:
                    self.create_task(self._accept_connection2(
                        protocol_factory, conn, extra, sslcontext, server,
                        ssl_handshake_timeout, ssl_shutdown_timeout))
                else:
                    contextvars.copy_context().run(
                        self._accept_connection_now, protocol_factory, conn, extra, server)
        return None

    def _accept_failed(self, exc, protocol_factory, sock, sslcontext=None, server=None,
                       backlog=100, ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT, _retrying=False):
        # The accept loop's except clauses, for the OSError an accept raised (here or in the
        # native loop, transport/accept.rs).
        if isinstance(exc, (BlockingIOError, InterruptedError, ConnectionAbortedError)):
            return None  # the accept queue is empty
        if exc.errno in _RESOURCE_ERRNOS:
            # Linux keeps reporting the socket ready: stop watching it for a while.
            if not _retrying:  # reported once per episode (module docstring)
                self.call_exception_handler({
                    'message': 'socket.accept() out of system resource',
                    'exception': exc,
                    'socket': trsock.TransportSocket(sock),
                })
            self._remove_reader(sock.fileno())
            self.call_later(constants.ACCEPT_RETRY_DELAY,
                            self._retry_serving,
                            protocol_factory, sock, sslcontext, server,
                            backlog, ssl_handshake_timeout,
                            ssl_shutdown_timeout)
            return None
        raise exc  # the loop's exception handler logs it

    def _retry_serving(self, protocol_factory, sock, sslcontext, server, backlog,
                       ssl_handshake_timeout, ssl_shutdown_timeout):
        # After ACCEPT_RETRY_DELAY: accept at once (an error now belongs to the same episode),
        # then watch the socket again, as _start_serving does, unless the episode goes on.
        if sock.fileno() < 0:
            return  # the server was closed meanwhile
        self._watch_listening(protocol_factory, sock, sslcontext, server, backlog,
                              ssl_handshake_timeout, ssl_shutdown_timeout)
        self._accept_connection(protocol_factory, sock, sslcontext, server, backlog,
                                ssl_handshake_timeout, ssl_shutdown_timeout, _retrying=True)

    def _accept_connection_now(self, protocol_factory, conn, extra, server):
        # _accept_connection2 without its task and waiter (module docstring).
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            transport = self._make_socket_transport(
                conn, protocol, extra=extra, server=server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {
                    'message':
                        'Error on transport creation for incoming connection',
                    'exception': exc,
                }
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.call_exception_handler(context)
