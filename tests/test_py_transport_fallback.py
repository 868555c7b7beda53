"""The stream transport fallback, ``FERROLOOP_PY_TRANSPORTS=1`` (``_net._PySocketTransport``: the
stdlib's socket transport reading into a reused buffer), held to the same tests as the native
transport.

The variable is read once, when ``ferroloop`` is imported, so the fallback runs in a child
interpreter: first a check that the variable does select it (plain connections and the transport
under TLS), then the ferroloop half of every stream transport test module, which must pass as it
does on the native transport.
"""

import subprocess
import sys
from pathlib import Path

from conftest import child_env

TESTS = Path(__file__).resolve().parent
# The modules whose tests exercise the stream transport (each also runs on the stock loop here).
MODULES = ["test_transport.py", "test_private_attributes.py", "test_net_smoke.py", "test_net_accept.py",
           "test_udp_native.py"]

PROBE = """
import asyncio
import ferroloop
from ferroloop import _net
from test.test_asyncio import utils as test_utils

async def main():
    lp = asyncio.get_running_loop()
    server = await lp.create_server(
        asyncio.Protocol, "127.0.0.1", 0, ssl=test_utils.simple_server_sslcontext())
    port = server.sockets[0].getsockname()[1]
    plain, _ = await lp.create_connection(asyncio.Protocol, "127.0.0.1", port)
    tls, _ = await lp.create_connection(
        asyncio.Protocol, "127.0.0.1", port, ssl=test_utils.simple_client_sslcontext())
    kinds = (type(plain).__name__, type(tls._ssl_protocol._transport).__name__)
    plain.close()
    tls.close()
    server.close()
    await server.wait_closed()
    return kinds

print(*ferroloop.run(main()))
"""


def _run(args, fallback):
    env = child_env()
    env.pop("FERROLOOP_PY_TRANSPORTS", None)
    if fallback:
        env["FERROLOOP_PY_TRANSPORTS"] = "1"
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=TESTS, env=env
    )


def test_ferroloop_py_transports_selects_the_fallback():
    native = _run(["-c", PROBE], fallback=False)
    fallback = _run(["-c", PROBE], fallback=True)
    assert native.returncode == 0, native.stderr
    assert fallback.returncode == 0, fallback.stderr
    assert native.stdout.split() == ["_SelectorSocketTransport", "_SelectorSocketTransport"]
    assert fallback.stdout.split() == ["_PySocketTransport", "_PySocketTransport"]


def test_ferroloop_py_transports_passes_the_transport_tests():
    res = _run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "ferroloop", *MODULES],
        fallback=True,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
