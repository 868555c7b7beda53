"""Flow control on stream transports, on the stock loop and on ferroloop: pause_reading /
resume_reading / is_reading (the stdlib's rules: pause on a closing transport, resume after
close, idempotence, EOF while paused, nothing lost or reordered, the context the reader runs in,
debug logging) and the write-side water marks. The ferroloop-only tests check how it is done
there: a short pause costs no epoll_ctl, and a long one does not make the loop spin."""

import asyncio
import contextvars
import hashlib
import logging
import os
import random

import pytest


class Reader(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.events = []
        self.transport = None
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def _pair(server_proto, client_proto=None):
    lp = asyncio.get_running_loop()
    accepted = lp.create_future()

    def factory():
        accepted.set_result(server_proto)
        return server_proto

    server = await lp.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ct, cp = await lp.create_connection(lambda: client_proto or Reader(), "127.0.0.1", port)
    await accepted
    while server_proto.transport is None:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the server transport's reader is registered after connection_made
    return server, server_proto.transport, ct, cp


async def _close(server, *transports):
    for t in transports:
        t.close()
    server.close()
    await server.wait_closed()
    for _ in range(5):
        await asyncio.sleep(0)


def _run(loop, coro, timeout=30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def _until(cond, timeout=10):
    lp = asyncio.get_running_loop()
    end = lp.time() + timeout
    while not cond():
        assert lp.time() < end, "timed out"
        await asyncio.sleep(0.001)


def test_is_reading_follows_pause_resume_and_close(loop):
    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        seen = [st.is_reading()]
        st.pause_reading()
        seen.append(st.is_reading())
        st.pause_reading()  # idempotent
        seen.append(st.is_reading())
        st.resume_reading()
        seen.append(st.is_reading())
        st.resume_reading()  # idempotent
        seen.append(st.is_reading())
        st.close()
        seen.append(st.is_reading())
        st.resume_reading()  # after close: nothing
        st.pause_reading()  # on a closing transport: nothing
        seen.append((st.is_reading(), st._paused))
        await _close(server, ct)
        return seen

    assert _run(loop, main()) == [True, False, False, True, True, False, (False, False)]


def test_paused_then_closed_transport_loses_the_connection_and_reads_nothing(loop):
    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        st.pause_reading()
        ct.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        st.close()
        st.resume_reading()
        await sp.lost
        await _close(server, ct)
        return bytes(sp.data), sp.events, st.is_reading()

    assert _run(loop, main()) == (b"", ["lost"], False)


def test_eof_while_paused_is_seen_after_the_data_once_resumed(loop):
    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        st.pause_reading()
        ct.write(b"tail" * 1000)
        ct.write_eof()
        await asyncio.sleep(0.05)
        while_paused = (bytes(sp.data), list(sp.events))
        st.resume_reading()
        await _until(lambda: "eof" in sp.events)
        await sp.lost  # eof_received returned None: the transport closes
        await _close(server, ct)
        return while_paused, len(sp.data), sp.events

    assert _run(loop, main()) == ((b"", []), 4000, ["data", "eof", "lost"])


def test_nothing_is_lost_or_reordered_through_many_pauses(loop):
    total = 6 * 1024 * 1024
    payload = random.Random(7).randbytes(total)

    class Pausing(Reader):
        def __init__(self):
            super().__init__()
            self.rng = random.Random(3)
            self.pauses = 0

        def data_received(self, data):
            super().data_received(data)
            assert self.transport.is_reading()
            if self.rng.random() < 0.5:
                self.transport.pause_reading()
                self.pauses += 1
                lp = asyncio.get_running_loop()
                how = self.rng.random()
                if how < 0.4:
                    lp.call_soon(self.transport.resume_reading)
                elif how < 0.8:
                    lp.call_soon(lp.call_soon, self.transport.resume_reading)
                else:
                    lp.call_later(0.002, self.transport.resume_reading)

    async def main():
        sp = Pausing()
        server, st, ct, cp = await _pair(sp)
        view = memoryview(payload)
        for i in range(0, total, 100_000):
            ct.write(view[i : i + 100_000])
            if ct.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0)
        ct.write_eof()
        await _until(lambda: "eof" in sp.events, timeout=60)
        await _close(server, st, ct)
        return hashlib.sha256(sp.data).hexdigest(), sp.pauses

    digest, pauses = _run(loop, main(), timeout=90)
    assert digest == hashlib.sha256(payload).hexdigest()
    assert pauses > 5


def test_reader_runs_in_the_context_of_resume_reading(loop):
    var = contextvars.ContextVar("var", default="unset")

    class Ctx(Reader):
        def __init__(self):
            super().__init__()
            self.seen = []

        def data_received(self, data):
            super().data_received(data)
            self.seen.append(var.get())

    async def main():
        sp = Ctx()
        server, st, ct, cp = await _pair(sp)
        st.pause_reading()
        ct.write(b"x")
        await asyncio.sleep(0.02)
        ctx = contextvars.copy_context()
        ctx.run(var.set, "at-resume")
        ctx.run(st.resume_reading)
        await _until(lambda: sp.data)
        await _close(server, st, ct)
        return sp.seen

    assert _run(loop, main()) == ["at-resume"]


def test_pause_and_resume_are_logged_in_debug_mode(loop, caplog):
    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            st.pause_reading()
            st.resume_reading()
        await _close(server, st, ct)

    loop.set_debug(True)
    loop.slow_callback_duration = 10.0
    _run(loop, main())
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.endswith("pauses reading") for m in messages), messages
    assert any(m.endswith("resumes reading") for m in messages), messages


