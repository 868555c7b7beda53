"""Conformance worker: runs ONE module of CPython's test.test_asyncio on ONE loop.

Started by run.py, one process per (module, loop) pair, restarted by run.py
after a crash or hang.  Stdlib only, because it runs under whatever Python
(3.11-3.13) the runner was started with.

Output protocol (one JSON object per line, appended to --out and flushed at
once, so whatever was written survives a segfault or a kill):

    {"listed": [id, ...]}                     every selected test, in run order
    {"start": id, "t": wall_time}             a test is about to run
    {"id": id, "status": S, "loops": N, ...}  a test (or fixture) finished
    {"done": true, "loops": N}                the suite ran to its end

S is one of pass, fail, error, skip, xfail, xpass.  "loops" is the number of
loops of the measured type created since the previous record, so the parent
can sum them across restarts.  A "start" without a matching result means the
worker died inside that test.
"""

import argparse
import asyncio
import faulthandler
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import sys
import time
import traceback
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "test.test_asyncio"


# --------------------------------------------------------------------------
# The loop under test
# --------------------------------------------------------------------------

def load_loop_module(spec):
    """Import the loop module named on the command line.

    "stock" means CPython's own loop; anything ending in .py is a file path
    (handy for the stand-in); anything else is a dotted module name.  The repo
    root goes at the END of sys.path so that "tests.conformance.standin_loop"
    resolves without letting the repo's python/ sources shadow the installed
    ferroloop package.
    """
    if spec == "stock":
        return None
    if spec.endswith(".py"):
        path = os.path.abspath(spec)
        name = os.path.splitext(os.path.basename(path))[0]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    else:
        if REPO_ROOT not in sys.path:
            sys.path.append(REPO_ROOT)
        module = importlib.import_module(spec)
    missing = [a for a in ("new_event_loop", "Loop", "EventLoopPolicy") if not hasattr(module, a)]
    if missing:
        raise SystemExit(f"loop module {spec!r} lacks {', '.join(missing)}")
    return module


