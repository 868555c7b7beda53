"""ferroloop's datagram (UDP) transport: native reads and sends, the stdlib's everything else.

``_SelectorDatagramTransport`` is what ``loop.create_datagram_endpoint`` hands out. It is a
subclass of the stdlib's ``selector_events._SelectorDatagramTransport`` (same name, so its repr is
the stdlib's too): its state is the stdlib's own attributes (``_conn_lost``, ``_buffer`` of
``(bytes, addr)`` pairs, ``_buffer_size``, ``_address``, ``_protocol``, ...), and close, abort,
``_fatal_error``, ``_call_connection_lost``, ``_sendto_ready`` (the writer flushing the buffer),
``get_write_buffer_size``, flow control (``_FlowControlMixin``: ``pause_writing`` /
``resume_writing`` at the water marks), ``get_extra_info`` and ``__del__`` are inherited
unchanged, with each Python version's messages and differences.

Per datagram, in Rust (``_native.DatagramCore``, ``crates/ferroloop-py/src/transport/udp.rs``),
published in each instance's ``__dict__`` (as the stream transport does: one call into Rust, and
an instance's method can still be replaced):

* ``_read_ready``: one ``recvfrom`` into a per-thread buffer, then
  ``protocol.datagram_received(data, addr)``, or ``protocol.error_received(exc)`` for a socket
  error; one datagram per readiness, as the stdlib.
* ``sendto``: the socket at once. Whatever the native path does not handle for certain (another
  address family than ``AF_INET``, an empty datagram, a host name or an address other than the
  connected one, a wrong type, something buffered already, a lost connection, ``EAGAIN``) is
  passed, arguments unchanged, to the stdlib's ``sendto``, which buffers, raises or logs exactly
  as it always did.

Deviations (``docs/semantics.md``): as in the stream transport, changing ``max_size`` has no
effect on the native read (up to 256 KiB per datagram, the stdlib's ``max_size``); the
``(host, port)`` tuple given to ``datagram_received`` is the same object while the same peer
keeps sending (only an ``is`` comparison could tell).

``FERROLOOP_PY_TRANSPORTS=1`` selects the stdlib's class instead (``_net.py``).
"""

import socket
from typing import TYPE_CHECKING, Any

from . import _native

__all__ = ["_SelectorDatagramTransport"]

if TYPE_CHECKING:  # typeshed does not declare selector_events' private classes
    from asyncio.transports import DatagramTransport as _Stdlib
else:
    from asyncio.selector_events import _SelectorDatagramTransport as _Stdlib


class _SelectorDatagramTransport(_Stdlib):
    """ferroloop's datagram transport (see the module docstring)."""

    _core: _native.DatagramCore

    def __init__(
        self,
        loop: Any,
        sock: Any,
        protocol: Any,
        address: Any = None,
        waiter: Any = None,
        extra: Any = None,
    ) -> None:
        # The native methods are in place before the stdlib's __init__ schedules
        # `self._add_reader(fd, self._read_ready)`.
        core = _native.DatagramCore(
            self, sock.family == socket.AF_INET, _Stdlib.sendto, getattr(_Stdlib, "_read_ready")
        )
        d = self.__dict__
        d["_core"] = core
        d["_read_ready"] = core._read_ready
        d["sendto"] = core.sendto
        super().__init__(loop, sock, protocol, address, waiter, extra)  # type: ignore[call-arg]
        # _SelectorTransport.__init__ has set it: `send` rather than `sendto` from now on.
        core._set_connected(bool(self._extra["peername"]))  # type: ignore[attr-defined]

    # The class-level versions of the methods each instance publishes in its __dict__.
    def _read_ready(self) -> None:
        self._core._read_ready()

    def sendto(self, data: Any, addr: Any = None) -> None:
        self._core.sendto(data, addr)
