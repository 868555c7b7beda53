"""The end of a stream connection (ferroloop's is native: transport/close.rs), on the stock loop
and on ferroloop: EOF with eof_received keeping the connection open, failing or closing it;
connection_lost raising, alone and with the socket's close raising after it (the chaining of the
stdlib's `finally:`); the sendfile waiter; the socket's `_io_refs`; the server's client count;
3.12+'s dropped callbacks; and a class that replaces `_read_ready__on_eof` or `close`.
Every test runs the same code on both loops and asserts the same outcome."""

import asyncio
import socket
import sys

import pytest

from test_transport import Recorder, _close_all, _pair, _run


def _server_transport_class(loop):
    """The class of the stream transports the loop under test makes."""

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        await _close_all(server, st, ct)
        return type(st)

    return _run(loop, main())


def test_eof_kept_open_removes_only_the_reader(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(keep_open=True), Recorder())
        ct.write_eof()
        while "eof" not in sp.calls:
            await asyncio.sleep(0.001)
        state = (st.is_closing(), st.is_reading(), st.get_extra_info("socket").fileno() >= 0)
        st.write(b"after eof")
        while bytes(cp.data) != b"after eof":
            await asyncio.sleep(0.001)
        st.close()
        await sp.done
        await _close_all(server, ct)
        return state, sp.calls

    state, calls = _run(loop, main())
    # eof_received returned True: still open, not closing; is_reading() answers from _closing
    # and _paused only, so True although the reader is gone.
    assert state == (False, True, True)
    assert calls == ["made", "eof", "lost"]


def test_eof_closes_when_eof_received_returns_false(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.write_eof()
        exc = await sp.done
        await _close_all(server, ct)
        return exc, st.is_closing(), st._sock, st._protocol, st._loop, st._server, sp.calls

    exc, closing, sock, protocol, lp, server, calls = _run(loop, main())
    assert exc is None and closing
    assert (sock, protocol, lp, server) == (None, None, None, None)
    assert calls == ["made", "eof", "lost"]


def test_eof_received_error_is_a_fatal_error(loop):
    class Broken(Recorder):
        def eof_received(self):
            raise ValueError("eof bug")

    async def main():
        lp = asyncio.get_running_loop()
        contexts = []
        lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))
        server, st, sp, ct, cp = await _pair(Broken(), Recorder())
        ct.write_eof()
        lost = await sp.done
        await _close_all(server, ct)
        return contexts, lost, st

    contexts, lost, st = _run(loop, main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == "Fatal error: protocol.eof_received() call failed."
    assert isinstance(ctx["exception"], ValueError) and ctx["transport"] is st
    assert lost is ctx["exception"]


def test_connection_lost_error_reaches_the_handler_after_the_cleanup(loop):
    class Broken(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ValueError("lost bug")

    async def main():
        lp = asyncio.get_running_loop()
        contexts = []
        lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))
        server, st, sp, ct, cp = await _pair(Broken(), Recorder())
        sock = st.get_extra_info("socket")
        st.close()
        await sp.done
        for _ in range(3):
            await asyncio.sleep(0)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)  # the client was detached
        await _close_all(server, ct)
        return contexts, sock.fileno(), st

    contexts, fileno, st = _run(loop, main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"].startswith("Exception in callback ")
    # (3.13 leaves the arguments out of the message outside debug mode.)
    assert "_SelectorSocketTransport._call_connection_lost(" in ctx["message"]
    assert "_SelectorSocketTransport._call_connection_lost(" in repr(ctx["handle"])
    assert isinstance(ctx["exception"], ValueError)
    assert fileno == -1
    assert (st._sock, st._protocol, st._loop, st._server) == (None, None, None, None)


class _ClosingFails(socket.socket):
    """A socket whose close() really closes, records what is being handled, then raises."""

    seen = None

    def close(self):
        _ClosingFails.seen = sys.exc_info()[1]
        super().close()
        raise OSError("close failed")


async def _close_with_failing_socket(protocol_factory):
    """A client connection over a `_ClosingFails` socket, closed: (the exception handler's
    contexts, whether `_sock` and `_loop` were left set, `sys.exc_info()` afterwards, the
    socket's fileno)."""
    lp = asyncio.get_running_loop()
    contexts = []
    lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))
    server = await lp.create_server(Recorder, "127.0.0.1", 0)
    raw = socket.create_connection(server.sockets[0].getsockname())
    sock = _ClosingFails(raw.family, raw.type, raw.proto, raw.detach())
    ct, cp = await lp.create_connection(protocol_factory, sock=sock)
    ct.close()
    await cp.done
    for _ in range(3):
        await asyncio.sleep(0)
    after = sys.exc_info()[1]
    left = (ct._sock is sock, ct._loop is lp)
    ct._sock = None  # or its __del__ would close it again, and raise
    server.close()
    await server.wait_closed()
    return contexts, left, after, sock.fileno()


