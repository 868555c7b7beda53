"""What ferroloop's diagnostics cost: (a) compiled out vs compiled in with debug mode off, and
(b) debug mode on vs off.

    python bench/diag_overhead.py                    # both parts (~1 min), plain-text tables
    python bench/diag_overhead.py --markdown         # Markdown tables, for the README
    python bench/diag_overhead.py --part a --rounds 15 --bench call_soon,pingpong,sleep0
    make bench-diag                                  # builds .venv-nodiag if needed, then this

(a) The cargo feature ``diagnostics`` (on by default) keeps the always-on metrics of
``loop.stats()`` (turn and callback counters, busy/idle time, longest stall). ``make bench-diag``
installs a build without it into .venv-nodiag (``--no-default-features``, as a wheel). This
script runs bench/_worker.py (``--loop ferroloop``) under ``.venv/bin/python`` (diagnostics
compiled in, debug off) and ``.venv-nodiag/bin/python`` (compiled out), paired: each round runs
both, in a shuffled order, so a slow drift of this noisy machine hits both alike. Reported:
median throughput over rounds, and the ratio of medians with the range of the per-round
(paired) ratios. It first checks that the two interpreters really load two different native
modules and that only the first one counts (``loop.stats()['callbacks']``).

(b) Debug mode on (``PYTHONASYNCIODEBUG=1`` in the worker's environment: the loop switches debug
on at construction) vs off, default build, same pairing. Debug mode includes the stdlib's own
debug checks (creation tracebacks for every handle, thread and callback checks, slow-callback
timing), which dominate, so stock asyncio's debug cost is measured too, for reference. Debug mode
is tens of times slower, so part (b) runs the workers with ``--quick`` (1/10 of the work).

Every worker is a fresh interpreter printing one JSON line (bench/_worker.py); each reports the
best of ``--repeat`` timed runs; medians are over rounds (bench/README.md has the method).
"""

import argparse
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "_worker.py")
sys.path.insert(0, HERE)
import _worker  # noqa: E402  (names and units only)
from run import LABELS, run_worker, si  # noqa: E402

TIMEOUT = 120  # seconds per worker (debug mode is slow)

PROBE = r"""
import json, os, sys, time
import ferroloop, ferroloop._native as nat
loop = ferroloop.new_event_loop()
for _ in range(10):
    loop.call_soon(int)
loop.call_soon(loop.stop)
loop.run_forever()
s = loop.stats()
debug = loop.get_debug()
loop.close()
print(json.dumps({"native": os.path.realpath(nat.__file__),
                  "built": time.strftime("%H:%M:%S", time.localtime(os.path.getmtime(nat.__file__))),
                  "python": sys.version.split()[0], "callbacks": s.get("callbacks"),
                  "has_busy": "busy" in s, "debug": debug}))
"""


def newest_source():
    """(mtime, path) of the newest file a native build is made from."""
    paths = [os.path.join(ROOT, f) for f in ("Cargo.toml", "Cargo.lock", "pyproject.toml")]
    for top, _dirs, files in os.walk(os.path.join(ROOT, "crates")):
        paths += [os.path.join(top, f) for f in files if f.endswith((".rs", ".toml"))]
    return max((os.path.getmtime(p), p) for p in paths if os.path.exists(p))


def warn_if_stale(info, label):
    mtime, path = newest_source()
    if os.path.getmtime(info["native"]) < mtime:
        print(f"# WARNING: the {label} native module is older than {os.path.relpath(path, ROOT)} "
              f"(edited {time.strftime('%H:%M:%S', time.localtime(mtime))}): the two builds may "
              f"not be of the same source; rebuild both (make bench-diag)", flush=True)


def clean_env(**extra):
    env = dict(os.environ)
    for k in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS"):
        env.pop(k, None)
    env.update(extra)
    return env


def probe(python):
    try:
        p = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60,
                           env=clean_env(), cwd=HERE)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def worker(python, loop, bench, repeat, quick, env):
    cmd = [python, WORKER, "--loop", loop, "--bench", bench, "--repeat", str(repeat)]
    return run_worker(cmd + (["--quick"] if quick else []), env=env, timeout=TIMEOUT)


