"""Accepting connections when accept() fails, on the stock loop and on ferroloop.

The stdlib server (``selector_events.BaseSelectorEventLoop._accept_connection``) treats the
errors of ``accept()`` in three ways, and ferroloop must do the same:

* EMFILE, ENFILE, ENOBUFS, ENOMEM (out of a resource): report
  ``'socket.accept() out of system resource'`` to the exception handler, stop watching the
  listening socket (epoll is level-triggered: the pending connection keeps it readable, so
  watching it would spin) and watch it again after ``constants.ACCEPT_RETRY_DELAY`` (1 s); the
  connection still pending is then accepted and served.
* ECONNABORTED (and EAGAIN/EINTR): nothing to report, the server keeps serving.
* any other OSError, ECONNRESET included: raised out of the reader callback, so the loop reports
  it ("Exception in callback ...") and the server keeps serving.

EMFILE is produced for real: a child process lowers RLIMIT_NOFILE and fills its fd table, the
test process is the client. ENFILE (system-wide, not producible without harming the machine) and
the ECONN* errors are injected by a socket subclass whose ``accept()`` fails. A connection reset
by its client before it is accepted, the real-world source of those errors, is also tested: Linux
accepts it and the transport then sees the reset.
"""

import asyncio
import errno
import json
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from asyncio import constants

from conftest import child_env, script_source

RESOURCE_MESSAGE = "socket.accept() out of system resource"
TIMEOUT = 10


class _Echo(asyncio.Protocol):
    """Answers each chunk in upper case; records what happened in ``log``."""

    def __init__(self, log):
        self.log = log

    def connection_made(self, transport):
        self.transport = transport
        self.log.append(("made", time.monotonic()))

    def data_received(self, data):
        self.log.append(("data", data))
        self.transport.write(data.upper())

    def connection_lost(self, exc):
        self.log.append(("lost", exc))


# --------------------------------------------------------------------------
# EMFILE for real, in a child process


# The child: a server on loop_factory() whose process then runs out of fds. It prints
# "ready <port>" once the fd table is full, and at the end one line of JSON (the report).
EMFILE_CHILD = r"""
import asyncio, errno, json, os, resource, sys, time
from asyncio.constants import ACCEPT_RETRY_DELAY

loop = loop_factory()
contexts = []
first_error = asyncio.Event()
served = asyncio.Event()
closed = asyncio.Event()
events = {}

def handler(lp, context):
    exc = context.get("exception")
    contexts.append({
        "message": context.get("message"),
        "exception": type(exc).__name__,
        "errno": getattr(exc, "errno", None),
        "socket": "socket" in context,
        "at": time.monotonic(),
    })
    first_error.set()

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        events["accepted"] = time.monotonic()
    def data_received(self, data):
        self.transport.write(data.upper())
        events["served"] = time.monotonic()
        served.set()
    def connection_lost(self, exc):
        closed.set()

async def until_retries_ran():
    last_retry = contexts[-1]["at"] + ACCEPT_RETRY_DELAY
    await asyncio.sleep(max(0.0, last_retry - time.monotonic()) + 0.01)

async def main(server, dups):
    await asyncio.wait_for(first_error.wait(), 10)
    events["first_error"] = time.monotonic()
    cpu0 = time.process_time()
    errors0 = len(contexts)
    await asyncio.sleep(0.5)  # inside the back-off: the loop must be idle
    events["cpu_in_backoff"] = time.process_time() - cpu0
    events["errors_in_backoff"] = len(contexts) - errors0
    events["errors_first_round"] = errors0
    for fd in dups:  # fds available again: the retry (1 s after the error) must accept
        os.close(fd)
    dups.clear()
    events["freed"] = time.monotonic()
    await asyncio.wait_for(served.wait(), 10)
    await asyncio.wait_for(closed.wait(), 10)  # the client closes once it has its answer
    # The stdlib schedules one retry per failed attempt (CPython issue 151615) and a retry left
    # pending when the server closes fails on the closed socket; let them all run first.
    await until_retries_ran()
    server.close()
    await server.wait_closed()

loop.set_exception_handler(handler)
server = loop.run_until_complete(loop.create_server(Echo, "127.0.0.1", 0))
port = server.sockets[0].getsockname()[1]

# Run out of fds: a low soft limit, then dup() until EMFILE. (Nothing below needs a new fd
# until the dups are closed.)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
highest = max(int(name) for name in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
dups = []
while True:
    try:
        dups.append(os.dup(0))
    except OSError as exc:
        assert exc.errno == errno.EMFILE, exc
        break
print("ready", port, flush=True)
try:
    loop.run_until_complete(main(server, dups))
finally:
    for fd in dups:
        os.close(fd)
print(json.dumps({"loop": type(loop).__module__, "contexts": contexts, "events": events}),
      flush=True)
loop.close()
"""


