"""Stream transport set-up cost: the transport's constructor over an accepted TCP socket.

For each loop, 200 connected TCP pairs are made once; then, in batches of 200, a transport is
created over each server-side socket (a fresh ``asyncio.Protocol``, ``extra={'peername': ...}``
as the accept path passes it), one loop turn runs what the constructors scheduled
(``connection_made``, adding the reader), and the transports are dropped (reader removed,
``_sock`` cleared so their ``__del__`` leaves the sockets open). Reported per transport, best of
5 rounds: the constructor alone, and constructor + its turn + removal.

    .venv/bin/python bench/transport_setup_probe.py [--n 20000] [--loops asyncio,ferroloop]
"""

import argparse
import asyncio
import socket
import time
from asyncio import selector_events


def transport_class(name):
    if name == "asyncio":
        return asyncio.new_event_loop(), selector_events._SelectorSocketTransport
    if name == "ferroloop":
        import ferroloop
        from ferroloop._transport import _SelectorSocketTransport

        return ferroloop.new_event_loop(), _SelectorSocketTransport
    raise SystemExit(f"unknown loop {name!r}")


def measure(name, n):
    loop, cls = transport_class(name)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(500)
    pairs = []
    for _ in range(200):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        s.setblocking(False)
        pairs.append((s, c))

    async def turn():
        pass

    best_ctor = best_all = float("inf")
    for _ in range(5):
        ctor = 0.0
        t_all = time.perf_counter()
        for _ in range(max(1, n // len(pairs))):
            made = []
            t0 = time.perf_counter()
            for s, _c in pairs:
                made.append(cls(loop, s, asyncio.Protocol(), extra={"peername": ("127.0.0.1", 1)}))
            ctor += time.perf_counter() - t0
            loop.run_until_complete(turn())
            for t in made:
                t._sock = None
                loop._transports.pop(t._sock_fd, None)
                loop._remove_reader(t._sock_fd)
            del made, t
        count = max(1, n // len(pairs)) * len(pairs)
        best_ctor = min(best_ctor, ctor / count)
        best_all = min(best_all, (time.perf_counter() - t_all) / count)
    loop.close()
    for s, c in pairs:
        s.close()
        c.close()
    lst.close()
    return best_ctor, best_all


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--loops", default="asyncio,ferroloop")
    args = ap.parse_args()
    for name in args.loops.split(","):
        ctor, total = measure(name, args.n)
        print(f"{name:10s} constructor {ctor * 1e6:6.2f} us   with its turn and removal "
              f"{total * 1e6:6.2f} us", flush=True)


if __name__ == "__main__":
    main()
