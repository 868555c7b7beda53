"""add_reader / add_writer / remove_reader / remove_writer."""

import asyncio
import errno
import os
import socket
import tempfile
import threading
import time

import pytest


@pytest.fixture
def socks():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class HasFileno:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def run_until(loop, predicate, timeout=2.0):
    async def waiter():
        while not predicate():
            await asyncio.sleep(0.001)

    loop.run_until_complete(asyncio.wait_for(waiter(), timeout))


def test_reader_called_when_readable(loop, socks):
    a, b = socks
    got = []

    def on_readable(sock, tag):
        got.append((tag, sock.recv(100)))

    loop.add_reader(a.fileno(), on_readable, a, "tag")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert got == []  # nothing to read yet
    b.send(b"hello")
    run_until(loop, lambda: got)
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False
    b.send(b"ignored")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert got == [("tag", b"hello")]


def test_reader_level_triggered(loop, socks):
    a, b = socks
    calls = []
    loop.add_reader(a, calls.append, 1)  # never reads: stays readable
    b.send(b"x")
    run_until(loop, lambda: len(calls) >= 3)
    loop.remove_reader(a)
    n = len(calls)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert len(calls) == n


def test_reader_sees_eof(loop, socks):
    a, b = socks
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    b.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: got)
    loop.remove_reader(a)
    assert got[0] == b""


def test_writer_called_when_writable(loop, socks):
    a, _ = socks
    calls = []
    loop.add_writer(a.fileno(), calls.append, "w")
    run_until(loop, lambda: calls)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False
    n = len(calls)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert len(calls) == n and calls[0] == "w"


def test_writer_waits_for_buffer_space(loop, socks):
    a, b = socks
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    calls = []
    loop.add_writer(a, calls.append, 1)
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == []  # buffer full: not writable
    while True:
        try:
            if not b.recv(1 << 20):
                break
        except BlockingIOError:
            break
    run_until(loop, lambda: calls)
    loop.remove_writer(a)


def test_objects_with_fileno(loop, socks):
    a, b = socks
    obj = HasFileno(a.fileno())
    got = []
    loop.add_reader(obj, lambda: got.append(a.recv(10)))
    b.send(b"via-obj")
    run_until(loop, lambda: got)
    assert got == [b"via-obj"]
    # registration is keyed by fd: removable through the object or the int
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(obj) is False

    wcalls = []
    loop.add_writer(obj, wcalls.append, 1)
    run_until(loop, lambda: wcalls)
    assert loop.remove_writer(obj) is True


def test_socket_object_accepted(loop, socks):
    a, b = socks
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    b.send(b"sock")
    run_until(loop, lambda: got)
    assert loop.remove_reader(a) is True
    assert got == [b"sock"]


def test_private_remove_by_number_after_registration_by_object(loop, socks):
    """The private `_remove_reader`/`_remove_writer` (what a transport's close() calls, with its
    fd number) answer whether the fd was watched, whether it was registered by number or by
    object; an object registered then removed by number is forgotten (it can be registered
    again and removed by object)."""
    a, b = socks
    fd = a.fileno()
    seen = []
    loop._add_reader(fd, lambda: None)
    loop._add_writer(fd, lambda: None)
    seen.append((loop._remove_reader(fd), loop._remove_writer(fd)))
    seen.append((loop._remove_reader(fd), loop._remove_writer(fd)))
    loop.add_reader(a, lambda: None)
    loop.add_writer(a, lambda: None)
    seen.append((loop._remove_reader(fd), loop._remove_writer(fd)))
    loop.add_reader(a, lambda: None)
    seen.append((loop.remove_reader(a), loop.remove_reader(a), loop._remove_writer(fd)))
    assert seen == [(True, True), (False, False), (True, True), (True, False, False)]


def test_reader_and_writer_on_same_fd(loop, socks):
    a, b = socks
    reads, writes = [], []
    loop.add_reader(a, lambda: reads.append(a.recv(10)))
    loop.add_writer(a, writes.append, 1)
    b.send(b"both")
    run_until(loop, lambda: reads and writes)
    assert loop.remove_writer(a) is True
    # the reader survives removal of the writer
    b.send(b"again")
    run_until(loop, lambda: len(reads) >= 2)
    assert reads == [b"both", b"again"]
    assert loop.remove_reader(a) is True
    assert loop.remove_writer(a) is False


def test_add_reader_replaces_callback(loop, socks):
    a, b = socks
    calls = []
    loop.add_reader(a, lambda: calls.append("old"))
    loop.add_reader(a, lambda: calls.append(("new", a.recv(10))))
    b.send(b"z")
    run_until(loop, lambda: calls)
    loop.remove_reader(a)
    assert calls == [("new", b"z")]


def test_reader_exception_goes_to_handler(loop, socks):
    a, b = socks
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad():
        a.recv(10)
        raise ValueError("reader failed")

    loop.add_reader(a, bad)
    b.send(b"q")
    run_until(loop, lambda: contexts)
    loop.remove_reader(a)
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["message"].startswith("Exception in callback ")


def test_reader_removed_by_itself(loop, socks):
    a, b = socks
    calls = []

    def once():
        calls.append(a.recv(10))
        loop.remove_reader(a)

    loop.add_reader(a, once)
    b.send(b"1")
    run_until(loop, lambda: calls)
    b.send(b"2")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert calls == [b"1"]


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
@pytest.mark.parametrize(
    "bad, message",
    [
        (-1, "Invalid file descriptor: -1"),
        (HasFileno(-5), "Invalid file descriptor: -5"),
        ("3", "Invalid file object: '3'"),
        (1.5, "Invalid file object: 1.5"),
        (None, "Invalid file object: None"),
    ],
    ids=["negative", "negative-fileno", "str", "float", "none"],
)
def test_bad_file_objects(loop, method, bad, message):
    fn = getattr(loop, method)
    args = (bad, print) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError) as ei:
        fn(*args)
    assert str(ei.value) == message