def test_write_buffer_limits_and_pause_resume_writing(loop):
    class Writer(Reader):
        def __init__(self):
            super().__init__()
            self.flow = []

        def pause_writing(self):
            self.flow.append(("pause", self.transport.get_write_buffer_size()))

        def resume_writing(self):
            self.flow.append(("resume", self.transport.get_write_buffer_size()))

    async def main():
        sp = Reader()
        cp = Writer()
        server, st, ct, _ = await _pair(sp, cp)
        results = {}
        with pytest.raises(ValueError):
            ct.set_write_buffer_limits(high=10, low=20)
        ct.set_write_buffer_limits(high=100_000, low=20_000)
        results["limits"] = ct.get_write_buffer_limits()
        st.pause_reading()  # the peer stops reading: the client's buffer fills
        chunk = b"y" * 50_000
        for _ in range(200):
            ct.write(chunk)
            if cp.flow:
                break
        results["paused_over_high"] = cp.flow[0][0] == "pause" and cp.flow[0][1] > 100_000
        st.resume_reading()
        await _until(lambda: len(cp.flow) >= 2)
        results["resumed_under_low"] = cp.flow[1][0] == "resume" and cp.flow[1][1] <= 20_000
        # Lowering the high-water mark under the buffered size pauses at once.
        st.pause_reading()
        for _ in range(200):
            ct.write(chunk)
            if ct.get_write_buffer_size() > 30_000:
                break
        n = len(cp.flow)
        ct.set_write_buffer_limits(high=ct.get_write_buffer_size() - 1)
        results["pause_on_new_limits"] = cp.flow[n:][:1] == [
            ("pause", ct.get_write_buffer_size())
        ]
        st.resume_reading()
        await _until(lambda: ct.get_write_buffer_size() == 0)
        await _close(server, st, ct)
        return results

    res = _run(loop, main())
    assert res == {
        "limits": (20_000, 100_000),
        "paused_over_high": True,
        "resumed_under_low": True,
        "pause_on_new_limits": True,
    }


# ferroloop only: how it is done there.


def test_short_pauses_cost_no_epoll_ctl_ferroloop():
    import ferroloop

    loop = ferroloop.new_event_loop()

    class Bouncing(Reader):
        def __init__(self):
            super().__init__()
            self.pauses = 0

        def data_received(self, data):
            super().data_received(data)
            if self.transport.is_reading():
                self.transport.pause_reading()
                self.pauses += 1
                asyncio.get_running_loop().call_soon(self.transport.resume_reading)

    async def main():
        sp = Bouncing()
        server, st, ct, cp = await _pair(sp)
        await asyncio.sleep(0.01)
        before = loop._epoll_ctl_calls()
        for _ in range(200):
            ct.write(b"z" * 1000)
            await asyncio.sleep(0)
        await _until(lambda: len(sp.data) == 200_000)
        used = loop._epoll_ctl_calls() - before
        await _close(server, st, ct)
        return sp.pauses, used

    try:
        pauses, used = _run(loop, main())
    finally:
        loop.close()
    assert pauses >= 50
    # The stdlib's loop makes two epoll_ctl calls per pause; ferroloop none for the reader.
    assert used <= 4, used


