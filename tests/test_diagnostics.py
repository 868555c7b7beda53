"""Debug-mode diagnostics (ferroloop-only features): blocked-loop reports, coroutines never
awaited, lost tasks, keep_tasks, the nested-run message, loop.stats() and the exit summary.

Each mistake is a small program in tests/diag_programs/ run in a fresh interpreter:

    python prog.py [--debug] [--asyncio-run]    --debug: ferroloop.run(main(), debug=True)
    python -m ferroloop [--debug] prog.py       debug from the launcher
    PYTHONASYNCIODEBUG=1 python prog.py         debug from the environment

``--asyncio-run`` makes the program call asyncio.run() instead of ferroloop.run(): run directly,
that is the stock loop, the oracle for debug mode off (ferroloop must then print exactly what the
stock loop prints); under ``python -m ferroloop`` it is an unmodified asyncio program on
ferroloop. Expected lines are never hard-coded: each program marks its lines with a comment
(``# BLOCK``, ``# CREATE``, ...) and the tests look them up.
"""

import asyncio
import functools
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env

PROGS = Path(__file__).resolve().parent / "diag_programs"
TIMEOUT = 20

# Every phrase a ferroloop diagnostic starts with; none may appear with debug mode off.
FERRO_PHRASES = (
    "the event loop has been blocked",
    "the event loop was blocked",
    "blocking line:",
    "was never awaited (created at",
    "task destroyed while pending",
    "task exception was never retrieved:",
    "task still pending when run() finished",
    "ferroloop debug summary",
)


# ------------------------------------------------------------------------------------- helpers


def marker(prog, tag):
    """(line number, source line) of the line of ``prog`` carrying the comment ``# TAG``."""
    hits = [(i, line.strip()) for i, line in enumerate((PROGS / prog).read_text().splitlines(), 1)
            if re.search(rf"#\s*{tag}\b", line)]
    assert len(hits) == 1, f"{prog}: expected one '# {tag}' line, found {hits}"
    return hits[0]


def where(prog, tag):
    """Regex for FILE:LINE of the marked line (FILE: the program's path or its bare name)."""
    return rf"(?:[^\s:]*/)?{re.escape(prog)}:{marker(prog, tag)[0]}\b"


def task_desc(name, coro, prog, func="main", tag="CREATE"):
    """Regex for: Task 'NAME' (coroutine FUNC(), created at FILE:LINE in FUNC)."""
    return (rf"Task '{re.escape(name)}' \(coroutine {re.escape(coro)}\(\), "
            rf"created at {where(prog, tag)} in {re.escape(func)}\)")


def stack_mentions(prog, tag):
    """Regex for a stack entry of the marked line, as a traceback ('File ".../prog.py", line N')
    or as FILE:LINE."""
    return rf"{re.escape(prog)}(?:\", line |:){marker(prog, tag)[0]}\b"


LOGGED = """
import logging, runpy, sys
logging.basicConfig(format="LOG %(name)s %(levelname)s: %(message)s")
sys.argv = sys.argv[1:]
sys.path[0] = __import__("os").path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def launch(prog, *args, how="direct", debug=False, stock=False, env=None):
    """Run a diagnostics program (``stock``: with --asyncio-run). ``how``: "direct" (python
    prog.py [--debug]), "main" (python -m ferroloop [--debug] prog.py), "env"
    (PYTHONASYNCIODEBUG=1 python prog.py) or "logged" (python prog.py --debug, with logging
    configured to prefix each record with "LOG <logger> <LEVEL>: ")."""
    path = str(PROGS / prog)
    extra = dict(env or {})
    if how == "direct":
        cmd = [sys.executable, path] + (["--debug"] if debug else [])
    elif how == "main":
        cmd = [sys.executable, "-m", "ferroloop"] + (["--debug"] if debug else []) + [path]
    elif how == "logged":  # debug on, every log record prefixed with its logger and level
        assert debug
        cmd = [sys.executable, "-c", LOGGED, path, "--debug"]
    elif how == "env":
        assert debug
        cmd = [sys.executable, path]
        extra["PYTHONASYNCIODEBUG"] = "1"
    else:
        raise ValueError(how)
    cmd += (["--asyncio-run"] if stock else []) + list(args)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                             env=child_env(**extra), cwd=PROGS)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)}: no exit after {TIMEOUT} s; stderr so far:\n{e.stderr}")
    res.cmd = " ".join(cmd)
    return res


def show(res):
    return f"\n$ {res.cmd}\n--- exit {res.returncode}; stdout:\n{res.stdout}--- stderr:\n{res.stderr}"


def check_ok(res):
    assert res.returncode == 0, "program failed" + show(res)
    return res


@functools.lru_cache(maxsize=None)
def stock_stderr(prog, *args):
    """The program's stderr on the stock loop with debug off (the oracle of 'nothing extra')."""
    return launch(prog, *args, stock=True).stderr


