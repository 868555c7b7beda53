"""Helpers for the downstream tests: real projects (aiohttp, uvicorn + httpx) over loopback.

The fixtures of tests/conftest.py apply here too: every test takes ``loop_factory`` and so runs
on the stock loop (the oracle) and on ferroloop, and every test is checked for leaked file
descriptors and threads at teardown. Run with an explicit path (pyproject's ``norecursedirs``
leaves this directory out of a bare ``pytest``)::

    .venv/bin/python -m pytest -q tests/downstream
"""

import asyncio
import errno
import socket

import pytest

CASE_TIMEOUT = 20.0  # seconds: a hang fails the case instead of the whole run


@pytest.fixture
def run(loop_name, loop_factory):
    """``run(main)`` runs ``main()`` (a coroutine function) to completion in
    ``asyncio.Runner(loop_factory=...)`` on the loop under test, under a timeout, after checking
    that the running loop is of the kind under test."""

    def run(main, timeout=CASE_TIMEOUT):
        async def guarded():
            lp = asyncio.get_running_loop()
            if loop_name == "ferroloop":
                import ferroloop

                assert isinstance(lp, ferroloop.Loop), f"not running on ferroloop: {lp!r}"
            else:
                assert type(lp).__module__.startswith("asyncio."), f"not the stock loop: {lp!r}"
            async with asyncio.timeout(timeout):
                return await main()

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(guarded())

    return run


def assert_not_listening(port, host="127.0.0.1"):
    """Fail unless a TCP connection to (host, port) is refused: the server is really gone."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        err = s.connect_ex((host, port))
    assert err == errno.ECONNREFUSED, (
        f"{host}:{port} still accepts connections after the server was closed "
        f"(connect_ex -> {errno.errorcode.get(err, err)})"
    )


@pytest.fixture
def not_listening():
    return assert_not_listening
