"""Flow-controlled bulk transfer: N MiB through an asyncio.Protocol that pauses its reader.

One process, one loop, both ends over loopback TCP. The sender writes 256 KiB chunks while its
transport has not called ``pause_writing`` (write-side water marks, default limits). The receiver's
``data_received`` keeps what arrived and, once 1 MiB is buffered, calls
``transport.pause_reading()`` and schedules a consumer with ``loop.call_soon``, which drains the
buffer and calls ``transport.resume_reading()``. Reported per loop: wall time, process CPU time,
throughput, the number of pause/resume pairs and, with ``--strace``, the epoll_ctl calls made
(``strace -f -c -e trace=epoll_ctl`` around a child run of the same probe).

    .venv/bin/python bench/flow_probe.py [--mib 256] [--rounds 3] [--loops asyncio,uvloop,ferroloop]
    .venv/bin/python bench/flow_probe.py --strace --mib 64 --rounds 1
"""

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time

CHUNK = 256 * 1024
HIGH = 1024 * 1024


def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    raise SystemExit(f"unknown loop {name!r}")


class Receiver(asyncio.Protocol):
    def __init__(self, loop, done):
        self.loop = loop
        self.done = done
        self.chunks = []
        self.buffered = 0
        self.total = 0
        self.pauses = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH and self.transport.is_reading():
            self.transport.pause_reading()
            self.pauses += 1
            self.loop.call_soon(self.consume)

    def consume(self):
        self.total += self.buffered
        self.chunks.clear()
        self.buffered = 0
        self.transport.resume_reading()

    def eof_received(self):
        self.total += self.buffered
        self.buffered = 0
        if not self.done.done():
            self.done.set_result(self.total)


class Sender(asyncio.Protocol):
    def __init__(self, total, payload):
        self.left = total
        self.payload = payload
        self.paused = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.pump()

    def pump(self):
        while self.left > 0 and not self.paused:
            n = min(self.left, len(self.payload))
            self.transport.write(self.payload if n == len(self.payload) else self.payload[:n])
            self.left -= n
        if self.left == 0 and not self.paused:
            self.transport.write_eof()
            self.left = -1

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.pump()


async def transfer(total):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    receivers = []

    def factory():
        r = Receiver(loop, done)
        receivers.append(r)
        return r

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(CHUNK)
    t0 = time.perf_counter()
    c0 = time.process_time()
    tr, _ = await loop.create_connection(lambda: Sender(total, payload), "127.0.0.1", port)
    got = await done
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    tr.close()
    server.close()
    await server.wait_closed()
    assert got == total, (got, total)
    return wall, cpu, receivers[0].pauses


def run_one(name, total):
    loop = new_loop(name)
    try:
        return loop.run_until_complete(transfer(total))
    finally:
        loop.close()


def strace_count(name, mib):
    cmd = [
        "strace", "-f", "-c", "-e", "trace=epoll_ctl",
        sys.executable, os.path.abspath(__file__), "--loops", name, "--mib", str(mib),
        "--rounds", "1", "--quiet",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?epoll_ctl$", out, re.M)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loops", default="asyncio,uvloop,ferroloop")
    ap.add_argument("--strace", action="store_true", help="also count epoll_ctl calls")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    names = args.loops.split(",")
    total = args.mib * 1024 * 1024
    results = {n: [] for n in names}
    for _ in range(args.rounds):  # interleaved rounds
        for n in names:
            results[n].append(run_one(n, total))
    if args.quiet:
        return
    print(f"{args.mib} MiB, reader pauses at {HIGH >> 20} MiB buffered; "
          f"median of {args.rounds} interleaved rounds")
    for n in names:
        wall = statistics.median(r[0] for r in results[n])
        cpu = statistics.median(r[1] for r in results[n])
        pauses = results[n][0][2]
        line = (f"{n:10s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  "
                f"{args.mib / wall:7.1f} MiB/s  pauses {pauses}")
        if args.strace:
            line += f"  epoll_ctl {strace_count(n, args.mib)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
