"""``python -m ferroloop ps PID`` (python/ferroloop/_ps.py): the tasks of another process.

ferroloop-only. Each test runs the target in a child process (its server thread lives until the
child exits).
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import child_env

APP = """
import asyncio, os, sys

async def leaf():
    await asyncio.sleep(60)

async def middle():
    await asyncio.create_task(leaf(), name="leaf")

async def top():
    await asyncio.create_task(middle(), name="middle")

async def main():
    t = asyncio.create_task(top(), name="top")
    await asyncio.sleep(0.05)
    print("ready", flush=True)
    await t

asyncio.run(main())
"""


@pytest.fixture
def target(tmp_path):
    """Starts APP under ``python -m ferroloop --ps``; yields (pid, app path); kills it after."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    procs = []

    def start(*extra, env=None):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferroloop", *extra, str(app)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or child_env(), cwd=tmp_path,
        )
        procs.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"target did not start: {line + out!r}\n{err}")
        return proc

    yield start, app
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _ps(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ferroloop", "ps", *args], capture_output=True,
                          text=True, timeout=30, env=child_env(), cwd=cwd)


def test_ferroloop_ps_lists_tasks_with_the_await_chain(target):
    start, app = target
    proc = start("--ps")
    p = _ps(str(proc.pid), cwd=app.parent)  # paths under the current directory are shortened
    assert p.returncode == 0, p.stderr
    out = p.stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"process {proc.pid} (Python {sys.version.split()[0]})")
    assert "running in thread MainThread: 4 task(s)" in out, out
    rows = {line.split()[1]: line for line in lines if line.startswith("  0x")}
    assert set(rows) == {"Task-1", "top", "middle", "leaf"}, out
    # The chains: each task down to the future the innermost one waits on.
    assert "top -> middle -> leaf -> <Future pending" in rows["Task-1"], rows["Task-1"]
    assert "middle -> leaf -> <Future pending" in rows["top"]
    assert "leaf -> <Future pending" in rows["middle"]
    assert "main() app.py:" in rows["Task-1"]
    assert "leaf() app.py:5" in rows["leaf"]
    assert "asyncio/tasks.py" in rows["leaf"]  # leaf() > sleep() inside asyncio
    assert rows["leaf"].split()[-2:] == ["middle", "-"]  # awaited by, created at (not known)
    for name in ("top", "middle", "leaf"):
        assert " pending " in rows[name]
    print(out)  # shown with pytest -s

    p = _ps("--json", str(proc.pid))
    assert p.returncode == 0, p.stderr
    answer = json.loads(p.stdout)
    (lp,) = answer["loops"]
    by_name = {t["name"]: t for t in lp["tasks"]}
    assert by_name["top"]["awaiting"] == [by_name["middle"]["id"]]
    assert by_name["middle"]["awaiting"] == [by_name["leaf"]["id"]]
    assert [e["name"] for e in by_name["leaf"]["stack"]] == ["leaf", "sleep"]
    assert by_name["leaf"]["stack"][0] == {"name": "leaf", "file": str(app), "line": 5}
    assert lp["stats"]["turns"] > 0


def test_ferroloop_ps_creation_site_in_debug_mode(target):
    start, app = target
    proc = start("--ps", "--debug")
    answer = json.loads(_ps("--json", str(proc.pid)).stdout)
    by_name = {t["name"]: t for t in answer["loops"][0]["tasks"]}
    assert by_name["middle"]["created"] == f"{app}:11 in top"


def test_ferroloop_ps_socket_is_private_and_removed_at_exit(target):
    start, _app = target
    proc = start(env=child_env(FERROLOOP_PS="1"))
    path = f"/tmp/ferroloop-{os.getuid()}/{proc.pid}.sock"
    if os.environ.get("XDG_RUNTIME_DIR"):
        from ferroloop import _ps

        path = os.path.join(_ps._runtime_dirs(os.getuid())[0], f"{proc.pid}.sock")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    dst = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(dst.st_mode) == 0o700 and dst.st_uid == os.getuid()
    # Nothing listens on the network.
    net = subprocess.run(["cat", f"/proc/{proc.pid}/net/tcp", f"/proc/{proc.pid}/net/tcp6"],
                         capture_output=True, text=True).stdout
    inodes = {ln.split()[9] for ln in net.splitlines()[1:] if len(ln.split()) > 9 and ln.split()[3] == "0A"}
    fds = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")}
    assert not {f"socket:[{i}]" for i in inodes} & fds, "a TCP listening socket"
    # An exit that runs atexit (SIGINT: KeyboardInterrupt) removes the socket.
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert not os.path.exists(path)


