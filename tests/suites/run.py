#!/usr/bin/env python3
"""Real projects' own test suites, on the stock asyncio loop and on ferroloop.

For each project (uvicorn, anyio, aiohttp at pinned releases) this

1. makes a virtualenv .venv-suites/<project>/venv with the release and its test requirements,
   every version pinned in tests/suites/requirements/<project>.txt (wheels preferred), plus a .pth
   file that puts the repository's python/ (ferroloop, with the native module `make build`
   copied there) and tests/suites/plugin/ on sys.path;
2. takes the test suite from the release's sdist (pip download --no-binary), unpacked once
   under .venv-suites/<project>/sdist/;
3. runs the suite with pytest twice, on the stock loop and on ferroloop, the loop being swapped
   by the plugin tests/suites/plugin/ferroloop_suites.py (`-p ferroloop_suites`), no test file
   edited; the plugin counts the ferroloop loops the run built and collects every test's outcome;
4. reports per project the outcomes on both loops, the loops built, and the tests that fail
   only on ferroloop. A project passes when no test fails only on ferroloop (apart from those
   listed with a reason in known_failures.toml) and its ferroloop run built at least one
   ferroloop loop.

    python3 tests/suites/run.py                         # all projects, both loops
    python3 tests/suites/run.py --projects uvicorn,anyio --loop ferroloop -k websocket
    python3 tests/suites/run.py --json out.json

The last line is `suites: N passed, M failed` (projects); the exit status is 1 when a project
failed. Everything is reused from one run to the next: the virtualenvs (re-installed when their
requirements file changes), the unpacked sdists, and the last stock results of each selection
(used as the baseline of a `--loop ferroloop` run). Stdlib only (tomllib: Python >= 3.11).
"""

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(REPO, ".venv-suites")
PLUGIN_DIR = os.path.join(HERE, "plugin")
REQ_DIR = os.path.join(HERE, "requirements")
KNOWN = os.path.join(HERE, "known_failures.toml")
PASS = {"passed", "xpassed"}
FAIL = {"failed", "error"}


class Project:
    def __init__(self, name, version, packages, args, xdist, note=""):
        self.name = name
        self.version = version
        self.packages = packages  # import packages at the sdist's root, moved aside
        self.args = args          # pytest arguments (before -k); "{jobs}" is replaced
        self.xdist = xdist        # the suite runs under pytest-xdist by default
        self.note = note


PROJECTS = {
    p.name: p
    for p in [
        # pyproject.toml addopts: -rxXs --strict-config --strict-markers -n 8 (kept; -n replaced).
        # Async tests are anyio's (anyio_backend = "asyncio" in tests/conftest.py).
        Project("uvicorn", "0.54.0", ["uvicorn"], ["-n", "{jobs}"], xdist=True),
        # pyproject.toml addopts (kept): -p anyio -p pytest_mock -p timeout -p no:asyncio ...,
        # timeout = 20 s per test. Async tests are anyio's, parametrized by tests/conftest.py:
        # ("asyncio", {"debug": True}) and asyncio+uvloop and trio (neither installed: skipped).
        Project("anyio", "4.16.0", [], [], xdist=False),
        # pytest.ini addopts replaced: they load pytest-cov (--cov), which is not installed. The
        # rest is kept: the same -m deselection as aiohttp's own default, strict markers,
        # doctest modules, xdist. Async tests are aiohttp's own plugin's (loop_factory fixture,
        # "pyloop" = asyncio.new_event_loop), timeout = 120 s per test (pytest.ini).
        Project(
            "aiohttp",
            "3.14.5",
            ["aiohttp"],
            [
                "-o", "addopts=",
                "-ra", "--strict-markers", "--doctest-modules",
                "-m", "not dev_mode and not autobahn and not internal",
                "-n", "{jobs}",
            ],
            xdist=True,
        ),
    ]
}


