"""pytest plugin of tests/suites/run.py: puts ferroloop under a real project's own test suite.

Loaded with ``-p ferroloop_suites`` (the suite virtualenvs have a .pth file putting this folder
and the repository's python/ on sys.path). ``-p`` plugins are imported before any conftest.py,
so everything below is in place before the project's test code is imported. No test file is
edited.

Environment:
  FERROLOOP_SUITES_LOOP  "stock" (default) or "ferroloop"
  FERROLOOP_SUITES_OUT   a directory for the results (results.jsonl, loops-<pid>.json)

ferroloop mode: the event-loop *policy* is the single choke point that all three targeted
projects go through when they do not name a loop class themselves:

* anyio's pytest plugin (uvicorn and anyio): ``anyio_backend = "asyncio"`` or
  ``("asyncio", {"debug": True})`` builds ``asyncio.Runner(loop_factory=None)``, whose loop
  comes from ``asyncio.new_event_loop()``, i.e. from the policy;
* aiohttp's pytest plugin: the ``loop_factory`` fixture is parametrized with
  ``asyncio.new_event_loop`` ("pyloop"), which asks the policy;
* ``asyncio.run()``, ``asyncio.Runner()``, ``asyncio.new_event_loop()`` inside tests.

So the default policy is replaced by ferroloop.EventLoopPolicy, and the name
``asyncio.DefaultEventLoopPolicy`` too, so that ``asyncio.set_event_loop_policy(None)`` (which
re-creates the policy from that name) keeps ferroloop. A loop class a test names explicitly
(``asyncio.SelectorEventLoop``, ``uvloop.new_event_loop``, uvicorn's ``loop="asyncio"``) is the
test's choice and stays as it is.

Both modes count the loops built in this process (``ferroloop.Loop.__init__`` and
``asyncio.BaseEventLoop.__init__`` wrapped), per test (a ``user_properties`` entry of each
teardown report, so it crosses pytest-xdist) and per process (loops-<pid>.json at exit). The
controller process appends one JSON line per test report to results.jsonl as it comes, so a
run that crashes half-way still leaves the outcomes up to the crash.
"""

import asyncio
import json
import os
import threading

import pytest

LOOP = os.environ.get("FERROLOOP_SUITES_LOOP", "stock")
OUT = os.environ.get("FERROLOOP_SUITES_OUT")
if LOOP not in ("stock", "ferroloop"):
    raise RuntimeError(f"FERROLOOP_SUITES_LOOP must be 'stock' or 'ferroloop', not {LOOP!r}")

_lock = threading.Lock()
_counts = {"ferroloop": 0, "stock": 0}
_config = None  # the pytest config, once configured


def _counting(cls, key):
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        with _lock:
            _counts[key] += 1
        init(self, *args, **kwargs)

    __init__.__wrapped__ = init
    __init__.__qualname__ = init.__qualname__
    __init__.__name__ = init.__name__
    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__


_counting(asyncio.BaseEventLoop, "stock")

if LOOP == "ferroloop":
    import ferroloop

    _counting(ferroloop.Loop, "ferroloop")

    class EventLoopPolicy(ferroloop.EventLoopPolicy):
        """ferroloop's policy, under the stdlib policy's name."""

    EventLoopPolicy.__name__ = EventLoopPolicy.__qualname__ = "DefaultEventLoopPolicy"
    for _mod in (asyncio, asyncio.events, getattr(asyncio, "unix_events", None)):
        if _mod is not None and hasattr(_mod, "DefaultEventLoopPolicy"):
            _mod.DefaultEventLoopPolicy = EventLoopPolicy
    asyncio.set_event_loop_policy(EventLoopPolicy())


def _total():
    with _lock:
        return _counts["ferroloop"], _counts["stock"]


# ------------------------------------------------------------------------------------------
# pytest hooks


def pytest_report_header(config):
    policy = type(asyncio.get_event_loop_policy())
    return f"ferroloop_suites: loop={LOOP}, policy={policy.__module__}.{policy.__qualname__}"


def pytest_configure(config):
    global _config
    _config = config
    config._ferroloop_suites_controller = not hasattr(config, "workerinput")
    config._ferroloop_suites_results = None
    if OUT and config._ferroloop_suites_controller:
        os.makedirs(OUT, exist_ok=True)
        config._ferroloop_suites_results = open(
            os.path.join(OUT, "results.jsonl"), "a", encoding="utf-8", buffering=1
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._ferroloop_suites_start = _total()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    start = getattr(item, "_ferroloop_suites_start", None)
    if call.when == "teardown" and start is not None:
        now = _total()
        report.user_properties.append(
            ("ferroloop_suites_loops", [now[0] - start[0], now[1] - start[1]])
        )
    return report


def pytest_runtest_logreport(report):
    config = _config
    if config is None or config._ferroloop_suites_results is None:
        return
    loops = None
    for key, value in report.user_properties:
        if key == "ferroloop_suites_loops":
            loops = value
    entry = {
        "id": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "xfail": hasattr(report, "wasxfail"),
        "duration": round(report.duration, 4),
    }
    if loops is not None:
        entry["loops"] = loops
    if report.failed:
        text = report.longreprtext or ""
        entry["message"] = _last_line(text)
    config._ferroloop_suites_results.write(json.dumps(entry) + "\n")


def _last_line(text):
    """The 'E   SomeError: ...' line of a failure, else its last non-empty line, shortened."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("E ")]
    line = (errs[0] if errs else (lines[-1] if lines else "")).strip()
    return line[:300]


def pytest_collectreport(report):
    # A module that fails to import is an error of its own (its tests never exist).
    if report.failed and _config is not None and _config._ferroloop_suites_results is not None:
        entry = {"id": report.nodeid, "when": "collect", "outcome": "failed", "xfail": False,
                 "duration": 0.0, "message": _last_line(report.longreprtext or "")}
        _config._ferroloop_suites_results.write(json.dumps(entry) + "\n")


def pytest_unconfigure(config):
    if config._ferroloop_suites_results is not None:
        config._ferroloop_suites_results.close()
        config._ferroloop_suites_results = None
    if OUT:
        ferro, stock = _total()
        role = "controller" if config._ferroloop_suites_controller else config.workerinput["workerid"]
        path = os.path.join(OUT, f"loops-{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"role": role, "loop": LOOP, "ferroloop": ferro, "stock": stock}, f)
