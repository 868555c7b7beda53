"""The ``sock_*`` coroutines (native on ferroloop: sock.rs), on the stock loop and on ferroloop.

What must hold on both loops, as the stdlib's ``async def`` versions behave: nothing happens until
the call is awaited (a never-awaited or cancelled-before-start call consumes no data), a
cancelled wait leaves nothing registered and consumes nothing afterwards, ``sock_sendall`` sends
everything in order through a small send buffer, errors are the stdlib's (subclass, errno,
message), and the objects are coroutines for ``asyncio`` (``iscoroutine``, ``create_task``,
``ensure_future``, ``wait_for``, ``run_until_complete``).
"""

import asyncio
import errno
import functools
import inspect
import os
import socket
import ssl
import struct
import sys
import weakref
from unittest import mock

import pytest

TIMEOUT = 10


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def registered(loop, sock):
    """The selector key of ``sock``'s fd (stock: the selector; ferroloop: its fd table view)."""
    return loop._selector.get_map().get(sock.fileno())


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


def test_call_does_nothing_until_awaited(loop):
    a, b = pair()
    with a, b:
        b.send(b"first")
        op = loop.sock_recv(a, 100)
        assert asyncio.iscoroutine(op)
        op.close()  # never awaited: consumes nothing
        del op
        assert a.recv(100) == b"first"

        send = loop.sock_sendall(b, b"never")
        send.close()
        with pytest.raises(BlockingIOError):
            a.recv(100)


def test_cancelled_before_start_consumes_nothing(loop):
    a, b = pair()

    async def main():
        b.send(b"data")
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return a.recv(100)

    with a, b:
        assert run(loop, main()) == b"data"
        assert registered(loop, a) is None


def test_cancel_while_waiting_leaves_nothing_registered(loop):
    a, b = pair()

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert registered(loop, a) is not None  # waiting for data
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert registered(loop, a) is None
        b.send(b"later")
        await asyncio.sleep(0.05)
        return a.recv(100)  # the cancelled call did not take it

    with a, b:
        assert run(loop, main()) == b"later"


def test_timeout_leaves_nothing_registered(loop):
    a, b = pair()

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 100), 0.05)
        await asyncio.sleep(0)
        assert registered(loop, a) is None
        b.send(b"x")
        return await loop.sock_recv(a, 100)

    with a, b:
        assert run(loop, main()) == b"x"


def test_waiting_then_data(loop):
    a, b = pair()

    async def main():
        task = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        b.send(b"hello")
        data = await task
        await asyncio.sleep(0)
        assert registered(loop, a) is None
        return data

    with a, b:
        assert run(loop, main()) == b"hello"


def test_coroutine_protocol(loop):
    a, b = pair()
    with a, b:
        b.send(b"abc")
        assert loop.run_until_complete(loop.sock_recv(a, 1)) == b"a"
        fut = asyncio.ensure_future(loop.sock_recv(a, 1), loop=loop)
        assert loop.run_until_complete(fut) == b"b"
        assert loop.run_until_complete(loop.create_task(loop.sock_recv(a, 1))) == b"c"

        op = loop.sock_recv(a, 1)
        with pytest.raises(TypeError, match="just-started coroutine"):
            op.send(1)
        op.close()

        op = loop.sock_recv(a, 1)
        with pytest.raises(ZeroDivisionError):
            op.throw(ZeroDivisionError)
        b.send(b"d")
        assert loop.run_until_complete(loop.sock_recv(a, 1)) == b"d"

        async def twice():
            op = loop.sock_recv(a, 10)
            b.send(b"e")
            assert await op == b"e"
            with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
                await op

        run(loop, twice())


def test_recv_into_recvfrom_sendto(loop):
    async def main():
        s1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s1, s2:
            for s in (s1, s2):
                s.setblocking(False)
                s.bind(("127.0.0.1", 0))
            waiter = loop.create_task(loop.sock_recvfrom(s2, 100))
            await asyncio.sleep(0.01)
            assert await loop.sock_sendto(s1, b"dgram", s2.getsockname()) == 5
            data, addr = await waiter
            assert (data, addr) == (b"dgram", s1.getsockname())
            buf = bytearray(10)
            waiter = loop.create_task(loop.sock_recvfrom_into(s2, buf))
            await asyncio.sleep(0.01)
            await loop.sock_sendto(s1, b"123456789012", s2.getsockname())
            n, addr = await waiter
            assert (n, bytes(buf), addr) == (10, b"1234567890", s1.getsockname())
            await loop.sock_sendto(s1, b"abcdef", s2.getsockname())
            n, _ = await loop.sock_recvfrom_into(s2, buf, 3)
            assert (n, bytes(buf[:3])) == (3, b"abc")
        a, b = pair()
        with a, b:
            buf = bytearray(4)
            waiter = loop.create_task(loop.sock_recv_into(a, buf))
            await asyncio.sleep(0.01)
            b.send(b"xyz")
            assert await waiter == 3
            assert bytes(buf[:3]) == b"xyz"

    run(loop, main())