def normalize(text):
    # Addresses differ per run. So does the state of a collected task's coroutine in the stdlib's
    # "Task was destroyed but it is pending!" report ("running at f.py:47" or "done, defined at
    # f.py:45"): it depends on which of the task and its coroutine the cyclic collector finalizes
    # first, an order no loop controls (it flipped with the allocation history of a run).
    out = []
    for line in text.splitlines():
        line = re.sub(r"0x[0-9a-f]+", "0xADDR", line)
        line = re.sub(r"coro=<(\S+) (?:running|done, defined) at [^>]*>", r"coro=<\1 ...>", line)
        out.append(line)
    return out


def assert_no_reports(res):
    found = [line for line in res.stderr.splitlines() if any(p in line for p in FERRO_PHRASES)]
    assert not found, f"ferroloop reports with debug mode off: {found}" + show(res)


def lines_matching(res, pattern):
    """(index, line, match) of each stderr line matching ``pattern`` (re.search)."""
    out = []
    for i, line in enumerate(res.stderr.splitlines()):
        m = re.search(pattern, line)
        if m:
            out.append((i, line, m))
    return out


def one_line(res, pattern, what):
    hits = lines_matching(res, pattern)
    assert len(hits) == 1, (f"expected exactly one {what} line matching {pattern!r}, "
                            f"got {len(hits)}: {[h[1] for h in hits]}" + show(res))
    return hits[0]


def body(res, index):
    """The evidence lines of the report whose first line is stderr line ``index``: the indented
    lines that follow it."""
    lines = res.stderr.splitlines()
    out = []
    for line in lines[index + 1:]:
        if not line[:1].isspace():
            break
        out.append(line)
    return out


# -------------------------------------------------------------------------- 1. blocked loop

# program, who blocks (regex), function and source of the blocking line, caller line tag
BLOCKERS = {
    "block_sleep.py": (task_desc("fetcher", "fetch", "block_sleep.py"), "fetch",
                       "time.sleep(0.3)", None),
    "block_socket.py": (task_desc("reader", "read_reply", "block_socket.py"), "receive",
                        "data = sock.recv(4)", "CALLER"),
    "block_busy.py": (r"callback <Handle crunch\(", "count_until",
                      "while time.monotonic() < deadline", "CALLER"),
}
SHORT_BY = {  # how the end-of-stall line names the culprit
    "block_sleep.py": "Task 'fetcher'",
    "block_socket.py": "Task 'reader'",
    "block_busy.py": "callback <Handle crunch(",
}