def test_close_error_in_the_finally_block_chains_to_connection_lost_error(loop):
    class Broken(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise ValueError("lost bug")

    _ClosingFails.seen = None
    contexts, left, after, fileno = _run(loop, _close_with_failing_socket(Broken))
    assert len(contexts) == 1
    exc = contexts[0]["exception"]
    assert isinstance(exc, OSError) and str(exc) == "close failed"
    assert isinstance(exc.__context__, ValueError) and str(exc.__context__) == "lost bug"
    assert _ClosingFails.seen is exc.__context__  # what sys.exc_info() showed inside close()
    assert after is None  # and the handled exception was put back
    assert fileno == -1
    # The rest of the finally block did not run, as in the stdlib.
    assert left == (True, True)


def test_close_error_without_connection_lost_error_has_no_context(loop):
    _ClosingFails.seen = "unset"
    contexts, left, after, fileno = _run(loop, _close_with_failing_socket(Recorder))
    assert len(contexts) == 1
    exc = contexts[0]["exception"]
    assert str(exc) == "close failed" and exc.__context__ is None
    assert _ClosingFails.seen is None
    assert fileno == -1 and left == (True, True)


def test_socket_with_a_file_open_closes_when_the_file_does(loop):
    """`socket.close()` closes the fd only once `_io_refs` is back to zero (makefile)."""

    async def main():
        lp = asyncio.get_running_loop()
        server = await lp.create_server(Recorder, "127.0.0.1", 0)
        sock = socket.create_connection(server.sockets[0].getsockname())
        sock.setblocking(False)
        f = sock.makefile("rb", buffering=0)
        ct, cp = await lp.create_connection(Recorder, sock=sock)
        ct.close()
        await cp.done
        state = (sock._closed, sock.fileno() >= 0)
        f.close()
        state += (sock.fileno(),)
        server.close()
        await server.wait_closed()
        return state

    assert _run(loop, main()) == (True, True, -1)


def test_sendfile_waiter_gets_connection_error(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(pause_at_start=True), Recorder())
        ct.write(b"x" * (8 << 20))  # more than the socket buffers take while the peer is paused
        waiter = ct._make_empty_waiter()
        ct._force_close(None)
        with pytest.raises(ConnectionError) as err:
            await waiter
        await _close_all(server, st)
        return str(err.value), cp.calls

    message, calls = _run(loop, main())
    assert message == "Connection is closed by peer"
    assert [c for c in calls if isinstance(c, str)] == ["made", "lost"]


def test_close_drops_the_callbacks_on_312_and_later(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.close()
        await cp.done
        await _close_all(server, st)
        return ct._write_ready, getattr(ct, "_read_ready_cb", "absent")

    write_ready, read_ready_cb = _run(loop, main())
    if sys.version_info >= (3, 12):
        assert (write_ready, read_ready_cb) == (None, None)
    else:
        assert callable(write_ready)  # (3.11's close leaves _read_ready_cb alone)


def test_close_twice_schedules_connection_lost_once(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.close()
        ct.close()
        await cp.done
        for _ in range(3):
            await asyncio.sleep(0)
        ct.close()  # after connection_lost: still nothing
        await _close_all(server, st)
        return cp.calls, ct._conn_lost

    calls, conn_lost = _run(loop, main())
    assert calls == ["made", "lost"] and conn_lost == 1


def test_close_with_buffered_data_waits_for_the_buffer(loop):
    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(pause_at_start=True), Recorder())
        ct.write(b"x" * (8 << 20))  # more than the socket buffers take while the peer is paused
        assert ct.get_write_buffer_size() > 0
        ct.close()
        state = (ct.is_closing(), ct._conn_lost, cp.calls[:])
        st.resume_reading()
        await cp.done
        while len(sp.data) < 8 << 20:
            await asyncio.sleep(0.001)
        await _close_all(server, st)
        return state, len(sp.data)

    (closing, conn_lost, calls), received = _run(loop, main())
    assert closing and conn_lost == 0
    assert [c for c in calls if isinstance(c, str)] == ["made"]  # and pause_writing
    assert received == 8 << 20


@pytest.mark.parametrize("name", ["_read_ready__on_eof", "close"])
def test_a_replaced_eof_handler_or_close_is_called_at_eof(loop, monkeypatch, name):
    """The native EOF path calls the class's `_read_ready__on_eof` / `close` when they are no
    longer the ones it was configured with."""
    cls = _server_transport_class(loop)
    seen = []
    original = getattr(cls, name)

    def replacement(self):
        seen.append(self)
        original(self)

    monkeypatch.setattr(cls, name, replacement)

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.write_eof()
        await sp.done
        await _close_all(server, ct)
        return st

    st = _run(loop, main())
    assert seen[0] is st  # (close: the client's own close() comes later)


def test_eof_in_debug_mode_is_logged(loop, caplog):
    import logging

    loop.set_debug(True)

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            ct.write_eof()
            await sp.done
        await _close_all(server, ct)
        return st

    st = _run(loop, main())
    assert any(r.getMessage() == f"{st!r} received EOF" for r in caplog.records)


def test_an_unclosed_transport_warns_and_closes_its_socket_when_collected(loop):
    import gc
    import warnings

    async def main():
        lp = asyncio.get_running_loop()
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        raw = ct._sock
        # Forget it without closing: what the stdlib's __del__ is for.
        lp._transports.pop(ct._sock_fd, None)
        lp._remove_reader(ct._sock_fd)
        text = repr(ct)
        cp.transport = None
        del ct
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        state = (raw.fileno(), [(w.category, str(w.message)) for w in caught])
        await sp.done  # the server's side saw the EOF
        await _close_all(server, st)
        return text, state

    text, (fileno, caught) = _run(loop, main())
    assert fileno == -1
    assert (ResourceWarning, f"unclosed transport {text}") in caught


def test_a_closed_transports_del_does_nothing(loop):
    import warnings

    async def main():
        server, st, sp, ct, cp = await _pair(Recorder(), Recorder())
        ct.close()
        await cp.done
        await _close_all(server, st)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ct.__del__()
        return caught, type(ct).__del__

    caught, cls_del = _run(loop, main())
    assert caught == []
    assert cls_del.__qualname__ == "_SelectorTransport.__del__"