def say(*a):
    print(*a, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------------------------
# Set-up: virtualenv, pinned requirements, sdist


def native_module_for(python):
    """ferroloop's native module matching `python`'s extension suffix, or None."""
    suffix = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    path = os.path.join(REPO, "python", "ferroloop", "_native" + suffix)
    return path if os.path.exists(path) else None


def venv_python(proj):
    return os.path.join(WORK, proj.name, "venv", "bin", "python")


def py_version(python):
    return subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def ensure_venv(proj, python, log):
    """The project's virtualenv with its pinned requirements; (re)installs when they changed."""
    vdir = os.path.join(WORK, proj.name, "venv")
    vpy = venv_python(proj)
    req = os.path.join(REQ_DIR, proj.name + ".txt")
    if not os.path.exists(req):
        raise SetupError(f"{req} is missing (make it with: run.py --repin {proj.name})")
    with open(req, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(vdir, ".requirements-sha256")
    want, have = py_version(python), py_version(vpy) if os.path.exists(vpy) else None
    if have is not None and have != want:
        log(f"{os.path.relpath(vdir, REPO)} is Python {have}, not {want}: re-creating it")
        shutil.rmtree(vdir)
    if not os.path.exists(vpy):
        log(f"creating {os.path.relpath(vdir, REPO)}")
        sh([python, "-m", "venv", vdir])
    if not (os.path.exists(stamp) and open(stamp).read().strip() == digest):
        log(f"installing {os.path.relpath(req, REPO)}")
        # Wheels wherever the pinned version has one; a pin without a wheel (blockbuster's
        # forbiddenfruit) is built from its sdist.
        sh([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--prefer-binary",
            "-r", req])
        with open(stamp, "w") as f:
            f.write(digest + "\n")
    write_pth(vpy)
    return vpy


def write_pth(vpy):
    purelib = subprocess.run(
        [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "ferroloop_suites.pth"), "w") as f:
        f.write(os.path.join(REPO, "python") + "\n" + PLUGIN_DIR + "\n")


def repin(proj, python, log):
    """Resolve requirements/<project>.in in a scratch virtualenv into requirements/<project>.txt."""
    src = os.path.join(REQ_DIR, proj.name + ".in")
    scratch = os.path.join(WORK, proj.name, "repin-venv")
    shutil.rmtree(scratch, ignore_errors=True)
    sh([python, "-m", "venv", scratch])
    spy = os.path.join(scratch, "bin", "python")
    log(f"resolving {os.path.relpath(src, REPO)}")
    sh([spy, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--prefer-binary",
        "-r", src])
    frozen = subprocess.run(
        [spy, "-m", "pip", "freeze", "--all", "--exclude", "pip", "--exclude", "setuptools",
         "--exclude", "wheel"],
        check=True, capture_output=True, text=True,
    ).stdout
    pyver = py_version(spy)
    out = os.path.join(REQ_DIR, proj.name + ".txt")
    with open(out, "w") as f:
        f.write(f"# {proj.name} {proj.version} and its test requirements, every version pinned.\n"
                f"# Generated by `tests/suites/run.py --repin {proj.name}` from {proj.name}.in "
                f"(CPython {pyver}, Linux x86_64);\n# edit {proj.name}.in, not this file.\n")
        f.write(frozen)
    shutil.rmtree(scratch, ignore_errors=True)
    log(f"wrote {os.path.relpath(out, REPO)}")


def ensure_sdist(proj, vpy, log):
    """The unpacked sdist (its root is where pytest runs). Raises SetupError without tests."""
    base = os.path.join(WORK, proj.name, "sdist")
    root = os.path.join(base, f"{proj.name}-{proj.version}")
    done = os.path.join(base, ".unpacked")
    if not os.path.exists(done):
        shutil.rmtree(base, ignore_errors=True)
        dl = os.path.join(base, "download")
        os.makedirs(dl)
        log(f"downloading the sdist of {proj.name}=={proj.version}")
        sh([vpy, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
            "--no-binary", ":all:", "-d", dl, f"{proj.name}=={proj.version}"])
        archives = glob.glob(os.path.join(dl, "*.tar.gz"))
        if len(archives) != 1:
            raise SetupError(f"expected one .tar.gz sdist in {dl}, found {os.listdir(dl)}")
        with tarfile.open(archives[0]) as tf:
            tf.extractall(base, filter="data")
        if not os.path.isdir(root):
            found = [d for d in os.listdir(base) if d.lower().startswith(proj.name.lower())]
            if len(found) != 1:
                raise SetupError(f"the sdist does not unpack into {root}")
            os.rename(os.path.join(base, found[0]), root)
        # The tests must import the installed release (wheel, compiled extensions), not the
        # package source at the sdist's root, which pytest's rootdir-based sys.path insertion
        # (tests/__init__.py) would otherwise put first.
        for pkg in proj.packages:
            src = os.path.join(root, pkg)
            if os.path.isdir(src):
                os.rename(src, src + ".sdist-src")
        with open(done, "w") as f:
            f.write(os.path.basename(archives[0]) + "\n")
    if not os.path.isdir(os.path.join(root, "tests")):
        raise SetupError(f"the sdist of {proj.name}=={proj.version} contains no tests/ folder")
    return root


class SetupError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Running one suite on one loop


def run_suite(proj, loop, vpy, root, args, log):
    """Runs pytest; returns a dict: outcomes {id: (outcome, message, ferroloop loops)}, loops,
    seconds, returncode, crashed (str or None), log path."""
    out = os.path.join(WORK, proj.name, "out", loop)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    logpath = os.path.join(WORK, proj.name, f"pytest-{loop}.log")
    jobs = str(args.jobs)
    cmd = [os.path.join(os.path.dirname(vpy), "pytest"), "-p", "ferroloop_suites"]
    for a in proj.args:
        cmd.append(a.replace("{jobs}", jobs))
    for k in args.k:
        cmd += ["-k", k]
    cmd += args.pytest_args
    env = dict(os.environ)
    env.update(
        FERROLOOP_SUITES_LOOP=loop,
        FERROLOOP_SUITES_OUT=out,
        VIRTUAL_ENV=os.path.dirname(os.path.dirname(vpy)),
        PATH=os.path.dirname(vpy) + os.pathsep + env.get("PATH", ""),
    )
    for var in ("PYTHONPATH", "PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTEST_ADDOPTS"):
        env.pop(var, None)
    log(f"{loop}: {' '.join(cmd[1:])}  (log: {os.path.relpath(logpath, REPO)})")
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    crashed = None
    with open(logpath, "w") as logf:
        p = subprocess.Popen(cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            crashed = f"killed after the --timeout of {args.timeout} s"
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            rc = p.returncode
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    seconds = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    load = (load0 + os.getloadavg()[0]) / 2
    if crashed is None and rc not in (0, 1, 5):
        crashed = f"pytest exited with status {rc}" + (" (a signal)" if rc < 0 else "")
    outcomes = collapse(os.path.join(out, "results.jsonl"))
    if crashed is None and not outcomes and rc != 5:
        crashed = f"pytest reported no test (exit status {rc})"
    loops = {"ferroloop": 0, "stock": 0, "processes": 0}
    for path in glob.glob(os.path.join(out, "loops-*.json")):
        with open(path) as f:
            d = json.load(f)
        loops["ferroloop"] += d["ferroloop"]
        loops["stock"] += d["stock"]
        loops["processes"] += 1
    if loops["processes"] == 0:  # nothing written at exit (a crash): the per-test counts
        loops["ferroloop"] = sum(v[2][0] for v in outcomes.values() if v[2])
        loops["stock"] = sum(v[2][1] for v in outcomes.values() if v[2])
    if crashed:
        log(f"{loop}: {crashed}; the last lines of the log:")
        with open(logpath, errors="replace") as f:
            for line in f.readlines()[-15:]:
                log("    " + line.rstrip())
    return {"outcomes": outcomes, "loops": loops, "seconds": seconds, "cpu": cpu, "load": load,
            "returncode": rc,
            "crashed": crashed, "log": logpath}


def collapse(path):
    """{test id: (outcome, message, [ferroloop loops, stock loops] or None)} from the plugin's
    per-report lines. outcome: passed, failed, error, skipped, xfailed, xpassed."""
    res = {}
    if not os.path.exists(path):
        return res
    with open(path, errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            tid, when, o = e["id"], e["when"], e["outcome"]
            cur = res.get(tid, (None, None, None))
            msg = e.get("message")
            loops = e.get("loops", cur[2])
            if when == "collect":
                res[tid] = ("error", msg, None)
            elif when == "setup":
                if o == "failed":
                    res[tid] = ("error", msg, loops)
                elif o == "skipped":
                    res[tid] = ("xfailed" if e["xfail"] else "skipped", None, loops)
                else:
                    res[tid] = cur
            elif when == "call":
                if o == "passed":
                    res[tid] = ("xpassed" if e["xfail"] else "passed", None, loops)
                elif o == "skipped":
                    res[tid] = ("xfailed" if e["xfail"] else "skipped", None, loops)
                else:
                    res[tid] = ("failed", msg, loops)
            elif when == "teardown":
                if o == "failed" and cur[0] not in FAIL:
                    res[tid] = ("error", msg, loops)
                else:
                    res[tid] = (cur[0], cur[1], loops)
            elif o == "failed":  # e.g. pytest-xdist's report for a crashed worker
                res[tid] = ("failed", msg, loops)
    return res


def counts(outcomes):
    c = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for o, _, _ in outcomes.values():
        if o in PASS:
            c["passed"] += 1
        elif o == "failed":
            c["failed"] += 1
        elif o == "error":
            c["errors"] += 1
        elif o is not None:
            c["skipped"] += 1
    return c


# --------------------------------------------------------------------------------------------
# Known failures (known_failures.toml)


def load_known(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = tomllib.load(f)
    known = data.get("known", [])
    for i, k in enumerate(known, 1):
        missing = {"project", "tests", "reason"} - set(k)
        if missing or not str(k.get("reason", "")).strip():
            raise SystemExit(f"{path}: [[known]] #{i} needs project, tests and a reason")
    return known


def known_reason(known, project, tid):
    for k in known:
        if k["project"] == project and any(fnmatch.fnmatchcase(tid, g) for g in k["tests"]):
            return k["reason"]
    return None


# --------------------------------------------------------------------------------------------
# Baselines: the last stock results of a selection, for a later `--loop ferroloop`


def selection_key(proj, args):
    key = json.dumps([proj.name, proj.version, args.k, args.pytest_args])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def save_baseline(proj, args, result):
    path = os.path.join(WORK, proj.name, f"stock-{selection_key(proj, args)}.json")
    with open(path, "w") as f:
        json.dump({tid: v[0] for tid, v in result["outcomes"].items()}, f)


def load_baseline(proj, args):
    path = os.path.join(WORK, proj.name, f"stock-{selection_key(proj, args)}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return {tid: (o, None, None) for tid, o in json.load(f).items()}


# --------------------------------------------------------------------------------------------


def compare(proj, stock, ferro, known, stock_crashed):
    """(ferroloop-only failures [(id, outcome, message)], known [(id, reason)], only-stock
    failures [id])."""
    only, excused, better = [], [], []
    for tid, (o, msg, _) in sorted(ferro.items()):
        if o in FAIL and (stock is None or stock.get(tid, (None,))[0] in PASS):
            reason = known_reason(known, proj.name, tid)
            (excused.append((tid, reason)) if reason else only.append((tid, o, msg)))
    if stock is not None and not stock_crashed:
        for tid, (o, _, _) in sorted(stock.items()):
            if o in PASS and tid not in ferro:
                reason = known_reason(known, proj.name, tid)
                entry = (tid, "not run", "ran on stock, never reported on ferroloop")
                (excused.append((tid, reason)) if reason else only.append(entry))
            elif o in FAIL and ferro.get(tid, (None,))[0] in PASS:
                better.append(tid)
    return only, excused, better


def fmt_counts(c):
    return f"{c['passed']:>6} {c['failed']:>6} {c['errors']:>6} {c['skipped']:>6}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", default=",".join(PROJECTS),
                    help="comma-separated, from: " + ", ".join(PROJECTS) + " (default: all)")
    ap.add_argument("--loop", choices=["stock", "ferroloop", "both"], default="both")
    ap.add_argument("-k", action="append", default=[], metavar="EXPR",
                    help="pytest -k expression (repeatable)")
    ap.add_argument("--json", metavar="OUT", help="write the report as JSON")
    ap.add_argument("--reruns", type=int, default=1,
                    help="run each ferroloop-only failure again this many times; one that "
                         "passes is reported as flaky, not counted (default 1)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="pytest-xdist workers for the suites that use xdist (uvicorn, aiohttp); "
                         "0 runs them in one process (default 2)")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="seconds one pytest run may take before it is killed (default 1800)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter of the virtualenvs (default: this one); it must match "
                         "the native module built in python/ferroloop/")
    ap.add_argument("--repin", action="store_true",
                    help="resolve requirements/<project>.in into <project>.txt, then stop")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the failure message of every ferroloop-only failure")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.projects.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROJECTS]
    if unknown:
        ap.error(f"unknown project(s) {unknown}; known: {list(PROJECTS)}")
    projects = [PROJECTS[n] for n in names]
    os.makedirs(WORK, exist_ok=True)

    if args.repin:
        for proj in projects:
            repin(proj, args.python, lambda m, p=proj: say(f"[{p.name}] {m}"))
        return 0

    python = os.path.realpath(args.python) if os.path.isabs(args.python) else args.python
    loops = ["stock", "ferroloop"] if args.loop == "both" else [args.loop]
    if "ferroloop" in loops and native_module_for(args.python) is None:
        say(f"ferroloop's native module for {args.python} is not in python/ferroloop/: "
            "build it first (make build)")
        return 2
    known = load_known(KNOWN)

    report = []
    for proj in projects:
        def log(m, p=proj):
            say(f"[{p.name}] {m}")

        entry = {"project": proj.name, "version": proj.version, "runs": {}}
        report.append(entry)
        t0 = time.monotonic()
        try:
            vpy = ensure_venv(proj, python, log)
            root = ensure_sdist(proj, vpy, log)
        except (SetupError, subprocess.CalledProcessError) as e:
            log(f"set-up failed: {e}")
            entry["error"] = f"set-up failed: {e}"
            entry["verdict"] = "failed"
            continue
        entry["setup_seconds"] = round(time.monotonic() - t0, 1)
        results = {}
        for loop in loops:
            r = run_suite(proj, loop, vpy, root, args, log)
            results[loop] = r
            c = counts(r["outcomes"])
            entry["runs"][loop] = dict(c, seconds=round(r["seconds"], 1),
                                       cpu_seconds=round(r["cpu"], 1),
                                       loadavg=round(r["load"], 2), loops=r["loops"],
                                       returncode=r["returncode"], crashed=r["crashed"],
                                       log=os.path.relpath(r["log"], REPO))
            ran_on_ferro = sum(1 for v in r["outcomes"].values() if v[2] and v[2][0] > 0)
            entry["runs"][loop]["tests_with_ferroloop_loops"] = ran_on_ferro
            log(f"{loop}: {c['passed']} passed, {c['failed']} failed, {c['errors']} errors, "
                f"{c['skipped']} skipped in {r['seconds']:.0f} s (CPU {r['cpu']:.0f} s, "
                f"load average {r['load']:.1f}); loops built: "
                f"{r['loops']['ferroloop']} ferroloop, {r['loops']['stock']} stock")
            if loop == "stock" and not r["crashed"]:
                save_baseline(proj, args, r)

        verdict, why = "passed", []
        if "ferroloop" in results:
            fr = results["ferroloop"]
            stock = results["stock"]["outcomes"] if "stock" in results else load_baseline(proj, args)
            stock_crashed = bool(results.get("stock", {}).get("crashed"))
            if "stock" not in results:
                entry["baseline"] = "saved" if stock is not None else "none"
                log("stock baseline: " + ("the last stock run of this selection" if stock
                    is not None else "none (every ferroloop failure counts)"))
            only, excused, better = compare(proj, stock, fr["outcomes"], known, stock_crashed)
            # A ferroloop-only failure is run again, alone, on ferroloop (args.reruns times):
            # one that then passes is reported as flaky (a timing test on a loaded machine),
            # not counted. One that fails again counts.
            flaky = []
            if only and args.reruns and not fr["crashed"]:
                rerun_args = argparse.Namespace(**vars(args))
                rerun_args.k = []
                rerun_args.pytest_args = list(args.pytest_args) + [t for t, _, _ in only]
                for attempt in range(args.reruns):
                    log(f"ferroloop: running the {len(only)} ferroloop-only failure(s) again "
                        f"({attempt + 1} of {args.reruns})")
                    rr = run_suite(proj, "ferroloop", vpy, root, rerun_args, log)
                    passed_now = {t for t, v in rr["outcomes"].items() if v[0] not in FAIL}
                    flaky += [t for t, _, _ in only if t in passed_now]
                    only = [e for e in only if e[0] not in passed_now]
                    if not only:
                        break
                    rerun_args.pytest_args = list(args.pytest_args) + [t for t, _, _ in only]
            entry["flaky"] = flaky
            entry["ferroloop_only"] = [{"id": t, "outcome": o, "message": m} for t, o, m in only]
            entry["known"] = [{"id": t, "reason": r} for t, r in excused]
            entry["only_stock_failures"] = better
            if only:
                verdict = "failed"
                why.append(f"{len(only)} ferroloop-only failure(s)")
            if fr["loops"]["ferroloop"] == 0:
                verdict = "failed"
                why.append("the ferroloop run built no ferroloop loop")
            if fr["crashed"]:
                verdict = "failed"
                why.append(f"the ferroloop run crashed: {fr['crashed']}")
        for loop, r in results.items():
            if loop == "stock" and r["crashed"]:
                verdict = "failed"
                why.append(f"the stock run crashed: {r['crashed']}")
            if not r["outcomes"]:
                verdict = "failed"
                why.append(f"the {loop} run reported no test")
        entry["verdict"] = verdict
        entry["why"] = why
        entry["seconds"] = round(time.monotonic() - t0, 1)

    print_report(report, loops, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "loop": args.loop, "k": args.k,
                       "projects": report}, f, indent=2)
    npass = sum(1 for e in report if e["verdict"] == "passed")
    nfail = len(report) - npass
    say(f"suites: {npass} passed, {nfail} failed")
    return 1 if nfail else 0


def print_report(report, loops, args):
    say("")
    say("Real projects' test suites: stock asyncio vs ferroloop "
        f"(Python {sys.version.split()[0]}, xdist workers {args.jobs})")
    say(f"{'project':<16} {'loop':<10} {'passed':>6} {'failed':>6} {'errors':>6} {'skipped':>6} "
        f"{'wall s':>7} {'CPU s':>7} {'load':>5} {'ferroloop loops':>15} {'tests on ferroloop':>18}")
    for e in report:
        label = f"{e['project']} {e['version']}"
        if "error" in e:
            say(f"{label:<16} {e['error']}")
            continue
        for loop in loops:
            r = e["runs"][loop]
            fl = f"{r['loops']['ferroloop']}" if loop == "ferroloop" else "-"
            tf = f"{r['tests_with_ferroloop_loops']}" if loop == "ferroloop" else "-"
            crash = f"  CRASHED: {r['crashed']}" if r["crashed"] else ""
            say(f"{label:<16} {loop:<10} {fmt_counts(r)} {r['seconds']:>7.0f} "
                f"{r['cpu_seconds']:>7.0f} {r['loadavg']:>5.1f} {fl:>15} {tf:>18}"
                f"{crash}")
            label = ""
    say("(CPU s: user+sys of the pytest processes; load: the machine's 1-minute load average "
        "around the run;\n 'tests on ferroloop': tests that built at least one ferroloop loop "
        "themselves; skipped includes xfailed)")
    for e in report:
        if "error" in e:
            continue
        head = f"{e['project']}: {e['verdict'].upper()}"
        if e.get("why"):
            head += " (" + "; ".join(e["why"]) + ")"
        head += f", {e['seconds']:.0f} s in all"
        say("")
        say(head)
        for t in e.get("flaky", []):
            say(f"  flaky (failed on ferroloop, passed when run again; not counted): {t}")
        for f in e.get("ferroloop_only", []):
            line = f"  ferroloop-only {f['outcome']}: {f['id']}"
            say(line)
            if args.verbose and f.get("message"):
                say(f"      {f['message']}")
        for k in e.get("known", []):
            reason = " ".join(k["reason"].split())
            say(f"  known (not counted): {k['id']}: "
                + (reason if len(reason) <= 160 else reason[:157] + "..."))
        if e.get("only_stock_failures"):
            say(f"  failing on stock only (not counted): {len(e['only_stock_failures'])}: "
                + ", ".join(e["only_stock_failures"][:10])
                + (" ..." if len(e["only_stock_failures"]) > 10 else ""))
    say("")


if __name__ == "__main__":
    sys.exit(main())
