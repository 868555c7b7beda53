"""UDP echo probe: a DatagramProtocol echo server on each loop, a blocking client on the other core.

    python bench/udp_probe.py                          # 3 interleaved rounds, every loop installed
    python bench/udp_probe.py --rounds 5 --count 100000 --window 16 --size 1024
    python bench/udp_probe.py --loops uvloop,ferroloop
    python bench/udp_probe.py --loops uvloop,ferroloop,ferroloop-pytransports   # before/after

Each measurement is two fresh processes: the server (this file with ``--serve LOOP``, pinned to
CPU 0) runs ``loop.create_datagram_endpoint`` with a protocol whose ``datagram_received`` is
``self.transport.sendto(data, addr)``; the client (pinned to CPU 1, plain blocking sockets, no
event loop) keeps ``--window`` datagrams of ``--size`` bytes in flight and sends one more for each
echo it gets back, until ``--count`` echoes arrived (a lost datagram is replaced after a 0.2 s
silence and counted). Reported per loop, medians over the rounds:

* datagrams/s: echoes received by the client over its wall time (first send to last echo);
* server CPU us/datagram: the server process's user+system CPU time (``getrusage``) from its
  first datagram to its ``--count``-th, divided by ``--count`` (what the loop costs per
  datagram, independent of how fast the client is); each round's line also shows the system
  (kernel) part.

Rounds are interleaved (each round runs every loop, in a shuffled order), so a noisy neighbour on
the shared machine hits every loop alike.
"""

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time

ALL_LOOPS = ["asyncio", "uvloop", "ferroloop", "rloop"]
# Not in the default list: ferroloop with the stdlib's datagram transport (FERROLOOP_PY_TRANSPORTS=1
# in the server's environment), i.e. ferroloop before its native one.
PY_TRANSPORTS = "ferroloop-pytransports"


def _factory(name):
    import asyncio

    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name in ("ferroloop", PY_TRANSPORTS):
        import ferroloop

        return ferroloop.new_event_loop
    if name == "rloop":
        import rloop

        return rloop.new_event_loop
    raise ValueError(f"unknown loop {name!r}")


def _cpu():
    """(user + system, system) CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime


def serve(loop_name, count):
    """The server process: prints its port, echoes until `count` datagrams arrived, then prints
    the CPU seconds spent from the first to the `count`-th datagram (JSON) and keeps echoing
    until stdin closes (the client may still be waiting for replacements of lost datagrams)."""
    import asyncio

    _pin(0)
    loop = _factory(loop_name)()
    done = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        n = 0
        t0 = (0.0, 0.0)

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)
            n = self.n = self.n + 1
            if n == 1:
                self.t0 = _cpu()
            elif n == count and not done.done():
                t1 = _cpu()
                done.set_result((t1[0] - self.t0[0], t1[1] - self.t0[1]))

    async def main():
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        print(transport.get_extra_info("sockname")[1], flush=True)
        cpu, sys_cpu = await done
        print(json.dumps({"cpu": cpu, "sys": sys_cpu}), flush=True)
        stop = loop.create_future()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        await stop
        transport.close()

    loop.run_until_complete(main())
    loop.close()


def _pin(cpu):
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def client(port, count, window, size):
    """Keeps `window` datagrams in flight; returns (wall seconds, lost datagrams, CPU seconds)."""
    _pin(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.settimeout(0.2)
    payload = b"x" * size
    lost = 0
    received = 0
    c0 = _cpu()[0]
    t0 = time.perf_counter()
    sent = min(window, count)
    for _ in range(sent):
        s.send(payload)
    while received < count:
        try:
            s.recv(65536)
        except socket.timeout:
            lost += 1
            s.send(payload)
            continue
        received += 1
        if sent < count:
            s.send(payload)
            sent += 1
    wall = time.perf_counter() - t0
    ccpu = _cpu()[0] - c0
    s.close()
    return wall, lost, ccpu


def measure(loop_name, count, window, size):
    env = dict(os.environ)
    env.pop("FERROLOOP_PY_TRANSPORTS", None)
    if loop_name == PY_TRANSPORTS:
        env["FERROLOOP_PY_TRANSPORTS"] = "1"
    srv = subprocess.Popen(
        [sys.executable, __file__, "--serve", loop_name, "--count", str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        port = int(srv.stdout.readline())
        wall, lost, ccpu = client(port, count, window, size)
        cpu = json.loads(srv.stdout.readline())
    finally:
        srv.stdin.close()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    return {"rate": count / wall, "cpu_us": cpu["cpu"] / count * 1e6,
            "sys_us": cpu["sys"] / count * 1e6, "client_load": ccpu / wall, "lost": lost}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--loops", default=",".join(ALL_LOOPS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.count)
        return
    loops = []
    for name in args.loops.split(","):
        try:
            _factory(name)
        except ImportError:
            print(f"skipping {name}: not installed", file=sys.stderr)
            continue
        loops.append(name)
    print(f"UDP echo {args.size} B, window {args.window}, {args.count} datagrams per run, "
          f"{args.rounds} interleaved rounds, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    results = {name: [] for name in loops}
    for r in range(args.rounds):
        order = loops[:]
        random.shuffle(order)
        for name in order:
            m = measure(name, args.count, args.window, args.size)
            results[name].append(m)
            print(f"  round {r + 1} {name:22s} {m['rate']:10.0f} dgram/s "
                  f"{m['cpu_us']:6.2f} us CPU/dgram (system {m['sys_us']:5.2f})  "
                  f"client CPU {m['client_load']:4.0%}  lost {m['lost']}", file=sys.stderr)
    med = {
        name: (statistics.median(m["rate"] for m in ms), statistics.median(m["cpu_us"] for m in ms))
        for name, ms in results.items()
    }
    ref = med.get("uvloop")
    print(f"{'loop':22s} {'dgram/s':>10s} {'server CPU us/dgram':>20s} {'rate vs uvloop':>15s}")
    for name in loops:
        rate, cpu = med[name]
        ratio = f"{rate / ref[0]:.2f}x" if ref else "-"
        print(f"{name:22s} {rate:10.0f} {cpu:20.2f} {ratio:>15s}")


if __name__ == "__main__":
    main()
