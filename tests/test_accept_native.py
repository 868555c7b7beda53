"""Accepting connections, on the stock loop and on ferroloop (whose accept loop sets a plain
connection up at once, without a task per connection: python/ferroloop/_accept.py): every
pending connection accepted (up to ``backlog`` per readiness), TCP_NODELAY on accepted TCP
sockets, ``protocol_factory`` run in a context of its own per connection, errors while setting a
connection up reported in debug mode only, with the stdlib's context. ferroloop only: a shortage
of descriptors is reported once per episode, not once per retry."""

import asyncio
import contextvars
import errno
import gc
import socket
import time

import pytest
from asyncio import constants, trsock

TIMEOUT = 15


class Echo(asyncio.Protocol):
    def __init__(self, log=None):
        self.log = log if log is not None else []

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.log.append((nodelay, transport.get_extra_info("peername")))

    def data_received(self, data):
        self.transport.write(data.upper())


async def _ask(port, payload=b"ping"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


def _run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


def test_every_pending_connection_is_served_with_nodelay(loop):
    log = []

    async def main():
        server = await loop.create_server(lambda: Echo(log), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            answers = await asyncio.gather(*(_ask(port, b"c%d" % i) for i in range(40)))
        return answers, [n for n, _ in log], [p for _, p in log]

    answers, nodelay, peers = _run(loop, main())
    assert answers == [b"C%d" % i for i in range(40)]
    assert len(nodelay) == 40 and all(nodelay)
    assert all(p[0] == "127.0.0.1" for p in peers)


def test_each_connection_is_set_up_in_a_context_of_its_own(loop):
    var = contextvars.ContextVar("var", default="outer")
    seen = []

    class Ctx(Echo):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def connection_made(self, transport):
            super().connection_made(transport)
            seen.append(("made", self.n, var.get()))

        def data_received(self, data):
            seen.append(("data", self.n, var.get()))
            super().data_received(data)

    counter = iter(range(100))

    def factory():
        n = next(counter)
        assert var.get() == "outer"  # nothing leaks from one connection to the next
        var.set("conn%d" % n)
        return Ctx(n)

    async def main():
        var.set("outer")
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            for i in range(3):
                await _ask(port)
        return var.get()

    assert _run(loop, main()) == "outer"
    for what, n, value in seen:
        assert value == "conn%d" % n, (what, n, value)
    assert {w for w, _, _ in seen} == {"made", "data"}


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_a_failing_protocol_factory_is_reported_in_debug_mode_only(loop, debug):
    contexts = []
    # Only what the test checks: the exception's traceback would keep the dropped socket alive.
    loop.set_exception_handler(lambda lp, ctx: contexts.append(
        dict(ctx, exception=type(ctx.get("exception")))))
    loop.set_debug(debug)
    loop.slow_callback_duration = 10.0
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("no protocol")
        return Echo()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            # The first connection gets no protocol: it is never served (its socket is
            # dropped, as in the stdlib); the server goes on serving the next one.
            r, w = await asyncio.open_connection("127.0.0.1", port)
            while not calls:
                await asyncio.sleep(0.005)
            w.close()
            try:
                await w.wait_closed()
            except ConnectionError:
                pass
            return await _ask(port)

    assert _run(loop, main()) == b"PING"
    gc.collect()  # the socket the failed set-up dropped (its traceback is a cycle)
    if not debug:
        assert contexts == []
    else:
        assert len(contexts) == 1, contexts
        ctx = contexts[0]
        assert ctx["message"] == "Error on transport creation for incoming connection"
        assert ctx["exception"] is ZeroDivisionError
        assert "protocol" not in ctx and "transport" not in ctx


class _Exhausted(socket.socket):
    """A listening socket whose accept() fails while ``exhausted`` holds an exception."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exhausted = None
        self.accept_calls = 0

    def accept(self):
        self.accept_calls += 1
        if self.exhausted is not None:
            raise self.exhausted
        return super().accept()


def test_a_shortage_of_descriptors_is_reported_once_per_episode_ferroloop(monkeypatch):
    import ferroloop

    monkeypatch.setattr(constants, "ACCEPT_RETRY_DELAY", 0.05)
    loop = ferroloop.new_event_loop()
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def episode(sock, port):
        sock.exhausted = OSError(errno.EMFILE, "Too many open files")
        asking = asyncio.ensure_future(_ask(port))
        while not contexts or len(contexts) < episode.reports + 1:
            await asyncio.sleep(0.005)
        calls = sock.accept_calls
        await asyncio.sleep(0.4)  # about 8 retries, all failing
        retries = sock.accept_calls - calls
        sock.exhausted = None
        answer = await asyncio.wait_for(asking, TIMEOUT)
        episode.reports = len(contexts)
        return retries, answer

    episode.reports = 0

    async def main():
        sock = _Exhausted(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Echo, sock=sock, backlog=50)
        port = sock.getsockname()[1]
        async with server:
            first = await episode(sock, port)
            after_first = len(contexts)
            second = await episode(sock, port)
        await asyncio.sleep(0.1)  # a retry pending at close finds the socket closed: silent
        return first, after_first, second

    try:
        (retries1, answer1), after_first, (retries2, answer2) = _run(loop, main())
    finally:
        loop.close()
    assert answer1 == answer2 == b"PING"
    # The retries ran (one accept each, not `backlog`), and failed, silently.
    assert 3 <= retries1 <= 12 and 3 <= retries2 <= 12, (retries1, retries2)
    assert after_first == 1
    assert len(contexts) == 2, [c["message"] for c in contexts]
    for ctx in contexts:
        assert ctx["message"] == "socket.accept() out of system resource"
        assert ctx["exception"].errno == errno.EMFILE
        assert isinstance(ctx["socket"], trsock.TransportSocket)


def test_connections_are_set_up_without_a_task_each_ferroloop():
    import ferroloop

    loop = ferroloop.new_event_loop()
    tasks_seen = []

    class Probe(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            tasks_seen.append(len(asyncio.all_tasks()))

    async def main():
        server = await loop.create_server(Probe, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            # Raw clients: no task on the client side either.
            socks = []
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", port))
                socks.append(s)
            while len(tasks_seen) < 5:
                await asyncio.sleep(0.005)
            for s in socks:
                s.close()
        return tasks_seen

    try:
        seen = _run(loop, main())
    finally:
        loop.close()
    # Only main() (and wait_for's) task: none per accepted connection.
    assert max(seen) <= 2, seen


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def test_accepted_socket_is_what_accept_and_setblocking_make(loop, host):
    """The accepted socket (ferroloop: accept4 in Rust for a plain TCP listener) has the
    listening socket's family, type and proto, a zero timeout, a non-blocking close-on-exec fd,
    and the peer's address as `socket.accept` reports it."""
    import fcntl
    import os

    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    seen = []

    class Probe(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            fd = sock.fileno()
            seen.append(
                (
                    sock.family,
                    sock.type,
                    sock.proto,
                    sock.gettimeout(),
                    bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK),
                    bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
                    os.get_inheritable(fd),
                    transport.get_extra_info("peername"),
                    transport.get_extra_info("sockname") == sock.getsockname(),
                    type(sock._sock) if hasattr(sock, "_sock") else None,
                    (sock._sock._io_refs, sock._sock._closed),
                )
            )

    async def main():
        server = await loop.create_server(Probe, host, 0)
        listening = server.sockets[0]
        port = listening.getsockname()[1]
        async with server:
            client = socket.create_connection((host, port))
            with client:
                while not seen:
                    await asyncio.sleep(0.005)
                return client.getsockname(), listening.proto

    client_name, proto = _run(loop, main())
    family = socket.AF_INET if host == "127.0.0.1" else socket.AF_INET6
    assert seen == [
        (family, socket.SOCK_STREAM, proto, 0.0, True, True, False, client_name, True,
         socket.socket, (0, False))
    ]
    assert type(seen[0][7]) is tuple and type(seen[0][7][0]) is str


def test_addresses_are_the_sockets_own_for_every_octet_width(loop):
    """The transport's ``peername`` and ``sockname`` equal what the socket answers, for IPv4
    addresses whose octets have one, two and three digits and zeros (ferroloop formats them
    natively): the server listens on 127.10.99.255 and the client connects from 127.45.6.0."""
    seen = []

    class Probe(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            seen.append((transport.get_extra_info("peername"), sock.getpeername(),
                         transport.get_extra_info("sockname"), sock.getsockname()))

    async def main():
        server = await loop.create_server(Probe, "127.10.99.255", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = socket.socket()
            with client:
                client.bind(("127.45.6.0", 0))
                client.setblocking(False)
                await loop.sock_connect(client, ("127.10.99.255", port))
                while not seen:
                    await asyncio.sleep(0.005)
                return client.getsockname()

    client_name = _run(loop, main())
    [(peername, sock_peername, sockname, sock_sockname)] = seen
    assert peername == sock_peername == client_name
    assert peername[0] == "127.45.6.0"
    assert sockname == sock_sockname == ("127.10.99.255", sockname[1])


def test_a_replaced_socket_init_makes_the_accepted_socket(loop, monkeypatch):
    """ferroloop makes the accepted `socket.socket` without its Python `__init__` only while that
    `__init__` is the `socket` module's: a replacement is called, as `sock.accept()` calls it."""
    made = []
    original = socket.socket.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    class Probe(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.log.append(transport.get_extra_info("socket")._sock)

    log = []

    async def main():
        server = await loop.create_server(lambda: Probe(log), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            monkeypatch.setattr(socket.socket, "__init__", init)
            client = socket.create_connection(("127.0.0.1", port))
            with client:
                while len(log) < 2:
                    await asyncio.sleep(0.005)
            monkeypatch.undo()

    _run(loop, main())
    assert log[1] in made


def test_churned_connections_leave_no_descriptor_behind(loop):
    import os

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await _ask(port)  # warm up (lazily opened descriptors)
            await asyncio.sleep(0.05)
            gc.collect()
            before = len(os.listdir("/proc/self/fd"))
            for _ in range(10):
                answers = await asyncio.gather(*(_ask(port, b"x%d" % i) for i in range(20)))
                assert answers == [b"X%d" % i for i in range(20)]
            for _ in range(20):
                await asyncio.sleep(0.005)
            gc.collect()
            return before, len(os.listdir("/proc/self/fd"))

    before, after = _run(loop, main())
    assert after == before


def test_native_accept_answers_as_accept_and_setblocking_ferroloop():
    """`_native.accept_nonblocking`, which ferroloop's accept loop uses for a plain TCP
    listener: None on an empty queue (no exception), the pending connection as `sock.accept()`
    then `setblocking(False)` leave it, and `sock.accept()`'s error on a closed socket."""
    import fcntl
    import os

    from ferroloop import _native

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    args = (int(listener.family), int(listener.type), listener.proto)
    try:
        assert _native.accept_nonblocking(listener, *args) is None
        client = socket.create_connection(listener.getsockname())
        with client:
            conn, addr = _native.accept_nonblocking(listener, *args)
            with conn:
                assert type(conn) is socket.socket
                assert (conn.family, conn.type, conn.proto) == (
                    socket.AF_INET, socket.SOCK_STREAM, listener.proto)
                assert conn.gettimeout() == 0.0
                assert fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
                assert not os.get_inheritable(conn.fileno())
                assert addr == client.getsockname() == conn.getpeername()
            assert _native.accept_nonblocking(listener, *args) is None
    finally:
        listener.close()
    with pytest.raises(OSError) as native_err:
        _native.accept_nonblocking(listener, *args)
    with pytest.raises(OSError) as stdlib_err:
        listener.accept()
    assert type(native_err.value) is type(stdlib_err.value)
    assert native_err.value.errno == stdlib_err.value.errno == errno.EBADF


def test_a_plain_tcp_server_accepts_natively_and_debug_mode_in_python_ferroloop(monkeypatch):
    """A plain TCP server's reader is the native accept loop (`_native.accept_connections`): no
    `socket.accept()`, no Python `_accept_connection` per readiness; with debug mode switched on
    while it serves, the next readiness runs `_accept_connection` (its log line per
    connection), and switched off again, the native loop."""
    import ferroloop
    from ferroloop import _accept, _native

    python_loops = []
    real_python_loop = _accept.AcceptMixin._accept_connection

    def counting(self, *args, **kwargs):
        python_loops.append(self.get_debug())
        return real_python_loop(self, *args, **kwargs)

    def refuse(self):
        raise AssertionError("socket.accept() called")

    monkeypatch.setattr(_accept.AcceptMixin, "_accept_connection", counting)
    monkeypatch.setattr(socket.socket, "accept", refuse)
    loop = ferroloop.new_event_loop()

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fd = server.sockets[0].fileno()
        reader = loop._selector.get_key(fd).data[0]._callback
        async with server:
            first = await asyncio.gather(*(_ask(port, b"n%d" % i) for i in range(5)))
            loop.set_debug(True)
            debug = await _ask(port, b"debug")
            loop.set_debug(False)
            last = await _ask(port, b"last")
        return reader, first, debug, last

    try:
        reader, first, debug, last = _run(loop, main())
    finally:
        loop.close()
    assert reader is _native.accept_connections
    assert first == [b"N%d" % i for i in range(5)]
    assert (debug, last) == (b"DEBUG", b"LAST")
    # Only the readiness in debug mode went through the Python loop (the accept itself is native
    # there too: `_accept_nonblocking`, never `socket.accept()`).
    assert python_loops and all(python_loops), python_loops


def test_a_loop_subclass_making_its_own_transports_is_served_by_them_ferroloop():
    """The native accept loop makes the transport by `TransportCore._make` only while the loop's
    `_make_socket_transport` is ferroloop's own; a subclass's override is called, with the
    stdlib's arguments."""
    import ferroloop

    made = []

    class Loop(ferroloop.Loop):
        def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None,
                                   server=None):
            if server is not None:  # not the client's (open_connection)
                made.append((type(sock), type(protocol).__name__, waiter, sorted(extra)))
            return super()._make_socket_transport(sock, protocol, waiter, extra=extra,
                                                  server=server)

    loop = Loop()

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _ask(port)

    try:
        assert _run(loop, main()) == b"PING"
    finally:
        loop.close()
    assert made == [(socket.socket, "Echo", None, ["peername"])]


def test_running_out_of_descriptors_in_the_native_accept_loop_backs_off_ferroloop(run_py):
    """EMFILE from `accept4` in the native accept loop (a plain socket, the process's
    RLIMIT_NOFILE lowered) goes to `_accept_failed`: reported once, the reader removed and
    retried after ACCEPT_RETRY_DELAY; once descriptors are free, the connection is served."""
    r = run_py("""
        import asyncio, errno, os, resource, socket
        from asyncio import constants
        import ferroloop
        constants.ACCEPT_RETRY_DELAY = 0.05
        loop = ferroloop.new_event_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        class Echo(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t
            def data_received(self, data):
                self.t.write(data.upper())
                self.t.close()

        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            client = socket.create_connection(("127.0.0.1", port))
            client.setblocking(False)
            spare = [os.dup(0) for _ in range(2)]
            highest = max(spare)
            # No descriptor left above the ones in use: accept4 fails with EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
            for fd in spare:
                os.close(fd)
            os.dup(0); os.dup(0)  # the two freed numbers taken again
            while not contexts:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # about 6 failing retries, silent
            reports = len(contexts)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await loop.sock_sendall(client, b"ping")
            answer = await asyncio.wait_for(loop.sock_recv(client, 10), 10)
            client.close()
            server.close()
            await server.wait_closed()
            return reports, answer

        reports, answer = loop.run_until_complete(main())
        loop.close()
        ctx = contexts[0]
        print(reports, answer, ctx["message"], ctx["exception"].errno == errno.EMFILE,
              type(ctx["socket"]).__name__)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "b'PING'", "socket.accept()", "out", "of", "system",
                                "resource", "True", "TransportSocket"], r.stdout