def check_blocked_report(res, prog):
    by, func, source, caller = BLOCKERS[prog]
    check_ok(res)
    # While the stall happens: exactly one report, before the blocking call returns.
    i, line, m = one_line(res, r"the event loop has been blocked for (\d+(?:\.\d+)?) s by (.*)$",
                          "'has been blocked'")
    assert re.match(by, m.group(2)), f"expected 'by {by}', got {line!r}" + show(res)
    assert 0.09 <= float(m.group(1)) < 0.3, f"reported at {m.group(1)} s (threshold 0.1 s, " \
                                            f"stall 0.3 s): {line!r}" + show(res)
    (j, _, _), = lines_matching(res, r"^prog: unblocked$")
    assert i < j, "the 'has been blocked' report came after the stall ended" + show(res)
    # Its evidence: the blocking line, then the loop thread's stack.
    ev = body(res, i)
    blocking = rf"^\s+blocking line: {where(prog, 'BLOCK')} in {func}: .*{re.escape(source)}"
    assert any(re.search(blocking, x) for x in ev), \
        f"no line matching {blocking!r} in the report's evidence {ev}" + show(res)
    stack = [x for x in ev if "blocking line:" not in x]
    for tag in ("BLOCK", caller) if caller else ("BLOCK",):
        assert any(re.search(stack_mentions(prog, tag), x) for x in stack), \
            f"the loop thread's stack does not show {prog}:{marker(prog, tag)[0]} " \
            f"({marker(prog, tag)[1]}): {stack}" + show(res)
    writer = marker("block_socket.py", "WRITER")[0] if prog == "block_socket.py" else None
    if writer:  # the other thread's frame is not the loop thread's
        assert not any(re.search(rf"block_socket\.py(?:\", line |:){writer}\b", x) for x in ev), \
            "the report shows the writer thread's frame, not the loop thread's" + show(res)
    # When it ends: one line with the total duration and the blocking line.
    k, line, m = one_line(res, r"the event loop was blocked for (\d+(?:\.\d+)?) s by (.*)$",
                          "'was blocked'")
    assert k > j, "the end-of-stall report came before the stall ended" + show(res)
    assert 0.25 <= float(m.group(1)) < 2.0, f"stall of 0.3 s reported as {m.group(1)} s" + show(res)
    assert m.group(2).startswith(SHORT_BY[prog]), f"expected 'by {SHORT_BY[prog]}', got {line!r}"
    at = rf" at {where(prog, 'BLOCK')} in {func}: .*{re.escape(source)}"
    assert re.search(at, line), f"expected {at!r} in {line!r}" + show(res)
    return m


@pytest.mark.parametrize("prog", sorted(BLOCKERS))
def test_ferroloop_blocked_loop_reported_while_it_happens(prog):
    check_blocked_report(launch(prog, debug=True), prog)


def test_ferroloop_blocked_loop_debug_from_env():
    check_blocked_report(launch("block_sleep.py", how="env", debug=True), "block_sleep.py")


def test_ferroloop_blocked_loop_debug_from_main_with_summary():
    res = launch("block_sleep.py", how="main", debug=True)
    check_blocked_report(res, "block_sleep.py")
    summary = check_summary(res)
    text = "\n".join(summary)
    assert re.search(where("block_sleep.py", "BLOCK"), text), \
        f"the summary does not give where the loop blocked ({where('block_sleep.py', 'BLOCK')})" \
        + show(res)
    assert any(re.search(r"block|stall", x) and re.search(r"(?<![\d.:])1(?![\d.])", x)
               for x in summary), "the summary does not count 1 stall" + show(res)
    durations = [float(x) for x in re.findall(r"(\d+\.\d+) ?s\b", text)]
    assert durations and max(durations) >= 0.25, \
        f"the summary gives no longest stall >= 0.25 s (durations found: {durations})" + show(res)


@pytest.mark.parametrize("prog", ["block_sleep.py", "pending_at_exit.py"])
def test_ferroloop_main_debug_unmodified_program(prog):
    """python -m ferroloop --debug on a program that calls asyncio.run() (not ferroloop.run())."""
    res = check_ok(launch(prog, how="main", debug=True, stock=True))
    text = "\n".join(check_summary(res))
    if prog == "block_sleep.py":
        check_blocked_report(res, prog)
        assert re.search(where(prog, "BLOCK"), text), show(res)
    else:
        assert "heartbeat" in text, \
            "the summary does not list the task asyncio.run() cancelled at exit" + show(res)


def test_ferroloop_main_debug_summary_when_program_fails():
    res = launch("nested_run.py", how="main", debug=True)
    assert res.returncode == 1, "the program's failure must keep its exit status" + show(res)
    assert "RuntimeError: asyncio.run() cannot be called" in res.stderr, show(res)
    assert res.stderr.count("ferroloop debug summary:") == 1, show(res)


@pytest.mark.parametrize("prog", sorted(BLOCKERS))
def test_ferroloop_blocked_loop_silent_with_debug_off(prog):
    res = check_ok(launch(prog))
    assert_no_reports(res)
    assert normalize(res.stderr) == normalize(stock_stderr(prog))


def _block_in_process(ferroloop_mod, caplog, threshold, stall):
    loop = ferroloop_mod.new_event_loop()
    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 10  # keep the stdlib's own slow-callback warning out
        assert loop.stall_threshold == 0.1
        loop.stall_threshold = threshold
        assert loop.stall_threshold == threshold
        caplog.set_level(logging.WARNING, logger="ferroloop")
        loop.call_soon(time.sleep, stall)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    return [r for r in caplog.records if r.name == "ferroloop"]


