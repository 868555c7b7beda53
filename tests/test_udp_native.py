"""Datagram transports, on the stock loop and on ferroloop (whose transport reads and sends in
Rust, python/ferroloop/_udp.py): echo, peers' addresses, buffering when the socket is full,
pause_writing/resume_writing, error_received, sendto's argument errors, close and abort, and the
batch of reads stopping where the stdlib would. Every test runs the same code on both loops and
asserts the same outcome (the stock loop is the oracle)."""

import asyncio
import inspect
import logging
import os
import socket
import struct
import sys
from asyncio import selector_events

import pytest


class Recorder(asyncio.DatagramProtocol):
    """Records datagrams, errors and flow-control calls."""

    def __init__(self, expect=None):
        self.got = []
        self.errors = []
        self.calls = []
        self.lost = []
        self.expect = expect
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        self.closed = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes)
        self.got.append((data, addr))
        if self.expect is not None and len(self.got) >= self.expect and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        self.errors.append(exc)
        # The stdlib calls it inside `except OSError as exc:`.
        self.handled = getattr(self, "handled", []) + [sys.exc_info()[1] is exc]

    def pause_writing(self):
        self.calls.append("pause")

    def resume_writing(self):
        self.calls.append("resume")

    def connection_lost(self, exc):
        self.lost.append(exc)
        if not self.closed.done():
            self.closed.set_result(None)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


def _closed_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# tests/test_py_transport_fallback.py runs this module with the stdlib's datagram transport too.
NATIVE = os.environ.get("FERROLOOP_PY_TRANSPORTS") != "1"


def _empty_datagrams_sent():
    # 3.11/3.12 drop an empty datagram in sendto; later versions send it.
    return "if not data:" not in inspect.getsource(selector_events._SelectorDatagramTransport.sendto)


def test_echo_order_types_and_extra_info(loop, loop_name):
    async def main():
        st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        server_addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(
            lambda: Recorder(expect=60), remote_addr=server_addr
        )
        assert isinstance(ct, asyncio.BaseTransport)
        assert ct.get_extra_info("peername") == server_addr
        assert isinstance(ct.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        assert ct.get_extra_info("sockname")[0] == "127.0.0.1"
        if loop_name == "ferroloop" and NATIVE:
            assert type(ct).__module__ == "ferroloop._udp"
        for i in range(20):
            payload = struct.pack("!I", i) * (1 + i * 50)
            ct.sendto(payload)
            ct.sendto(bytearray(payload), server_addr)  # the connected address, given again
            ct.sendto(memoryview(payload))
        await asyncio.wait_for(cp.done, 5)
        sent = []
        for i in range(20):
            sent += [struct.pack("!I", i) * (1 + i * 50)] * 3
        assert [d for d, _ in cp.got] == sent
        assert {a for _, a in cp.got} == {server_addr}
        assert cp.errors == []
        assert ct.get_write_buffer_size() == 0
        ct.close()
        st.close()
        await cp.closed
        assert cp.lost == [None]
        assert ct.is_closing()

    loop.run_until_complete(main())


def test_unconnected_sendto_and_peer_addresses(loop):
    """A server answering two peers alternately: each reply goes to, and each datagram is
    reported from, the right address (ferroloop keeps the last peer's tuple)."""

    async def main():
        srv, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(expect=40), local_addr=("127.0.0.1", 0)
        )
        addr = srv.get_extra_info("sockname")
        a, ap = await loop.create_datagram_endpoint(
            lambda: Recorder(expect=20), local_addr=("127.0.0.1", 0)
        )
        b, bp = await loop.create_datagram_endpoint(
            lambda: Recorder(expect=20), local_addr=("127.0.0.1", 0)
        )
        a_addr, b_addr = a.get_extra_info("sockname"), b.get_extra_info("sockname")
        for i in range(20):
            a.sendto(b"a%d" % i, addr)
            b.sendto(b"b%d" % i, ("127.0.0.1", addr[1]))
            await asyncio.sleep(0)
        await asyncio.wait_for(sp.done, 5)
        for data, peer in sp.got:
            assert peer == (a_addr if data[:1] == b"a" else b_addr)
            srv.sendto(data.upper(), peer)
        srv.sendto(b"by name", ("localhost", a_addr[1]))  # a host name: resolved by socket
        await asyncio.wait_for(asyncio.gather(ap.done, bp.done), 5)
        assert [d for d, _ in ap.got[:20]] == [b"A%d" % i for i in range(20)]
        assert [d for d, _ in bp.got] == [b"B%d" % i for i in range(20)]
        assert all(p == addr for _, p in ap.got + bp.got)
        for _ in range(100):
            if len(ap.got) == 21:
                break
            await asyncio.sleep(0.01)
        assert ap.got[20] == (b"by name", addr)
        for t in (srv, a, b):
            t.close()
        await asyncio.gather(sp.closed, ap.closed, bp.closed)

    loop.run_until_complete(main())


