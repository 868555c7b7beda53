"""ferroloop where ``epoll_pwait2`` is missing or refused.

Kernels before 5.11 answer ``epoll_pwait2`` with ENOSYS, and older container runtimes' seccomp
profiles with EPERM. The poller then falls back, once per process, to ``epoll_wait`` with its
timeout rounded up to whole milliseconds. Each test runs a small ferroloop program (timers,
a socket pair, a cross-thread wake-up) in a subprocess under ``strace``, which injects the
error into every ``epoll_pwait2`` call, and checks that the program completes, that its timers
ran in order and never early, and, from strace's log, that ``epoll_pwait2`` really was refused
(once: the fallback is remembered) and ``epoll_wait`` did the waiting.

The same is done for ``io_uring_setup``, which the readiness hint needs (seccomp profiles refuse
it with EPERM, kernels before 5.1 with ENOSYS): the hint is then off, and every wait is real.

``make test-fallback`` installs strace when it is missing and runs this file outside strace
(a traced process cannot run strace itself).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import child_env

STRACE = shutil.which("strace")

PROGRAM = textwrap.dedent(
    """
    import asyncio, json, socket, threading, time
    import ferroloop

    RES = time.get_clock_info("monotonic").resolution

    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, ferroloop.Loop), type(loop)
        fired, early = [], []

        def on_timer(name, when):
            now = loop.time()
            if now < when - RES:
                early.append([name, when - now])
            fired.append(name)

        delays = {"0.2ms": 0.0002, "1.5ms": 0.0015, "3ms": 0.003, "10ms": 0.010, "25ms": 0.025}
        # Scheduled longest first, so the heap, not the insertion order, orders them.
        for name, d in sorted(delays.items(), key=lambda kv: -kv[1]):
            when = loop.time() + d
            loop.call_at(when, on_timer, name, when)

        # Sub-millisecond sleeps end no earlier than asked (rounded up, not down to a poll).
        short = []
        for _ in range(5):
            t = time.monotonic()
            await asyncio.sleep(0.0002)
            short.append(time.monotonic() - t)

        # A socket pair through the loop's fd watching.
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b:
            await loop.sock_sendall(a, b"ping")
            data = await asyncio.wait_for(loop.sock_recv(b, 4), 5)

        # A wake-up from another thread ends a long wait.
        fut = loop.create_future()
        th = threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken"))
        th.start()
        woken = await asyncio.wait_for(fut, 5)
        th.join()

        await asyncio.sleep(0.03)
        return {"fired": fired, "early": early, "short": short, "data": data.decode(),
                "woken": woken, "order": sorted(delays, key=delays.get)}

    print(json.dumps(ferroloop.run(main())))
    """
)


def _traced_by_someone():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1]) != 0
    return False


def _run_traced(tmp_path, inject, env=None):
    log = tmp_path / "strace.log"
    cmd = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=epoll_pwait2,epoll_wait",
           "-e", "signal=none", "-o", str(log)]
    if inject:
        cmd += ["-e", f"inject=epoll_pwait2:error={inject}"]
    cmd += [sys.executable, "-c", PROGRAM]
    environ = child_env(**(env or {}))
    if not env or "FERROLOOP_EPOLL" not in env:
        environ.pop("FERROLOOP_EPOLL", None)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    lines = log.read_text().splitlines()
    pwait2 = [ln for ln in lines if re.search(r"\bepoll_pwait2\(", ln)]
    wait = [ln for ln in lines if re.search(r"\bepoll_wait\(", ln)]
    return out, pwait2, wait


def _check_program(out):
    assert out["fired"] == out["order"], out
    assert out["early"] == [], f"timers fired early: {out['early']}"
    assert all(s >= 0.0002 for s in out["short"]), out["short"]
    assert out["data"] == "ping"
    assert out["woken"] == "woken"


pytestmark = [
    pytest.mark.skipif(STRACE is None, reason="strace is not installed (make test-fallback installs it)"),
    pytest.mark.skipif(_traced_by_someone(),
                       reason="already under ptrace (strace cannot nest); make test-fallback runs this file untraced"),
]


@pytest.mark.parametrize("errno", ["ENOSYS", "EPERM"])
def test_ferroloop_runs_when_epoll_pwait2_is_refused(tmp_path, errno):
    out, pwait2, wait = _run_traced(tmp_path, errno)
    _check_program(out)
    # Refused once, for the whole process: the first wait, retried at once with epoll_wait.
    assert len(pwait2) == 1, pwait2
    assert f"= -1 {errno}" in pwait2[0] and "(INJECTED)" in pwait2[0], pwait2
    assert wait, "no epoll_wait call: the fallback did not wait"


def test_ferroloop_env_var_selects_epoll_wait(tmp_path):
    # FERROLOOP_EPOLL=wait: epoll_pwait2 is never issued (for seccomp policies that kill).
    out, pwait2, wait = _run_traced(tmp_path, None, env={"FERROLOOP_EPOLL": "wait"})
    _check_program(out)
    assert pwait2 == []
    assert wait


def test_ferroloop_uses_epoll_pwait2_by_default(tmp_path):
    # The control, nothing injected or forced: every wait is epoll_pwait2 (nanosecond timeouts)
    # where the kernel allows it, else the first one is refused for real and epoll_wait waits.
    out, pwait2, wait = _run_traced(tmp_path, None)
    _check_program(out)
    assert pwait2 and all("(INJECTED)" not in ln for ln in pwait2)
    if re.search(r"= -1 (ENOSYS|EPERM)", pwait2[0]):  # a kernel < 5.11, or a seccomp filter
        assert len(pwait2) == 1 and wait, (pwait2, wait[:3])
    else:
        assert not any(re.search(r"= -1 E(NOSYS|PERM)", ln) for ln in pwait2), pwait2
        assert wait == []


# The readiness hint (tests/test_wait_hint.py) where io_uring is refused: a seccomp filter
# (Docker's default profile answers EPERM), `kernel.io_uring_disabled`, or a kernel without it
# (ENOSYS). Two loops spin over an idle fd; the reader still runs the turn after each write, no
# wait is skipped, and the refusal is asked once per process.
HINT_PROGRAM = textwrap.dedent(
    """
    import asyncio, json, socket
    import ferroloop

    def spin_and_write(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        log = []
        loop.add_reader(a.fileno(), lambda: log.append(("read", a.recv(8).decode())))
        async def main():
            for i in range(300):
                log.append(("turn", i))
                if i in (100, 250):
                    b.send(b"w%d" % i)
                await asyncio.sleep(0)
        loop.run_until_complete(main())
        loop.remove_reader(a.fileno())
        a.close(); b.close()
        return log

    out = []
    for _ in range(2):
        loop = ferroloop.new_event_loop()
        log = spin_and_write(loop)
        reads = [log[i - 1] for i, e in enumerate(log) if e[0] == "read"]
        out.append({"reads_after": reads, "stats": list(loop._wait_hint_stats())})
        loop.close()
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("errno", ["ENOSYS", "EPERM"])
def test_ferroloop_runs_when_io_uring_is_refused(tmp_path, errno):
    log = tmp_path / "strace.log"
    cmd = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=io_uring_setup", "-e", "signal=none",
           "-o", str(log), "-e", f"inject=io_uring_setup:error={errno}",
           sys.executable, "-c", HINT_PROGRAM]
    environ = child_env()
    environ.pop("FERROLOOP_IO_URING", None)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for run in out:
        # `await sleep(0)` at turn i, the write at turn 100: the reader runs right after the
        # next turn's step, as on the stock loop.
        assert run["reads_after"] == [["turn", 101], ["turn", 251]], run
        assert run["stats"] == [0, 0], run
    setups = [ln for ln in log.read_text().splitlines() if "io_uring_setup(" in ln]
    assert len(setups) == 1, setups
    assert f"= -1 {errno}" in setups[0] and "(INJECTED)" in setups[0], setups


def test_ferroloop_uses_io_uring_for_the_hint_by_default(tmp_path):
    # The control: nothing injected, one ring per loop, waits skipped (where the kernel allows).
    log = tmp_path / "strace.log"
    cmd = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=io_uring_setup", "-e", "signal=none",
           "-o", str(log), sys.executable, "-c", HINT_PROGRAM]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env())
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    setups = [ln for ln in log.read_text().splitlines() if "io_uring_setup(" in ln]
    for run in out:
        assert run["reads_after"] == [["turn", 101], ["turn", 251]], run
    if setups and re.search(r"= -1 E", setups[0]):  # refused for real: a sandbox, an old kernel
        assert len(setups) == 1 and all(r["stats"] == [0, 0] for r in out), (setups, out)
    else:
        assert len(setups) == 2, setups
        assert all(r["stats"][0] > 200 and r["stats"][1] == 0 for r in out), out


if __name__ == "__main__":
    # `make test-fallback`'s smoke, run under strace's EPERM injection: the program in this
    # process, checked the same way.
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(PROGRAM, {"__name__": "__fallback_smoke__"})
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
    _check_program(result)
    print("fallback smoke ok: timers in order", result["fired"], "none early; socket pair, wake-up")