def test_ferroloop_stall_threshold_settable(ferroloop_mod, caplog):
    records = _block_in_process(ferroloop_mod, caplog, 0.05, 0.15)
    msgs = [r.getMessage() for r in records]
    during = [m for m in msgs if m.startswith("the event loop has been blocked for")]
    after = [m for m in msgs if m.startswith("the event loop was blocked for")]
    assert len(during) == 1 and len(after) == 1, msgs
    assert all(r.levelno == logging.WARNING for r in records), [r.levelname for r in records]
    secs = float(re.search(r"blocked for (\d+(?:\.\d+)?) s", during[0]).group(1))
    assert 0.045 <= secs < 0.15, during[0]
    secs = float(re.search(r"blocked for (\d+(?:\.\d+)?) s", after[0]).group(1))
    assert 0.14 <= secs < 1.0, after[0]
    assert "by callback" in during[0] and "sleep" in during[0], during[0]


def test_ferroloop_two_stalls_two_reports(ferroloop_mod, caplog):
    """Two slow callbacks in consecutive turns (the loop polls in between): two stalls."""
    loop = ferroloop_mod.new_event_loop()

    def second():
        time.sleep(0.12)
        loop.stop()

    def first():
        time.sleep(0.12)
        loop.call_soon(second)

    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 10
        loop.stall_threshold = 0.05
        caplog.set_level(logging.WARNING, logger="ferroloop")
        loop.call_soon(first)
        loop.run_forever()
    finally:
        loop.close()
    msgs = [r.getMessage() for r in caplog.records if r.name == "ferroloop"]
    during = [m.splitlines()[0] for m in msgs if m.startswith("the event loop has been blocked")]
    after = [m.splitlines()[0] for m in msgs if m.startswith("the event loop was blocked")]
    assert len(during) == 2 and len(after) == 2, msgs
    assert "first" in during[0] and "second" in during[1], during


def test_ferroloop_stall_under_threshold_not_reported(ferroloop_mod, caplog):
    records = _block_in_process(ferroloop_mod, caplog, 0.5, 0.15)
    assert not records, [r.getMessage() for r in records]


# ------------------------------------------------------------------ 2. coroutines never awaited


@pytest.mark.parametrize("how", ["direct", "env", "main"])
def test_ferroloop_never_awaited_reported(how):
    res = check_ok(launch("never_awaited.py", how=how, debug=True))
    origin = where("never_awaited.py", "NEVER_AWAITED")
    pat = rf"coroutine 'save' was never awaited \(created at {origin} in main\)"
    one_line(res, pat, "never-awaited report")
    # CPython's own warning, with the origin that debug mode tracks.
    assert "RuntimeWarning: coroutine 'save' was never awaited" in res.stderr, show(res)
    assert "Coroutine created at" in res.stderr, show(res)
    if how == "main":
        text = "\n".join(check_summary(res))
        assert "save" in text and re.search(where("never_awaited.py", "NEVER_AWAITED"), text), \
            "the summary does not list the never-awaited coroutine with its FILE:LINE" + show(res)


async def _dropped():
    pass


def test_ferroloop_never_awaited_reported_only_in_debug_mode(ferroloop_mod, caplog):
    """In-process: reported while a debug-mode run is on; once it is over, and in a run with
    debug off, a never-awaited coroutine only gets CPython's warning."""
    caplog.set_level(logging.WARNING, logger="ferroloop")

    async def main():
        _dropped()

    with pytest.warns(RuntimeWarning, match="'_dropped' was never awaited"):
        ferroloop_mod.run(main(), debug=True)
    msgs = [r.getMessage() for r in caplog.records if r.name == "ferroloop"]
    assert [m for m in msgs if m.startswith("coroutine '_dropped' was never awaited (created at")
            and "in main)" in m], msgs
    caplog.clear()
    with pytest.warns(RuntimeWarning, match="'_dropped' was never awaited"):
        ferroloop_mod.run(main())
    with pytest.warns(RuntimeWarning, match="'_dropped' was never awaited"):
        _dropped()
    msgs = [r.getMessage() for r in caplog.records if r.name == "ferroloop"]
    assert not msgs, f"reports after the debug-mode run ended: {msgs}"