def test_a_long_pause_does_not_make_the_loop_spin_ferroloop():
    import ferroloop

    loop = ferroloop.new_event_loop()

    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        fd = st._sock_fd
        st.pause_reading()
        lingering = loop._fd_registration(fd)
        ct.write(b"w" * 5000)
        turns = loop.stats()["turns"]
        await asyncio.sleep(0.2)
        spent = loop.stats()["turns"] - turns
        after = loop._fd_registration(fd)
        st.resume_reading()
        registered = loop._fd_registration(fd)
        await _until(lambda: len(sp.data) == 5000)
        await _close(server, st, ct)
        return lingering, spent, after, registered, loop._fd_callbacks(fd)

    try:
        lingering, spent, after, registered, callbacks = _run(loop, main())
    finally:
        loop.close()
    assert lingering == (True, False), "paused: epoll's registration lingers"
    assert spent < 20, f"{spent} turns in 0.2 s while paused: the loop spun"
    assert after is None, "a paused fd that stayed readable is deregistered"
    assert registered == (True, False)
    assert callbacks == (None, None)


def test_paused_transport_repr_and_selector_say_idle_ferroloop():
    import ferroloop

    loop = ferroloop.new_event_loop()

    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        st.pause_reading()
        paused = repr(st)
        key = loop._selector.get_map().get(st._sock_fd)
        st.resume_reading()
        resumed = repr(st)
        await _close(server, st, ct)
        return paused, key, resumed

    try:
        paused, key, resumed = _run(loop, main())
    finally:
        loop.close()
    assert "read=idle" in paused and key is None
    assert "read=polling" in resumed


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc")
def test_a_transport_closed_while_paused_leaves_nothing_registered_ferroloop():
    import ferroloop

    loop = ferroloop.new_event_loop()

    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        fd = st._sock_fd
        st.pause_reading()
        st.close()
        await sp.lost
        gone = loop._fd_registration(fd)
        await _close(server, ct)
        return gone

    try:
        assert _run(loop, main()) is None
    finally:
        loop.close()


def test_reads_of_a_backlog_are_exact_bytes_of_at_most_max_size(loop):
    payload = random.Random(11).randbytes(3 * 1024 * 1024 + 12345)

    class Sizes(Reader):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def data_received(self, data):
            assert type(data) is bytes
            self.sizes.append(len(data))
            super().data_received(data)

    async def main():
        sp = Sizes()
        server, st, ct, cp = await _pair(sp)
        st.pause_reading()  # a backlog builds up: reads then fill max_size (the bulk path)
        ct.write(payload)
        await asyncio.sleep(0.05)
        st.resume_reading()
        await _until(lambda: len(sp.data) == len(payload))
        await _close(server, st, ct)
        return bytes(sp.data) == payload, max(sp.sizes), sp.sizes.count(256 * 1024)

    same, biggest, full = _run(loop, main())
    assert same and biggest <= 256 * 1024
    assert full >= 2


def test_a_finished_transport_is_freed_without_the_cyclic_collector_ferroloop():
    # The stdlib's own transport keeps a bound method of itself (3.11's _read_ready_cb): it
    # needs the collector. ferroloop's core lets go of its transport once the connection is
    # lost (transport/state.rs), so the pair goes with its last reference.
    import gc
    import weakref

    import ferroloop

    loop = ferroloop.new_event_loop()

    async def main():
        sp = Reader()
        server, st, ct, cp = await _pair(sp)
        refs = [weakref.ref(st), weakref.ref(ct)]
        st.close()
        ct.close()
        await sp.lost
        await cp.lost
        for _ in range(3):
            await asyncio.sleep(0)
        sp.transport = cp.transport = None
        server.close()
        await server.wait_closed()
        return refs

    gc.disable()
    try:
        refs = _run(loop, main())
        alive = [r() is not None for r in refs]
    finally:
        gc.enable()
        loop.close()
    assert alive == [False, False]
