"""An echo server on a chosen event loop, in one of three API styles (bench/net/run.py runs one per
measurement, pinned to its own core, and loads it with bench/loadgen).

    python bench/net/echo_server.py --loop ferroloop --style protocol --port 0
    python bench/net/echo_server.py --loop uvloop --style streams --unix /tmp/echo.sock

Styles (the same Python code on every loop; only the loop factory differs):
  sock      loop.sock_accept / sock_recv / sock_sendall on non-blocking sockets, one task per client
  streams   asyncio.start_server: reader.read(64 KiB), writer.write, await writer.drain()
  protocol  asyncio.Protocol: data_received(data) -> transport.write(data)

Once listening it prints "READY <port or path>" on stdout; it runs until killed.
"""

import argparse
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker import _factory, _version  # noqa: E402  (the loop factories of bench/run.py)

READ = 64 * 1024  # read size of the sock and streams styles (the transports' own is 256 KiB)


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("write",)

    def connection_made(self, transport):
        self.write = transport.write

    def data_received(self, data):
        self.write(data)


async def sock_client(loop, sock):
    recv, sendall = loop.sock_recv, loop.sock_sendall
    try:
        while data := await recv(sock, READ):
            await sendall(sock, data)
    except ConnectionError:
        pass
    finally:
        sock.close()


async def stream_client(reader, writer):
    read, write, drain = reader.read, writer.write, writer.drain
    try:
        while data := await read(READ):
            write(data)
            await drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def listening_socket(args):
    if args.unix:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(args.unix)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", args.port))
    s.listen(128)
    s.setblocking(False)
    return s


async def serve(args):
    # The servers bind by address (not sock=: rloop 0.5 cannot serve on a socket it was given).
    loop = asyncio.get_running_loop()
    lsock = server = None
    if args.unix and os.path.exists(args.unix):
        os.unlink(args.unix)
    if args.style == "protocol":
        if args.unix:
            server = await loop.create_unix_server(EchoProtocol, args.unix)
        else:
            server = await loop.create_server(EchoProtocol, "127.0.0.1", args.port)
    elif args.style == "streams":
        if args.unix:
            server = await asyncio.start_unix_server(stream_client, args.unix, limit=READ)
        else:
            server = await asyncio.start_server(stream_client, "127.0.0.1", args.port, limit=READ)
    else:
        lsock = listening_socket(args)
    where = args.unix or (lsock or server.sockets[0]).getsockname()[1]
    print(f"READY {where} {args.loop} {_version(args.loop)}", flush=True)
    if server is not None:  # already serving (start_serving=True); rloop has no serve_forever
        await loop.create_future()
    tasks = set()
    while True:  # the sock style: accept on the loop, one task per client
        sock, _ = await loop.sock_accept(lsock)
        sock.setblocking(False)
        if not args.unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the transports do
        t = loop.create_task(sock_client(loop, sock))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, help="asyncio, uvloop, ferroloop, rloop, rsloop")
    ap.add_argument("--style", choices=("sock", "streams", "protocol"), default="protocol")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    where.add_argument("--unix", metavar="PATH", help="Unix stream socket path")
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