# ---------------------------------------------------------------------------------- 3. tasks


@pytest.mark.parametrize("how", ["direct", "main"])
def test_ferroloop_task_destroyed_pending_reported(how):
    res = check_ok(launch("task_destroyed_pending.py", how=how, debug=True))
    desc = task_desc("orphan", "wait_for_reply", "task_destroyed_pending.py")
    one_line(res, rf"task destroyed while pending: {desc}", "destroyed-pending report")
    if how == "main":
        assert "orphan" in "\n".join(check_summary(res)), \
            "the summary does not list the lost task 'orphan'" + show(res)


def test_ferroloop_task_exception_never_retrieved_reported():
    res = check_ok(launch("task_exception.py", debug=True))
    desc = task_desc("parser", "parse", "task_exception.py")
    one_line(res, rf"task exception was never retrieved: {desc}: ValueError: bad input 'x42'$",
             "exception-never-retrieved report")


@pytest.mark.parametrize("how", ["direct", "main"])
def test_ferroloop_pending_at_exit_reported(how):
    res = check_ok(launch("pending_at_exit.py", how=how, debug=True))
    desc = task_desc("heartbeat", "heartbeat", "pending_at_exit.py")
    i, _, _ = one_line(res, rf"task still pending when run\(\) finished, cancelled: {desc}",
                       "pending-at-exit report")
    assert "prog: cancelled True" in res.stdout, "run() did not cancel the task" + show(res)
    if how == "main":
        assert "heartbeat" in "\n".join(check_summary(res)), \
            "the summary does not list the task cancelled at exit" + show(res)


def test_ferroloop_lost_fire_and_forget_tasks_reported():
    res = check_ok(launch("fire_and_forget.py", debug=True))
    assert "prog: results []" in res.stdout, "the tasks were expected to be lost" + show(res)
    for tag, name in (("FORGET1", "Task-2"), ("FORGET2", "Task-3")):
        one_line(res, rf"task destroyed while pending: "
                      rf"{task_desc(name, 'work', 'fire_and_forget.py', tag=tag)}",
                 f"destroyed-pending report for {name}")


@pytest.mark.parametrize("prog", ["never_awaited.py", "task_destroyed_pending.py",
                                  "task_exception.py", "pending_at_exit.py",
                                  "fire_and_forget.py"])
@pytest.mark.parametrize("how", ["direct", "main"])
def test_ferroloop_silent_with_debug_off(prog, how):
    res = check_ok(launch(prog, how=how))
    assert_no_reports(res)
    # The same lines, in any order: when the collector frees several tasks at once, the order of
    # their stdlib reports is its finalization order (see normalize).
    assert sorted(normalize(res.stderr)) == sorted(normalize(stock_stderr(prog))), \
        "with debug off, stderr differs from the stock loop's" + show(res)


# Every report is one record of the "ferroloop" logger at WARNING (its first line prefixed).
LOGGED_REPORTS = {
    "block_sleep.py": ["the event loop has been blocked for ", "the event loop was blocked for "],
    "never_awaited.py": ["coroutine 'save' was never awaited (created at "],
    "task_destroyed_pending.py": ["task destroyed while pending: Task 'orphan'"],
    "task_exception.py": ["task exception was never retrieved: Task 'parser'"],
    "pending_at_exit.py": ["task still pending when run() finished, cancelled: Task 'heartbeat'"],
}


@pytest.mark.parametrize("prog", sorted(LOGGED_REPORTS))
def test_ferroloop_reports_are_ferroloop_logger_warnings(prog):
    res = check_ok(launch(prog, how="logged", debug=True))
    for start in LOGGED_REPORTS[prog]:
        hits = [x for x in res.stderr.splitlines() if start in x]
        assert len(hits) == 1, f"expected one line with {start!r}, got {hits}" + show(res)
        assert hits[0].startswith("LOG ferroloop WARNING: " + start), \
            f"not a WARNING record of the 'ferroloop' logger: {hits[0]!r}" + show(res)
    if prog == "block_sleep.py":  # the evidence belongs to the same record (not a second one)
        i = next(i for i, x in enumerate(res.stderr.splitlines()) if "has been blocked" in x)
        assert any("blocking line:" in x for x in body(res, i)), show(res)