def run_pairs(configs, benches, rounds, repeat, quick, rng, label):
    """configs: name -> (python, loop, env). Returns results[bench][config] = {round: ops/s}."""
    results = {b: {c: {} for c in configs} for b in benches}
    t0 = time.monotonic()
    failed = set()
    for rnd in range(1, rounds + 1):
        for b in benches:
            for c in rng.sample(list(configs), len(configs)):
                python, loop, env = configs[c]
                r = worker(python, loop, b, repeat, quick, env)
                if not r["ok"]:
                    if (b, c) not in failed:
                        print(f"# {label} round {rnd}: {c} failed {b}: {r['error']}", flush=True)
                        failed.add((b, c))
                    continue
                results[b][c][rnd] = r["ops_per_s"]
        print(f"# {label}: round {rnd}/{rounds} done ({time.monotonic() - t0:.0f}s)", flush=True)
    return results


def med(samples):
    return statistics.median(samples.values()) if samples else None


def cell(samples):
    if not samples:
        return "failed"
    m, v = med(samples), list(samples.values())
    return f"{si(m)} ±{(max(v) - min(v)) / 2 / m * 100:.0f}%"


def ratio(num, den):
    """(ratio of medians, min and max of the paired per-round ratios) or None."""
    if not num or not den:
        return None
    paired = [num[k] / den[k] for k in num if k in den]
    r = med(num) / med(den)
    return r, min(paired or [r]), max(paired or [r])


def ratio_cell(rt):
    return "n/a" if rt is None else f"{rt[0]:.3f}x ({rt[1]:.3f}-{rt[2]:.3f})"


def cost_cell(rt, num, den):
    """Slowdown of ``num`` relative to ``den`` in percent and in ns per operation."""
    if rt is None:
        return "n/a"
    ns = 1e9 / med(num) - 1e9 / med(den)
    return f"{(1 / rt[0] - 1) * 100:+.1f}% ({ns:+.1f} ns/op)"