def test_sendall_partial_sends_keep_order(loop):
    payload = bytes(range(256)) * (4 * 1024 * 16)  # 4 MiB
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def reader():
        got = bytearray()
        while len(got) < len(payload):
            await asyncio.sleep(0)
            chunk = await loop.sock_recv(b, 7000)
            assert chunk
            got += chunk
        return bytes(got)

    async def main():
        r = loop.create_task(reader())
        await loop.sock_sendall(a, payload)
        await asyncio.sleep(0)
        assert registered(loop, a) is None
        return await r

    with a, b:
        assert run(loop, main()) == payload


def test_sendall_accepts_memoryview_and_bytearray(loop):
    a, b = pair()

    async def main():
        await loop.sock_sendall(a, memoryview(b"mem"))
        await loop.sock_sendall(a, bytearray(b"arr"))
        await loop.sock_sendall(a, b"")
        return await loop.sock_recv(b, 100)

    with a, b:
        assert run(loop, main()) == b"memarr"


def test_recv_reset_is_connection_reset_error(loop):
    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        with lsock:
            lsock.setblocking(False)
            c = socket.socket()
            c.setblocking(False)
            with c:
                await loop.sock_connect(c, lsock.getsockname())
                conn, _ = await loop.sock_accept(lsock)
                with conn:
                    assert conn.getblocking() is False
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    await asyncio.sleep(0.01)
                    with pytest.raises(ConnectionResetError) as info:
                        await loop.sock_recv(conn, 100)
                    assert info.value.errno == errno.ECONNRESET
                    assert str(info.value) == "[Errno 104] Connection reset by peer"
                    with pytest.raises(OSError) as info:
                        for _ in range(3):
                            await loop.sock_sendall(conn, b"x" * 100000)
                    assert info.value.errno in (errno.EPIPE, errno.ECONNRESET)

    run(loop, main())


def test_accept_waits_then_connect(loop):
    async def main():
        lsock = socket.create_server(("127.0.0.1", 0))
        with lsock:
            lsock.setblocking(False)
            acc = loop.create_task(loop.sock_accept(lsock))
            await asyncio.sleep(0.01)
            assert registered(loop, lsock) is not None
            c = socket.socket()
            c.setblocking(False)
            with c:
                await loop.sock_connect(c, ("localhost", lsock.getsockname()[1]))
                conn, addr = await acc
                with conn:
                    assert addr == c.getsockname()
                    assert conn.getblocking() is False
                    await loop.sock_sendall(c, b"ping")
                    assert await loop.sock_recv(conn, 10) == b"ping"
            await asyncio.sleep(0)
            assert registered(loop, lsock) is None

    run(loop, main())


def test_connect_refused(loop):
    async def main():
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        c = socket.socket()
        c.setblocking(False)
        with c:
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.sock_connect(c, ("127.0.0.1", port))
            assert info.value.errno == errno.ECONNREFUSED
            return str(info.value), port

    msg, port = run(loop, main())
    assert msg in (
        f"[Errno {errno.ECONNREFUSED}] Connect call failed ('127.0.0.1', {port})",
        f"[Errno {errno.ECONNREFUSED}] Connection refused",
    )


def _listener():
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.setblocking(False)
    return lsock


async def _connect_and_accept(loop, lsock, address, sock_class=socket.socket):
    """``sock_connect`` a new non-blocking socket to ``address``; it must end up connected to
    ``lsock``, whose connection is accepted and closed."""
    c = sock_class()
    c.setblocking(False)
    with c:
        await loop.sock_connect(c, address)
        assert c.getpeername() == lsock.getsockname()
        (await loop.sock_accept(lsock))[0].close()


