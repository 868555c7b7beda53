"""Network benchmarks: echo servers and an HTTP server on ferroloop vs asyncio vs uvloop (and rloop /
rsloop if installed), with a pure-Rust echo server as the ceiling.

    python bench/net/run.py                     # default set, 3 interleaved rounds (~7 min)
    python bench/net/run.py --quick             # smoke test: 1 round, 0.5 s windows (~75 s)
    python bench/net/run.py --rounds 5 --markdown --json bench/results/net.json
    python bench/net/run.py --scenarios protocol/tcp/1k,http --loops uvloop,ferroloop
    python bench/net/run.py --full              # every style x transport x size, and the rows below
    python bench/net/run.py --scenarios churn,bulk,udp,tls   # connection churn, flow-controlled
                                                # bulk, UDP echo, TLS echo (also: --scenarios extra)

Method (bench/README.md, "Network benchmarks"): every measurement starts a fresh server process
(bench/net/echo_server.py, bench/net/http_server.py, or bench/loadgen's echo-server) pinned to
core 0, and loads it from core 1 with bench/loadgen (echo: N connections, closed loop, one
message in flight each; churn: N clients connecting, exchanging 1 KiB and closing; UDP: N
datagrams in flight; bulk: one flow-controlled 256 MiB transfer), a Python TLS client (TLS echo)
or wrk (HTTP).  Reported: requests/s and, more robust on a shared
machine, the server process's CPU time per request (utime+stime over the timed window).
Rounds are interleaved and the server order is shuffled per scenario in each round; cells are
medians over rounds.
"""

import argparse
import json
import os
import platform
import random
import re
import selectors
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
LOADGEN_DIR = os.path.join(BENCH, "loadgen")
LOADGEN = os.path.join(LOADGEN_DIR, "target", "release", "loadgen")
RUST_ECHO = os.path.join(LOADGEN_DIR, "target", "release", "echo-server")
ECHO = os.path.join(HERE, "echo_server.py")
TLS_CLIENT = os.path.join(HERE, "tls_client.py")
HTTP = os.path.join(HERE, "http_server.py")
AIOHTTP = os.path.join(HERE, "aiohttp_server.py")
HTTP_SERVERS = {"http": HTTP, "aiohttp": AIOHTTP}   # wrk rows: scenario -> server script
WORKER = os.path.join(BENCH, "_worker.py")

ALL_LOOPS = ["asyncio", "uvloop", "ferroloop", "rloop", "rsloop"]
OPTIONAL = {"rloop", "rsloop"}
REF = "ferroloop"
RUST = "rust"                     # the pure-Rust echo server (ceiling), a column of its own
SERVER_CORE, CLIENT_CORE = "0", "1"

STYLES = ("sock", "streams", "protocol")
TRANSPORTS = ("tcp", "unix")
SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}
# Issue #10's rows: connection churn, flow-controlled bulk, UDP echo, TLS echo (`--scenarios extra`).
# They are in the default set too (about 45 s per round on 2 cores).
EXTRA_SCENARIOS = ["churn", "bulk", "udp", "tls"]
DEFAULT_SCENARIOS = ["sock/tcp/1k", "streams/tcp/1k", "protocol/tcp/1k", "protocol/tcp/10k",
                     "protocol/tcp/100k", "protocol/unix/1k", "http", "aiohttp"] + EXTRA_SCENARIOS
FULL_SCENARIOS = [f"{s}/{t}/{z}" for s in STYLES for t in TRANSPORTS for z in SIZES] + ["http", "aiohttp"] + EXTRA_SCENARIOS
SETS = {"default": DEFAULT_SCENARIOS, "extra": EXTRA_SCENARIOS, "full": FULL_SCENARIOS}
UDP_MAX_LOSS = 0.01   # more datagrams lost than this (loopback, a few in flight) fails the run
BULK_MAX_GROWTH_MIB = 64  # the bulk server's peak RSS may exceed its RSS at start by this much


