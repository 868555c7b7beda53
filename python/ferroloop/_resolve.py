"""Name resolution for ferroloop.Loop: numeric hosts are answered without leaving the loop.

The stdlib's ``loop.getaddrinfo``/``loop.getnameinfo`` always run ``socket.getaddrinfo`` /
``socket.getnameinfo`` in the default executor, because a lookup may block (DNS, NSS, nscd). For
an IP literal with a numeric port there is nothing to look up, yet the stdlib still pays a thread
hand-off, and the first call creates the executor and its thread. ferroloop's ``getaddrinfo``
answers those cases on the loop thread, by calling the very same ``socket.getaddrinfo`` with the
very same arguments: results (contents, order, canonname) and errors (``socket.gaierror`` with
libc's errno and message, ``TypeError``, ``OverflowError``, ``UnicodeError``...) are then the
stdlib's by construction. Everything else goes to the stdlib's own implementation (borrowed from
``base_events.BaseEventLoop``, as ``_loop.py`` does), unchanged.

Fast-path rules for ``getaddrinfo(host, port, family=, type=, proto=, flags=)``: all must hold.

* ``host`` is a ``str`` or ``bytes`` IP literal: an IPv4 dotted quad accepted by
  ``inet_pton(AF_INET)`` (``"127.0.0.1"``; not the legacy ``"127.1"``, which goes to the
  executor), or an IPv6 address accepted by ``inet_pton(AF_INET6)``, optionally followed by
  ``%scope`` (``"fe80::1%lo"``, ``"fe80::1%2"``). Both are strict subsets of what libc
  (glibc's ``inet_aton_exact``/``inet_pton``, musl's ``__lookup_ipliteral``) treats as numeric,
  so libc never reaches the name service for them. A scope is resolved locally
  (``if_nametoindex``: an ioctl) or rejected (``EAI_NONAME``), never looked up. ``None``, ``""``,
  ``"localhost"`` and every other name go to the executor.
* ``port`` is ``None``, an ``int`` in 0..65535, or a ``str``/``bytes`` of ASCII digits whose
  value is at most 65535. Service names (``"http"``) go to the executor: they are looked up in
  NSS (``/etc/services``, nscd, maybe NIS/LDAP). So do out-of-range numbers: glibc parses the
  port with ``strtoul`` into an ``int`` and treats the result -1 as "not numeric", so ``-1``,
  ``"-1"``, ``2**63-1`` or ``"99999999999999999999"`` do reach NSS.
* ``flags`` is an ``int`` with no bits other than ``AI_PASSIVE``, ``AI_NUMERICHOST``,
  ``AI_NUMERICSERV``, ``AI_V4MAPPED`` and ``AI_ALL``. ``AI_CANONNAME`` goes to the executor
  (older glibc, before 2.26 or so, did a reverse lookup, ``gethostbyaddr``, for the canonical
  name of a numeric host); so does ``AI_ADDRCONFIG`` (glibc asks netlink and nscd for the
  configured addresses) and any unknown bit.
* ``family``, ``type`` and ``proto`` are anything: libc validates them locally
  (``EAI_FAMILY``, ``EAI_SOCKTYPE``, ``EAI_SERVICE``...), and an IPv4 literal with ``AF_INET6``
  fails with ``EAI_ADDRFAMILY`` (or maps, with ``AI_V4MAPPED``) without any lookup.

``getnameinfo(sockaddr, flags)`` is answered on the loop thread when ``flags`` has both
``NI_NUMERICHOST`` and ``NI_NUMERICSERV`` (plus optionally ``NI_NOFQDN``, ``NI_NAMEREQD``,
``NI_DGRAM``) and ``sockaddr`` is a tuple whose host is an IP literal by the rule above: nothing
is looked up (the address is only formatted; a scope id becomes ``%ifname`` by an ioctl).

What still matches the stdlib on the fast path: the coroutine checks, when it first runs, that
the loop is not closed and that ``shutdown_default_executor()`` was not called, raising the same
``RuntimeError`` as ``run_in_executor`` would. In debug mode it calls the stdlib's own
``_getaddrinfo_debug`` (the same "Get address info ..." / "Getting address info ... took ..."
log records, INFO when slower than ``slow_callback_duration``).

Differences from the stdlib (all deliberate, none in the result):

* The fast path does not create the default executor or use its threads (that is the point).
* It does not suspend: the coroutine returns (or raises) at its first step instead of awaiting a
  future, so a task awaiting it does not yield to other callbacks there, and it cannot be
  cancelled half-way (there is no half-way). Tracebacks of its errors have no executor frames.
* In debug mode the timing records are logged from the loop thread instead of an executor
  thread (``record.threadName`` differs).
* The first ``str`` host resolved in a process imports ``encodings.idna`` (``socket.getaddrinfo``
  does that), here on the loop thread: a one-time import of a few standard modules.
"""

