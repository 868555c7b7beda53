#!/usr/bin/env python3
"""Conformance runner: CPython's own test.test_asyncio with ferroloop underneath.

For every module it runs the suite twice, in separate worker processes
(worker.py): once on the stock loop and once with the loop under test
substituted wherever the suite creates a real event loop.  A test that passes
on stock but not on the loop under test is a regression; the run exits 1 on
any regression that exclusions.toml does not list.

    python tests/conformance/run.py                      # ferroloop, default modules
    python tests/conformance/run.py --loop tests.conformance.standin_loop   # self-check
    python tests/conformance/run.py --modules test_events -k reader -v

Stdlib only (tomllib: Python >= 3.11).  Nothing is cached between runs; the
workers' JSON streams and logs live in a temporary directory (--keep-logs DIR
keeps them).
"""

import argparse
import concurrent.futures
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "worker.py")
CONFIG = os.path.join(HERE, "exclusions.toml")
PACKAGE = "test.test_asyncio"
PYVER = "%d.%d" % sys.version_info[:2]
OK = {"pass", "xfail"}        # statuses that count as "passes"
MAX_RESTARTS = 25             # per job; beyond this the rest is reported "not run"
POLL = 0.3                    # seconds between looks at a worker's stream

_print_lock = threading.Lock()


def say(*args, **kw):
    with _print_lock:
        print(*args, **kw, flush=True)


def short(test_id):
    return test_id[len(PACKAGE) + 1:] if test_id.startswith(PACKAGE + ".") else test_id


# --------------------------------------------------------------------------
# Configuration: module groups and exclusions
# --------------------------------------------------------------------------

class ConfigError(Exception):
    pass