# ------------------------------------------------------------------------------ keep_tasks


def test_ferroloop_fire_and_forget_lost_without_keep_tasks():
    """The program really loses its tasks (on the stock loop too): keep_tasks has work to do."""
    res = check_ok(launch("fire_and_forget.py"))
    assert "prog: keep_tasks False" in res.stdout, show(res)
    assert "prog: results []" in res.stdout, show(res)
    assert "Task was destroyed but it is pending!" in res.stderr, show(res)
    stock = check_ok(launch("fire_and_forget.py", stock=True))
    assert "prog: results []" in stock.stdout, show(stock)


@pytest.mark.parametrize("flag", ["--keep-tasks", "--set-keep-tasks"])
@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_ferroloop_keep_tasks_completes_fire_and_forget(flag, debug):
    res = check_ok(launch("fire_and_forget.py", flag, debug=debug))
    assert "prog: keep_tasks True" in res.stdout, show(res)
    assert "prog: results ['loop.create_task', 'asyncio.create_task']" in res.stdout, \
        "a fire-and-forget task did not complete with keep_tasks" + show(res)
    assert "prog: released True" in res.stdout, \
        "keep_tasks still holds tasks that have finished" + show(res)
    assert "destroyed" not in res.stderr, show(res)
    assert_no_reports(res)


def test_ferroloop_keep_tasks_accessors(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        assert loop.get_keep_tasks() is False
        loop.set_keep_tasks(True)
        assert loop.get_keep_tasks() is True
        loop.set_keep_tasks(False)
        assert loop.get_keep_tasks() is False
    finally:
        loop.close()


# ------------------------------------------------------------------------------ 4. nested run


def _stdlib_nested_message():
    """The stdlib's own message, from asyncio.run() called in a running (stock) loop."""
    async def outer():
        coro = asyncio.sleep(0)
        try:
            asyncio.run(coro)
        except RuntimeError as e:
            return str(e)
        finally:
            coro.close()
    return asyncio.run(outer())


def _check_nested_message(msg):
    stdlib = _stdlib_nested_message()
    assert stdlib in msg, f"expected the stdlib's message {stdlib!r} in {msg!r}"
    for advice in ("await", "asyncio.create_task(", "notebook"):
        assert advice in msg, f"expected advice mentioning {advice!r} in {msg!r}"
    assert re.search(r"top-level `?await", msg), f"no top-level await advice in {msg!r}"


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_ferroloop_nested_run_program(debug):
    res = launch("nested_run.py", debug=debug)
    assert res.returncode == 1, show(res)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: "), show(res)
    _check_nested_message(last[len("RuntimeError: "):])
    stock = launch("nested_run.py", stock=True)
    assert stock.stderr.strip().splitlines()[-1] in last, \
        "the stock loop's error line is not contained in ferroloop's" + show(stock)
    assert "never awaited" not in res.stderr, show(res)
    if not debug:
        assert_no_reports(res)


@pytest.mark.parametrize("outer", ["stock", "ferroloop"])
def test_ferroloop_nested_run_in_process(ferroloop_mod, outer):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError) as exc:
                ferroloop_mod.run(coro)
        finally:
            coro.close()
        return str(exc.value)

    if outer == "stock":
        msg = asyncio.run(main())
    else:
        msg = ferroloop_mod.run(main())
    _check_nested_message(msg)


# ---------------------------------------------------------------------------------- 5. stats

STATS_KEYS = ("turns", "callbacks", "busy", "idle", "longest_stall", "ready", "timers", "fds",
              "waits_skipped")