def test_sendto_argument_errors(loop):
    async def main():
        rx, rp = await loop.create_datagram_endpoint(
            lambda: Recorder(), local_addr=("127.0.0.1", 0)
        )
        addr = rx.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
        with pytest.raises(TypeError) as e:
            ct.sendto("text")
        assert str(e.value) == "data argument must be a bytes-like object, not 'str'"
        with pytest.raises(TypeError) as e:
            ct.sendto(12)
        assert str(e.value) == "data argument must be a bytes-like object, not 'int'"
        with pytest.raises(ValueError) as e:
            ct.sendto(b"x", ("127.0.0.1", 1))
        assert str(e.value) == f"Invalid address: must be None or {addr}"
        ct.sendto(b"")
        ct.sendto(b"last")
        for _ in range(100):
            if rp.got and rp.got[-1][0] == b"last":
                break
            await asyncio.sleep(0.01)
        expected = [b"", b"last"] if _empty_datagrams_sent() else [b"last"]
        assert [d for d, _ in rp.got] == expected
        assert cp.errors == [] and rp.errors == []
        ct.close()
        rx.close()
        await asyncio.gather(cp.closed, rp.closed)

    loop.run_until_complete(main())


def test_unconnected_sendto_without_address_is_fatal(loop):
    """sendto(data) on an unconnected transport: socket.sendto's TypeError, through
    _fatal_error (the transport closes; connection_lost gets the exception)."""

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        t, p = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        t.sendto(b"nowhere")
        await asyncio.wait_for(p.closed, 5)
        assert len(p.lost) == 1 and isinstance(p.lost[0], TypeError)
        assert [c["message"] for c in errors] == ["Fatal write error on datagram transport"]

    loop.run_until_complete(main())


def test_error_received_on_connected_socket_to_closed_port(loop):
    async def main():
        t, p = await loop.create_datagram_endpoint(
            Recorder, remote_addr=("127.0.0.1", _closed_port())
        )
        for _ in range(50):
            t.sendto(b"ping")
            await asyncio.sleep(0.01)
            if len(p.errors) >= 2:
                break
        assert len(p.errors) >= 2
        assert all(isinstance(e, ConnectionRefusedError) for e in p.errors)
        assert p.handled == [True] * len(p.errors)
        assert p.lost == [] and not t.is_closing()
        t.close()
        await p.closed
        assert p.lost == [None]

    loop.run_until_complete(main())


@pytest.fixture
def unix_pair(tmp_path):
    """A bound AF_UNIX datagram socket that nobody reads, and a socket connected to it with a
    small send buffer: sends fail with EAGAIN after a few datagrams (max_dgram_qlen)."""
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "rx"))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    tx.connect(str(tmp_path / "rx"))
    tx.setblocking(False)
    yield rx, tx
    rx.close()
    tx.close()


def _drain(sock, into):
    while True:
        try:
            into.append(sock.recv(65536))
        except BlockingIOError:
            return


def test_buffering_on_eagain_flow_control_and_close_after_drain(loop, unix_pair):
    rx, tx = unix_pair

    async def main():
        t, p = await loop.create_datagram_endpoint(Recorder, sock=tx)
        t.set_write_buffer_limits(high=8 * 1024, low=2 * 1024)
        sent = [struct.pack("!I", i) + bytes(1020) for i in range(200)]
        sizes = []
        for d in sent:
            t.sendto(d)
            sizes.append(t.get_write_buffer_size())
        assert sizes[0] == 0  # sent at once
        assert sizes[-1] > 8 * 1024  # the rest buffered, in full
        assert p.calls == ["made", "pause"]  # once, at the high-water mark
        assert p.errors == []
        t.close()  # connection_lost waits for the buffer
        received = []
        while not p.closed.done():
            _drain(rx, received)
            await asyncio.sleep(0.001)
        _drain(rx, received)
        assert received == sent  # nothing lost, nothing reordered
        assert p.calls == ["made", "pause", "resume"]
        assert p.lost == [None]

    loop.run_until_complete(main())


def test_abort_drops_the_buffer(loop, unix_pair):
    rx, tx = unix_pair

    async def main():
        t, p = await loop.create_datagram_endpoint(Recorder, sock=tx)
        sent = [struct.pack("!I", i) * 10 for i in range(100)]
        for d in sent:
            t.sendto(d)
        assert t.get_write_buffer_size() > 0
        t.abort()
        await asyncio.wait_for(p.closed, 5)
        assert p.lost == [None]
        received = []
        _drain(rx, received)
        assert 0 < len(received) < len(sent) and received == sent[: len(received)]
        assert tx.fileno() == -1  # closed by connection_lost

    loop.run_until_complete(main())