def scenario_label(sc, args):
    if sc == "http":
        return f"HTTP uvicorn+httptools (wrk -c{args.http_conns})"
    if sc == "aiohttp":
        return f"HTTP aiohttp.web (wrk -c{args.http_conns})"
    if sc == "churn":
        return f"churn: connect + 1 KiB echo + close, {args.churn_conns} clients (per connection)"
    if sc == "udp":
        return f"UDP echo 1 KiB, {args.conns} in flight (per datagram)"
    if sc == "tls":
        return "TLS echo 1 KiB tcp, Protocol.data_received (Python ssl client)"
    if sc == "bulk":
        return f"bulk {args.bulk_mib} MiB, Protocol pausing at 1 MiB"
    style, transport, size = sc.split("/")
    what = {"sock": "sock_recv/sock_sendall", "streams": "streams read/write/drain",
            "protocol": "Protocol.data_received"}[style]
    return f"echo {size.upper().replace('K', ' KiB')} {transport}, {what}"


# --------------------------------------------------------------------------------- processes

def cpu_seconds(pid):
    """utime+stime of a whole process, from /proc/PID/stat (USER_HZ = 100)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / 100.0


def pin(core, cmd, args):
    return (["taskset", "-c", core] if args.taskset else []) + cmd


class Server:
    """One server process, pinned to SERVER_CORE; waits for its "READY <where>" line."""

    def __init__(self, cmd, args, timeout=30.0):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(pin(SERVER_CORE, cmd, args), stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        self.pid = self.proc.pid     # taskset execs the server: same pid
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline, line = time.monotonic() + timeout, ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sel.select(0.1):
                line = self.proc.stdout.readline()
                break
        sel.close()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"server did not start: {self.stderr_tail() or 'no READY line'}")
        self.where = line.split()[1]
        self.version = " ".join(line.split()[3:])

    def stderr_tail(self):
        self.err.seek(0)
        lines = [x for x in self.err.read().strip().splitlines() if x.strip()]
        return lines[-1] if lines else ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def run_client(srv, cmd, args, timeout):
    """Run a load generator (bench/loadgen or tls_client.py) against srv; its last stdout line is
    the JSON result."""
    try:
        p = subprocess.run(pin(CLIENT_CORE, cmd, args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "load generator timed out"}
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        r = {"ok": False, "error": f"load generator exited {p.returncode}: {p.stderr.strip()[-200:]}"}
    if not srv.alive():
        r = {"ok": False, "error": f"server died: {srv.stderr_tail()}"}
    elif not r["ok"] and srv.stderr_tail():
        r["error"] += f" (server: {srv.stderr_tail()})"
    r["server_version"] = srv.version
    return r


def server_cmd(server_name, style, where, extra=()):
    if server_name == RUST:
        return [RUST_ECHO] + (["--udp", "0"] if style == "udp" else where)
    return [sys.executable, ECHO, "--loop", server_name, "--style", style] + where + list(extra)


def window_args(args):
    return ["--warmup", str(args.warmup), "--duration", str(args.duration)]


def run_echo(server_name, scenario, args, sock_dir):
    style, transport, size = scenario.split("/")
    unix = os.path.join(sock_dir, f"echo-{server_name}.sock") if transport == "unix" else None
    where = ["--unix", unix] if unix else ["--port", "0"]
    srv = Server(server_cmd(server_name, style, where), args)
    try:
        target = ["--unix", unix] if unix else ["--tcp", f"127.0.0.1:{srv.where}"]
        return run_client(srv, [LOADGEN] + target + [
            "--conns", str(args.conns), "--size", str(SIZES[size]), "--server-pid", str(srv.pid)]
            + window_args(args), args, args.warmup + args.duration + 60)
    finally:
        srv.stop()
        if unix and os.path.exists(unix):
            os.unlink(unix)


def run_churn(server_name, args):
    """Connection churn: the Protocol echo server; one request = one connection."""
    srv = Server(server_cmd(server_name, "protocol", ["--port", "0"]), args)
    try:
        return run_client(srv, [LOADGEN, "--tcp", f"127.0.0.1:{srv.where}", "--churn",
                                "--conns", str(args.churn_conns), "--size", "1024",
                                "--server-pid", str(srv.pid)] + window_args(args),
                          args, args.warmup + args.duration + 60)
    finally:
        srv.stop()


def run_udp(server_name, args):
    """UDP echo: one request = one datagram echoed and checked; losses tolerated up to 1 %."""
    srv = Server(server_cmd(server_name, "udp", ["--port", "0"]), args)
    try:
        r = run_client(srv, [LOADGEN, "--udp", f"127.0.0.1:{srv.where}", "--conns", str(args.conns),
                             "--size", "1024", "--server-pid", str(srv.pid)] + window_args(args),
                       args, args.warmup + args.duration + 60)
    finally:
        srv.stop()
    if r["ok"] and r["udp_lost"] > UDP_MAX_LOSS * r["udp_sent"]:
        r = {"ok": False, "error": f"{r['udp_lost']} of {r['udp_sent']} datagrams lost "
                                   f"(> {UDP_MAX_LOSS:.0%}; 100 ms timeout each)", **{"raw": r}}
    return r


def run_tls(server_name, args, tls):
    """TLS echo 1 KiB: the Protocol echo server with ssl=, loaded by bench/net/tls_client.py."""
    cert, key = tls
    srv = Server(server_cmd(server_name, "protocol", ["--port", "0"], ["--tls", f"{cert},{key}"]), args)
    try:
        return run_client(srv, [sys.executable, TLS_CLIENT, "--tcp", f"127.0.0.1:{srv.where}",
                                "--cafile", cert, "--conns", str(args.conns), "--size", "1024",
                                "--server-pid", str(srv.pid)] + window_args(args),
                          args, args.warmup + args.duration + 60)
    finally:
        srv.stop()


def run_bulk(server_name, args):
    """Flow-controlled bulk: bench/loadgen --bulk pushes args.bulk_mib MiB into the FlowSink
    server (echo_server.py --style bulk), which pauses reading at 1 MiB queued; checked: every
    byte arrived (count and adler32), no data_received while paused, memory bounded."""
    srv = Server(server_cmd(server_name, "bulk", ["--port", "0"]), args)
    try:
        r = run_client(srv, [LOADGEN, "--tcp", f"127.0.0.1:{srv.where}", "--bulk",
                             str(args.bulk_mib << 20), "--server-pid", str(srv.pid)], args, 300)
    finally:
        srv.stop()
    if not r["ok"]:
        return r
    kv = dict(x.split("=", 1) for x in r["server_reply"].split()[2:])
    # The server's own CPU clock over the transfer (ns resolution) replaces /proc's 10 ms ticks,
    # which are 5-10 % of a transfer's CPU time.
    r.update(pauses=int(kv["pauses"]), early=int(kv["early"]), server_cpu_stat_s=r.get("server_cpu_s"),
             server_cpu_s=float(kv["cpu_s"]),
             peak_rss_mib=int(kv["maxrss_kib"]) / 1024, start_rss_mib=int(kv["rss0_kib"]) / 1024)
    if r["early"]:
        return {"ok": False, "error": f"data_received called {r['early']} times while reading was "
                                      f"paused", "raw": r}
    if not r["pauses"]:
        return {"ok": False, "error": "the reader never paused (flow control not exercised)", "raw": r}
    if r["peak_rss_mib"] - r["start_rss_mib"] > BULK_MAX_GROWTH_MIB:
        return {"ok": False, "error": f"memory not bounded: peak RSS {r['peak_rss_mib']:.0f} MiB, "
                                      f"{r['start_rss_mib']:.0f} MiB at start", "raw": r}
    return r


def make_cert(tmp):
    """A self-signed certificate for "localhost" (EC P-256), made with the openssl CLI; None and
    the reason when it cannot be made."""
    if not shutil.which("openssl"):
        return None, "openssl CLI not found (apt-get install -y openssl)"
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost"], capture_output=True, text=True)
    if p.returncode != 0:
        return None, f"openssl req failed: {p.stderr.strip()[-200:]}"
    return (cert, key), None


WRK_LAT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(out):
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not m:
        raise ValueError("no 'requests in' line")
    n = int(m.group(1))
    r = {"requests": n}
    scale = {"us": 1.0, "ms": 1e3, "s": 1e6}
    for pct, val, unit in WRK_LAT.findall(out):
        r[f"lat_p{pct}_us"] = float(val) * scale[unit]
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errs:
        r["socket_errors"] = errs.group(1).strip()
    if non2xx:
        r["non_2xx"] = int(non2xx.group(1))
    return r


def run_http(server_name, args, script=HTTP):
    srv = Server([sys.executable, script, "--loop", server_name, "--port", "0"], args)
    url = f"http://127.0.0.1:{srv.where}/"
    wrk = lambda secs: pin(CLIENT_CORE, ["wrk", "-t1", f"-c{args.http_conns}", f"-d{secs}s",  # noqa: E731
                                         "--latency", url], args)
    secs = max(1, round(args.duration))
    try:
        subprocess.run(wrk(max(1, round(args.warmup))), capture_output=True, timeout=60)  # warm-up
        c0, t0 = cpu_seconds(srv.pid), time.monotonic()
        p = subprocess.run(wrk(secs), capture_output=True, text=True, timeout=secs + 60)
        c1, t1 = cpu_seconds(srv.pid), time.monotonic()
        if not srv.alive():
            return {"ok": False, "error": f"server died: {srv.stderr_tail()}"}
        try:
            r = parse_wrk(p.stdout)
        except ValueError:
            return {"ok": False, "error": f"wrk: {(p.stderr or p.stdout).strip()[-200:]}"}
        if r.get("non_2xx") or r["requests"] == 0:
            return {"ok": False, "error": f"wrk: {r.get('non_2xx', 0)} non-2xx responses"}
        # Server CPU is measured over wrk's whole run (a few ms of connecting more than wrk's
        # own -d window); requests/s uses wrk's window.
        r.update(ok=True, rps=r["requests"] / secs, server_cpu_s=c1 - c0,
                 server_cpu_us_per_req=(c1 - c0) * 1e6 / r["requests"],
                 server_busy=(c1 - c0) / (t1 - t0), server_version=srv.version)
        return r
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "wrk timed out"}
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ set-up

def build_loadgen():
    """cargo build --release of bench/loadgen (a no-op when up to date)."""
    if shutil.which("cargo"):
        p = subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path",
                            os.path.join(LOADGEN_DIR, "Cargo.toml")], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: building bench/loadgen failed:\n{p.stderr}")
    if not (os.path.exists(LOADGEN) and os.path.exists(RUST_ECHO)):
        sys.exit("error: bench/loadgen is not built and cargo is not on PATH "
                 "(cargo build --release --manifest-path bench/loadgen/Cargo.toml)")


def probe_loops(args):
    """Which loops can be created (bench/run.py's probe: same worker, same rules)."""
    sys.path.insert(0, BENCH)
    import run as microbench

    return microbench.probe_loops(args)


def http_available(sc="http"):
    """None if the row's server (uvicorn+httptools, or aiohttp) and wrk are there, else the reason
    (with how to fix it)."""
    why = []
    mods = "uvicorn, httptools" if sc == "http" else "aiohttp.web"
    p = subprocess.run([sys.executable, "-c", f"import {mods}"], capture_output=True)
    if p.returncode != 0:
        why.append(f"{mods} not installed: {sys.executable} -m pip install "
                   f"-r {os.path.relpath(os.path.join(HERE, 'requirements.txt'))}")
    if not shutil.which("wrk"):
        why.append("wrk not found: apt-get install -y wrk (Debian/Ubuntu), or `make bench-net` as root")
    return "; ".join(why) or None


def pkg_version(name):
    p = subprocess.run([sys.executable, "-c", f"from importlib.metadata import version; print(version({name!r}))"],
                       capture_output=True, text=True)
    return p.stdout.strip() or "not installed"


def print_environment(args, loops, versions, scenarios):
    print("# command:", " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    print(f"# python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    try:
        with open("/proc/loadavg") as f:
            print("# load average at start:", " ".join(f.read().split()[:3]))
    except OSError:
        pass
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    print("# source tree:", git or "no git commit yet")
    env = {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "FERROLOOP", "VIRTUAL_ENV"))}
    print("# environment:", " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())) or "(no PYTHON*/FERROLOOP* variables)")
    print("# loops:", ", ".join(f"{name} {versions[name]}" for name in loops) or "none")
    print(f"# pinning: {'server on core ' + SERVER_CORE + ', load generator on core ' + CLIENT_CORE + ' (taskset)' if args.taskset else 'NONE (taskset not found: install util-linux)'}")
    print(f"# echo: {os.path.relpath(LOADGEN, ROOT)} --conns {args.conns} --warmup {args.warmup} "
          f"--duration {args.duration} (closed loop, 1 message in flight per connection); "
          f"ceiling ('rust' column): {os.path.relpath(RUST_ECHO, ROOT)} (one thread, epoll)")
    if "churn" in scenarios:
        print(f"# churn: loadgen --churn --conns {args.churn_conns}: connect, send 1 KiB, read and check "
              f"the echo, shutdown(SHUT_WR), read the server's EOF, close; server: the Protocol echo")
    if "udp" in scenarios:
        print(f"# udp: loadgen --udp --conns {args.conns}: one 1 KiB datagram in flight per client "
              f"socket, 100 ms timeout = lost (> {UDP_MAX_LOSS:.0%} lost fails the run); server: "
              f"create_datagram_endpoint, DatagramProtocol sendto back")
    if "tls" in scenarios:
        print(f"# tls: {os.path.relpath(TLS_CLIENT, ROOT)} --conns {args.conns} (Python {platform.python_version()} "
              f"ssl, {__import__('ssl').OPENSSL_VERSION}, blocking sockets, one thread per connection); "
              f"self-signed EC P-256 certificate made by the openssl CLI")
    if "bulk" in scenarios:
        print(f"# bulk: loadgen --bulk {args.bulk_mib} MiB after a {args.bulk_mib / 16:g} MiB warm-up "
              f"transfer; server: echo_server.py --style bulk (pause_reading at 1 MiB queued, a "
              f"call_soon consumer, resume_reading at 256 KiB; adler32 of every byte checked)")
    if "http" in scenarios or "aiohttp" in scenarios:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0] if shutil.which("wrk") else "missing"
        print(f"# http: uvicorn {pkg_version('uvicorn')}, httptools {pkg_version('httptools')}, "
              f"aiohttp {pkg_version('aiohttp')}, "
              f"{wrk.split(' Copyright')[0]}, -t1 -c{args.http_conns}, {max(1, round(args.warmup))} s warm-up, "
              f"{max(1, round(args.duration))} s timed")
    print(f"# {args.rounds} round(s); cells: median over rounds ±half the min-max spread; "
          f"server CPU = utime+stime of the server process over the timed window / requests")
    sys.stdout.flush()


