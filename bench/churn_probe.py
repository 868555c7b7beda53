"""Connection churn: connect, exchange 1 KiB, close; 10 concurrent clients, one loop.

One process, one loop: an ``asyncio.Protocol`` echo server on loopback TCP and 10 client tasks
that each, in turn, open a connection (``loop.create_connection`` to the numeric address), send
1 KiB, wait for the 1 KiB echo and close, until N connections were made in all. Reported per loop:
wall time, process CPU time and connections per second (interleaved rounds, medians).

    .venv/bin/python bench/churn_probe.py [--conns 20000] [--rounds 3] [--loops asyncio,uvloop,ferroloop]
"""

import argparse
import asyncio
import statistics
import time

PAYLOAD = b"x" * 1024
CONCURRENCY = 10


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


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return None  # close


class Client(asyncio.Protocol):
    def __init__(self, done):
        self.done = done
        self.got = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(PAYLOAD)

    def data_received(self, data):
        self.got += len(data)
        if self.got >= len(PAYLOAD):
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(self.got)


async def churn(total):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    left = total

    async def client():
        nonlocal left
        while left > 0:
            left -= 1
            done = loop.create_future()
            await loop.create_connection(lambda: Client(done), "127.0.0.1", port)
            assert await done == len(PAYLOAD)

    t0 = time.perf_counter()
    c0 = time.process_time()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    server.close()
    await server.wait_closed()
    return wall, cpu


def run_one(name, total):
    loop = new_loop(name)
    try:
        return loop.run_until_complete(churn(total))
    finally:
        loop.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loops", default="asyncio,uvloop,ferroloop")
    args = ap.parse_args()
    names = args.loops.split(",")
    results = {n: [] for n in names}
    for _ in range(args.rounds):  # interleaved rounds
        for n in names:
            results[n].append(run_one(n, args.conns))
    print(f"{args.conns} connections (connect, 1 KiB echo, close), {CONCURRENCY} concurrent "
          f"clients; median of {args.rounds} interleaved rounds")
    for n in names:
        wall = statistics.median(r[0] for r in results[n])
        cpu = statistics.median(r[1] for r in results[n])
        print(f"{n:10s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  {args.conns / wall:8.0f} conn/s  "
              f"{args.conns / cpu:8.0f} conn/cpu-s", flush=True)


if __name__ == "__main__":
    main()