def render(head, rows, markdown):
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w[0]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * x for x in w)] + [fmt(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="call_soon,pingpong",
                    help="comma-separated, from: " + ",".join(b for b in _worker.BENCHES if b not in _worker.LOOPLESS))
    ap.add_argument("--part", choices=["a", "b", "both"], default="both")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"),
                    help="interpreter with the default build (diagnostics compiled in)")
    ap.add_argument("--nodiag-python", default=os.path.join(ROOT, ".venv-nodiag", "bin", "python"),
                    help="interpreter with the build without the diagnostics feature")
    ap.add_argument("--rounds", type=int, default=9, help="paired rounds for part (a) (default 9)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per worker in part (a), best kept")
    ap.add_argument("--debug-rounds", type=int, default=5, help="paired rounds for part (b) (default 5)")
    ap.add_argument("--debug-repeat", type=int, default=1, help="timed runs per worker in part (b)")
    ap.add_argument("--no-stock", action="store_true", help="part (b): skip stock asyncio's debug cost")
    ap.add_argument("--markdown", action="store_true", help="Markdown tables (for the README)")
    ap.add_argument("--json", metavar="OUT", help="write the raw per-round results to this file")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    benches = [b for b in args.bench.split(",") if b]
    for b in benches:
        if b not in _worker.BENCHES or b in _worker.LOOPLESS:
            ap.error(f"unknown benchmark {b!r}")
    rng = random.Random(args.seed)
    args.python, args.nodiag_python = map(os.path.abspath, (args.python, args.nodiag_python))

    print("# command:", " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"# python {platform.python_version()}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    try:
        git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    print("# source tree:", git or "no git commit yet")

    default = probe(args.python)
    if "error" in default:
        print(f"error: {args.python}: cannot run ferroloop: {default['error']}", file=sys.stderr)
        return 2
    if not default["callbacks"]:
        print(f"error: {args.python}: loop.stats() counts no callbacks: this build has no "
              f"diagnostics (native module {default['native']})", file=sys.stderr)
        return 2
    print(f"# default build: {args.python} -> {default['native']} (built {default['built']})")
    warn_if_stale(default, "default")
    out = {"argv": sys.argv, "benches": benches, "default": default}

    if args.part in ("a", "both"):
        nodiag = probe(args.nodiag_python)
        if "error" in nodiag:
            print(f"error: {args.nodiag_python}: cannot run ferroloop: {nodiag['error']}\n"
                  f"(build it with `make bench-diag`, or use --part b)", file=sys.stderr)
            return 2
        if nodiag["native"] == default["native"]:
            print(f"error: both interpreters load the same native module {nodiag['native']}: "
                  f"`maturin develop` copies it into python/ferroloop/, so the last build wins. "
                  f"Install the nodiag build as a wheel (`make bench-diag` does).", file=sys.stderr)
            return 2
        if nodiag["callbacks"]:
            print(f"error: {args.nodiag_python}: loop.stats() counts callbacks "
                  f"({nodiag['callbacks']}): diagnostics are compiled in ({nodiag['native']})",
                  file=sys.stderr)
            return 2
        print(f"# compiled out: {args.nodiag_python} -> {nodiag['native']} (built {nodiag['built']})")
        warn_if_stale(nodiag, "compiled-out")
        print(f"# part (a): {args.rounds} paired round(s) x best of {args.repeat} timed run(s) per worker",
              flush=True)
        configs = {"compiled out": (args.nodiag_python, "ferroloop", clean_env()),
                   "compiled in": (args.python, "ferroloop", clean_env())}
        res_a = run_pairs(configs, benches, args.rounds, args.repeat, False, rng, "part (a)")
        out["a"] = res_a
    if args.part in ("b", "both"):
        print(f"# part (b): {args.debug_rounds} paired round(s) x best of {args.debug_repeat} timed "
              f"run(s) per worker, --quick (1/10 of the work)", flush=True)
        on = clean_env(PYTHONASYNCIODEBUG="1")
        configs = {"ferroloop off": (args.python, "ferroloop", clean_env()),
                   "ferroloop on": (args.python, "ferroloop", on)}
        if not args.no_stock:
            configs.update({"asyncio off": (args.python, "asyncio", clean_env()),
                            "asyncio on": (args.python, "asyncio", on)})
        res_b = run_pairs(configs, benches, args.debug_rounds, args.debug_repeat, True, rng, "part (b)")
        out["b"] = res_b

    if "a" in out:
        print("\n(a) diagnostics compiled in (default build, debug off) vs compiled out "
              "(cargo --no-default-features); ratio: throughput in / out, <1 = compiled in is slower\n")
        head = ["benchmark", "unit", "compiled out", "compiled in (debug off)", "in/out", "cost of compiled-in"]
        rows = []
        for b in benches:
            r = out["a"][b]
            rt = ratio(r["compiled in"], r["compiled out"])
            rows.append([LABELS.get(b, b), _worker.BENCHES[b][2], cell(r["compiled out"]),
                         cell(r["compiled in"]), ratio_cell(rt),
                         cost_cell(rt, r["compiled in"], r["compiled out"])])
        print(render(head, rows, args.markdown))
    if "b" in out:
        print("\n(b) debug mode on (PYTHONASYNCIODEBUG=1) vs off, default build, 1/10 of the work; "
              "ratio: throughput on / off\n")
        loops = ["ferroloop"] + ([] if args.no_stock else ["asyncio"])
        head = ["benchmark", "unit"]
        for lp in loops:
            head += [f"{lp} off", f"{lp} on", f"{lp} on/off"]
        if "asyncio" in loops:
            head += ["ferroloop on / asyncio on"]
        rows = []
        for b in benches:
            r = out["b"][b]
            row = [LABELS.get(b, b), _worker.BENCHES[b][2]]
            for lp in loops:
                rt = ratio(r[f"{lp} on"], r[f"{lp} off"])
                row += [cell(r[f"{lp} off"]), cell(r[f"{lp} on"]),
                        "n/a" if rt is None else f"{rt[0]:.3f}x ({rt[1]:.3f}-{rt[2]:.3f})"]
            if "asyncio" in loops:
                row.append(ratio_cell(ratio(r["ferroloop on"], r["asyncio on"])))
            rows.append(row)
        print(render(head, rows, args.markdown))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"\n# raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
