"""What production mode (the blocked-loop watchdog, python/ferroloop/_production.py) costs.

    make bench-prod                 # = .venv/bin/python bench/prod_overhead.py
    .venv/bin/python bench/prod_overhead.py --threshold 0.1 --rounds 15 --markdown

Paired, interleaved rounds of the micro benchmarks (bench/_worker.py: call_soon, sleep0,
pingpong by default) on ferroloop with the watchdog off and on (``FERROLOOP_WATCHDOG=<threshold>``
in the worker's environment: every loop the worker creates runs the watchdog thread, which
samples the loop's counters every threshold/4). In every round each benchmark runs once per
configuration, in shuffled order, each in a fresh interpreter reporting the best of
``--repeat`` timed runs; the table gives the median over rounds of each configuration and the
ratio on/off (median of the two medians, and the range of the per-round paired ratios).
Target: on/off >= 0.98 on every row.

A probe first checks that the environment really switches the watchdog on (a loop reports the
threshold and a ``ferroloop-watchdog`` thread runs) and off.

On a shared, loaded machine the process-level pairs above are seconds apart and the load changes
in between. The default mode (``--mode inproc``) pairs at a finer grain: one fresh interpreter
per benchmark and round runs ``--pairs`` pairs of timed runs back to back, off and on in random
order within each pair, each side on its own loop, created once and reused by all its timed runs
(``loop.set_watchdog(threshold)`` for "on": the same thread as the environment variable's, which
lingers between runs; ``--fresh-loops`` creates a loop per timed run instead, so that every "on"
run also pays the thread's start, a wait for the new thread to be scheduled); the ratio of each pair is taken on
wall time and on process CPU time (which includes the watchdog thread's own CPU), and the table
gives the median of the per-pair ratios over all pairs and rounds, and the ratio of the best
run of each side. ``--mode process`` runs the process-level pairs described first.
"""

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _worker  # noqa: E402
from diag_overhead import cell, clean_env, ratio, ratio_cell, render, run_pairs  # noqa: E402
from run import LABELS, si  # noqa: E402

PROBE = r"""
import json, threading, ferroloop
loop = ferroloop.new_event_loop()
seen = []
loop.call_soon(lambda: seen.append(sorted(t.name for t in threading.enumerate())))
loop.call_soon(loop.stop)
loop.run_forever()
print(json.dumps({"threshold": loop.get_watchdog(), "threads": seen[0]}))
loop.close()
"""


INPROC = r"""
import asyncio, gc, json, random, sys, time
sys.path.insert(0, {here!r})
import _worker, ferroloop
func, n, _unit = _worker.BENCHES[{bench!r}]
rng = random.Random({seed})
FRESH = {fresh}
loops = {{}}

def new_loop(on):
    loop = ferroloop.new_event_loop()
    if on:
        loop.set_watchdog({threshold})
    return loop

def once(on):
    loop = new_loop(on) if FRESH else loops.setdefault(on, new_loop(on))
    asyncio.set_event_loop(loop)
    try:
        gc.collect()
        c0 = time.process_time()
        ops, dt = func(loop, n)
        return dt, time.process_time() - c0, ops
    finally:
        asyncio.set_event_loop(None)
        if FRESH:
            loop.close()

once(False); once(True)  # warm-up
out = []
for _ in range({pairs}):
    order = [False, True]
    rng.shuffle(order)
    r = {{on: once(on) for on in order}}
    out.append([r[False][0], r[True][0], r[False][1], r[True][1], r[False][2]])
for loop in loops.values():
    loop.close()
print(json.dumps(out))
"""