class Substitution:
    """Puts the loop under test wherever the suite creates a *real* loop.

    The single choke point is the default policy: asyncio.new_event_loop(),
    asyncio.events.new_event_loop(), asyncio.get_event_loop() (3.11 creates a
    loop on demand), asyncio.run() and asyncio.Runner without a loop_factory
    all end in get_event_loop_policy().new_event_loop().  We therefore do NOT
    patch new_event_loop itself: a test that installs its own policy (as
    test_runners does) must keep getting the loops its policy makes.

    asyncio.set_event_loop_policy(None) makes events._init_event_loop_policy()
    re-create the policy with `from . import DefaultEventLoopPolicy`, i.e. a
    lookup in the asyncio package's globals at that moment; so we replace the
    name there (and in asyncio.events / unix_events, in case a version looks
    there) before any test module is imported.

    test_events (and later test_sendfile, test_sock_lowlevel, ...) build loops
    through mixin classes whose create_event_loop() returns
    asyncio.SelectorEventLoop(selectors.XSelector()); test_server and
    test_buffered_proto have new_loop() methods doing the same.  Those methods
    are wrapped per class (see _wrap_factory).  The selector argument has no
    meaning for a loop with its own poller, so the Epoll/Poll/Select variants
    all run the same loop.

    Deliberately NOT substituted: test_utils.TestLoop (a fake-clock loop that
    tests CPython's BaseEventLoop) and direct BaseEventLoop()/
    asyncio.SelectorEventLoop() constructions used with mocks; those test
    CPython's own classes, not "a real event loop".

    In stock mode the same hooks are installed but keep CPython's loops; they
    only count, so the stock and ferroloop loop counts are comparable.
    """

    def __init__(self, loopmod):
        self.loopmod = loopmod
        self.created = 0  # loops of the measured type, since the last record
        if loopmod is None:
            self.loop_type = asyncio.SelectorEventLoop
            base_policy = asyncio.DefaultEventLoopPolicy
            self._make_loop = None
        else:
            self.loop_type = loopmod.Loop
            base_policy = loopmod.EventLoopPolicy
            self._make_loop = loopmod.new_event_loop
        sub = self

        class SubstitutedPolicy(base_policy):
            # Counting only; the loop comes from the base policy unchanged.
            def new_event_loop(self):
                return sub.note(super().new_event_loop())

        SubstitutedPolicy.__name__ = SubstitutedPolicy.__qualname__ = base_policy.__name__
        self.policy_class = SubstitutedPolicy

    def note(self, loop):
        if isinstance(loop, self.loop_type):
            self.created += 1
        return loop

    def take_count(self):
        n, self.created = self.created, 0
        return n

    def install_policy(self):
        for mod in (asyncio, asyncio.events, getattr(asyncio, "unix_events", None)):
            if mod is not None and hasattr(mod, "DefaultEventLoopPolicy"):
                mod.DefaultEventLoopPolicy = self.policy_class
        asyncio.set_event_loop_policy(self.policy_class())

    # Test-class methods that build "the loop of this test class".
    FACTORY_METHODS = ("create_event_loop", "new_loop")

    def patch_test_module(self, module):
        """Wrap the loop-factory methods of the module's test classes."""
        patched = []
        for name, obj in vars(module).items():
            if not isinstance(obj, type):
                continue
            for meth in self.FACTORY_METHODS:
                if meth in vars(obj):
                    setattr(obj, meth, self._wrap_factory(vars(obj)[meth]))
                    patched.append(f"{name}.{meth}")
        return patched

    def _wrap_factory(self, original):
        """Substitute only if the original method built a stock *real* loop.

        test_events' create_event_loop() and test_server/test_buffered_proto's
        new_loop() return asyncio.SelectorEventLoop(...): substituted.  But
        test_runners' new_loop() returns a BaseEventLoop() wired to mocks, and
        functional.py's new_loop() calls asyncio.new_event_loop() (already
        substituted by the policy): both are left alone.  Building the stock
        loop and closing it at once costs a selector and a socketpair.
        """
        sub = self

        def factory(test_self):
            before = sub.created
            loop = original(test_self)
            if sub.created != before:  # came through the policy: already counted
                return loop
            if sub._make_loop is not None and _is_stock_real_loop(loop):
                loop.close()
                loop = sub._make_loop()
            return sub.note(loop)

        factory.__wrapped__ = original
        factory.__name__ = original.__name__
        return factory


def _is_stock_real_loop(loop):
    """CPython's own selector loop (not TestLoop, not a mocked BaseEventLoop)."""
    from asyncio import selector_events
    return (isinstance(loop, selector_events.BaseSelectorEventLoop)
            and type(loop).__module__.startswith("asyncio."))


# --------------------------------------------------------------------------
# Streaming results
# --------------------------------------------------------------------------

class Stream:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, record):
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)


def _short_reason(err_text):
    """'SomeError: message (at file.py:123 in func)' from a traceback.

    The innermost frame matters: a bare "NotImplementedError" says nothing
    until one sees it was raised by AbstractEventLoop.create_connection.
    """
    text = err_text.split("\nStdout:\n")[0].split("\nStderr:\n")[0]  # buffered output
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    reason = lines[-1].strip()[:240]
    frames = _FRAME.findall(text)
    if frames:
        path, line, func = frames[-1]
        reason += f" (at {os.path.basename(path)}:{line} in {func})"
    return reason