def test_fileno_raising_is_invalid(loop):
    class Broken:
        def fileno(self):
            raise ValueError("closed")

        def __repr__(self):
            return "<Broken>"

    with pytest.raises(ValueError) as ei:
        loop.add_reader(Broken(), print)
    assert str(ei.value) == "Invalid file object: <Broken>"


def test_not_open_fd(loop):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as ei:
        loop.add_reader(r, print)
    assert ei.value.errno == errno.EBADF
    assert loop.remove_reader(r) is False
    # the failed registration left nothing behind: the fd number can be reused
    r2, w2 = os.pipe()
    try:
        calls = []
        loop.add_reader(r2, calls.append, 1)
        os.write(w2, b"x")
        run_until(loop, lambda: calls)
        assert loop.remove_reader(r2) is True
    finally:
        os.close(r2)
        os.close(w2)


def test_regular_file_not_pollable(loop):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(PermissionError) as ei:
            loop.add_reader(f.fileno(), print)
        assert ei.value.errno == errno.EPERM
        with pytest.raises(PermissionError):
            loop.add_writer(f, print)
        assert loop.remove_reader(f) is False


def test_pipe_reader_and_writer(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        got = []
        loop.add_reader(r, lambda: got.append(os.read(r, 100)))
        wrote = []
        loop.add_writer(w, lambda: (wrote.append(os.write(w, b"pipe")), loop.remove_writer(w)))
        run_until(loop, lambda: got)
        loop.remove_reader(r)
        assert wrote == [4] and got == [b"pipe"]
    finally:
        os.close(r)
        os.close(w)


def test_closed_loop(loop, socks):
    a, _ = socks
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_writer(a, print)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False


def test_closed_loop_removes_nothing_whatever_the_fd(loop):
    # The stdlib's _remove_reader/_remove_writer answer False on a closed loop before looking
    # the fd up.
    loop.close()
    assert [loop.remove_reader(-1), loop.remove_writer(-1)] == [False, False]
    assert [loop.remove_reader(2**40), loop._remove_writer(-1)] == [False, False]


def test_fds_beyond_a_c_int(loop):
    # Never watched, so never removed; registering one is epoll's OverflowError.
    for fd in (2**31, 2**40, 2**70):
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
        assert loop._remove_reader(fd) is False
        for add in (loop.add_reader, loop.add_writer):
            with pytest.raises(OverflowError) as ei:
                add(fd, print)
            assert str(ei.value) == "Python int too large to convert to C int"
    with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
        loop.remove_reader(-1)


def test_close_unregisters_fds(loop_factory, socks):
    a, b = socks
    lp = loop_factory()
    lp.add_reader(a, print)
    lp.add_writer(a, print)
    lp.close()
    # the socket is untouched by close() and can be watched by another loop
    lp2 = loop_factory()
    try:
        got = []
        lp2.add_reader(a, lambda: got.append(a.recv(10)))
        b.send(b"ok")
        run_until(lp2, lambda: got)
        lp2.remove_reader(a)
        assert got == [b"ok"]
    finally:
        lp2.close()


def test_reader_removed_by_another_reader_in_same_iteration(loop):
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        (a1, b1), (a2, b2) = pairs
        calls = []

        def on_a1():
            calls.append(("a1", a1.recv(10)))
            loop.remove_reader(a2)

        def on_a2():
            calls.append(("a2", a2.recv(10)))
            loop.remove_reader(a1)

        loop.add_reader(a1, on_a1)
        loop.add_reader(a2, on_a2)
        b1.send(b"1")
        b2.send(b"2")
        loop.run_until_complete(asyncio.sleep(0.02))
        # both were ready in the same poll; whichever ran first removed (and
        # cancelled) the other before it could run
        assert calls in ([("a1", b"1")], [("a2", b"2")])
        assert (loop.remove_reader(a1), loop.remove_reader(a2)).count(True) == 1
    finally:
        for s in (s for pair in pairs for s in pair):
            s.close()


def test_reader_wakes_idle_loop(loop, socks):
    a, b = socks
    got = []
    loop.add_reader(a, lambda: (got.append((time.monotonic(), a.recv(10))), loop.stop()))

    def later():
        time.sleep(0.05)
        b.send(b"wake")

    guard = loop.call_later(10, loop.stop)
    th = threading.Thread(target=later)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()  # nothing else to do: blocked in the poller
    th.join()
    guard.cancel()
    loop.remove_reader(a)
    assert got and got[0][1] == b"wake"
    assert got[0][0] - t0 < 1.0


@pytest.mark.parametrize("direction", ["reader", "writer"])
def test_remove_closed_socket_by_object(loop, direction):
    # anyio closes a socket, then removes its reader/writer by the socket object, whose
    # fileno() is now -1: the selector finds it by identity and returns True.
    a, b = socket.socketpair()
    try:
        getattr(loop, f"add_{direction}")(a, lambda: None)
        a.close()
        assert getattr(loop, f"remove_{direction}")(a) is True
        with pytest.raises(ValueError):  # no longer registered: nothing to find it by
            getattr(loop, f"remove_{direction}")(a)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        a.close()
        b.close()


def test_remove_never_registered_closed_socket_raises(loop):
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError):
        loop.remove_reader(a)