import socket
from asyncio import base_events

__all__ = ["getaddrinfo", "getnameinfo", "is_numeric_getaddrinfo", "is_numeric_getnameinfo"]

# The stdlib's implementations, for everything the fast path does not take.
_stdlib_getaddrinfo = base_events.BaseEventLoop.__dict__["getaddrinfo"]
_stdlib_getnameinfo = base_events.BaseEventLoop.__dict__["getnameinfo"]

_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6

# getaddrinfo flags that never make libc consult a name service for a numeric host and port.
_GAI_FAST_FLAGS = 0
for _name in ("AI_PASSIVE", "AI_NUMERICHOST", "AI_NUMERICSERV", "AI_V4MAPPED", "AI_ALL"):
    _GAI_FAST_FLAGS |= int(getattr(socket, _name, 0))
_GAI_SLOW_FLAGS = ~_GAI_FAST_FLAGS

# getnameinfo: both of these are required; the others are allowed.
_NI_NUMERIC = int(socket.NI_NUMERICHOST) | int(socket.NI_NUMERICSERV)
_NI_FAST_FLAGS = _NI_NUMERIC
for _name in ("NI_NOFQDN", "NI_NAMEREQD", "NI_DGRAM"):
    _NI_FAST_FLAGS |= int(getattr(socket, _name, 0))
_NI_SLOW_FLAGS = ~_NI_FAST_FLAGS
del _name


def _is_ip_literal(host):
    """True if ``host`` (str or bytes) is an IPv4 dotted quad or an IPv6 address with an optional
    ``%scope``: a host libc treats as numeric."""
    if isinstance(host, bytes):
        if not host.isascii():
            return False
        host = host.decode("ascii")
    elif not isinstance(host, str):
        return False
    # (ValueError: embedded NUL; UnicodeEncodeError: lone surrogates.)
    try:
        _inet_pton(_AF_INET, host)
        return True
    except (OSError, ValueError):
        pass
    try:
        # libc splits at the first "%" (strchr) and parses the rest as the scope.
        _inet_pton(_AF_INET6, host.partition("%")[0])
        return True
    except (OSError, ValueError):
        return False


def _is_numeric_port(port):
    if port is None:
        return True
    if type(port) is int:  # the C code formats it with "%ld" (bool, float: OSError, slow path)
        return 0 <= port <= 65535
    if isinstance(port, (str, bytes)):
        # ASCII digits only: glibc's strtoul also skips spaces and takes signs, which we do not
        # need to reproduce; the slow path serves those. The length bound keeps int() cheap.
        return 0 < len(port) <= 16 and port.isascii() and port.isdigit() and int(port) <= 65535
    return False


def is_numeric_getaddrinfo(host, port, flags):
    """True if ``socket.getaddrinfo(host, port, *, flags=flags)`` is answered without any name
    service lookup (the fast path's rule)."""
    return (
        isinstance(flags, int)
        and not flags & _GAI_SLOW_FLAGS
        and _is_numeric_port(port)
        and _is_ip_literal(host)
    )


def is_numeric_getnameinfo(sockaddr, flags):
    """True if ``socket.getnameinfo(sockaddr, flags)`` only formats a numeric address."""
    return (
        isinstance(flags, int)
        and flags & _NI_NUMERIC == _NI_NUMERIC
        and not flags & _NI_SLOW_FLAGS
        and isinstance(sockaddr, tuple)
        and len(sockaddr) >= 2
        and _is_ip_literal(sockaddr[0])
    )


def _check_executor_usable(loop):
    # What run_in_executor(None, ...) checks before anything else, with its errors.
    loop._check_closed()
    check = getattr(loop, "_check_default_executor", None)
    if check is not None:
        check()


async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
    if not is_numeric_getaddrinfo(host, port, flags):
        return await _stdlib_getaddrinfo(
            self, host, port, family=family, type=type, proto=proto, flags=flags
        )
    _check_executor_usable(self)
    if self._debug:
        return self._getaddrinfo_debug(host, port, family, type, proto, flags)
    return socket.getaddrinfo(host, port, family, type, proto, flags)


async def getnameinfo(self, sockaddr, flags=0):
    if not is_numeric_getnameinfo(sockaddr, flags):
        return await _stdlib_getnameinfo(self, sockaddr, flags)
    _check_executor_usable(self)
    return socket.getnameinfo(sockaddr, flags)


getaddrinfo.__doc__ = (
    "Like the stdlib's: socket.getaddrinfo() in the default executor, except that an IP literal "
    "with a numeric port is answered on the loop thread (see ferroloop._resolve)."
)
getnameinfo.__doc__ = (
    "Like the stdlib's: socket.getnameinfo() in the default executor, except that a numeric "
    "sockaddr with NI_NUMERICHOST|NI_NUMERICSERV is answered on the loop thread."
)