def run_inproc(python, benches, rounds, pairs, threshold, rng, fresh):
    """results[bench] = list of (wall off, wall on, cpu off, cpu on, ops) over all pairs."""
    results = {b: [] for b in benches}
    t0 = time.monotonic()
    env = clean_env()
    env.pop("FERROLOOP_WATCHDOG", None)
    for rnd in range(1, rounds + 1):
        for b in rng.sample(benches, len(benches)):
            src = INPROC.format(here=HERE, bench=b, seed=rng.randrange(1 << 30), pairs=pairs,
                                threshold=float(threshold), fresh=fresh)
            p = subprocess.run([python, "-c", src], capture_output=True, text=True, timeout=600,
                               env=env, cwd=HERE)
            if p.returncode:
                print(f"# round {rnd}: {b} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            results[b] += json.loads(p.stdout.strip().splitlines()[-1])
        print(f"# bench-prod: round {rnd}/{rounds} done ({time.monotonic() - t0:.0f}s)", flush=True)
    return results


def _median(xs):
    xs = sorted(xs)
    k = len(xs)
    return (xs[k // 2] + xs[(k - 1) // 2]) / 2 if xs else None


def inproc_table(results, benches, markdown):
    head = ["benchmark", "unit", "pairs", "off (best)", "on (best)", "on/off wall: median of pairs",
            "on/off wall: best vs best", "on/off CPU: median of pairs"]
    rows, worst = [], None
    for b in benches:
        r = results[b]
        if not r:
            rows.append([LABELS.get(b, b), _worker.BENCHES[b][2], "0"] + ["failed"] * 5)
            continue
        ops = r[0][4]
        wall = [off / on for off, on, _co, _cn, _ in r]  # throughput on/off = time off/time on
        cpu = [co / cn for _off, _on, co, cn, _ in r if cn > 0]
        best_off, best_on = min(x[0] for x in r), min(x[1] for x in r)
        q = sorted(wall)
        lo, hi = q[len(q) // 10], q[-1 - len(q) // 10]
        med = _median(wall)
        worst = med if worst is None else min(worst, med)
        rows.append([LABELS.get(b, b), _worker.BENCHES[b][2], str(len(r)),
                     si(ops / best_off), si(ops / best_on),
                     f"{med:.3f}x (p10-p90 {lo:.3f}-{hi:.3f})", f"{best_off / best_on:.3f}x",
                     f"{_median(cpu):.3f}x"])
    return render(head, rows, markdown), worst


def probe(python, env):
    p = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60, env=env,
                       cwd=HERE)
    if p.returncode:
        raise SystemExit(f"probe failed: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="call_soon,sleep0,pingpong")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--threshold", default="0.5", help="FERROLOOP_WATCHDOG for the 'on' runs")
    ap.add_argument("--mode", choices=["inproc", "process"], default="inproc")
    ap.add_argument("--pairs", type=int, default=10, help="--mode inproc: pairs per process")
    ap.add_argument("--fresh-loops", action="store_true",
                    help="--mode inproc: a new loop for every timed run (each 'on' run then "
                         "includes starting the watchdog thread) instead of one loop per side")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    benches = [b for b in args.bench.split(",") if b]
    for b in benches:
        if b not in _worker.BENCHES or b in _worker.LOOPLESS:
            ap.error(f"unknown benchmark {b!r}")
    rng = random.Random(args.seed)
    python = os.path.abspath(args.python)

    print("# command:", " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"# python {platform.python_version()}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    try:
        git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    print("# source tree:", git or "no git commit yet")

    off_env = clean_env()
    off_env.pop("FERROLOOP_WATCHDOG", None)
    on_env = dict(off_env, FERROLOOP_WATCHDOG=args.threshold)
    off, on = probe(python, off_env), probe(python, on_env)
    if off["threshold"] is not None or "ferroloop-watchdog" in off["threads"]:
        raise SystemExit(f"the 'off' configuration runs a watchdog: {off}")
    if on["threshold"] != float(args.threshold) or "ferroloop-watchdog" not in on["threads"]:
        raise SystemExit(f"FERROLOOP_WATCHDOG={args.threshold} did not start the watchdog: {on}")
    print(f"# watchdog on: FERROLOOP_WATCHDOG={args.threshold} (checks every "
          f"{float(args.threshold) / 4:g} s); probe: {on}")
    if args.mode == "inproc":
        print(f"# {args.rounds} round(s) x {args.pairs} back-to-back pairs per benchmark, one "
              f"fresh interpreter per benchmark and round; "
              + ("a new loop per timed run" if args.fresh_loops else
                 "one loop per side, reused by its timed runs (the steady state: the 'on' loop's "
                 "watchdog thread lingers between runs)"), flush=True)
        res = run_inproc(python, benches, args.rounds, args.pairs, args.threshold, rng,
                         args.fresh_loops)
        table, worst = inproc_table(res, benches, args.markdown)
        print(f"\nproduction mode: watchdog on (threshold {args.threshold} s) vs off; ratio: "
              f"throughput on / off, <1 = the watchdog costs\n")
        print(table)
        print(f"\nworst median on/off ratio: {worst:.3f} (target >= 0.98)")
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"argv": sys.argv, "threshold": args.threshold, "results": res}, f)
        return 0
    print(f"# {args.rounds} paired round(s) x best of {args.repeat} timed run(s) per worker",
          flush=True)
    configs = {"off": (python, "ferroloop", off_env), "on": (python, "ferroloop", on_env)}
    res = run_pairs(configs, benches, args.rounds, args.repeat, False, rng, "bench-prod")

    print(f"\nproduction mode: watchdog on (threshold {args.threshold} s) vs off; "
          f"ratio: throughput on / off, <1 = the watchdog costs\n")
    head = ["benchmark", "unit", "watchdog off", "watchdog on", "on/off (per-round range)"]
    rows, worst = [], None
    for b in benches:
        r = res[b]
        rt = ratio(r["on"], r["off"])
        if rt is not None:
            worst = rt[0] if worst is None else min(worst, rt[0])
        rows.append([LABELS.get(b, b), _worker.BENCHES[b][2], cell(r["off"]), cell(r["on"]),
                     ratio_cell(rt)])
    print(render(head, rows, args.markdown))
    if worst is not None:
        print(f"\nworst on/off ratio: {worst:.3f} (target >= 0.98)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "threshold": args.threshold, "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
