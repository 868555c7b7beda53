"""Stream transports, on the stock loop and on ferroloop (whose transport is native): writes that
try the socket first, flow control with bounded memory, pause_reading, half-close, abort, resets,
BufferedProtocol, errors, and what libraries lean on (instance attributes, extra info after close).
Every test runs the same code on both loops and asserts the same outcome."""

import array
import asyncio
import gc
import hashlib
import logging
import socket
import struct
import sys
import weakref

import pytest


class Recorder(asyncio.Protocol):
    """Records every call the transport makes; optionally pauses its own reading at once."""

    def __init__(self, *, keep_open=False, pause_at_start=False):
        self.calls = []
        self.data = bytearray()
        self.keep_open = keep_open
        self.pause_at_start = pause_at_start
        self.lost = None
        self.made = None
        self.done = None

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")
        self.done = asyncio.get_running_loop().create_future()
        if self.pause_at_start:
            transport.pause_reading()

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data

    def eof_received(self):
        self.calls.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.calls.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.calls.append(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.lost = exc
        if not self.done.done():
            self.done.set_result(exc)


async def _pair(server_proto, client_proto, *, unix_path=None):
    """A connected (server transport, server protocol, client transport, client protocol)."""
    lp = asyncio.get_running_loop()
    accepted = lp.create_future()

    def factory():
        accepted.set_result(server_proto)
        return server_proto

    if unix_path:
        server = await lp.create_unix_server(factory, unix_path)
        ct, cp = await lp.create_unix_connection(lambda: client_proto, unix_path)
    else:
        server = await lp.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ct, cp = await lp.create_connection(lambda: client_proto, "127.0.0.1", port)
    sp = await accepted
    while not hasattr(sp, "transport"):
        await asyncio.sleep(0)
    return server, sp.transport, sp, ct, cp


async def _close_all(server, *transports):
    for t in transports:
        t.close()
    server.close()
    await server.wait_closed()
    for _ in range(5):
        await asyncio.sleep(0)


def _run(loop, coro, timeout=15):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_write_goes_to_the_socket_at_once(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.write(b"x" * 1000)
        buffered = ct.get_write_buffer_size()
        while len(sp.data) < 1000:
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return buffered

    assert _run(loop, main()) == 0


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_flow_control_bounds_the_write_buffer(loop, unix, tmp_path):
    """A writer that honours pause_writing against a peer that does not read: the buffer stops
    just past the high-water mark; when the peer reads, resume_writing comes at the low-water mark
    and every byte arrives, in order."""
    high, low, chunk = 64 * 1024, 16 * 1024, 8 * 1024

    async def main():
        path = str(tmp_path / "s.sock") if unix else None
        server, st, sp, ct, cp = await _pair(Recorder(pause_at_start=True), Recorder(), unix_path=path)
        ct.set_write_buffer_limits(high=high, low=low)
        assert ct.get_write_buffer_limits() == (low, high)
        sent = hashlib.sha256()
        n = 0
        peak = 0
        # Write until the transport says pause: the kernel's buffers fill first.
        while not any(isinstance(c, tuple) and c[0] == "pause" for c in cp.calls):
            block = struct.pack("!Q", n) * (chunk // 8)
            sent.update(block)
            ct.write(block)
            n += 1
            peak = max(peak, ct.get_write_buffer_size())
            if n % 16 == 0:
                await asyncio.sleep(0)
            assert n < 100_000, "pause_writing never came"
        pause = next(c for c in cp.calls if isinstance(c, tuple))
        st.resume_reading()
        total = n * chunk
        while len(sp.data) < total:
            await asyncio.sleep(0.001)
        resumes = [c for c in cp.calls if isinstance(c, tuple) and c[0] == "resume"]
        await _close_all(server, st, ct)
        return pause, resumes, peak, hashlib.sha256(sp.data).digest() == sent.digest()

    pause, resumes, peak, intact = _run(loop, main())
    assert high < pause[1] <= high + chunk
    assert peak <= high + chunk
    assert len(resumes) == 1 and resumes[0][1] <= low
    assert intact


def test_paused_reader_stops_reading(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        st.pause_reading()
        assert not st.is_reading()
        st.pause_reading()  # idempotent
        ct.write(b"a" * 10_000)
        for _ in range(20):
            await asyncio.sleep(0.001)
        while_paused = len(sp.data)
        st.resume_reading()
        assert st.is_reading()
        while len(sp.data) < 10_000:
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return while_paused

    assert _run(loop, main()) == 0


def test_half_close_keeps_the_other_direction_open(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(keep_open=True), Recorder())
        assert ct.can_write_eof()
        ct.write(b"question")
        ct.write_eof()
        with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
            ct.write(b"more")
        while "eof" not in sp.calls:
            await asyncio.sleep(0.001)
        st.write(b"answer after eof")
        st.close()
        await cp.done
        await sp.done
        await _close_all(server, ct)
        return bytes(sp.data), bytes(cp.data), sp.calls, cp.calls, sp.lost, cp.lost

    sdata, cdata, scalls, ccalls, slost, clost = _run(loop, main())
    assert sdata == b"question" and cdata == b"answer after eof"
    assert scalls == ["made", "eof", "lost"] and slost is None
    assert ccalls == ["made", "eof", "lost"] and clost is None


def test_abort_drops_buffered_data(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(pause_at_start=True), Recorder())
        while ct.get_write_buffer_size() == 0:
            ct.write(b"z" * 65536)
        ct.abort()
        closing = ct.is_closing()
        ct.write(b"after abort")  # ignored (counted), not an error
        await cp.done
        await _close_all(server, st)
        return closing, ct.get_write_buffer_size(), cp.calls.count("lost"), cp.lost

    closing, size, lost_calls, exc = _run(loop, main())
    assert closing and size == 0 and lost_calls == 1 and exc is None


def test_reset_by_peer_reaches_connection_lost(loop):
    async def main():
        lp = asyncio.get_running_loop()
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        ct, cp = await lp.create_connection(Recorder, *srv.getsockname())
        peer, _ = await lp.sock_accept(srv)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # RST
        srv.close()
        exc = await cp.done
        return exc, cp.calls

    exc, calls = _run(loop, main())
    assert isinstance(exc, ConnectionResetError)
    assert calls == ["made", "lost"]


def test_extra_info_answers_after_close(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        before = (ct.get_extra_info("sockname"), ct.get_extra_info("peername"))
        assert ct.get_extra_info("socket").fileno() >= 0
        assert ct.get_extra_info("nonexistent", "dflt") == "dflt"
        ct.close()
        await cp.done
        after = (ct.get_extra_info("sockname"), ct.get_extra_info("peername"))
        await _close_all(server, st)
        return before, after

    before, after = _run(loop, main())
    assert before == after and before[0][0] == "127.0.0.1"


def test_instance_attributes_can_be_assigned(loop):
    """Tests monkeypatch transport.write; the protocol's calls then go to the replacement."""

    class Echo(Recorder):
        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server, st, sp, ct, cp = await _pair(Echo(), Recorder())
        seen = []
        real_write = st.write
        st.write = lambda data: (seen.append(data), real_write(data.upper()))
        st.custom = "attribute"
        ct.write(b"ping")
        while len(cp.data) < 4:
            await asyncio.sleep(0.001)
        del st.write
        ct.write(b"pong")
        while len(cp.data) < 8:
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return seen, bytes(cp.data), st.custom

    seen, data, custom = _run(loop, main())
    assert seen == [b"ping"] and data == b"PINGpong" and custom == "attribute"


def test_write_argument_errors(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        errors = []
        for bad in ("text", 12, None, [b"x"], array.array("b", [1])):
            with pytest.raises(TypeError) as info:
                ct.write(bad)
            errors.append(str(info.value))
        ct.write(b"")  # nothing, no error
        ct.write(bytearray(b"ba") + b"")
        ct.write(memoryview(b"-mv-")[1:3])
        ct.write(memoryview(array.array("i", [1, 2])))
        while len(sp.data) < 2 + 2 + 8:
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return errors, bytes(sp.data)

    errors, data = _run(loop, main())
    assert errors == [
        "data argument must be a bytes-like object, not 'str'",
        "data argument must be a bytes-like object, not 'int'",
        "data argument must be a bytes-like object, not 'NoneType'",
        "data argument must be a bytes-like object, not 'list'",
        "data argument must be a bytes-like object, not 'array'",
    ]
    assert data == b"bamv" + array.array("i", [1, 2]).tobytes()


def test_writelines_sends_every_piece_in_order(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        pieces = [b"one,", bytearray(b"two,"), memoryview(b"three,"), b"x" * 300_000, b"end"]
        expected = b"".join(bytes(p) for p in pieces)
        ct.writelines(pieces)
        ct.writelines([])
        while len(sp.data) < len(expected):
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return bytes(sp.data) == expected

    assert _run(loop, main())


def test_writelines_argument_errors(loop):
    class Weird:
        pass

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        results = []
        for arg in (None, [], "", [b"a", "x"], [b"a", Weird()], [b"a", 3]):
            try:
                results.append(ct.writelines(arg))
            except TypeError as exc:
                results.append(str(exc))
        ct.writelines(iter([b"ok"]))
        while len(sp.data) < 2:
            await asyncio.sleep(0.001)
        await _close_all(server, st, ct)
        return results, bytes(sp.data)

    results, data = _run(loop, main())
    assert data == b"ok"  # a failed call sent nothing, not even the pieces before the bad one
    if sys.version_info >= (3, 12):
        # selector_events' writelines: `if not list_of_data: return`, then a memoryview of each
        assert results == [None, None, None] + [
            f"memoryview: a bytes-like object is required, not '{name}'"
            for name in ("str", "Weird", "int")
        ]
    else:
        # WriteTransport.writelines: `self.write(b''.join(list_of_data))`
        assert results == ["can only join an iterable", None, None] + [
            f"sequence item 1: expected a bytes-like object, {name} found"
            for name in ("str", "Weird", "int")
        ]


def test_buffered_protocol_gets_everything_through_small_buffers(loop):
    class Small(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)
            self.got = bytearray()
            self.sizes = set()

        def connection_made(self, transport):
            self.transport = transport
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint):
            self.sizes.add(sizehint)
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.done.set_result(bytes(self.got))

        def connection_lost(self, exc):
            pass

    async def main():
        server, st, sp, ct, cp = await _pair(Small(), Recorder())
        payload = bytes(range(256)) * 400
        ct.write(payload)
        ct.write_eof()
        got = await sp.done
        await _close_all(server, st, ct)
        return got == payload, sp.sizes

    intact, sizes = _run(loop, main())
    assert intact and sizes == {-1}


def test_protocol_errors_go_to_the_exception_handler(loop):
    class Broken(Recorder):
        def data_received(self, data):
            raise ValueError("protocol bug")

    async def main():
        lp = asyncio.get_running_loop()
        contexts = []
        lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))
        server, st, sp, ct, cp = await _pair(Broken(), Recorder())
        ct.write(b"boom")
        await sp.done
        await _close_all(server, st, ct)
        return contexts, sp.lost, st

    contexts, lost, st = _run(loop, main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["transport"] is st and isinstance(ctx["protocol"], Broken)
    assert isinstance(lost, ValueError)


def test_writes_after_connection_lost_are_counted_then_logged(loop, caplog):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.close()
        await cp.done
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(7):
                ct.write(b"late")
        await _close_all(server, st)

    _run(loop, main())
    warnings = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
    assert len(warnings) == 3  # the 5th, 6th and 7th late writes (constants: threshold 5)


def test_socket_closed_behind_the_transport(loop):
    """The user closes the socket object they handed in: writes fail with EBADF through
    connection_lost, never onto whatever reuses the fd number."""

    async def main():
        lp = asyncio.get_running_loop()
        server = await lp.create_server(Recorder, "127.0.0.1", 0)
        sock = socket.create_connection(server.sockets[0].getsockname())
        ct, cp = await lp.create_connection(Recorder, sock=sock)
        await asyncio.sleep(0)
        sock.close()
        other = socket.socket()  # likely gets the same fd number
        ct.write(b"must not go to the new socket")
        exc = await cp.done
        other.close()
        server.close()
        await server.wait_closed()
        return exc

    exc = _run(loop, main())
    assert isinstance(exc, OSError) and exc.errno == 9


def test_closed_transport_and_protocol_are_collected(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        refs = [weakref.ref(x) for x in (st, ct, sp, cp)]
        ct.write(b"x")
        await _close_all(server, st, ct)
        await cp.done
        return refs

    refs = _run(loop, main())
    gc.collect()
    assert [r() for r in refs] == [None] * 4


def test_tls_runs_over_the_same_transport_class(loop):
    """create_server/create_connection with ssl= put the SSL protocol over the loop's own stream
    transport (the class a plain connection gets), and data goes through both ways."""
    from test.test_asyncio import utils as test_utils

    class Upper(Recorder):
        def data_received(self, data):
            self.transport.write(data.upper())

    async def main():
        lp = asyncio.get_running_loop()
        server = await lp.create_server(
            Upper, "127.0.0.1", 0, ssl=test_utils.simple_server_sslcontext()
        )
        port = server.sockets[0].getsockname()[1]
        ct, cp = await lp.create_connection(
            Recorder, "127.0.0.1", port, ssl=test_utils.simple_client_sslcontext()
        )
        plain_t, plain_p = await lp.create_connection(Recorder, "127.0.0.1", port)
        ct.write(b"over tls")
        while len(cp.data) < 8:
            await asyncio.sleep(0.001)
        raw = ct._ssl_protocol._transport
        ct.close()
        plain_t.close()
        await cp.done
        await plain_p.done
        server.close()
        await server.wait_closed()
        return type(raw), type(plain_t), bytes(cp.data)

    raw_type, plain_type, data = _run(loop, main())
    assert raw_type is plain_type
    assert data == b"OVER TLS"


def test_state_after_construction_is_the_stdlibs(loop):
    """What the constructor sets up (ferroloop's skips the stdlib's mixin constructors and
    publishes its methods lazily): extra info, water marks, flags, server, TCP_NODELAY."""

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        lp = asyncio.get_running_loop()
        seen = []
        for t, srv in ((st, server), (ct, None)):
            sock = t.get_extra_info("socket")
            seen.append(
                (
                    sorted(t._extra),
                    type(sock).__name__,
                    t.get_extra_info("sockname") == sock.getsockname(),
                    t.get_extra_info("peername") == sock.getpeername(),
                    t.get_write_buffer_limits(),
                    t._loop is lp,
                    t._server is srv,
                    (t._closing, t._conn_lost, t._paused, t._eof, t._protocol_paused),
                    t._empty_waiter,
                    t.is_reading(),
                    t.is_closing(),
                    t.get_write_buffer_size(),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
                    lp._transports[t._sock_fd] is t,
                )
            )
        await _close_all(server, st, ct)
        return seen

    server_side, client_side = _run(loop, main())
    expected = [
        ["peername", "socket", "sockname"],
        "TransportSocket",
        True,
        True,
        (16 * 1024, 64 * 1024),
        True,
        True,
        (False, 0, False, False, False),
        None,
        True,
        False,
        0,
        True,
        True,
    ]
    assert list(server_side) == expected
    assert list(client_side) == expected


def test_transport_registration_is_the_weak_dicts_own_entry(loop):
    """`loop._transports[fd] = transport` as WeakValueDictionary.__setitem__ makes it (ferroloop
    builds the KeyedRef itself): a KeyedRef keyed by the fd whose callback is the dict's own
    removal (test_closed_transport_and_protocol_are_collected checks the collection); the
    TransportSocket in the extra info wraps the transport's socket."""

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        lp = asyncio.get_running_loop()
        fd = st._sock_fd
        ref = lp._transports.data[fd]
        seen = (type(ref) is weakref.KeyedRef, ref.key == fd, ref() is st,
                ref.__callback__ == lp._transports._remove,
                st.get_extra_info("socket")._sock is st._sock)
        await _close_all(server, st, ct)
        return seen

    assert _run(loop, main()) == (True, True, True, True, True)


def test_every_method_can_be_replaced_on_the_instance(loop):
    """A replacement assigned on the instance is what calls find (the stdlib's resume_reading
    re-registers `self._read_ready`); deleting it brings the class's method back, which the class
    also answers as a plain function."""

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        for _ in range(3):
            await asyncio.sleep(0)  # the reader scheduled after connection_made is added
        calls = []
        real_read_ready = st._read_ready
        st._read_ready = lambda: (calls.append("read"), real_read_ready())
        st.pause_reading()
        st.resume_reading()
        st.is_closing = lambda: "replaced"
        replaced = st.is_closing()
        ct.write(b"data")
        while len(sp.data) < 4:
            await asyncio.sleep(0.001)
        del st.is_closing
        restored = (st.is_closing(), type(st).is_closing(st), type(st).is_reading(st))
        await _close_all(server, st, ct)
        return replaced, restored, calls

    replaced, restored, calls = _run(loop, main())
    assert replaced == "replaced"
    assert restored == (False, False, True)
    assert calls and set(calls) == {"read"}
