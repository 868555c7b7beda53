"""The private attributes that libraries read from the loop, its transports, servers and tasks
(docs/private-attributes.md lists each one, who reads it and why), on the stock loop and on
ferroloop. Each test asserts the stdlib's meaning of the attribute, not just its presence, so that
a reimplementation (ferroloop's native transports) keeps offering what the readers rely on."""

import asyncio
import concurrent.futures
import socket
import sys
import threading
from asyncio import base_events, constants, transports

import pytest

TIMEOUT = 10
# 3.13's Server tracks its client transports (_clients); 3.11 and 3.12 count them (_active_count).
SERVER_TRACKS_CLIENTS = base_events.Server._attach.__code__.co_argcount == 2


class _Proto(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.paused = 0
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.made = asyncio.get_running_loop().create_future()
        self.made.set_result(None)
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.data += data

    def pause_writing(self):
        self.paused += 1

    def connection_lost(self, exc):
        self.lost = exc
        if not self.closed.done():
            self.closed.set_result(exc)


async def _pair():
    """(server, server-side transport, client transport, client protocol), connected."""
    lp = asyncio.get_running_loop()
    accepted = lp.create_future()

    def factory():
        proto = _Proto()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await lp.create_server(factory, "127.0.0.1", 0)
    ct, cp = await lp.create_connection(_Proto, *server.sockets[0].getsockname()[:2])
    sp = await asyncio.wait_for(accepted, TIMEOUT)
    await sp.made
    return server, sp.transport, ct, cp


async def _close(server, *transports_):
    for tr in transports_:
        tr.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # connection_lost of both sides


# --------------------------------------------------------------------------
# The loop


def test_loop_default_executor(loop):
    # anyio (_shutdown_default_executor, for loops without shutdown_default_executor) and
    # application code read loop._default_executor and _executor_shutdown_called.
    assert loop._default_executor is None
    assert loop._executor_shutdown_called is False

    async def main():
        await loop.run_in_executor(None, int)
        return loop._default_executor

    executor = loop.run_until_complete(main())
    assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    loop.run_until_complete(loop.shutdown_default_executor())
    assert loop._executor_shutdown_called is True


def test_loop_run_until_complete_marks_its_task(loop):
    # anyio's find_root_task: the task run_until_complete runs has the stdlib's
    # base_events._run_until_complete_cb among its done callbacks, while it runs.
    async def main():
        task = asyncio.current_task()
        return [cb for cb, _ in task._callbacks], task._loop

    callbacks, task_loop = loop.run_until_complete(main())
    assert base_events._run_until_complete_cb in callbacks
    assert task_loop is loop


def test_loop_thread_id_and_selector_view(loop):
    # _thread_id: the running thread's ident, None when not running. _selector: get_key(fd).events
    # and get_map().get(fd) for an fd watched with add_reader (transport reprs read it).
    a, b = socket.socketpair()
    try:
        assert loop._thread_id is None

        async def main():
            loop.add_reader(a.fileno(), lambda: None)
            try:
                key = loop._selector.get_key(a.fileno())
                return (loop._thread_id, key.fd, key.events,
                        loop._selector.get_map().get(b.fileno()))
            finally:
                loop.remove_reader(a.fileno())

        thread_id, fd, events, other = loop.run_until_complete(main())
        assert thread_id == threading.get_ident()
        assert (fd, events, other) == (a.fileno(), 1, None)  # selectors.EVENT_READ
        assert loop._thread_id is None
    finally:
        a.close()
        b.close()


# --------------------------------------------------------------------------
# Stream transports


def test_stream_transport_attributes(loop):
    async def main():
        server, st, ct, cp = await _pair()
        got = {}
        fd = ct.get_extra_info("socket").fileno()
        got["sock"] = (type(ct._sock), ct._sock.fileno() == fd == ct._sock_fd)
        got["protocol"] = ct._protocol is ct.get_protocol() is cp
        got["loop"] = ct._loop is loop
        got["extra"] = ct._extra["peername"] == ct.get_extra_info("peername")
        got["server"] = (st._server is server, ct._server)
        got["flags"] = (ct._closing, ct._conn_lost, ct._paused, ct._protocol_paused,
                        ct._protocol_connected, ct._eof)
        got["modes"] = (ct._sendfile_compatible, ct._start_tls_compatible)
        got["flow_control_mixin"] = isinstance(ct, transports._FlowControlMixin)
        ct.pause_reading()
        got["paused"] = ct._paused
        ct.resume_reading()
        got["resumed"] = ct._paused
        ct.set_write_buffer_limits(high=4096, low=1024)
        got["water"] = (ct._high_water, ct._low_water)
        # Fill the write buffer (the peer does not read): pause_writing, _protocol_paused, and
        # len(_buffer) is what get_write_buffer_size() reports.
        st.pause_reading()
        chunk = b"x" * 65536
        for _ in range(200):
            ct.write(chunk)
            if ct.get_write_buffer_size():
                break
        # Truth: something is unsent. len(): bytes on 3.11 (a bytearray); 3.12+'s is a deque of
        # pieces, ferroloop's counts bytes there too (docs/private-attributes.md).
        got["buffer"] = (bool(ct._buffer), ct.get_write_buffer_size() > 0,
                         sys.version_info >= (3, 12) or len(ct._buffer) == ct.get_write_buffer_size())
        got["protocol_paused"] = (ct._protocol_paused, cp.paused)
        ct.write_eof()
        got["eof"] = ct._eof
        ct.abort()
        got["aborted"] = (ct._closing, ct._conn_lost)
        await asyncio.wait_for(cp.closed, TIMEOUT)
        # After connection_lost: the stdlib's _call_connection_lost drops its references.
        got["after_lost"] = (ct._sock, ct._protocol, ct._loop, ct._sock_fd == fd)
        st.resume_reading()
        await _close(server, st)
        return got

    got = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert got["sock"] == (socket.socket, True)
    assert got["protocol"] and got["loop"] and got["extra"]
    assert got["server"] == (True, None)
    assert got["flags"] == (False, 0, False, False, True, False)
    assert got["modes"] == (constants._SendfileMode.TRY_NATIVE, True)
    assert got["flow_control_mixin"]
    assert (got["paused"], got["resumed"]) == (True, False)
    assert got["water"] == (4096, 1024)
    assert got["buffer"] == (True, True, True)
    assert got["protocol_paused"] == (True, 1)
    assert got["eof"] is True
    assert got["aborted"] == (True, 1)
    assert got["after_lost"][:3] == (None, None, None)
    assert got["after_lost"][3]  # _sock_fd keeps the number (repr, loop._transports key)


def test_closing_flag_after_close(loop):
    async def main():
        server, st, ct, cp = await _pair()
        ct.close()
        closing = (ct._closing, ct.is_closing(), ct._conn_lost)
        await asyncio.wait_for(cp.closed, TIMEOUT)
        await _close(server, st)
        return closing, cp.lost

    (closing, lost) = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert closing == (True, True, 1)  # close() with nothing buffered: lost at once
    assert lost is None


def test_call_connection_lost_replaced_on_the_instance_keeps_the_socket(loop):
    # Old aiomysql (TLS upgrade): replace transport._call_connection_lost on the instance with a
    # version that does not close the socket, call transport._force_close(None), then reuse the
    # socket. The transport must schedule the instance's method and must not close the fd itself.
    async def main():
        server, st, ct, cp = await _pair()
        raw = ct._sock
        calls = []

        def call_connection_lost(exc):  # what aiomysql's replacement does, minus the close
            calls.append(exc)
            if ct._protocol_connected:
                ct._protocol.connection_lost(exc)
            ct._sock = None
            ct._protocol = None
            ct._loop = None

        ct._call_connection_lost = call_connection_lost
        ct._force_close(None)
        await asyncio.wait_for(cp.closed, TIMEOUT)
        alive = raw.fileno() != -1
        # The same connection, under a new transport.
        reader, writer = await asyncio.open_connection(sock=raw)
        st.write(b"still connected")
        data = await asyncio.wait_for(reader.readexactly(15), TIMEOUT)
        writer.close()
        await writer.wait_closed()
        await _close(server, st)
        return calls, alive, data

    calls, alive, data = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert calls == [None]
    assert alive
    assert data == b"still connected"


def test_stream_protocol_paused_follows_the_transport(loop):
    # anyio's StreamWriterWrapper.send reads writer._protocol._paused (FlowControlMixin): True from
    # the transport's pause_writing() until its resume_writing().
    async def main():
        lp = asyncio.get_running_loop()
        peers = []
        server = await asyncio.start_server(lambda r, w: peers.append((r, w)), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        while not peers:
            await asyncio.sleep(0.001)
        peer_reader, peer_writer = peers[0]
        writer.transport.set_write_buffer_limits(high=4096)
        before = writer._protocol._paused
        sent = 0
        while not writer._protocol._paused and sent < 64 * 2**20:
            writer.write(b"y" * 65536)
            sent += 65536
            await asyncio.sleep(0)
        during = writer._protocol._paused
        draining = lp.create_task(writer.drain())
        got = 0
        while got < sent:
            got += len(await peer_reader.read(2**20))
        await asyncio.wait_for(draining, TIMEOUT)
        after = writer._protocol._paused
        for w in (writer, peer_writer):
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
        return before, during, after

    assert loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == (False, True, False)


# --------------------------------------------------------------------------
# TLS


def test_tls_transport_ssl_protocol(loop):
    # Peer-certificate code reads transport._ssl_protocol._extra["ssl_object"] and
    # _ssl_protocol._transport (the transport under TLS).
    test_utils = pytest.importorskip("test.test_asyncio.utils")

    async def main():
        lp = asyncio.get_running_loop()
        server = await lp.create_server(
            asyncio.Protocol, "127.0.0.1", 0, ssl=test_utils.simple_server_sslcontext())
        tr, _ = await lp.create_connection(
            asyncio.Protocol, *server.sockets[0].getsockname()[:2],
            ssl=test_utils.simple_client_sslcontext(), server_hostname="")
        proto = tr._ssl_protocol
        got = (proto._extra["ssl_object"] is tr.get_extra_info("ssl_object") is not None,
               proto._app_transport is tr,
               isinstance(proto._transport, asyncio.Transport),
               proto._transport._sock.fileno() == tr.get_extra_info("socket").fileno())
        tr.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return got

    assert loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT)) == (True, True, True, True)