def test_sendto_after_close_counts_and_warns(loop, caplog):
    async def main():
        rx, rp = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        t, p = await loop.create_datagram_endpoint(
            Recorder, remote_addr=rx.get_extra_info("sockname")
        )
        t.close()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(6):
                t.sendto(b"late")
        await p.closed
        await asyncio.sleep(0.05)
        assert rp.got == []
        rx.close()
        await rp.closed

    loop.run_until_complete(main())
    warnings = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert warnings == ["socket.send() raised exception."] * 2


class Closer(Recorder):
    """Closes (or pauses, or raises) on its first datagram."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if len(self.got) == 1:
            if self.action == "close":
                self.transport.close()
            elif self.action == "abort":
                self.transport.abort()
            elif self.action == "pause":
                self.transport.pause_reading()
            elif self.action == "raise":
                raise RuntimeError("protocol bug")


@pytest.mark.parametrize("action", ["close", "abort", "pause", "raise"])
def test_reading_stops_where_the_stdlib_stops(loop, action):
    """Several datagrams queued at once: a protocol that closes, aborts or pauses on the first
    gets no more; one that raises gets the others afterwards (the exception goes to the loop's
    handler)."""

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        t, p = await loop.create_datagram_endpoint(
            lambda: Closer(action), local_addr=("127.0.0.1", 0)
        )
        if action == "pause" and not hasattr(t, "pause_reading"):
            t.close()
            await p.closed
            return "skip"
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(5):
            tx.sendto(b"%d" % i, t.get_extra_info("sockname"))
        tx.close()
        await asyncio.sleep(0.1)
        data = [d for d, _ in p.got]
        if action == "raise":
            assert data == [b"0", b"1", b"2", b"3", b"4"]
            assert [type(c.get("exception")) for c in errors] == [RuntimeError]
        else:
            assert data == [b"0"]
            assert errors == []
        if action == "pause":
            t.resume_reading()
            await asyncio.sleep(0.05)
            assert [d for d, _ in p.got] == [b"0", b"1", b"2", b"3", b"4"]
        if not t.is_closing():
            t.close()
        await p.closed
        assert p.lost == [None]

    if loop.run_until_complete(main()) == "skip":
        pytest.skip("pause_reading on datagram transports is 3.12+")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_echo(loop):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no ::1")

    async def main():
        st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("::1", 0))
        addr = st.get_extra_info("sockname")
        ct, cp = await loop.create_datagram_endpoint(lambda: Recorder(expect=3), remote_addr=addr[:2])
        for d in (b"a", b"bb", b"ccc"):
            ct.sendto(d)
        await asyncio.wait_for(cp.done, 5)
        assert [d for d, _ in cp.got] == [b"a", b"bb", b"ccc"]
        assert all(a == addr for _, a in cp.got)
        ct.close()
        st.close()
        await cp.closed

    loop.run_until_complete(main())


def test_ferroloop_native_methods_in_instance(loop_name, loop):
    if loop_name != "ferroloop" or not NATIVE:
        pytest.skip("ferroloop's native transport only")

    async def main():
        t, p = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        assert type(t.__dict__["sendto"]).__name__ == "builtin_function_or_method"
        assert type(t.__dict__["_read_ready"]).__name__ == "builtin_function_or_method"
        assert isinstance(t, selector_events._SelectorDatagramTransport)
        assert "_SelectorDatagramTransport" in repr(t)
        t.close()
        await p.closed

    loop.run_until_complete(main())


def test_closed_transport_is_collected(loop):
    import gc
    import weakref

    async def main():
        t, p = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
        t.sendto(b"self", t.get_extra_info("sockname"))
        await asyncio.sleep(0.05)
        assert [d for d, _ in p.got] == [b"self"]
        t.close()
        await p.closed
        return weakref.ref(t), weakref.ref(p)

    refs = loop.run_until_complete(main())
    for _ in range(3):
        gc.collect()
    assert [r() for r in refs] == [None, None]


def test_protocol_closing_the_socket_itself_stops_the_batch(loop):
    """A protocol that closes the transport's socket behind its back (and opens another file,
    which may get the same fd number) gets no datagram read from that other file."""

    async def main():
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        opened = []

        class Rude(Recorder):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                if len(self.got) == 1:
                    self.transport._sock.close()
                    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                    a.setblocking(False)  # a wrong read fails the test instead of hanging
                    b.send(b"other file")
                    opened.extend((a, b))

        t, p = await loop.create_datagram_endpoint(Rude, local_addr=("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(3):
            tx.sendto(b"%d" % i, t.get_extra_info("sockname"))
        tx.close()
        await asyncio.sleep(0.05)
        assert all(d != b"other file" for d, _ in p.got)
        t.abort()
        await p.closed
        for s in opened:
            s.close()

    loop.run_until_complete(main())
