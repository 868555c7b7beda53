"""Micro benchmarks: ferroloop vs stock asyncio vs uvloop (and rloop / rsloop if installed).

    python bench/run.py                      # all benchmarks, 5 interleaved rounds (~2-3 min)
    python bench/run.py --quick              # smoke test: 1 round, 1/10 of the work (~5 s)
    python bench/run.py --bench call_soon,sleep0 --loops asyncio,ferroloop --rounds 7
    python bench/run.py --markdown --json bench/results/latest.json
    make baseline REV=HEAD~1 && python bench/run.py --loops ferroloop --baseline target/baseline/site

Method (see bench/README.md): every (loop, benchmark) measurement is a fresh interpreter running
bench/_worker.py, which reports its fastest of --repeat timed runs.  Rounds are interleaved:
round r runs every benchmark on every loop, loops in a shuffled order, so slow drifts of a noisy
machine hit all loops alike.  We report the median over rounds, the min-max spread, and
throughput ratios ferroloop / other loop (> 1 means ferroloop is faster).

An A/B of two builds of ferroloop: ``--baseline DIR`` adds the loop ``baseline``, ferroloop
imported from DIR (``make baseline REV=...`` builds a commit into ``target/baseline/site``),
interleaved with the others in every round; its column ``ferroloop/baseline`` is the change's
speed-up, with the range of the per-round ratios.
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
sys.path.insert(0, HERE)
import _worker  # noqa: E402  (only for the benchmark table: names, units; nothing is timed here)

WORKER = os.path.join(HERE, "_worker.py")
ALL_LOOPS = ["asyncio", "uvloop", "ferroloop", "rloop", "rsloop"]
OPTIONAL = {"rloop", "rsloop"}        # peers: skipped silently when not importable
REF = "ferroloop"                     # the loop whose ratios we report
TIMEOUT = 60                          # seconds per worker (its own watchdog; run.py waits a bit more)

LABELS = {
    "call_soon": "call_soon(cb)",
    "call_soon_2args": "call_soon(cb, a, b)",
    "call_later_cancel": "call_later + cancel",
    "sleep0": "await sleep(0)",
    "gather": "create_task + gather",
    "pingpong": "future ping-pong",
    "sleep0_fd": "await sleep(0), 1 idle fd",
    "pingpong_fd": "future ping-pong, 1 idle fd",
    "threadsafe": "call_soon_threadsafe (thread)",
    "floor": "bare Python call (floor)",
}


def run_worker(cmd, env=None, timeout=TIMEOUT):
    """Run one worker process (``cmd`` ends with its options); return the JSON object on the
    last line of its output, or an error dict. Shared by every bench script."""
    try:
        p = subprocess.run(cmd + ["--timeout", str(timeout)], capture_output=True, text=True,
                           timeout=timeout + 30, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout}s"}
    lines = p.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"worker exited {p.returncode}: {err}"}


def worker(args, extra):
    """Run one worker process of this interpreter; return its JSON result (or an error dict)."""
    return run_worker([sys.executable, WORKER] + extra)


BASELINE = "baseline"  # the loop name of --baseline: ferroloop imported from another directory


def loop_args(args, name):
    """The worker's options that select loop `name`."""
    if name == BASELINE:
        return ["--loop", "ferroloop", "--ferroloop-from", args.baseline]
    return ["--loop", name]


