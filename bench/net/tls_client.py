"""The TLS echo scenario's load generator: bench/loadgen's echo mode, over TLS, in Python.

    python bench/net/tls_client.py --tcp 127.0.0.1:8000 --cafile cert.pem [--conns 4] [--size 1024]
                                   [--warmup 0.5] [--duration 2] [--server-pid PID]

Why Python: bench/loadgen is std only (no dependency, builds offline in seconds); a TLS client in
Rust means rustls (+ ring or aws-lc, a C build) or OpenSSL bindings. This client is plain blocking
sockets wrapped by the stdlib's ssl module (OpenSSL), one thread per connection: SSL_write,
SSL_read and the socket waits run with the GIL released, so the Python left per request is a
few calls. It costs more CPU per request than the Rust load generator (bench/README.md reports
its core's busy figure); the comparison between loops is by server CPU per request, which does
not depend on the client.

Each connection: TLS handshake (verifying the bench's self-signed certificate for "localhost"),
then a closed loop: send S bytes (head and tail varied per request), read S bytes back, check them
byte for byte. Prints one JSON line with the same fields as bench/loadgen (requests, rps, latency
percentiles in µs, server_cpu_us_per_req, server_busy, client_busy, ...); on an error
{"ok": false, "error": ...} and exit status 1.
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time

IO_TIMEOUT = 10.0
INFO = {}


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(rest[11]) + int(rest[12])) / 100.0


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}), flush=True)
    os._exit(1)


def conn_loop(args, ctx, host, port, ident, ready, go, win, out):
    try:
        raw = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        if ident == 0:
            INFO["tls"] = f"{s.version()} {s.cipher()[0]}"
    except (OSError, ssl.SSLError) as e:
        out[ident] = f"connect: {e}"
        ready.wait()
        go.wait()
        return
    ready.wait()
    go.wait()
    start, end = win
    size = args.size
    msg = bytearray((i * 31 + ident * 7) & 0xFF for i in range(size))
    buf = bytearray(size)
    view = memoryview(buf)
    lat = []
    push, now, sendall, recv_into = lat.append, time.perf_counter, s.sendall, s.recv_into
    k = 0
    try:
        while True:
            t0 = now()
            if t0 >= end:
                break
            k += 1
            msg[0] = k & 0xFF
            msg[-1] = (k >> 8) & 0xFF
            sendall(msg)
            got = 0
            while got < size:
                n = recv_into(view[got:])
                if not n:
                    raise ConnectionError("server closed the connection")
                got += n
            t1 = now()
            if buf != msg:
                raise ValueError("echo mismatch")
            if start <= t1 <= end:
                push(t1 - t0)
        out[ident] = lat
    except (OSError, ssl.SSLError, ValueError) as e:
        out[ident] = f"{type(e).__name__}: {e}"
    finally:
        try:
            s.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tcp", required=True, metavar="HOST:PORT")
    ap.add_argument("--cafile", required=True, help="the server's (self-signed) certificate")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--server-pid", type=int, default=None)
    args = ap.parse_args()
    host, port = args.tcp.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.cafile)
    # Threads switch between requests more often than the default 5 ms interval when it's short.
    sys.setswitchinterval(0.0005)
    ready = threading.Barrier(args.conns + 1)
    go = threading.Barrier(args.conns + 1)
    win = [0.0, 0.0]
    out = [None] * args.conns
    threads = [threading.Thread(target=conn_loop, args=(args, ctx, host, int(port), i, ready, go, win, out))
               for i in range(args.conns)]
    for t in threads:
        t.start()
    ready.wait()
    win[0] = time.perf_counter() + args.warmup
    win[1] = win[0] + args.duration
    go.wait()
    time.sleep(max(0.0, win[0] - time.perf_counter()))
    srv0, cli0 = (proc_cpu(args.server_pid) if args.server_pid else None), proc_cpu("self")
    time.sleep(max(0.0, win[1] - time.perf_counter()))
    srv1, cli1 = (proc_cpu(args.server_pid) if args.server_pid else None), proc_cpu("self")
    for t in threads:
        t.join()
    lat = []
    for r in out:
        if isinstance(r, str) or r is None:
            fail(r or "connection thread died")
        lat.extend(r)
    if not lat:
        fail("no request completed in the timed window")
    lat.sort()
    n = len(lat)
    pct = lambda p: lat[min(int(n * p), n - 1)] * 1e6  # noqa: E731
    res = {"ok": True, "target": f"tls:{args.tcp}", "conns": args.conns, "size": args.size,
           "warmup_s": args.warmup, "duration_s": args.duration, "requests": n,
           "rps": n / args.duration, "mib_per_s": n * args.size * 2 / args.duration / (1 << 20),
           "lat_mean_us": sum(lat) / n * 1e6, "lat_p50_us": pct(0.5), "lat_p90_us": pct(0.9),
           "lat_p99_us": pct(0.99), "lat_max_us": lat[-1] * 1e6, "mode": "tls",
           "tls": INFO.get("tls")}
    if args.server_pid:
        if srv0 is None or srv1 is None:
            fail("cannot read the server's /proc/PID/stat (did it exit?)")
        res.update(server_cpu_s=srv1 - srv0, server_cpu_us_per_req=(srv1 - srv0) * 1e6 / n,
                   server_busy=(srv1 - srv0) / args.duration)
    if cli0 is not None and cli1 is not None:
        res.update(client_cpu_s=cli1 - cli0, client_busy=(cli1 - cli0) / args.duration)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
