"""Shared fixtures for ferroloop's Python-surface tests.

Every behavioural test takes ``loop_factory`` (or ``loop``) and therefore runs
twice: once on the stock ``asyncio`` loop, which is the oracle, and once on
``ferroloop``.  ``pytest -k asyncio`` / ``pytest -k ferroloop`` select a half.
(Test and module names deliberately never contain the word "asyncio", and
ferroloop-only tests carry "ferroloop" in their name, so ``-k`` selects
cleanly.)

Every test is also checked for leaks at teardown: the set of open file
descriptors and the set of live threads (Python threads and native OS
threads, from /proc/self/task) must be the same afterwards as before
(threads get a grace period to exit).  A leak is reported as an error at the
test's teardown, naming the leaked descriptors / threads.
"""

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

LOOP_NAMES = ("asyncio", "ferroloop")

# Python source (for subprocess scripts) of each loop factory.
FACTORY_SRC = {
    "asyncio": "import asyncio as _m\nloop_factory = _m.new_event_loop\n",
    "ferroloop": "import ferroloop as _m\nloop_factory = _m.new_event_loop\n",
}

THREAD_GRACE = 3.0  # seconds allowed for threads to exit after a test


def _import_ferroloop():
    # Deliberately not skipped: if ferroloop cannot be imported, its half of
    # the suite fails.
    import ferroloop

    return ferroloop


def factory_for(name):
    if name == "asyncio":
        return asyncio.new_event_loop
    return _import_ferroloop().new_event_loop


@pytest.fixture(params=LOOP_NAMES, ids=LOOP_NAMES)
def loop_name(request):
    """Name of the loop implementation under test: "asyncio" or "ferroloop"."""
    return request.param


@pytest.fixture
def loop_factory(loop_name):
    """Zero-argument callable creating a new event loop of the kind under test."""
    return factory_for(loop_name)


@pytest.fixture
def loop(loop_factory):
    """A fresh event loop, closed at teardown."""
    lp = loop_factory()
    try:
        yield lp
    finally:
        if not lp.is_closed():
            if lp.is_running():  # pragma: no cover - a test bug
                lp.stop()
            lp.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def ferroloop_mod():
    """The ferroloop package (fails, never skips, when it is not importable)."""
    return _import_ferroloop()


# --------------------------------------------------------------------------
# Subprocess helpers


def child_env(**extra):
    env = dict(os.environ)
    for k in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS"):
        env.pop(k, None)
    env.update(extra)
    return env


def script_source(loop_name, body):
    """A script whose ``loop_factory`` global is the factory of ``loop_name``."""
    return FACTORY_SRC[loop_name] + textwrap.dedent(body)


@pytest.fixture
def run_py():
    """Run a Python snippet in a fresh interpreter; returns CompletedProcess."""

    def run(src, *args, pyflags=(), timeout=30, env=None):
        return subprocess.run(
            [sys.executable, *pyflags, "-c", textwrap.dedent(src), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env if env is not None else child_env(),
        )

    return run


@pytest.fixture
def interrupt_child():
    """Start a script; each time it prints the next line of ``waits``, send it SIGINT.

    Returns (returncode, stdout, stderr, seconds from the last SIGINT to exit).
    """

    def run(src, waits=("ready",), settle=0.2, timeout=8):
        proc = subprocess.Popen(
            [sys.executable, "-c", src],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        watchdog = threading.Timer(timeout * (len(waits) + 1), proc.kill)  # never hang
        watchdog.start()
        try:
            seen = ""
            for marker in waits:
                line = proc.stdout.readline()
                seen += line
                if line.strip() != marker:
                    proc.kill()
                    out, err = proc.communicate()
                    pytest.fail(f"child did not print {marker!r}; stdout: {seen + out!r}\n{err}")
                time.sleep(settle)  # let it block in the loop's wait
                t0 = time.monotonic()
                proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"child still running {timeout}s after SIGINT; stdout: "
                            f"{seen + out!r}; stderr:\n{err}")
            return proc.returncode, seen + out, err, time.monotonic() - t0
        finally:
            watchdog.cancel()
            watchdog.join()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    return run


# --------------------------------------------------------------------------
# Leak checks


def _open_fds():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the directory fd listdir used, already closed
    return fds


def _native_threads():
    return set(os.listdir("/proc/self/task"))


def _py_threads():
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(scope="session", autouse=True)
def _warm_up():
    """Create and close one loop of each kind before the first leak snapshot,
    so that one-time, process-wide lazy initialisation is not reported as a
    leak of whichever test happens to run first."""
    for name in LOOP_NAMES:
        try:
            lp = factory_for(name)()
            lp.run_until_complete(asyncio.sleep(0))
            lp.close()
        except Exception:
            pass  # the tests themselves will report it
    asyncio.set_event_loop(None)
    gc.collect()
    gc.freeze()  # long-lived objects out of the way: the per-test gc.collect() stays cheap
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    """Loops start in non-debug mode unless a test asks otherwise."""
    monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)


@pytest.fixture(autouse=True)
def _leak_check(_warm_up):
    # (the previous test's teardown already ran gc.collect())
    fds_before = _open_fds()
    py_before = _py_threads()
    native_before = _native_threads()
    yield
    asyncio.set_event_loop_policy(None)
    problems = []
    if asyncio._get_running_loop() is not None:
        problems.append(f"a loop is still set as running: {asyncio._get_running_loop()!r}")
        asyncio.events._set_running_loop(None)
    deadline = time.monotonic() + THREAD_GRACE
    while True:
        gc.collect()
        new_py = _py_threads() - py_before
        new_native = _native_threads() - native_before
        if not (new_py or new_native) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if new_py:
        problems.append(f"threads left running: {sorted(t.name for t in new_py)}")
    if new_native:
        problems.append(f"native threads left running: {len(new_native)} ({sorted(new_native)})")
    fds_after = _open_fds()
    if fds_after != fds_before:
        opened = {fd: t for fd, t in fds_after.items() if fds_before.get(fd) != t}
        closed = {fd: t for fd, t in fds_before.items() if fds_after.get(fd) != t}
        problems.append(f"file descriptors changed: leaked {opened}, closed {closed}")
    if problems:
        pytest.fail("resource leak: " + "; ".join(problems), pytrace=False)