def load_config(path):
    """Returns ({group: [module, ...]}, [exclusion, ...]) for this Python.

    An exclusion is {"category", "reason", "tests": [glob, ...], "python":
    [versions]?}; the globs match ids without the "test.test_asyncio." prefix.
    """
    with open(path, "rb") as f:
        data = tomllib.load(f)
    groups = data.get("modules", {})
    if "default" not in groups:
        raise ConfigError(f"{path}: [modules] needs a 'default' list")
    exclusions = []
    for i, entry in enumerate(data.get("exclude", []), 1):
        where = f"{path}: [[exclude]] #{i}"
        unknown = set(entry) - {"category", "reason", "tests", "python"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("category", "reason", "tests"):
            if not entry.get(key):
                raise ConfigError(f"{where}: '{key}' is required")
        if isinstance(entry["tests"], str) or isinstance(entry.get("python"), str):
            raise ConfigError(f"{where}: 'tests' and 'python' must be lists")
        if "python" in entry and PYVER not in entry["python"]:
            continue  # an exclusion for another Python version
        exclusions.append(entry)
    return groups, exclusions


def find_exclusion(exclusions, test_id):
    sid = short(test_id)
    for entry in exclusions:
        if any(fnmatch.fnmatchcase(sid, pat) for pat in entry["tests"]):
            return entry
    return None


def resolve_modules(spec, groups):
    """'a,b,default' -> module names; group names from [modules] expand."""
    out = []

    def add(item, depth=0):
        if item in groups and depth < 5:  # a group may name other groups
            for sub in groups[item]:
                add(sub, depth + 1)
        elif item not in out:
            out.append(item)

    for item in filter(None, (s.strip() for s in spec.split(","))):
        add(item)
    return out


def module_exists(name):
    try:
        return importlib.util.find_spec(f"{PACKAGE}.{name}") is not None
    except ImportError:
        return False


# --------------------------------------------------------------------------
# One job = one module on one loop, in a (restartable) worker process
# --------------------------------------------------------------------------

class StreamReader:
    """Reads complete JSON lines appended to a file since the last call."""

    def __init__(self, path):
        self.path, self.pos = path, 0

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # leave a half-written line for next time
        self.pos += end
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


class Job:
    def __init__(self, module, loop, opts, workdir):
        self.module, self.loop, self.opts = module, loop, opts
        tag = re.sub(r"[^A-Za-z0-9_]+", "_", loop)
        self.base = os.path.join(workdir, f"{module}.{tag}")
        self.listed = None          # ids the worker selected, in order
        self.results = {}           # id -> record (tests)
        self.fixtures = {}          # id -> record (setUpClass/tearDownModule errors)
        self.loops = 0              # loops of the measured type created
        self.notes = []             # crashes, timeouts, early exits
        self.finished = False       # the suite ran to its end
        self.seconds = 0.0
        self.restarts = 0

    def run(self):
        start = time.monotonic()
        deadline = start + self.opts.budget
        reader = StreamReader(self.base + ".jsonl")
        if os.path.exists(reader.path):  # --keep-logs DIR reused: never mix in old results
            os.remove(reader.path)
        for attempt in range(1, MAX_RESTARTS + 2):
            log_path = f"{self.base}.{attempt}.log"
            status = self._attempt(reader, log_path, deadline)
            if status == "done":
                self.finished = True
                break
            if status == "budget":
                self.notes.append(f"module budget of {self.opts.budget:.0f}s used up; "
                                  "the remaining tests count as not run")
                break
            if status == "died":
                break
            # "restart": a test crashed or hung; carry on with the rest.
        else:
            self.notes.append(f"gave up after {MAX_RESTARTS} restarts")
        if self.restarts:
            self.notes.append(f"worker restarted {self.restarts} time(s) after a crash or hang "
                              "(those tests are listed as crashed/timeout)")
        self.seconds = time.monotonic() - start
        return self

    def _attempt(self, reader, log_path, deadline):
        skip_path = self.base + ".skip"
        with open(skip_path, "w", encoding="utf-8") as f:
            f.write("\n".join(list(self.results) + list(self.fixtures)))
        cmd = [sys.executable, WORKER, "--module", self.module, "--loop", self.loop,
               "--out", reader.path, "--skip-file", skip_path,
               "--timeout", str(self.opts.timeout)]
        for pat in self.opts.patterns:
            cmd += ["-k", pat]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=REPO_ROOT, env=env)
        inflight = None             # (id, wall time it started)
        known_before = len(self.results)
        killed = None               # why the parent killed the worker, if it did
        done = False
        while True:
            exited = proc.poll() is not None
            for rec in reader.read():
                inflight, done = self._take(rec, inflight, done)
            if exited:
                break
            now = time.time()
            # Backstop for the worker's own faulthandler watchdog (e.g. a hang
            # in native code that also stops that watchdog).
            if inflight and now - inflight[1] > self.opts.timeout + 30:
                killed = "timeout"
            elif time.monotonic() > deadline:
                killed = "budget"
            if killed:
                self._kill(proc)
                for rec in reader.read():
                    inflight, done = self._take(rec, inflight, done)
                break
            time.sleep(POLL)
        if done:
            return "done"
        log_text = _read(log_path)
        if inflight:
            tid, started = inflight
            tail = _tail_after_marker(log_text, tid)
            if killed == "budget":
                status = "timeout"
                why = "killed: module budget exhausted during this test"
            elif killed == "timeout" or "Timeout (" in tail:
                status, why = "timeout", f"hung for more than {self.opts.timeout:.0f}s"
            else:
                status, why = "crashed", f"worker died ({_describe_rc(proc.returncode)})"
            self.results[tid] = {"id": tid, "status": status, "reason": why,
                                 "tb": tail, "loops": 0}
            if killed == "budget":
                return "budget"
            self.restarts += 1
            return "restart"
        if killed == "budget":
            return "budget"
        # Died outside any test: import error, a crash in setUpClass or
        # tearDownModule, ...  Worth a restart only if this attempt got
        # somewhere and tests remain (a crash before any progress would repeat).
        # Recorded like a failed fixture, so that it counts as a regression
        # when stock does not do the same.
        last = short(next(reversed(self.results), "(start)"))
        fid = f"worker died outside a test, after {last}"
        why = f"worker exited ({_describe_rc(proc.returncode)})"
        self.fixtures[fid] = {"id": fid, "status": "crashed", "reason": why,
                              "tb": _last_lines(log_text, 40), "loops": 0}
        self.notes.append(f"{why} outside a test, after {last}")
        remaining = set(self.listed or []) - set(self.results)
        if len(self.results) > known_before and remaining:
            self.restarts += 1
            return "restart"
        return "died"

    def _take(self, rec, inflight, done):
        if "listed" in rec:
            if self.listed is None:
                self.listed = rec["listed"]
        elif "start" in rec:
            inflight = (rec["start"], rec["t"])
        elif "done" in rec:
            self.loops += rec.get("loops", 0)
            done = True
        elif "id" in rec:
            self.loops += rec.get("loops", 0)
            (self.fixtures if rec.get("fixture") else self.results)[rec["id"]] = rec
            if inflight and inflight[0] == rec["id"]:
                inflight = None
        return inflight, done

    @staticmethod
    def _kill(proc):
        # SIGABRT first: the worker's faulthandler prints every thread's stack,
        # which is what one wants to see for a hang.
        try:
            proc.send_signal(signal.SIGABRT)
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def passing(self):
        return {tid for tid, rec in self.results.items() if rec["status"] in OK}


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _tail_after_marker(text, tid, max_lines=60):
    marker = f"### START {tid}\n"
    pos = text.rfind(marker)
    if pos >= 0:
        text = text[pos + len(marker):]
    return _last_lines(text, max_lines)