def test_ferroloop_ps_refuses_an_unsafe_directory(tmp_path, run_py):
    # A directory others can enter (or owned by someone else) is refused, and the program goes
    # on without the socket.
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    (runtime / "ferroloop").mkdir(mode=0o755)
    os.chmod(runtime / "ferroloop", 0o755)
    p = run_py(
        """
        import asyncio, ferroloop
        from ferroloop import _ps
        print(_ps._runtime_dirs(__import__("os").getuid())[0])
        try:
            _ps._private_dir(_ps._runtime_dirs(__import__("os").getuid())[0])
        except PermissionError as e:
            print("refused:", e)
        """,
        env=child_env(XDG_RUNTIME_DIR=str(runtime)),
    )
    assert p.returncode == 0, p.stderr
    assert f"refused: {runtime}/ferroloop is accessible to others (mode 755)" in p.stdout


def test_ferroloop_ps_rejects_other_uids_and_bad_requests(target):
    start, _app = target
    proc = start("--ps")
    from ferroloop import _ps

    # Same uid: a bad request gets an error answer, not a crash; the server still answers after.
    path = [p for p in (os.path.join(d, f"{proc.pid}.sock") for d in _ps._runtime_dirs(os.getuid()))
            if os.path.exists(p)][0]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"hello\n")
        assert "error" in json.loads(s.makefile().readline())
    assert _ps.request(proc.pid)["pid"] == proc.pid
    # Another uid: as root, connect from a child that dropped to uid 65534 (nobody). The socket
    # file's mode (0600) already refuses the connect; the server's SO_PEERCRED check is the
    # second line.
    if os.getuid() != 0:
        pytest.skip("needs root to act as another uid")
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({path!r})\nexcept PermissionError:\n    print('denied')\n"
        "else:\n    print('connected')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "denied", p.stdout + p.stderr


def test_ferroloop_ps_without_server(run_py):
    p = _ps(str(os.getpid()))
    assert p.returncode == 1
    assert "has no ferroloop ps socket" in p.stderr and "FERROLOOP_PS=1" in p.stderr
    p = _ps("notapid")
    assert p.returncode == 2 and "usage" in p.stderr
    p = _ps("999999999")
    assert p.returncode == 1 and "no process" in p.stderr


def test_ferroloop_ps_server_in_process_snapshot(ferroloop_mod):
    # The snapshot itself, in this process (no server thread): loops that are not running are
    # listed too; closed ones are not.
    import asyncio

    from ferroloop import _ps

    loop = ferroloop_mod.new_event_loop()
    try:
        async def sleeper():
            await asyncio.sleep(10)

        async def main():
            t = asyncio.create_task(sleeper(), name="sleeper")
            await asyncio.sleep(0)
            snap = _ps.snapshot()
            t.cancel()
            return snap

        snap = loop.run_until_complete(main())
    finally:
        loop.close()
    mine = [lp for lp in snap["loops"] if lp["loop"] == hex(id(loop))]
    assert len(mine) == 1 and mine[0]["running"]
    names = {t["name"]: t for t in mine[0]["tasks"]}
    assert names["sleeper"]["state"] == "pending"
    assert [t for t in names.values() if t["state"] == "running"]  # main(), taking the snapshot
    assert hex(id(loop)) not in {lp["loop"] for lp in _ps.snapshot()["loops"]}


def test_ferroloop_ps_failure_is_logged_once(tmp_path, run_py):
    # No usable directory (here: a file stands where it should be): one warning, however many
    # loops the program creates, and the program runs on.
    bad = tmp_path / "ferroloop"
    bad.write_text("not a directory")
    p = run_py(
        f"""
        import asyncio, ferroloop
        from ferroloop import _ps
        _ps._runtime_dirs = lambda uid: [{str(bad)!r}]
        for _ in range(3):
            ferroloop.run(asyncio.sleep(0))
        print("ran")
        """,
        env=child_env(FERROLOOP_PS="1"),
    )
    assert p.returncode == 0 and p.stdout.strip() == "ran", p.stderr
    assert p.stderr.count("FERROLOOP_PS: cannot open the ps socket") == 1, p.stderr
    assert "is not a directory" in p.stderr
