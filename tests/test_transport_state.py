"""The native stream transport's state (crates/ferroloop-py/src/transport/state.rs): the
stdlib's private attributes as descriptors over one declared list of fields, what a transport
whose constructor failed answers, assignments that run Python code while dropping the old value,
and the reader registered from Rust in the stdlib's order (that part on both loops)."""

import asyncio
import gc
import sys
import weakref

import pytest

# Every private attribute of selector_events' socket transport that the native core holds.
STDLIB_STATE = {
    "_loop", "_sock", "_sock_fd", "_protocol", "_empty_waiter", "_server",
    "_protocol_connected", "_closing", "_eof", "_paused", "_protocol_paused", "_conn_lost",
    "_high_water", "_low_water", "_buffer",
}


@pytest.fixture
def unraisable(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


async def _connection(protocol_factory):
    lp = asyncio.get_running_loop()
    server = await lp.create_server(asyncio.Protocol, "127.0.0.1", 0)
    tr, pr = await lp.create_connection(protocol_factory, *server.sockets[0].getsockname()[:2])
    return server, tr, pr


async def _close(server, tr):
    tr.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)


def test_ferroloop_transport_attributes_are_the_declared_fields(ferroloop_mod):
    from ferroloop import _native, _transport

    attributes = _native.TransportCore._attributes()
    assert set(attributes) == STDLIB_STATE
    cls = _transport._SelectorSocketTransport
    for name in STDLIB_STATE:
        # The class attribute is that descriptor (the class access returns it).
        assert repr(getattr(cls, name)) == f"<transport attribute '{name}'>"


def test_ferroloop_transport_whose_constructor_failed(ferroloop_mod, unraisable):
    from ferroloop import _transport

    class NoFileno:
        def fileno(self):
            raise OSError("no fd")

    loop = ferroloop_mod.new_event_loop()
    try:
        with pytest.raises(OSError, match="no fd"):
            _transport._SelectorSocketTransport(loop, NoFileno(), asyncio.Protocol())
        gc.collect()  # its __del__ (the stdlib's) reads _sock
        t = _transport._SelectorSocketTransport.__new__(_transport._SelectorSocketTransport)
        initial = (t._sock, t._sock_fd, t._closing, t._conn_lost, t._high_water, t._low_water)
        with pytest.raises(AttributeError):
            t._closing = True
    finally:
        loop.close()
    assert unraisable == []
    assert initial == (None, -1, False, 0, 64 * 1024, 16 * 1024)


def test_ferroloop_transport_assignment_runs_del_outside_the_state(ferroloop_mod, unraisable):
    """Assigning an attribute drops the old value; its __del__ may read and assign the same
    transport's attributes (the state is not borrowed while it runs)."""
    seen = []

    class Witness:
        def __init__(self, transport):
            self.transport = weakref.ref(transport)

        def __del__(self):
            tr = self.transport()
            seen.append((tr._closing, tr._conn_lost))
            tr._paused = tr._paused  # an assignment too

    async def main():
        server, tr, pr = await _connection(asyncio.Protocol)
        tr._empty_waiter = Witness(tr)
        tr._empty_waiter = None  # the Witness goes here
        await _close(server, tr)

    loop = ferroloop_mod.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
    assert unraisable == []
    assert seen == [(False, 0)]


def test_ferroloop_transport_read_only_and_undeletable(ferroloop_mod):
    async def main():
        server, tr, pr = await _connection(asyncio.Protocol)
        errors = []
        for action in (lambda: setattr(tr, "_buffer", None), lambda: delattr(tr, "_closing")):
            with pytest.raises(AttributeError) as info:
                action()
            errors.append(str(info.value))
        with pytest.raises(TypeError):
            tr._closing = "yes"
        await _close(server, tr)
        return errors

    loop = ferroloop_mod.new_event_loop()
    try:
        errors = loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
    assert errors == ["the transport attribute '_buffer' is read-only",
                      "the transport attribute '_closing' cannot be deleted"]


def test_reading_starts_after_connection_made(loop):
    """The peer writes at once: data_received still comes after connection_made, and a protocol
    that pauses reading in connection_made gets nothing until it resumes."""

    class Order(asyncio.Protocol):
        def __init__(self, pause):
            self.pause = pause
            self.calls = []

        def connection_made(self, transport):
            self.transport = transport
            self.calls.append("made")
            if self.pause:
                transport.pause_reading()

        def data_received(self, data):
            self.calls.append("data")

    async def main():
        lp = asyncio.get_running_loop()

        async def greet(reader, writer):
            writer.write(b"hello")
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()[:2]
        _, eager = await lp.create_connection(lambda: Order(False), *addr)
        _, paused = await lp.create_connection(lambda: Order(True), *addr)
        while "data" not in eager.calls:
            await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0.001)
        while_paused = list(paused.calls)
        paused.transport.resume_reading()
        while "data" not in paused.calls:
            await asyncio.sleep(0.001)
        for p in (eager, paused):
            p.transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return eager.calls[:2], while_paused, paused.calls[:2]

    eager, while_paused, resumed = loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert eager == ["made", "data"]
    assert while_paused == ["made"]
    assert resumed == ["made", "data"]


def test_ferroloop_make_socket_transport_calls_a_subclass_init(ferroloop_mod, monkeypatch):
    """`loop._make_socket_transport` makes the transport without the class's `__init__` frame
    (`TransportCore._make`) only while that `__init__` is `_transport.py`'s own: a subclass's
    is called, with the stdlib's arguments, and the result is the same state either way."""
    from ferroloop import _net, _transport

    seen = []

    class Sub(_transport._SelectorSocketTransport):
        def __init__(self, *args):
            seen.append(args)
            super().__init__(*args)

    loop = ferroloop_mod.new_event_loop()

    async def main():
        server, plain, _ = await _connection(asyncio.Protocol)
        monkeypatch.setattr(_net, "_SOCKET_TRANSPORT", Sub)
        _, sub, _ = await _connection(asyncio.Protocol)
        monkeypatch.undo()
        state = [(type(t), t._closing, t._conn_lost, t._server, t.get_extra_info("peername")
                  is not None, t._protocol_connected, type(t._loop)) for t in (plain, sub)]
        sub_sock = sub._sock
        await _close(server, plain)
        await _close(server, sub)
        return state, sub_sock

    try:
        (plain_state, sub_state), sub_sock = loop.run_until_complete(main())
    finally:
        loop.close()
    # Both ends of the second connection: the client's (with its waiter) and the server's.
    assert len(seen) == 2 and all(len(args) == 6 and args[0] is loop for args in seen)
    assert sub_sock in [args[1] for args in seen]
    assert sub_state[0] is Sub and plain_state[0] is _transport._SelectorSocketTransport
    assert plain_state[1:] == sub_state[1:]