def probe_loops(args):
    """Keep the loops that can be created; say why the others are skipped (silently for the
    optional peers). With --baseline, check that the two ferroloops are different files."""
    ok, versions, files = [], {}, {}
    for name in args.loops:
        r = worker(args, loop_args(args, name) + ["--probe"])
        if r["ok"]:
            ok.append(name)
            versions[name] = r.get("version", "?")
            files[name] = r.get("file")
        elif name not in OPTIONAL or args.loops_given:
            print(f"# {name}: unavailable, skipped ({r['error']})")
    if BASELINE in files:
        base = os.path.realpath(args.baseline)
        if not (files[BASELINE] or "").startswith(base + os.sep):
            raise SystemExit(f"--baseline {args.baseline}: ferroloop was imported from "
                             f"{files[BASELINE]}, not from that directory")
        if (files.get(REF) or "").startswith(base + os.sep):
            raise SystemExit(f"--baseline {args.baseline}: the ferroloop under test comes from the "
                             "same directory")
        rev = os.path.join(args.baseline, "REVISION")
        if os.path.exists(rev):
            with open(rev) as f:
                versions[BASELINE] += f" at {f.read().strip()}"
        versions[BASELINE] += f" from {args.baseline}"
    return ok, versions


# ------------------------------------------------------------------------------------ formatting

def si(x):
    """1234567 -> '1.23M'."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.3g}"


def summarize(samples):
    """Median and min/max of the per-round throughputs (ops/s)."""
    return statistics.median(samples), min(samples), max(samples)


def cell(samples):
    """'1.23M ±4%': median, and half the min-max range relative to the median."""
    if not samples:
        return "failed"
    med, lo, hi = summarize(samples)
    return f"{si(med)} ±{(hi - lo) / 2 / med * 100:.0f}%"


def ratio_cell(ref, other):
    """Ratio of medians, and the range of the per-round ratios (rounds are paired: same round =
    same machine state), e.g. '1.52x (1.40-1.61)'."""
    if not ref or not other:
        return "n/a"
    r = statistics.median(ref.values()) / statistics.median(other.values())
    paired = [ref[k] / other[k] for k in ref if k in other] or [r]
    return f"{r:.2f}x ({min(paired):.2f}-{max(paired):.2f})"


def table(results, loops, benches, markdown):
    """results[bench][loop] = {round: ops/s} (failed rounds omitted)."""
    # Ratio columns: ferroloop vs uvloop first (the loop to beat), then the others.
    others = sorted((l for l in loops if l != REF), key=lambda l: l != "uvloop") if REF in loops else []
    head = ["benchmark", "unit"] + loops + [f"{REF}/{o}" for o in others]
    rows = []
    for b in benches:
        if b in _worker.LOOPLESS:
            continue
        r = results[b]
        rows.append([LABELS[b], _worker.BENCHES[b][2]] + [cell(list(r.get(l, {}).values())) for l in loops]
                    + [ratio_cell(r.get(REF, {}), r.get(o, {})) for o in others])
    return render(head, rows, markdown)


def floor_table(results, floor_ns, loops, benches, markdown):
    """The loop's own cost per call_soon callback: ns/callback minus ns/bare call."""
    head = ["benchmark", "floor ns/call"] + [f"{l} ns/cb (above floor)" for l in loops]
    rows = []
    for b, key in (("call_soon", "ns"), ("call_soon_2args", "ns_2args")):
        if b not in benches or key not in floor_ns:
            continue
        f = floor_ns[key]
        row = [LABELS[b], f"{f:.1f}"]
        for l in loops:
            s = results[b].get(l)
            if s:
                ns = 1e9 / statistics.median(s.values())
                row.append(f"{ns:.1f} ({ns - f:+.1f})")
            else:
                row.append("failed")
        rows.append(row)
    return render(head, rows, markdown) if rows else ""


def render(head, rows, markdown):
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w[0]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * x for x in w)] + [fmt(r) for r in rows])