# --------------------------------------------------------------------------
# Servers


def test_server_attributes(loop):
    async def main():
        lp = asyncio.get_running_loop()
        server = await lp.create_server(_Proto, "127.0.0.1", 0, start_serving=False)
        got = {"before": (server._serving, server.is_serving())}
        got["sockets"] = ([s.fileno() for s in server._sockets]
                          == [s.fileno() for s in server.sockets])
        got["loop"] = server._loop is lp
        await server.start_serving()
        got["serving"] = (server._serving, type(server._waiters))
        ct, cp = await lp.create_connection(_Proto, *server.sockets[0].getsockname()[:2])
        await asyncio.sleep(0.01)
        got["clients"] = (len(server._clients) if SERVER_TRACKS_CLIENTS
                          else server._active_count)
        ct.close()
        server.close()
        got["closed"] = (server._sockets, server._serving)
        await server.wait_closed()
        await asyncio.sleep(0.01)
        got["clients_after"] = (len(server._clients) if SERVER_TRACKS_CLIENTS
                                else server._active_count)
        return got

    got = loop.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
    assert got["before"] == (False, False)
    assert got["sockets"] and got["loop"]
    assert got["serving"] == (True, list)
    assert got["clients"] == 1
    assert got["closed"] == (None, False)
    assert got["clients_after"] == 0