def test_connect_numeric_address_asks_ipaddr_info_not_getaddrinfo(loop, monkeypatch):
    """A numeric host is resolved by ``base_events._ipaddr_info`` (looked up at each call, so a
    patch of it is seen), with the socket's family, type and proto, and ``getaddrinfo`` is never
    asked."""
    from asyncio import base_events

    seen = []
    real = base_events._ipaddr_info

    def spy(*args):
        seen.append(args)
        return real(*args)

    monkeypatch.setattr(base_events, "_ipaddr_info", spy)

    async def no_getaddrinfo(*args, **kwargs):
        raise AssertionError("getaddrinfo called for a numeric address")

    monkeypatch.setattr(loop, "getaddrinfo", no_getaddrinfo)

    async def main():
        with _listener() as lsock:
            port = lsock.getsockname()[1]
            await _connect_and_accept(loop, lsock, ("127.0.0.1", port))

    run(loop, main())
    assert len(seen) == 1
    host, port, family, type_, proto = seen[0]
    assert host == "127.0.0.1" and family == socket.AF_INET
    assert type_ == socket.SOCK_STREAM and proto == 0


def test_connect_ipaddr_info_answer_is_the_address_connected_to(loop, monkeypatch):
    """What ``_ipaddr_info`` answers is used as is, and ``None`` (not numeric) sends the call to
    ``getaddrinfo`` with the socket's family, type and proto."""
    from asyncio import base_events

    async def main():
        with _listener() as lsock:
            port = lsock.getsockname()[1]
            # A wrong port in the request, the right one in _ipaddr_info's answer.
            monkeypatch.setattr(
                base_events, "_ipaddr_info",
                lambda host, p, family, type_, proto, *rest:
                    (family, type_, proto, "", ("127.0.0.1", port)))
            await _connect_and_accept(loop, lsock, ("127.0.0.1", 1))

            monkeypatch.setattr(base_events, "_ipaddr_info", lambda *args: None)
            asked = []

            async def getaddrinfo(host, p, *, family=0, type=0, proto=0, flags=0):
                asked.append((host, p, family, type, proto))
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

            monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
            await _connect_and_accept(loop, lsock, ("127.0.0.1", 2))
            assert asked == [("127.0.0.1", 2, socket.AF_INET, socket.SOCK_STREAM, 0)]

    run(loop, main())


def test_connect_replaced_ensure_resolved_is_awaited(loop, monkeypatch):
    """A loop whose ``_ensure_resolved`` was replaced (on the instance) gets the call, with the
    stdlib's keyword arguments, and its answer is the address connected to."""
    calls = []

    async def main():
        with _listener() as lsock:
            port = lsock.getsockname()[1]

            async def ensure_resolved(address, *, family=0, type=0, proto=0, flags=0, loop):
                calls.append((address, family, type, proto))
                await asyncio.sleep(0)
                return [(family, type, proto, "", ("127.0.0.1", port))]

            monkeypatch.setattr(loop, "_ensure_resolved", ensure_resolved, raising=False)
            await _connect_and_accept(loop, lsock, ("127.0.0.1", 3))

    run(loop, main())
    assert calls == [(("127.0.0.1", 3), socket.AF_INET, socket.SOCK_STREAM, 0)]
    address, family, type_, _ = calls[0]
    assert type(family) is socket.AddressFamily and type(type_) is socket.SocketKind


@pytest.mark.parametrize("address, error", [
    (("127.0.0.1",), ValueError),         # host, port = address[:2]
    ("127.0.0.1", TypeError),             # a str: "1", "2" and ten more arguments
    ((1234, 80), TypeError),              # '%' in host
    (("127.0.0.1", 80, 0, 0, 0), TypeError),  # too many arguments for _ipaddr_info
])
def test_connect_bad_address_errors_as_the_stdlib(loop, address, error):
    c = socket.socket()
    c.setblocking(False)
    with c:
        with pytest.raises(error):
            run(loop, loop.sock_connect(c, address))


def test_connect_subclassed_socket_reads_its_properties(loop):
    """A ``socket.socket`` subclass is asked for ``family`` through its own class, as the stdlib
    does (``sock.family``), and is connected."""
    reads = []

    class Sock(socket.socket):
        @property
        def family(self):
            reads.append("family")
            return super().family

    async def main():
        with _listener() as lsock:
            await _connect_and_accept(loop, lsock, lsock.getsockname(), Sock)

    run(loop, main())
    assert reads