# -------------------------------------------------------------------------------- formatting

def si(x):
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def spread(vals):
    med = statistics.median(vals)
    return med, (max(vals) - min(vals)) / 2 / med * 100 if med else 0.0


def cell(rounds, key, fmt):
    vals = [r[key] for r in rounds.values() if key in r]
    if not vals:
        return "failed" if rounds is not None else "-"
    med, sp = spread(vals)
    return f"{fmt(med)} ±{sp:.0f}%"


def ratio(ref, other, key, invert=False):
    """Ratio of the medians ref/other (other/ref with invert) and the range of the per-round
    ratios (same round = same machine state)."""
    a = {k: v[key] for k, v in ref.items() if key in v}
    b = {k: v[key] for k, v in other.items() if key in v}
    if not a or not b:
        return "n/a"
    f = (lambda x, y: y / x) if invert else (lambda x, y: x / y)
    r = f(statistics.median(a.values()), statistics.median(b.values()))
    paired = [f(a[k], b[k]) for k in a if k in b] or [r]
    return f"{r:.2f}x ({min(paired):.2f}-{max(paired):.2f})"


def render(head, rows, markdown):
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w[0]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * x for x in w)] + [fmt(r) for r in rows])


def rust_key(sc):
    """The ceiling measured for a scenario: the Rust server has one style, so all echo styles
    with the same transport and size share one measurement."""
    if sc in ("http", "aiohttp", "bulk", "tls"):
        return None
    if sc in ("churn", "udp"):
        return f"rust/{sc}"
    _, transport, size = sc.split("/")
    return f"rust/{transport}/{size}"


