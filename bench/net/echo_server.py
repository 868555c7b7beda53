"""An echo server on a chosen event loop, in one of three API styles (bench/net/run.py runs one per
measurement, pinned to its own core, and loads it with bench/loadgen).

    python bench/net/echo_server.py --loop ferroloop --style protocol --port 0
    python bench/net/echo_server.py --loop uvloop --style streams --unix /tmp/echo.sock
    python bench/net/echo_server.py --loop ferroloop --style protocol --port 0 --tls cert.pem,key.pem
    python bench/net/echo_server.py --loop ferroloop --style udp --port 0
    python bench/net/echo_server.py --loop ferroloop --style bulk --port 0

Styles (the same Python code on every loop; only the loop factory differs):
  sock      loop.sock_accept / sock_recv / sock_sendall on non-blocking sockets, one task per client
  streams   asyncio.start_server: reader.read(64 KiB), writer.write, await writer.drain()
  protocol  asyncio.Protocol: data_received(data) -> transport.write(data) (with --tls: the
            same over TLS, create_server(ssl=...)); also the server of the churn scenario
  udp       create_datagram_endpoint: DatagramProtocol.datagram_received -> transport.sendto back
  bulk      not an echo: a flow-controlled sink (FlowSink below) for bench/loadgen --bulk

Once listening it prints "READY <port or path>" on stdout; it runs until killed.
"""

import argparse
import asyncio
import os
import resource
import socket
import ssl
import sys
import time
import zlib
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker import _factory, _version  # noqa: E402  (the loop factories of bench/run.py)

READ = 64 * 1024  # read size of the sock and streams styles (the transports' own is 256 KiB)


class EchoProtocol(asyncio.Protocol):
    __slots__ = ("write",)

    def connection_made(self, transport):
        self.write = transport.write

    def data_received(self, data):
        self.write(data)


class EchoDatagram(asyncio.DatagramProtocol):
    __slots__ = ("sendto",)

    def connection_made(self, transport):
        self.sendto = transport.sendto

    def datagram_received(self, data, addr):
        self.sendto(data, addr)


HIGH, LOW = 1 << 20, 256 << 10  # the FlowSink's water marks (bytes buffered in the protocol)


class FlowSink(asyncio.Protocol):
    """A reader that cannot keep up, the way flow control is meant to be used: data_received only
    queues the chunk; at HIGH bytes queued it calls transport.pause_reading() and schedules a
    consumer which handles one chunk per loop.call_soon (counts it, adler32 over it: the check
    that every byte arrived, in order) until LOW bytes are left, then resume_reading(). At EOF
    the rest is consumed the same way and the reply "<bytes> <adler32> pauses=P cpu_s=C
    maxrss_kib=R rss0_kib=R0 early=E" is written back (C = the process's CPU time from
    connection_made to the reply, clock_gettime(CLOCK_PROCESS_CPUTIME_ID), ns resolution; E =
    data_received calls while paused, which flow control forbids: 0 or the run fails)."""

    def connection_made(self, transport):
        self.t = transport
        self.loop = asyncio.get_running_loop()
        self.chunks = deque()
        self.buffered = self.count = self.pauses = self.early = 0
        self.adler = 1
        self.paused = self.draining = self.eof = False
        self.cpu0 = time.process_time()

    def data_received(self, data):
        if self.paused:
            self.early += 1
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH and not self.paused:
            self.paused = True
            self.pauses += 1
            self.t.pause_reading()
            if not self.draining:
                self.draining = True
                self.loop.call_soon(self.drain)

    def drain(self):
        data = self.chunks.popleft()
        self.buffered -= len(data)
        self.count += len(data)
        self.adler = zlib.adler32(data, self.adler)
        if self.chunks and (self.eof or self.buffered > LOW):
            self.loop.call_soon(self.drain)
            return
        self.draining = False
        if self.paused:
            self.paused = False
            self.t.resume_reading()
        if self.eof and not self.chunks:
            self.finish()

    def eof_received(self):
        self.eof = True
        if not self.draining:
            if self.chunks:
                self.draining = True
                self.loop.call_soon(self.drain)
            else:
                self.finish()
        return True  # keep the transport open for the reply

    def finish(self):
        cpu = time.process_time() - self.cpu0
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.t.write(f"{self.count} {self.adler} pauses={self.pauses} cpu_s={cpu:.6f} maxrss_kib={maxrss} "
                     f"rss0_kib={RSS0} early={self.early}\n".encode())
        self.t.close()


RSS0 = 0  # the server's RSS when it starts listening (KiB)


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


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
    ctx = None
    if args.tls:
        cert, key = args.tls.split(",")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    if args.style == "udp":
        transport, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=("127.0.0.1", args.port))
        where = transport.get_extra_info("sockname")[1]
    elif args.style == "bulk":
        server = await loop.create_server(FlowSink, "127.0.0.1", args.port)
    elif args.style == "protocol":
        if args.unix:
            server = await loop.create_unix_server(EchoProtocol, args.unix)
        else:
            server = await loop.create_server(EchoProtocol, "127.0.0.1", args.port, ssl=ctx)
    elif args.style == "streams":
        if args.unix:
            server = await asyncio.start_unix_server(stream_client, args.unix, limit=READ)
        else:
            server = await asyncio.start_server(stream_client, "127.0.0.1", args.port, limit=READ)
    else:
        lsock = listening_socket(args)
    if args.style != "udp":
        where = args.unix or (lsock or server.sockets[0]).getsockname()[1]
    global RSS0
    RSS0 = rss_kib()
    print(f"READY {where} {args.loop} {_version(args.loop)}", flush=True)
    if server is not None or args.style == "udp":
        # already serving (start_serving=True); rloop has no serve_forever
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
    ap.add_argument("--style", choices=("sock", "streams", "protocol", "udp", "bulk"), default="protocol")
    ap.add_argument("--tls", metavar="CERT,KEY", help="protocol style over TLS with this certificate and key")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    where.add_argument("--unix", metavar="PATH", help="Unix stream socket path")
    args = ap.parse_args()
    if args.tls and (args.style != "protocol" or args.unix):
        ap.error("--tls is for --style protocol over TCP")
    if args.style in ("udp", "bulk") and args.unix:
        ap.error(f"--style {args.style} is TCP/UDP only")
    with asyncio.Runner(loop_factory=_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