def test_unix_connect_and_accept(loop, tmp_path):
    path = str(tmp_path / "s.sock")

    async def main():
        lsock = socket.socket(socket.AF_UNIX)
        with lsock:
            lsock.bind(path)
            lsock.listen()
            lsock.setblocking(False)
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            with c:
                await loop.sock_connect(c, path)
                conn, _ = await loop.sock_accept(lsock)
                conn.close()

    run(loop, main())


def test_ssl_socket_rejected(loop):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    raw = socket.socket()
    with raw, ctx.wrap_socket(raw, do_handshake_on_connect=False) as s:
        for coro in (loop.sock_recv(s, 1), loop.sock_sendall(s, b"x"), loop.sock_accept(s),
                     loop.sock_connect(s, ("127.0.0.1", 1))):
            with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
                loop.run_until_complete(coro)


def test_debug_requires_non_blocking(loop):
    loop.set_debug(True)
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            loop.run_until_complete(loop.sock_recv(a, 1))
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            loop.run_until_complete(loop.sock_sendall(a, b"x"))
    loop.set_debug(False)


class _FakeTransport:
    def is_closing(self):
        return False

    def __repr__(self):
        return "<fake transport>"


def test_fd_used_by_transport(loop):
    a, b = pair()
    t = _FakeTransport()
    with a, b:
        loop._transports[a.fileno()] = t
        with pytest.raises(RuntimeError) as info:
            loop.run_until_complete(loop.sock_recv(a, 1))
        assert str(info.value) == f"File descriptor {a.fileno()} is used by transport <fake transport>"
        b.send(b"x")  # the first try happens before the check, as in the stdlib
        assert loop.run_until_complete(loop.sock_recv(a, 1)) == b"x"
        del loop._transports[a.fileno()]


def test_completed_at_once_without_future_ferroloop(loop_name, loop):
    if loop_name != "ferroloop" or os.environ.get("FERROLOOP_PY_SOCK") == "1":
        pytest.skip("ferroloop's native fast path")
    a, b = pair()
    with a, b:
        b.send(b"now")
        op = loop.sock_recv(a, 10)
        with pytest.raises(StopIteration) as info:
            op.send(None)
        assert info.value.value == b"now"
        assert registered(loop, a) is None
        pair_op = loop.sock_sendall(a, b"x")
        with pytest.raises(StopIteration) as info:
            next(pair_op)
        assert info.value.value is None
        # a tuple result is one value, not StopIteration's arguments
        lsock = socket.create_server(("127.0.0.1", 0))
        with lsock:
            c = socket.create_connection(lsock.getsockname())
            with c:
                import time

                time.sleep(0.01)
                with pytest.raises(StopIteration) as info:
                    loop.sock_accept(lsock).send(None)
                conn, addr = info.value.value
                conn.close()
                assert addr == c.getsockname()


def test_ops_are_collected_ferroloop(loop_name, loop):
    if loop_name != "ferroloop":
        pytest.skip("ferroloop's objects")
    a, b = pair()

    async def main():
        op = loop.sock_recv(a, 10)
        ref = weakref.ref(op)
        task = loop.create_task(op)
        del op
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return ref

    with a, b:
        ref = run(loop, main())
        import gc

        gc.collect()
        assert ref() is None


class _PatchedSocket(socket.socket):
    def recv(self, n):
        return b"patched %d" % n


def test_recv_is_the_socket_method(loop):
    # ferroloop reads a plain non-blocking socket.socket itself; anything else is the method's.
    a, b = pair()
    with a, b:
        s = _PatchedSocket(fileno=os.dup(a.fileno()))
        s.setblocking(False)
        with s:
            assert loop.run_until_complete(loop.sock_recv(s, 7)) == b"patched 7"
        b.send(b"abc")
        assert loop.run_until_complete(loop.sock_recv(a, 0)) == b""
        with pytest.raises(ValueError, match="negative buffersize"):
            loop.run_until_complete(loop.sock_recv(a, -1))
        with pytest.raises(TypeError):
            loop.run_until_complete(loop.sock_recv(a, "x"))
        a.settimeout(5)  # the stdlib calls recv on it as it is (data is there: no block)
        assert loop.run_until_complete(loop.sock_recv(a, 2)) == b"ab"
        big = 1024 * 1024
        assert loop.run_until_complete(loop.sock_recv(a, big)) == b"c"