def _run_emfile_child(loop_name):
    """Start the child, connect to its server once it is out of fds, send b"ping", wait for the
    answer. Returns (answer, report)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script_source(loop_name, EMFILE_CHILD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    watchdog = threading.Timer(4 * TIMEOUT, proc.kill)  # never hang
    watchdog.start()
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"child did not start its server: {line + out!r}\n{err}")
        port = int(line.split()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            # The kernel completes the handshake (the listen backlog); the child cannot accept.
            client.sendall(b"ping")
            answer = b""
            while len(answer) < 4:
                chunk = client.recv(100)
                if not chunk:
                    break
                answer += chunk
        out, err = proc.communicate(timeout=TIMEOUT)
        if proc.returncode != 0:
            pytest.fail(f"child failed ({proc.returncode}): {out!r}\n{err}")
        return answer, json.loads(out)
    finally:
        watchdog.cancel()
        watchdog.join()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_accept_emfile_backs_off_then_serves(loop_name):
    answer, report = _run_emfile_child(loop_name)
    assert report["loop"].split(".")[0] == loop_name
    events = report["events"]

    # Reported through the exception handler, with the OSError (EMFILE) and the socket.
    contexts = report["contexts"]
    assert contexts, "the exception handler was never called"
    for ctx in contexts:
        assert ctx == dict(ctx, message=RESOURCE_MESSAGE, exception="OSError",
                           errno=errno.EMFILE, socket=True)
    # One round of failed attempts (the stdlib tries up to `backlog` = 100 accepts per
    # readiness event, each reported), then nothing until the retry.
    assert 1 <= events["errors_first_round"] <= 100
    assert events["errors_in_backoff"] == 0

    # Did not spin: the listening socket stays readable (level-triggered), so a loop still
    # watching it would burn the whole half second of the back-off window.
    assert events["cpu_in_backoff"] < 0.1, events

    # The fds were freed 0.5 s into the back-off; the connection was accepted by the retry, not
    # earlier (the socket was not watched), and not much later; then it was served.
    delay = constants.ACCEPT_RETRY_DELAY
    t_error = contexts[0]["at"]
    assert events["freed"] < t_error + delay
    assert t_error + delay - 0.05 <= events["accepted"] <= t_error + delay + 1.0
    assert events["accepted"] <= events["served"]
    assert answer == b"PING"


# --------------------------------------------------------------------------
# Injected errors: a listening socket whose accept() fails as planned


class _FaultySocket(socket.socket):
    """A listening socket whose ``accept()`` is counted and can be made to fail.

    ``exhausted``: while it holds an exception, ``accept()`` raises it and leaves the pending
    connection in the queue (as EMFILE/ENFILE do). ``drop``: a list of exceptions; each
    ``accept()`` pops one, takes the pending connection out of the queue, closes it and raises
    the exception (as the kernel does when it aborts a queued connection).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.accept_calls = 0
        self.exhausted = None
        self.drop = []

    def accept(self):
        self.accept_calls += 1
        if self.exhausted is not None:
            raise self.exhausted
        if self.drop:
            exc = self.drop.pop(0)
            conn, _ = super().accept()  # BlockingIOError here when nothing is pending
            conn.close()
            raise exc
        return super().accept()


def _faulty_listener():
    sock = _FaultySocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _recording_loop(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(dict(ctx, at=time.monotonic())))
    return contexts