def bulk_table(results, loops, others, args):
    r = results["bulk"]
    metrics = [("MiB/s (higher is better)", "mib_per_s", lambda x: f"{x:.0f}"),
               (f"server CPU s per {args.bulk_mib} MiB (lower is better)", "server_cpu_s", lambda x: f"{x:.3f}"),
               ("peak RSS of the server process, MiB", "peak_rss_mib", lambda x: f"{x:.0f}"),
               ("pause_reading calls", "pauses", lambda x: f"{x:.0f}"),
               ("server core busy, %", "server_busy", lambda x: f"{x * 100:.0f}"),
               ("client core busy, %", "client_busy", lambda x: f"{x * 100:.0f}")]
    rows = []
    for label, key, fmt in metrics:
        row = [label] + [cell(r.get(l, {}), key, fmt) for l in loops]
        row += [ratio(r.get(REF, {}), r.get(o, {}), key) if key in ("mib_per_s", "server_cpu_s") else ""
                for o in others]
        rows.append(row)
    return render([scenario_label("bulk", args)] + loops + [f"{REF}/{o}" for o in others], rows, args.markdown)


def tables(results, loops, scenarios, args):
    others = sorted((l for l in loops if l != REF), key=lambda l: l != "uvloop")[:2] if REF in loops else []
    cols = loops + [RUST]
    out = []
    if "bulk" in scenarios:
        bulk = bulk_table(results, loops, others, args)
        scenarios = [s for s in scenarios if s != "bulk"]
        if not scenarios:
            return ("Flow-controlled bulk (one transfer per round; ratios: ferroloop / other; for "
                    "MiB/s >1 = ferroloop faster, for CPU <1 = ferroloop cheaper)\n\n" + bulk)
    else:
        bulk = None

    def rows_for(key, fmt, invert):
        rows = []
        for sc in scenarios:
            r = results[sc]
            rk = rust_key(sc)
            row = [scenario_label(sc, args)]
            for l in loops:
                row.append(cell(r.get(l, {}), key, fmt))
            row.append(cell(results[rk][RUST], key, fmt) if rk and rk in results else "-")
            row += [ratio(r.get(REF, {}), r.get(o, {}), key, invert) for o in others]
            rows.append(row)
        return rows

    out.append("Requests/s (higher is better; churn: connections/s, UDP: datagrams/s); ratios: "
               "ferroloop / other, >1 = ferroloop faster\n")
    out.append(render(["scenario"] + cols + [f"{REF}/{o}" for o in others],
                      rows_for("rps", si, False), args.markdown))
    out.append("\nServer CPU µs per request (churn: per connection, UDP: per datagram; lower is "
               "better); ratios: ferroloop's CPU / other's, <1 = ferroloop cheaper\n")
    out.append(render(["scenario"] + cols + [f"{REF}/{o} CPU" for o in others],
                      rows_for("server_cpu_us_per_req", lambda x: f"{x:.1f}", False), args.markdown))
    out.append("\nLatency p50 / p99, µs (median over rounds; churn: a whole connection)\n")
    rows = []
    for sc in scenarios:
        rk = rust_key(sc)
        row = [scenario_label(sc, args)]
        for l in cols:
            rr = results[rk][RUST] if l == RUST and rk in results else (results[sc].get(l) if l != RUST else None)
            if rr is None:
                row.append("-")
                continue
            p50 = [x["lat_p50_us"] for x in rr.values() if "lat_p50_us" in x]
            p99 = [x["lat_p99_us"] for x in rr.values() if "lat_p99_us" in x]
            row.append(f"{statistics.median(p50):.0f} / {statistics.median(p99):.0f}" if p50 and p99 else "failed")
        rows.append(row)
    out.append(render(["scenario"] + cols, rows, args.markdown))
    out.append("\nServer core busy, % of the timed window (median); <100 % = the server waited "
               "for the network or the load generator\n")
    rows = []
    for sc in scenarios:
        rk = rust_key(sc)
        row = [scenario_label(sc, args)]
        for l in cols:
            rr = results[rk][RUST] if l == RUST and rk in results else (results[sc].get(l) if l != RUST else None)
            if rr is None:
                row.append("-")
                continue
            s = [x["server_busy"] * 100 for x in rr.values() if "server_busy" in x]
            c = [x["client_busy"] * 100 for x in rr.values() if "client_busy" in x]
            row.append((f"{statistics.median(s):.0f}" + (f" (client {statistics.median(c):.0f})" if c else ""))
                       if s else "failed")
        rows.append(row)
    out.append(render(["scenario"] + cols, rows, args.markdown))
    if bulk:
        out.append("\nFlow-controlled bulk (one transfer per round; ratios: ferroloop / other; for "
                   "MiB/s >1 = ferroloop faster, for CPU <1 = ferroloop cheaper)\n")
        out.append(bulk)
    return "\n".join(out)


