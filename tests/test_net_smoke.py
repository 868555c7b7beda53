"""Networking smoke tests, on the stock loop and on ferroloop: TCP and Unix-socket streams, the
sock_* coroutines, and a subprocess. (CPython's own suite covers the details: tests/conformance.)"""

import asyncio
import socket
import sys

import pytest


async def _echo_upper(reader, writer):
    # One request per connection: read to EOF, answer in upper case, close.
    data = await reader.read()
    writer.write(data.upper())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _round_trip(reader, writer, payload):
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


def test_streams_tcp_echo(loop):
    async def main():
        server = await asyncio.start_server(_echo_upper, "127.0.0.1", 0)
        async with server:
            host, port = server.sockets[0].getsockname()[:2]
            payload = b"hello over tcp " * 10_000  # more than one socket buffer
            answers = await asyncio.gather(
                *[_round_trip(*await asyncio.open_connection(host, port), payload)
                  for _ in range(3)]
            )
        return payload, answers

    payload, answers = loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert answers == [payload.upper()] * 3


def test_streams_unix_echo(loop, tmp_path):
    path = str(tmp_path / "echo.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo_upper, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            return await _round_trip(reader, writer, b"hello over a unix socket")

    assert loop.run_until_complete(asyncio.wait_for(main(), 10)) == b"HELLO OVER A UNIX SOCKET"


def test_sock_round_trip(loop):
    async def main():
        lp = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            with socket.socket() as client:
                client.setblocking(False)
                accepting = asyncio.ensure_future(lp.sock_accept(listener))
                await lp.sock_connect(client, listener.getsockname())
                conn, _ = await accepting
                with conn:
                    payload = b"x" * 1_000_000  # sock_sendall must wait for the reader
                    sending = asyncio.ensure_future(lp.sock_sendall(client, payload))
                    got = bytearray()
                    while len(got) < len(payload):
                        got += await lp.sock_recv(conn, 65536)
                    await sending
                    await lp.sock_sendall(conn, b"pong")
                    buf = bytearray(16)
                    n = await lp.sock_recv_into(client, buf)
                    return bytes(got) == payload, bytes(buf[:n])

    assert loop.run_until_complete(asyncio.wait_for(main(), 10)) == (True, b"pong")


@pytest.mark.parametrize("n", [1, 5])
def test_subprocess_exec_round_trip(loop, n):
    code = "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1]); sys.exit(3)"

    async def run_one(i):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(f"input {i}".encode())
        return out, proc.returncode

    async def main():
        return await asyncio.gather(*[run_one(i) for i in range(n)])

    results = loop.run_until_complete(asyncio.wait_for(main(), 30))
    assert results == [(f"input {i}".encode()[::-1], 3) for i in range(n)]