# ------------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default=",".join(_worker.BENCHES),
                    help="comma-separated, from: " + ",".join(_worker.BENCHES))
    ap.add_argument("--loops", default=None, help="comma-separated (default: " + ",".join(ALL_LOOPS) + ")")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, --quick 1)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per worker, best kept (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1/10 of the work, 1 round")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables (for the README)")
    ap.add_argument("--json", metavar="OUT", help="write every raw measurement to this file")
    ap.add_argument("--no-gc", action="store_true",
                    help="diagnosis: disable the cyclic GC in the timed runs (not realistic)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the in-round shuffle")
    ap.add_argument("--baseline", metavar="DIR",
                    help="A/B: also run ferroloop imported from DIR, as the loop 'baseline' "
                         "(make baseline REV=... builds one into target/baseline/site)")
    args = ap.parse_args()
    args.loops_given = args.loops is not None
    args.loops = (args.loops or ",".join(ALL_LOOPS)).split(",")
    if args.baseline:
        if not os.path.isdir(os.path.join(args.baseline, "ferroloop")):
            ap.error(f"--baseline {args.baseline}: no ferroloop package in that directory")
        if REF not in args.loops:
            args.loops.append(REF)
        args.loops.append(BASELINE)
    benches = [b for b in args.bench.split(",") if b]
    for b in benches:
        if b not in _worker.BENCHES:
            ap.error(f"unknown benchmark {b!r}; choose from {', '.join(_worker.BENCHES)}")
    rounds = args.rounds or (1 if args.quick else 5)
    repeat = args.repeat or (1 if args.quick else 3)
    rng = random.Random(args.seed)

    print("# command:", " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"# python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    try:  # which ferroloop source tree this is (the loop is being developed)
        git = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    print("# source tree:", git or "no git commit yet")
    loops, versions = probe_loops(args)
    print("# loops:", ", ".join(f"{l} {versions[l]}" for l in loops) or "none")
    print(f"# {rounds} round(s) x {repeat} timed run(s) per worker{', quick' if args.quick else ''}{', GC OFF' if args.no_gc else ''}"
          "; cells: median ±half min-max spread; ratios: throughput, >1 = ferroloop faster",
          flush=True)

    results = {b: {l: {} for l in loops} for b in benches}
    floor_ns, raw, errors, hung = {}, [], set(), set()
    t_start = time.monotonic()
    for rnd in range(1, rounds + 1):
        for b in benches:
            # The floor needs no loop: measure it once per round.
            order = ["-"] if b in _worker.LOOPLESS else rng.sample(loops, len(loops))
            for l in order:
                if (b, l) in hung:
                    continue
                extra = loop_args(args, "asyncio" if l == "-" else l) + ["--bench", b, "--repeat", str(repeat)]
                extra += (["--quick"] if args.quick else []) + (["--no-gc"] if args.no_gc else [])
                r = worker(args, extra)
                raw.append({"round": rnd, "bench": b, "loop": l, **r})
                if not r["ok"]:
                    if (b, l) not in errors:  # print each distinct failure once
                        print(f"# round {rnd}: {l} failed {b}: {r['error']}", flush=True)
                    errors.add((b, l))
                    if r["error"].startswith("timeout"):
                        hung.add((b, l))      # do not wait for it again in later rounds
                    continue
                results[b].setdefault(l, {})[rnd] = r["ops_per_s"]
        print(f"# round {rnd}/{rounds} done ({time.monotonic() - t_start:.0f}s)", flush=True)

    if "floor" in benches and results["floor"].get("-"):
        fl = [x for x in raw if x["bench"] == "floor" and x["ok"]]
        floor_ns["ns"] = statistics.median(x["ns_per_op"] for x in fl)
        floor_ns["ns_2args"] = statistics.median(x["extra"]["ns_2args"] for x in fl)
        s = list(results["floor"]["-"].values())
        print(f"\nfloor: bare Python call f(): {floor_ns['ns']:.1f} ns = {cell(s)} calls/s; "
              f"f(a, b): {floor_ns['ns_2args']:.1f} ns")

    print()
    print(table(results, loops, benches, args.markdown))
    ft = floor_table(results, floor_ns, loops, benches, args.markdown)
    if ft:
        print("\nloop cost per call_soon callback, ns (in brackets: above the bare-call floor)\n")
        print(ft)

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "python": sys.version, "loops": versions,
                       "rounds": rounds, "repeat": repeat, "quick": args.quick,
                       "floor_ns": floor_ns, "results": results, "raw": raw}, f, indent=1)
        print(f"\n# raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