class StreamingResult(unittest.TestResult):
    """Writes one record per finished test; arms faulthandler per test."""

    def __init__(self, stream, sub, timeout, marker_fd):
        super().__init__()
        self.buffer = True  # keep the tests' own prints out of the log
        self.stream = stream
        self.sub = sub
        self.timeout = timeout
        self.marker_fd = marker_fd
        self.current = None  # [id, status, traceback] of the running test

    def startTest(self, test):
        super().startTest(test)
        tid = test.id()
        self.current = [tid, "pass", ""]
        # A marker in the stderr log lets the parent cut out what a crashing
        # test printed (faulthandler writes straight to this fd).
        os.write(self.marker_fd, f"\n### START {tid}\n".encode())
        self.stream.write({"start": tid, "t": time.time()})
        # On a hang: dump every thread's stack to the log and exit; the parent
        # records the test as "timeout" and restarts on the remaining tests.
        faulthandler.dump_traceback_later(self.timeout, exit=True, file=sys.__stderr__)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        if self.current is None:
            return  # defensive: stopTest without any start or outcome
        tid, status, tb = self.current
        rec = {"id": tid, "status": status, "loops": self.sub.take_count()}
        if tb:
            rec["tb"] = tb
            rec["reason"] = _short_reason(tb)
        self.stream.write(rec)
        self.current = None

    def _set(self, test, status, tb=""):
        if isinstance(test, unittest.suite._ErrorHolder):
            # Errors outside a test: setUpClass/setUpModule/tearDown* raise
            # into an _ErrorHolder without startTest/stopTest.
            self.stream.write({"id": test.id(), "status": status, "fixture": True,
                               "tb": tb, "reason": _short_reason(tb),
                               "loops": self.sub.take_count()})
            return
        if self.current is None or self.current[0] != test.id():
            # 3.12+: a skipped test gets addSkip and stopTest, no startTest.
            self.current = [test.id(), status, tb]
            return
        if self.current[1] in ("fail", "error"):
            return  # keep the first failure (e.g. of several subtests)
        self.current[1], self.current[2] = status, tb

    def addError(self, test, err):
        super().addError(test, err)
        self._set(test, "error", self._exc_info_to_string(err, test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._set(test, "fail", self._exc_info_to_string(err, test))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._set(test, kind, f"[{subtest.id()}]\n" + self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._set(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "xpass", "unexpected success")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def select(tests, patterns, skip):
    """unittest's -k semantics: substring unless the pattern has a '*'."""
    pats = [p if "*" in p else f"*{p}*" for p in patterns]
    out = []
    for t in tests:
        tid = t.id()
        if tid in skip:
            continue
        if pats and not any(fnmatch.fnmatchcase(tid, p) for p in pats):
            continue
        out.append(t)
    return out


def check(spec):
    """Preflight for the parent: fail fast (and once) if the loop is unusable."""
    sub = Substitution(load_loop_module(spec))
    sub.install_policy()
    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(asyncio.sleep(0, "ok"))
    finally:
        loop.close()
        asyncio.set_event_loop_policy(None)
    if sub.take_count() != 1 or result != "ok":
        raise SystemExit(f"asyncio.new_event_loop() did not give a working {sub.loop_type!r}")
    print(f"{sub.loop_type.__module__}.{sub.loop_type.__qualname__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="only import the loop module, make one loop, close it, and exit")
    ap.add_argument("--module", help="e.g. test_tasks")
    ap.add_argument("--loop", required=True, help="'stock', a module name or a .py path")
    ap.add_argument("--out", help="JSON-lines file to append to")
    ap.add_argument("--skip-file", help="file with test ids to leave out (already done)")
    ap.add_argument("-k", action="append", default=[], dest="patterns")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    if args.check:
        return check(args.loop)
    if not (args.module and args.out):
        ap.error("--module and --out are required")

    # Python-level crashes and fatal signals print all stacks to our stderr
    # (a file the parent reads back when it finds a test without a result).
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
    stream = Stream(args.out)
    skip = set()
    if args.skip_file:
        with open(args.skip_file, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}

    loopmod = load_loop_module(args.loop)
    sub = Substitution(loopmod)
    # Before the test module is imported: it may capture names at import time.
    sub.install_policy()

    name = f"{PACKAGE}.{args.module}"
    module = importlib.import_module(name)
    patched = sub.patch_test_module(module)
    if patched:
        print(f"loop factories wrapped: {', '.join(patched)}", file=sys.stderr)

    tests = list(flatten(unittest.defaultTestLoader.loadTestsFromModule(module)))
    tests = select(tests, args.patterns, set())
    stream.write({"listed": [t.id() for t in tests]})
    to_run = [t for t in tests if t.id() not in skip]

    result = StreamingResult(stream, sub, args.timeout, sys.__stderr__.fileno())
    try:
        unittest.TestSuite(to_run).run(result)
    except BaseException:  # a fixture escaping unittest's guards, KeyboardInterrupt...
        traceback.print_exc()
        raise
    stream.write({"done": True, "loops": sub.take_count()})
    # Skip interpreter teardown: a broken loop left in some global must not
    # turn a finished run into a crash after "done" was written.
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