async def _ask(addr, payload):
    """Connect, send payload (if any), half-close, return everything read until EOF."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        if payload is not None:  # (None: unread data would make the server's close a reset)
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


def test_accept_enfile_backs_off_then_serves(loop):
    contexts = _recording_loop(loop)
    log = []
    backlog = 8

    async def main():
        sock = _faulty_listener()
        sock.exhausted = OSError(errno.ENFILE, "Too many open files in system")
        server = await loop.create_server(lambda: _Echo(log), sock=sock, backlog=backlog)
        async with server:
            addr = sock.getsockname()
            asking = asyncio.ensure_future(_ask(addr, b"ping"))
            while not contexts:
                await asyncio.sleep(0.005)
            t_error = time.monotonic()
            calls = sock.accept_calls
            await asyncio.sleep(0.4)
            calls_in_backoff = sock.accept_calls - calls
            sock.exhausted = None
            answer = await asyncio.wait_for(asking, TIMEOUT)
            # One retry was scheduled per failed attempt (CPython issue 151615); one still
            # pending when the server closes would fail on the closed socket: let them run.
            last_retry = contexts[-1]["at"] + constants.ACCEPT_RETRY_DELAY
            await asyncio.sleep(max(0.0, last_retry - time.monotonic()) + 0.01)
        return t_error, calls, calls_in_backoff, answer

    t_error, calls, calls_in_backoff, answer = loop.run_until_complete(main())
    assert 1 <= calls <= backlog  # one round of attempts, at most `backlog`
    assert calls_in_backoff == 0  # the listening socket was not watched: no spinning
    assert answer == b"PING"
    accepted = [t for what, t in log if what == "made"]
    assert len(accepted) == 1
    assert accepted[0] >= t_error + constants.ACCEPT_RETRY_DELAY - 0.05  # by the retry
    assert 1 <= len(contexts) <= calls
    for ctx in contexts:
        assert ctx["message"] == RESOURCE_MESSAGE
        assert type(ctx["exception"]) is OSError
        assert ctx["exception"].errno == errno.ENFILE
        assert "socket" in ctx


def test_accept_econnaborted_is_ignored(loop):
    contexts = _recording_loop(loop)
    log = []

    async def main():
        sock = _faulty_listener()
        sock.drop = [ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")]
        server = await loop.create_server(lambda: _Echo(log), sock=sock)
        async with server:
            addr = sock.getsockname()
            first = await asyncio.wait_for(_ask(addr, None), TIMEOUT)  # dropped
            second = await asyncio.wait_for(_ask(addr, b"two"), TIMEOUT)
            assert not sock.drop
            return first, second

    first, second = loop.run_until_complete(main())
    assert (first, second) == (b"", b"TWO")
    assert contexts == []  # nothing reported


def test_accept_econnreset_is_reported_and_server_keeps_serving(loop):
    contexts = _recording_loop(loop)
    log = []
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    async def main():
        sock = _faulty_listener()
        sock.drop = [reset]
        server = await loop.create_server(lambda: _Echo(log), sock=sock)
        async with server:
            addr = sock.getsockname()
            first = await asyncio.wait_for(_ask(addr, None), TIMEOUT)  # dropped
            second = await asyncio.wait_for(_ask(addr, b"two"), TIMEOUT)
            assert not sock.drop
            return first, second

    first, second = loop.run_until_complete(main())
    assert (first, second) == (b"", b"TWO")
    # Raised out of the accept callback: the loop reports it and goes on.
    assert len(contexts) == 1
    assert contexts[0]["exception"] is reset
    assert contexts[0]["message"].startswith("Exception in callback ")
    assert "handle" in contexts[0]


def test_connection_reset_before_accept_server_keeps_serving(loop):
    # The real-world case: the client resets its connection while it waits in the accept queue.
    # Linux still accepts it; its transport then sees the reset; the server goes on.
    contexts = _recording_loop(loop)
    logs = []

    def factory():
        logs.append([])
        return _Echo(logs[-1])

    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    try:
        addr = server.sockets[0].getsockname()
        # Connected and reset while the loop is not running: never accepted before the reset.
        with socket.create_connection(addr, timeout=TIMEOUT) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        async def main():
            answer = await asyncio.wait_for(_ask(addr, b"after"), TIMEOUT)
            while len(logs[0]) < 2:  # the reset connection: made, then lost
                await asyncio.sleep(0.005)
            return answer

        assert loop.run_until_complete(main()) == b"AFTER"
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
    assert len(logs) == 2
    (made, _), (lost, exc) = logs[0]
    assert (made, lost) == ("made", "lost")
    assert isinstance(exc, ConnectionResetError)
    assert contexts == []  # a reset connection is not an error of the loop
