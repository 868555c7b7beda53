"""Where a server's CPU goes: `perf record` of one bench/net server under its load, then perf's
report by shared object and by symbol (self time).

    python bench/net/profile.py --loop ferroloop --scenario sock/tcp/1k
    python bench/net/profile.py --loop uvloop --scenario http --seconds 5 --top 60
    python bench/net/profile.py --loop ferroloop --scenario churn --callers _PyEval_EvalFrameDefault

The server and its load generator are started as bench/net/run.py starts them (the same scripts,
pinned to cores 0 and 1), the load runs for a warm-up and then `perf record -g` samples the server
for --seconds. Scenarios: STYLE/TRANSPORT/SIZE (sock, streams, protocol; tcp, unix; 1k, 10k,
100k), http (uvicorn), aiohttp, churn, udp. Needs perf (Debian's linux-perf); on a VM without
hardware counters perf samples the cpu-clock software event, which is what this uses.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as net  # noqa: E402


def client_cmd(sc, where, args):
    total = ["--warmup", "0", "--duration", str(args.warmup + args.seconds + 5)]
    if sc in net.HTTP_SERVERS:
        return ["wrk", "-t1", f"-c{args.http_conns}", f"-d{int(args.warmup + args.seconds + 5)}s",
                f"http://127.0.0.1:{where}/"]
    if sc == "churn":
        return [net.LOADGEN, "--tcp", f"127.0.0.1:{where}", "--churn", "--conns", "10",
                "--size", "1024"] + total
    if sc == "udp":
        return [net.LOADGEN, "--udp", f"127.0.0.1:{where}", "--conns", "4", "--size", "1024"] + total
    style, transport, size = sc.split("/")
    target = ["--unix", where] if transport == "unix" else ["--tcp", f"127.0.0.1:{where}"]
    return [net.LOADGEN] + target + ["--conns", "4", "--size", str(net.SIZES[size])] + total


def server_cmd(sc, loop, sock_dir):
    if sc in net.HTTP_SERVERS:
        return [sys.executable, net.HTTP_SERVERS[sc], "--loop", loop, "--port", "0"]
    if sc == "churn":
        return net.server_cmd(loop, "protocol", ["--port", "0"])
    if sc == "udp":
        return net.server_cmd(loop, "udp", ["--port", "0"])
    style, transport, _ = sc.split("/")
    where = ["--unix", os.path.join(sock_dir, "profile.sock")] if transport == "unix" else ["--port", "0"]
    return net.server_cmd(loop, style, where)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--seconds", type=float, default=3.0, help="sampling window (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="load before sampling (default 1)")
    ap.add_argument("--http-conns", type=int, default=32)
    ap.add_argument("--top", type=int, default=40, help="symbols to print (default 40)")
    ap.add_argument("--callers", metavar="SYMBOL", help="also print the call graph into SYMBOL")
    ap.add_argument("--out", default="/tmp/ferroloop-profile.data", help="perf.data path")
    args = ap.parse_args()
    args.taskset = shutil.which("taskset") is not None
    if not shutil.which("perf"):
        sys.exit("perf not found: apt-get install -y linux-perf")
    net.build_loadgen()
    import tempfile
    with tempfile.TemporaryDirectory(prefix="ferroloop-prof-") as d:
        srv = net.Server(server_cmd(args.scenario, args.loop, d), args)
        client = subprocess.Popen(net.pin(net.CLIENT_CORE, client_cmd(args.scenario, srv.where, args), args),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(args.warmup)
            c0 = net.cpu_seconds(srv.pid)
            subprocess.run(["perf", "record", "-q", "-g", "-o", args.out, "-p", str(srv.pid), "--",
                            "sleep", str(args.seconds)], check=True, stderr=subprocess.DEVNULL)
            busy = (net.cpu_seconds(srv.pid) - c0) / args.seconds
        finally:
            client.kill()
            client.wait()
            srv.stop()
    print(f"# {args.loop} {args.scenario}: server core busy {busy * 100:.0f} % while sampled")
    rep = ["perf", "report", "-i", args.out, "--stdio", "--no-children", "-g", "none", "--percent-limit", "0.3"]
    print(subprocess.run(rep + ["--sort", "dso"], capture_output=True, text=True).stdout)
    out = subprocess.run(rep + ["--sort", "dso,symbol"], capture_output=True, text=True).stdout
    lines = [x for x in out.splitlines() if x.strip() and not x.startswith("#")]
    print("\n".join(lines[: args.top]))
    if args.callers:
        g = subprocess.run(["perf", "report", "-i", args.out, "--stdio", "--no-children", "-G",
                            "--symbol-filter", args.callers, "--percent-limit", "1"],
                           capture_output=True, text=True).stdout
        print("\n".join(g.splitlines()[:200]))


if __name__ == "__main__":
    main()