def test_recv_closed_socket_is_ebadf(loop):
    a, b = pair()
    with b:
        a.close()
        with pytest.raises(OSError) as info:
            loop.run_until_complete(loop.sock_recv(a, 10))
        assert info.value.errno == errno.EBADF
        assert str(info.value) == "[Errno 9] Bad file descriptor"


def test_never_awaited_warns(loop):
    import gc
    import warnings

    a, b = pair()
    with a, b:
        with pytest.warns(RuntimeWarning, match=r"coroutine '.*sock_recv' was never awaited"):
            op = loop.sock_recv(a, 1)
            del op
            gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            op = loop.sock_sendall(a, b"x")
            op.close()
            del op
            b.send(b"y")
            assert loop.run_until_complete(loop.sock_recv(a, 1)) == b"y"
            gc.collect()


def test_cancelled_sendall_leaves_no_writer(loop):
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        task = loop.create_task(loop.sock_sendall(a, b"z" * (4 * 1024 * 1024)))
        await asyncio.sleep(0.01)
        key = registered(loop, a)
        assert key is not None and key.events & 2  # EVENT_WRITE: waiting for room
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert registered(loop, a) is None
        got = 0
        while True:
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                break
            assert set(chunk) == {ord("z")}
            got += len(chunk)
        await asyncio.sleep(0.01)
        with pytest.raises(BlockingIOError):
            b.recv(1)  # nothing more is sent after the cancellation
        return got

    with a, b:
        assert 0 < run(loop, main()) < 4 * 1024 * 1024


# --- A completed wait leaves epoll's registration lingering on ferroloop (fd_watch.rs, "sock_*
# registrations"): what must hold on both loops whatever the registration does. ---


async def _wait_then_send(loop, sock, peer, data):
    """A sock_recv on ``sock`` that has to wait, then ``data`` sent by ``peer``: what it got."""
    task = loop.create_task(loop.sock_recv(sock, 100))
    await asyncio.sleep(0.01)
    peer.send(data)
    return await task


def test_waits_again_and_again_on_the_same_socket(loop):
    a, b = pair()

    async def main():
        got = []
        for i in range(20):
            task = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0.001 if i % 2 else 0)
            b.send(b"%d" % i)
            got.append(await task)
        return got

    with a, b:
        assert run(loop, main()) == [b"%d" % i for i in range(20)]


def test_wait_after_the_fd_number_went_to_another_socket(loop):
    # The socket closed, its number reused by a new socket (another file): a wait on the new one
    # must be registered for real (epoll forgot the closed file).
    a, b = pair()

    async def main():
        assert await _wait_then_send(loop, a, b, b"first") == b"first"
        fd = a.fileno()
        a.close()
        c, d = pair()
        if c.fileno() == fd:  # the number was reused by the new pair itself
            e = c
        else:
            os.dup2(c.fileno(), fd)
            c.close()
            e = socket.socket(fileno=fd)
            e.setblocking(False)
        assert e.fileno() == fd
        try:
            return await _wait_then_send(loop, e, d, b"second")
        finally:
            e.close()
            d.close()

    with b:
        assert run(loop, main()) == b"second"


def test_wait_after_the_socket_was_wrapped_again(loop):
    # The same file under a new socket object (detach, then socket(fileno=)): registered again.
    a, b = pair()

    async def main():
        assert await _wait_then_send(loop, a, b, b"first") == b"first"
        e = socket.socket(fileno=a.detach())
        e.setblocking(False)
        with e:
            return await _wait_then_send(loop, e, b, b"second")

    with a, b:
        assert run(loop, main()) == b"second"


def test_readers_after_a_completed_wait(loop):
    # Nothing is registered for the application after a wait: remove_reader finds nothing;
    # add_reader works and is removed as usual.
    a, b = pair()

    async def main():
        await _wait_then_send(loop, a, b, b"x")
        first_remove = loop.remove_reader(a)
        fired = loop.create_future()
        loop.add_reader(a, lambda: fired.done() or fired.set_result(a.recv(100)))
        b.send(b"via add_reader")
        data = await fired
        return first_remove, data, loop.remove_reader(a), registered(loop, a)

    with a, b:
        assert run(loop, main()) == (False, b"via add_reader", True, None)