# -------------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated STYLE/TRANSPORT/SIZE (styles " + ",".join(STYLES) + "; "
                    + ",".join(TRANSPORTS) + "; " + ",".join(SIZES) + "), http, "
                    + ",".join(EXTRA_SCENARIOS) + ", and/or the sets " + ",".join(SETS)
                    + "; default " + ",".join(DEFAULT_SCENARIOS))
    ap.add_argument("--full", action="store_true",
                    help="every style x transport x size, http, " + ",".join(EXTRA_SCENARIOS))
    ap.add_argument("--loops", default=None, help="comma-separated (default: " + ",".join(ALL_LOOPS) + ")")
    ap.add_argument("--no-rust", action="store_true", help="skip the pure-Rust echo ceiling")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, --quick 1)")
    ap.add_argument("--conns", type=int, default=4, help="echo connections (default 4)")
    ap.add_argument("--http-conns", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--churn-conns", type=int, default=10, help="churn: concurrent clients (default 10)")
    ap.add_argument("--bulk-mib", type=int, default=256, help="bulk: MiB per timed transfer (default 256)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the timed window (default 0.5)")
    ap.add_argument("--duration", type=float, default=None, help="timed window, seconds (default 2; wrk: whole seconds)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 round, 0.2 s warm-up, 0.5 s windows")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--json", metavar="OUT", help="write every raw measurement to this file")
    ap.add_argument("--seed", type=int, default=None, help="seed of the in-round shuffle")
    args = ap.parse_args()
    args.loops_given = args.loops is not None
    args.loops = (args.loops or ",".join(ALL_LOOPS)).split(",")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.5)
    args.duration = args.duration if args.duration is not None else (0.5 if args.quick else 2.0)
    args.taskset = shutil.which("taskset") is not None
    scenarios = []
    for sc in (["full"] if args.full else (args.scenarios or "default").split(",")):
        scenarios += [x for x in SETS.get(sc, [sc]) if x not in scenarios]
    for sc in scenarios:
        if sc not in list(HTTP_SERVERS) + EXTRA_SCENARIOS and (len(sc.split("/")) != 3 or sc.split("/")[0] not in STYLES
                             or sc.split("/")[1] not in TRANSPORTS or sc.split("/")[2] not in SIZES):
            ap.error(f"unknown scenario {sc!r}")
    rng = random.Random(args.seed)

    build_loadgen()
    loops, versions = probe_loops(args)
    print_environment(args, loops, versions, scenarios)
    if not args.taskset:
        print("# WARNING: taskset not found (util-linux): server and load generator are not pinned")
    for sc in HTTP_SERVERS:
        why = http_available(sc) if sc in scenarios else None
        if why:
            print(f"# HTTP benchmark {sc} skipped: {why}")
            scenarios = [s for s in scenarios if s != sc]
    tls = None
    tmp = tempfile.TemporaryDirectory(prefix="ferroloop-net-")
    if "tls" in scenarios:
        tls, why = make_cert(tmp.name)
        if not tls:
            print(f"# TLS benchmark skipped: {why}")
            scenarios = [s for s in scenarios if s != "tls"]

    # What runs in a round: (scenario, server) pairs; the Rust ceiling once per transport+size.
    jobs = {sc: list(loops) for sc in scenarios}
    if not args.no_rust:
        for sc in scenarios:
            rk = rust_key(sc)
            if rk and rk not in jobs:
                jobs[rk] = [RUST]
    results = {k: {s: {} for s in servers} for k, servers in jobs.items()}
    raw, errors, t_start = [], set(), time.monotonic()
    with tmp as sock_dir:
        for rnd in range(1, args.rounds + 1):
            for key, servers in jobs.items():
                for server in rng.sample(servers, len(servers)):
                    sc = key.split("/", 1)[1] if server == RUST else key
                    if server == RUST and "/" in sc:
                        sc = "protocol/" + sc
                    try:
                        if sc in HTTP_SERVERS:
                            r = run_http(server, args, HTTP_SERVERS[sc])
                        elif sc == "churn":
                            r = run_churn(server, args)
                        elif sc == "udp":
                            r = run_udp(server, args)
                        elif sc == "tls":
                            r = run_tls(server, args, tls)
                        elif sc == "bulk":
                            r = run_bulk(server, args)
                        else:
                            r = run_echo(server, sc, args, sock_dir)
                    except (RuntimeError, OSError) as e:
                        r = {"ok": False, "error": str(e)}
                    raw.append({"round": rnd, "scenario": key, "server": server, **r})
                    if not r["ok"]:
                        if (key, server) not in errors:
                            print(f"# round {rnd}: {server} failed {key}: {r['error']}", flush=True)
                            errors.add((key, server))
                        continue
                    results[key][server][rnd] = r
                    if r.get("udp_lost"):
                        print(f"# round {rnd}: {server} lost {r['udp_lost']} of {r['udp_sent']} "
                              f"datagrams (udp; tolerated up to {UDP_MAX_LOSS:.0%})", flush=True)
            print(f"# round {rnd}/{args.rounds} done ({time.monotonic() - t_start:.0f}s)", flush=True)

    print()
    print(tables(results, loops, scenarios, args))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "python": sys.version, "loops": versions,
                       "rounds": args.rounds, "conns": args.conns, "warmup": args.warmup,
                       "duration": args.duration, "http_conns": args.http_conns,
                       "churn_conns": args.churn_conns, "bulk_mib": args.bulk_mib,
                       "scenarios": scenarios, "raw": raw}, f, indent=1)
        print(f"\n# raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