def _last_lines(text, n):
    return "\n".join(text.rstrip().splitlines()[-n:])


def _indent(text, pad="      "):
    return "\n".join(pad + line for line in text.splitlines())


def _describe_rc(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


# --------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------

def compare(stock, test, exclusions):
    """What passes on stock but not on the loop under test, split by exclusions."""
    test_pass = test.passing()
    regressions, excluded, stale = [], [], []
    for tid in sorted(stock.passing() - test_pass):
        rec = test.results.get(tid)
        if rec is None:
            item = {"id": tid, "status": "not run",
                    "reason": "never ran (crash, budget, or a failed fixture)"}
        else:
            item = {"id": tid, "status": rec["status"], "reason": rec.get("reason", ""),
                    "tb": rec.get("tb", "")}
        entry = find_exclusion(exclusions, tid)
        if entry:
            excluded.append(dict(item, category=entry["category"]))
        else:
            regressions.append(item)
    # Fixture errors (setUpClass, tearDownModule...) that stock does not have.
    for fid, rec in sorted(test.fixtures.items()):
        if rec["status"] in ("fail", "error", "crashed") and fid not in stock.fixtures:
            item = {"id": fid, "status": rec["status"], "reason": rec.get("reason", ""),
                    "tb": rec.get("tb", "")}
            entry = find_exclusion(exclusions, fid)
            (excluded if entry else regressions).append(
                dict(item, category=entry["category"]) if entry else item)
    for tid in sorted(test_pass):
        entry = find_exclusion(exclusions, tid)
        if entry:
            stale.append({"id": tid, "category": entry["category"], "reason": entry["reason"]})
    return regressions, excluded, stale


def report(modules, jobs, exclusions, opts, missing):
    loop = opts.loop
    rows, summary, total_regressions = [], {}, 0
    for m in modules:
        stock, test = jobs[(m, "stock")], jobs[(m, loop)]
        regressions, excluded, stale = compare(stock, test, exclusions)
        total_regressions += len(regressions)
        summary[m] = {
            "tests": len(stock.listed or []),
            "stock_pass": len(stock.passing()), "loop_pass": len(test.passing()),
            "stock_loops": stock.loops, "loops": test.loops,
            "regressions": regressions,  # with tracebacks: the JSON is for digging in
            "excluded": [{k: v for k, v in r.items() if k != "tb"} for r in excluded],
            "stale_exclusions": stale,
            "notes": {"stock": stock.notes, "loop": test.notes},
            "seconds": {"stock": round(stock.seconds, 1), "loop": round(test.seconds, 1)},
        }
        rows.append((m, summary[m], regressions, excluded, stale, stock, test))

    # Short display name: "ferroloop", "standin_loop".
    name = os.path.splitext(os.path.basename(loop))[0] if loop.endswith(".py") else loop.rsplit(".", 1)[-1]
    w = max([len(m) for m in modules + missing] + [6])
    print()
    print(f"Conformance on Python {sys.version.split()[0]}: stock asyncio vs {name}")
    print(f"{'module':<{w}}  {'tests':>5}  {'stock':>5}  {'loop':>5}  "
          f"{'loops':>6}  {'regr':>4}  {'excl':>4}  (loops = {name} loops the module created)")
    for m, s, regressions, excluded, stale, stock, test in rows:
        flag = "   <-- created no loops: measured nothing" if s["loops"] == 0 else ""
        print(f"{m:<{w}}  {s['tests']:>5}  {s['stock_pass']:>5}  {s['loop_pass']:>5}  "
              f"{s['loops']:>6}  {len(regressions):>4}  {len(excluded):>4}{flag}")
    for m in missing:
        print(f"{m:<{w}}  (not in this Python's test.test_asyncio: skipped)")

    for m, s, regressions, excluded, stale, stock, test in rows:
        lines = []
        not_run = [r for r in regressions if r["status"] == "not run"]
        for r in regressions:
            if r["status"] == "not run":
                continue
            lines.append(f"  FAIL {short(r['id'])}: [{r['status']}] {r['reason']}")
            if opts.verbose and r.get("tb"):
                lines.append(_indent(r["tb"].rstrip()))
        if not_run:
            # Usually a consequence of one crash/budget/fixture failure above:
            # one line each would bury it.
            shown = not_run if opts.verbose else not_run[:5]
            lines.append(f"  FAIL {len(not_run)} test(s) never ran (crash, budget, or a failed "
                         f"setUpClass/setUpModule): "
                         + ", ".join(short(r["id"]) for r in shown)
                         + ("" if len(shown) == len(not_run) else ", ... (all with -v)"))
        if excluded:
            by_cat = {}
            for r in excluded:
                by_cat.setdefault(r["category"], []).append(r)
            for cat, items in sorted(by_cat.items()):
                lines.append(f"  excluded ({cat}): {len(items)}")
                if opts.verbose:
                    lines += [f"    {short(r['id'])}: [{r['status']}] {r['reason']}" for r in items]
        if stale:
            # One warning per exclusion entry: a feature landing makes a whole
            # entry stale at once.
            by_entry = {}
            for r in stale:
                by_entry.setdefault((r["category"], r["reason"]), []).append(short(r["id"]))
            for (cat, reason), ids in by_entry.items():
                shown = ids if opts.verbose else ids[:3]
                lines.append(f"  WARNING stale exclusion ({cat}: {reason}): {len(ids)} excluded "
                             f"test(s) now pass: {', '.join(shown)}"
                             + ("" if len(shown) == len(ids) else ", ... (all with -v)"))
        for who, job in (("stock", stock), (name, test)):
            for note in job.notes:
                lines.append(f"  note ({who}): {note}")
        if s["loops"] == 0:
            lines.append(f"  NOTE: no {name} loop was created: this module measured nothing "
                         f"about {name} (stock created {s['stock_loops']} real loops)")
        if lines:
            print(f"\n{m}: stock {s['stock_pass']} passed, {name} {s['loop_pass']} passed, "
                  f"{s['loops']} loops, {stock.seconds:.0f}s/{test.seconds:.0f}s")
            print("\n".join(lines))

    # Exclusion globs that matched no test at all are probably typos or
    # renamed tests (only meaningful when every test of the module ran).
    if not opts.patterns:
        seen = set()
        for (m, lp), job in jobs.items():
            seen.update(short(t) for t in (job.listed or []))
            seen.update(short(t) for t in job.fixtures)
        for entry in exclusions:
            for pat in entry["tests"]:
                if pat.split(".")[0] in modules and not any(fnmatch.fnmatchcase(t, pat) for t in seen):
                    print(f"\nWARNING exclusion pattern matches no test: {pat!r} ({entry['category']})")

    status = 1 if total_regressions else 0
    print()
    if total_regressions:
        print(f"FAILED: {total_regressions} test(s) pass on stock asyncio but not on {name} "
              f"(not excluded in {os.path.relpath(opts.config)})")
    else:
        print(f"OK: every stock-passing test passes on {name} or is excluded")
    # The plain closing line CI tools read: tests passing on the loop under test, and the
    # regressions (stock-passing tests failing on it, not excluded).
    passed_on_loop = sum(s["loop_pass"] for s in summary.values())
    print(f"conformance: {passed_on_loop} passed, {total_regressions} failed")
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as f:
            json.dump({"python": sys.version.split()[0], "loop": loop, "exit_status": status,
                       "missing_modules": missing, "modules": summary}, f, indent=1)
    return status


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--modules", default="default",
                    help="comma list of test_asyncio modules and/or group names from the "
                         "[modules] table of the config (default: 'default')")
    ap.add_argument("--loop", default="ferroloop",
                    help="module providing new_event_loop, Loop, EventLoopPolicy; or a .py path "
                         "(self-check: tests.conformance.standin_loop). Default: ferroloop")
    ap.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes at once (default: 2)")
    ap.add_argument("-k", action="append", default=[], dest="patterns", metavar="PATTERN",
                    help="only tests matching (unittest -k semantics; repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-test timeout, s (120)")
    ap.add_argument("--budget", type=float, default=900.0,
                    help="per (module, loop) wall-clock budget, s (900)")
    ap.add_argument("--verbose", "-v", action="store_true", help="show tracebacks of failures")
    ap.add_argument("--json", metavar="OUT", help="write a JSON summary to OUT")
    ap.add_argument("--config", default=CONFIG, help="module groups and exclusions (TOML)")
    ap.add_argument("--ignore-exclusions", action="store_true",
                    help="report every stock-passing test that fails, excluded or not "
                         "(also the self-check mode for the stand-in loop)")
    ap.add_argument("--keep-logs", metavar="DIR", help="keep worker streams and logs in DIR")
    opts = ap.parse_args(argv)

    try:
        groups, exclusions = load_config(opts.config)
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if opts.ignore_exclusions:
        exclusions = []
    if opts.loop == "stock":
        print("--loop stock would compare stock with itself; name a loop module", file=sys.stderr)
        return 2
    wanted = resolve_modules(opts.modules, groups)
    modules = [m for m in wanted if module_exists(m)]
    missing = [m for m in wanted if m not in modules]
    for m in missing:
        print(f"note: {PACKAGE}.{m} does not exist on Python {PYVER}; skipped")
    if not modules:
        print("no modules to run", file=sys.stderr)
        return 2

    # Preflight: a loop module that does not import (e.g. a broken build)
    # would otherwise show up as every test of every module "not run".
    check = subprocess.run([sys.executable, WORKER, "--check", "--loop", opts.loop],
                           cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                           env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                           text=True, timeout=120)
    if check.returncode != 0:
        print(f"cannot use loop {opts.loop!r} under {sys.executable}:\n"
              + _indent(_last_lines(check.stdout + check.stderr, 30)), file=sys.stderr)
        return 2

    workdir = opts.keep_logs or tempfile.mkdtemp(prefix="ferroloop-conformance-")
    os.makedirs(workdir, exist_ok=True)
    print(f"Running {len(modules)} module(s) on stock asyncio and on {opts.loop} "
          f"({check.stdout.strip()}, "
          f"Python {PYVER}, {opts.jobs} jobs, {opts.timeout:.0f}s per test)", flush=True)
    jobs = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, opts.jobs)) as pool:
            futures = {}
            for m in modules:
                for loop in (opts.loop, "stock"):
                    job = Job(m, loop, opts, workdir)
                    jobs[(m, loop)] = job
                    futures[pool.submit(job.run)] = job
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                job = fut.result()
                ok = len(job.passing())
                bad = sum(1 for r in job.results.values() if r["status"] not in OK | {"skip"})
                say(f"[{n}/{len(futures)}] {job.module} on {job.loop}: {ok} passed, {bad} failed, "
                    f"{job.loops} loops, {job.seconds:.1f}s"
                    + ("" if job.finished else "  (did not finish: see notes)"))
        return report(modules, jobs, exclusions, opts, missing)
    finally:
        if not opts.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