def test_lingering_registrations_are_swept_ferroloop(loop_name, loop):
    if loop_name != "ferroloop" or os.environ.get("FERROLOOP_PY_SOCK") == "1":
        pytest.skip("ferroloop's native sock_* registrations")

    async def main():
        for _ in range(300):
            a, b = pair()
            with a, b:
                task = loop.create_task(loop.sock_recv(a, 100))
                await asyncio.sleep(0)
                b.send(b"x")
                await task
        return loop.stats()["fds"]

    # Closed sockets' entries go when the owners' map doubles (at least 64 entries).
    assert run(loop, main()) <= 2 * 64 + 1


def _traced():
    """True when this process runs under ptrace (make test-fallback runs pytest under strace,
    and a tracee cannot start a second strace)."""
    with open("/proc/self/status") as f:
        return any(ln.split()[1] != "0" for ln in f if ln.startswith("TracerPid:"))


@pytest.mark.skipif(not __import__("shutil").which("strace"), reason="strace is not installed")
@pytest.mark.skipif(_traced(), reason="already under ptrace (make test-fallback); the plain "
                    "pytest run of make test runs it")
def test_waits_on_one_socket_make_no_epoll_ctl_ferroloop(loop_name, tmp_path):
    if loop_name != "ferroloop" or os.environ.get("FERROLOOP_PY_SOCK") == "1":
        pytest.skip("ferroloop's native sock_* registrations")
    import subprocess
    import sys

    program = tmp_path / "waits.py"
    program.write_text(
        "import asyncio, socket, ferroloop\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    a, b = socket.socketpair(); a.setblocking(False)\n"
        "    for i in range(200):\n"
        "        t = loop.create_task(loop.sock_recv(a, 10))\n"
        "        await asyncio.sleep(0)\n"
        "        b.send(b'x')\n"
        "        assert await t == b'x'\n"
        "    print('ok')\n"
        "ferroloop.run(main())\n"
    )
    log = tmp_path / "strace.log"
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=epoll_ctl", "-o", str(log),
                        sys.executable, str(program)], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "ok", p.stderr
    calls = [ln for ln in log.read_text().splitlines() if "epoll_ctl(" in ln]
    # One registration for the first wait (and the loop's own set-up), not two per wait.
    assert len(calls) < 10, calls


SOCK_METHODS = {
    "sock_recv": "(sock, n)",
    "sock_recv_into": "(sock, buf)",
    "sock_recvfrom": "(sock, bufsize)",
    "sock_sendall": "(sock, data)",
    "sock_sendto": "(sock, data, address)",
    "sock_connect": "(sock, address)",
    "sock_accept": "(sock)",
}


@pytest.mark.parametrize("name", [*SOCK_METHODS, "sock_recvfrom_into"])
def test_sock_methods_are_coroutine_functions(loop, name):
    # The stdlib's are `async def`s: asyncio's check (which unittest.mock uses to pick an
    # AsyncMock) and, from 3.12, inspect's answer True; a bound method whose __func__ is the
    # class attribute.
    method = getattr(loop, name)
    assert asyncio.iscoroutinefunction(method)
    assert asyncio.iscoroutinefunction(getattr(type(loop), name))
    if sys.version_info >= (3, 12):
        assert inspect.iscoroutinefunction(method)
    assert inspect.ismethod(method) and method.__self__ is loop
    assert method.__func__ is inspect.getattr_static(type(loop), name)
    assert method.__name__ == name
    if name in SOCK_METHODS:
        assert str(inspect.signature(method)) == SOCK_METHODS[name]
    with mock.patch.object(loop, name) as patched:
        assert isinstance(patched, mock.AsyncMock)
    assert getattr(loop, name) == method  # restored


def test_sock_methods_called_every_way(loop):
    a, b = pair()
    cls = type(loop)

    async def main():
        await loop.sock_sendall(a, b"one")
        got = [await loop.sock_recv(b, 10)]
        bound = loop.sock_sendall
        await bound(a, b"two")
        got.append(await cls.sock_recv(loop, b, 10))
        await functools.partial(loop.sock_sendall, a)(data=b"three")
        got.append(await loop.sock_recv(sock=b, n=10))
        with pytest.raises(TypeError):
            loop.sock_recv(b)
        return got

    try:
        assert run(loop, main()) == [b"one", b"two", b"three"]
    finally:
        a.close()
        b.close()