def test_ferroloop_stats_keys_fresh_loop(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    try:
        s = loop.stats()
        assert set(STATS_KEYS) <= set(s), f"missing: {set(STATS_KEYS) - set(s)}"
        for k in ("turns", "callbacks", "ready", "timers", "fds", "waits_skipped"):
            assert isinstance(s[k], int) and s[k] == 0, (k, s[k])
        for k in ("busy", "idle", "longest_stall"):
            assert isinstance(s[k], float) and s[k] == 0.0, (k, s[k])
    finally:
        loop.close()


def test_ferroloop_stats_busy_idle_longest_stall(ferroloop_mod):
    """Always on (debug off): 0.15 s waiting on a timer, then one 0.3 s blocking callback."""
    loop = ferroloop_mod.new_event_loop()
    mid = {}

    async def main():
        await asyncio.sleep(0.15)  # idle: the loop waits in its poller
        mid.update(loop.stats())
        loop.call_soon(time.sleep, 0.3)  # busy: one stall
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    try:
        assert loop.get_debug() is False
        t0 = time.perf_counter()
        loop.run_until_complete(main())
        wall = time.perf_counter() - t0
        s = loop.stats()
    finally:
        loop.close()
    assert mid["idle"] >= 0.13, f"0.15 s timer wait counted as idle {mid['idle']:.3f} s"
    assert mid["longest_stall"] < 0.05, \
        f"waiting for a timer counted as a stall: longest_stall {mid['longest_stall']:.3f} s"
    assert 0.28 <= s["busy"] < 0.28 + 0.2, f"busy {s['busy']:.3f} s after a 0.3 s callback"
    assert 0.13 <= s["idle"] < 0.3, f"idle {s['idle']:.3f} s for a 0.15 s wait"
    assert 0.28 <= s["longest_stall"] <= s["busy"] + 1e-3, \
        f"longest_stall {s['longest_stall']:.3f} s (busy {s['busy']:.3f} s)"
    assert abs(s["busy"] + s["idle"] - wall) <= 0.02 + 0.05 * wall, \
        f"busy {s['busy']:.3f} + idle {s['idle']:.3f} = {s['busy'] + s['idle']:.3f} s, " \
        f"wall time of the run {wall:.3f} s"


def test_ferroloop_stats_count_only_running_time(ferroloop_mod):
    """busy + idle covers the runs, not the time between them (the loop is not running)."""
    loop = ferroloop_mod.new_event_loop()
    wall = 0.0
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            loop.run_until_complete(asyncio.sleep(0.1))
            wall += time.perf_counter() - t0
            time.sleep(0.15)
        s = loop.stats()
    finally:
        loop.close()
    assert abs(s["busy"] + s["idle"] - wall) <= 0.02 + 0.05 * wall, \
        f"busy {s['busy']:.3f} + idle {s['idle']:.3f} s; the two runs took {wall:.3f} s " \
        f"(0.3 s outside the loop in between)"
    assert s["longest_stall"] < 0.05, s


def test_ferroloop_stats_counts(ferroloop_mod):
    loop = ferroloop_mod.new_event_loop()
    a, b = socket.socketpair()
    try:
        n = 50
        for _ in range(n):
            loop.call_soon(lambda: None)
        s = loop.stats()
        assert s["ready"] == n and s["callbacks"] == 0 and s["turns"] == 0, s
        loop.call_soon(loop.stop)
        loop.run_forever()
        s = loop.stats()
        assert s["callbacks"] == n + 1, f"{n} callbacks and stop() ran: callbacks {s['callbacks']}"
        assert 1 <= s["turns"] <= 2, s
        assert s["ready"] == 0, s
        h = [loop.call_later(10, lambda: None) for _ in range(3)]
        h[0].cancel()
        loop.add_reader(a.fileno(), lambda: None)
        s = loop.stats()
        assert s["timers"] == 2 and s["fds"] == 1, s
        loop.remove_reader(a.fileno())
        for x in h:
            x.cancel()
        assert loop.stats()["fds"] == 0
        turns = s["turns"]
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert loop.stats()["turns"] > turns
    finally:
        loop.close()
        a.close()
        b.close()


# ------------------------------------------------------------------------------ 6. summary


def check_summary(res):
    """The lines of the exit summary: stderr must end with it."""
    lines = res.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("ferroloop debug summary:")]
    assert len(starts) == 1, f"expected one 'ferroloop debug summary:', found {len(starts)}" + show(res)
    summary = lines[starts[0]:]
    others = [x for x in summary[1:] if any(p in x for p in FERRO_PHRASES)
              or x.startswith(("prog:", "Traceback", "Task "))]
    assert not others, f"the summary is not the end of stderr: {others}" + show(res)
    return summary


@pytest.mark.parametrize("prog", sorted(BLOCKERS) + ["nested_run.py"])  # (others: above)
def test_ferroloop_main_without_debug_prints_no_summary(prog):
    res = launch(prog, how="main")
    assert res.returncode == (1 if prog == "nested_run.py" else 0), show(res)
    assert_no_reports(res)
