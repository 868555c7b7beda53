"""``python -m ferroloop ps PID``: the tasks of a running process's ferroloop loops.

Python 3.14 has ``python -m asyncio ps``, which reads a process's memory; ferroloop's works on
3.11-3.13 and asks the process itself. The process opts in (``FERROLOOP_PS=1``, read when its
first ferroloop loop is created, or ``python -m ferroloop --ps app.py``, or ``_ps.serve()``):
a daemon thread listens on a Unix socket, never a network port, at
``$XDG_RUNTIME_DIR/ferroloop/<pid>.sock`` when the runtime directory is the user's own, else
``/tmp/ferroloop-<uid>/<pid>.sock``. The directory is created mode 0700 and refused if it is
not a directory owned by the process's user with no group or other access; the socket is mode
0600, answers only peers of the same uid (or root, checked with SO_PEERCRED), and is removed at
exit.

The protocol: one JSON line in (``{"request": "tasks"}``), one JSON document out, then the
server closes the connection. The answer lists, for every ferroloop loop of the process that is
not closed: its thread, whether it runs, ``stats()``, and its tasks: id, name, state, coroutine,
the coroutine stack (the ``cr_await`` chain of coroutines, outermost first, with the line each
one is at), what the task awaits (``_fut_waiter``: another task, the children of a
``gather()``, or a future) and where it was created when known (debug mode's creation
traceback, or coroutine origin tracking).
"""

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading

from . import _production

logger = logging.getLogger("ferroloop")

ENV = "FERROLOOP_PS"
MAX_REQUEST = 4096
TIMEOUT = 5.0

# Every ferroloop loop of the process (registered by _production.init_loop).
LOOPS = _production.LOOPS

_server = None
_server_lock = threading.Lock()


# ------------------------------------------------------------------------------------------
# Where the socket is


def _runtime_dirs(uid, xdg=None):
    """Candidate directories for the sockets of processes of ``uid``, preferred first
    (``xdg``: the target's XDG_RUNTIME_DIR, default this process's)."""
    dirs = []
    xdg = os.environ.get("XDG_RUNTIME_DIR") if xdg is None else xdg
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
            if st.st_uid == uid and stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o077:
                dirs.append(os.path.join(xdg, "ferroloop"))
        except OSError:
            pass
    run_user = f"/run/user/{uid}"
    if os.path.join(run_user, "ferroloop") not in dirs and os.path.isdir(run_user):
        try:
            st = os.stat(run_user)
            if st.st_uid == uid and not st.st_mode & 0o077:
                dirs.append(os.path.join(run_user, "ferroloop"))
        except OSError:
            pass
    dirs.append(f"/tmp/ferroloop-{uid}")
    return dirs


def _private_dir(path):
    """Creates ``path`` mode 0700 if missing; raises PermissionError unless it is a directory
    (not a symlink) owned by this process's user with no access for group or others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    uid = os.getuid()
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a directory")
    if st.st_uid != uid:
        raise PermissionError(f"{path} is owned by uid {st.st_uid}, not {uid}")
    if st.st_mode & 0o077:
        raise PermissionError(f"{path} is accessible to others (mode {stat.S_IMODE(st.st_mode):o})")
    return path


def socket_path(pid=None):
    """Where this process (or ``pid``, one of this user's) listens."""
    pid = os.getpid() if pid is None else pid
    return os.path.join(_runtime_dirs(os.getuid())[0], f"{pid}.sock")


# ------------------------------------------------------------------------------------------
# The server


class Server:
    def __init__(self):
        self.path = None
        self.sock = None
        self.thread = None
        self.pid = os.getpid()

    def start(self):
        error = None
        for d in _runtime_dirs(os.getuid()):
            try:
                _private_dir(d)
            except OSError as exc:
                error = exc
                continue
            self.path = os.path.join(d, f"{self.pid}.sock")
            break
        else:
            raise PermissionError(f"no private directory for the ps socket: {error}")
        _remove_stale(os.path.dirname(self.path))
        try:
            os.unlink(self.path)  # left by an earlier process with this pid
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)  # in a 0700 directory: nobody else can reach it meanwhile
            os.chmod(self.path, 0o600)
            sock.listen(8)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="ferroloop-ps", daemon=True)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        atexit.register(self.close)

    def close(self):
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if os.getpid() == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept()
        except OSError:
            pass
        sock.close()

    def _serve(self):
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                if self.sock is None:
                    return
                continue
            with conn:
                try:
                    self._answer(conn)
                except Exception:
                    logger.debug("ferroloop ps: request failed", exc_info=True)

    def _answer(self, conn):
        conn.settimeout(TIMEOUT)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid not in (os.getuid(), 0):
            conn.sendall(json.dumps({"error": "permission denied"}).encode() + b"\n")
            return
        data = b""
        while b"\n" not in data and len(data) < MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data.split(b"\n", 1)[0] or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("request") != "tasks":
            answer = {"error": "unknown request; send {\"request\": \"tasks\"}"}
        else:
            answer = snapshot()
        conn.sendall(json.dumps(answer).encode() + b"\n")


def _remove_stale(directory):
    """Sockets of processes that are gone (killed before their atexit ran)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid = name[:-5] if name.endswith(".sock") else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def serve():
    """Start answering ``python -m ferroloop ps`` for this process (once; idempotent).
    Returns the socket's path."""
    global _server
    with _server_lock:
        if _server is not None and _server.pid == os.getpid() and _server.sock is not None:
            return _server.path
        server = Server()
        server.start()
        _server = server
        return server.path


def stop():
    """Close the socket and remove it (also done at exit)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.close()


_failed_in = None  # the pid in which serve_from_env() failed (reported once per process)


def serve_from_env():
    """``FERROLOOP_PS=1``: serve; a failure is logged once, never raised (the program goes on)."""
    global _failed_in
    pid = os.getpid()
    if (_server is not None and _server.pid == pid) or _failed_in == pid:
        return
    try:
        serve()
    except OSError as exc:
        _failed_in = pid
        logger.warning(f"{ENV}: cannot open the ps socket: {exc}")


def _after_fork_in_child():
    # The child has the listening socket but not the thread, and the path is the parent's:
    # forget it without unlinking; the child's next loop serves under its own pid.
    global _server
    server, _server = _server, None
    if server is not None and server.sock is not None:
        server.sock.close()
        server.sock = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------------------------
# What the server answers


def _where(filename, lineno, func=None):
    return f"{filename}:{lineno}" + (f" in {func}" if func else "")


def _coro_stack(coro):
    """(entries, the awaitable at the bottom): each entry a dict for one coroutine or generator of
    the ``cr_await`` chain, outermost first."""
    entries = []
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(
            coro, "ag_frame", None
        )
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None) or getattr(
            coro, "ag_code", None
        )
        if code is None:
            return entries, coro
        name = getattr(coro, "__qualname__", None) or code.co_name
        entry = {"name": name, "file": code.co_filename}
        entry["line"] = frame.f_lineno if frame is not None else code.co_firstlineno
        entries.append(entry)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(
            coro, "ag_await", None
        )
    return entries, None


def _future_desc(fut):
    text = repr(fut)
    return text if len(text) <= 200 else text[:197] + "..."


def _created(task):
    tb = getattr(task, "_source_traceback", None)
    if tb:
        from ._diagnostics import user_frame

        f = user_frame(tb)
        return _where(f.filename, f.lineno, f.name)
    origin = getattr(task.get_coro(), "cr_origin", None)
    if origin:
        filename, lineno, func = origin[0]
        return _where(filename, lineno, func)
    return None


def _task_info(task, current):
    coro = task.get_coro()
    stack, _bottom = _coro_stack(coro)
    if task is current:
        state = "running"
    elif task.done():
        state = "cancelled" if task.cancelled() else "done"
    elif getattr(task, "cancelling", None) and task.cancelling():
        state = "cancelling"
    else:
        state = "pending"
    info = {
        "id": hex(id(task)),
        "name": task.get_name(),
        "state": state,
        "coroutine": (getattr(coro, "__qualname__", None) or type(coro).__name__) if coro is not None else None,
        "stack": stack,
        "awaiting": [],
        "waiting_on": None,
        "created": _created(task),
    }
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None:
        if isinstance(waiter, asyncio.Task):
            info["awaiting"] = [hex(id(waiter))]
        else:
            children = getattr(waiter, "_children", None)  # gather()'s _GatheringFuture
            if children:
                info["awaiting"] = [hex(id(c)) for c in children if isinstance(c, asyncio.Task)]
                info["waiting_on"] = f"gather() of {len(children)}"
            else:
                info["waiting_on"] = _future_desc(waiter)
    return info


def _all_tasks(loop):
    for _ in range(10):
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:  # the set changed size meanwhile
            continue
    return []


def snapshot():
    """The tasks of every ferroloop loop of this process that is not closed."""
    threads = {t.ident: t.name for t in threading.enumerate()}
    loops = []
    for loop in list(LOOPS):
        if loop.is_closed():
            continue
        tid = loop._thread_id
        try:
            current = asyncio.current_task(loop) if tid is not None else None
        except RuntimeError:
            current = None
        tasks = [_task_info(t, current) for t in _all_tasks(loop)]
        tasks.sort(key=lambda t: t["name"])
        loops.append({
            "loop": hex(id(loop)),
            "running": loop.is_running(),
            "thread": tid,
            "thread_name": threads.get(tid),
            "stats": loop.stats(),
            "tasks": tasks,
        })
    return {"pid": os.getpid(), "python": sys.version.split()[0], "argv": sys.argv, "loops": loops}


# ------------------------------------------------------------------------------------------
# The client: python -m ferroloop ps PID


def _target_uid(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _target_xdg(pid):
    """The target's XDG_RUNTIME_DIR as it started (/proc/PID/environ), or "" if unknown."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"XDG_RUNTIME_DIR="):
                    return os.fsdecode(item.split(b"=", 1)[1])
    except OSError:
        pass
    return ""


def request(pid, timeout=TIMEOUT):
    """The snapshot of process ``pid``; raises OSError (with a message saying what to do) when
    it does not answer."""
    uid = _target_uid(pid)
    if uid is None:
        raise ProcessLookupError(f"no process {pid}")
    dirs = []
    for xdg in (_target_xdg(pid), None):  # the target's runtime dir first, then ours
        dirs += [d for d in _runtime_dirs(uid, xdg) if d not in dirs]
    paths = [os.path.join(d, f"{pid}.sock") for d in dirs]
    path = next((p for p in paths if os.path.exists(p)), None)
    if path is None:
        raise FileNotFoundError(
            f"process {pid} has no ferroloop ps socket ({' or '.join(paths)}): start it with "
            f"{ENV}=1 (or python -m ferroloop --ps), and check that it runs a ferroloop loop"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except ConnectionRefusedError:
            raise ConnectionRefusedError(
                f"{path} does not answer: process {pid} no longer serves ps (a stale socket)"
            ) from None
        s.sendall(b'{"request": "tasks"}\n')
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if "error" in answer:
        raise PermissionError(f"process {pid} refused: {answer['error']}")
    return answer


def _short(path):
    home = os.path.expanduser("~")
    cwd = os.getcwd() + os.sep
    if path.startswith(cwd):
        return path[len(cwd):]
    asyncio_dir = os.path.dirname(asyncio.__file__) + os.sep
    if path.startswith(asyncio_dir):
        return "asyncio/" + path[len(asyncio_dir):]
    if home != "/" and path.startswith(home + os.sep):
        return "~" + path[len(home):]
    return path


def _chain(task, by_id, limit=20):
    """The await chain from ``task``: task names, down to what the last one waits on."""
    parts = []
    seen = set()
    t = task
    while t is not None and len(parts) < limit:
        if t["id"] in seen:
            parts.append("(cycle)")
            break
        seen.add(t["id"])
        nxt = [by_id[i] for i in t["awaiting"] if i in by_id]
        if len(nxt) == 1:
            parts.append(nxt[0]["name"])
            t = nxt[0]
        else:
            if nxt:
                parts.append("{" + ", ".join(n["name"] for n in nxt) + "}")
            elif t.get("waiting_on"):
                w = t["waiting_on"]
                parts.append(w.split(" cb=")[0].rstrip(">") + (">" if w.startswith("<") else ""))
            break
    return " -> ".join(parts)


def format_table(answer):
    lines = [f"process {answer['pid']} (Python {answer['python']}): {' '.join(answer['argv'])}"]
    if not answer["loops"]:
        lines.append("no ferroloop loop (none created, or all closed)")
    for lp in answer["loops"]:
        st = lp["stats"]
        state = "running" if lp["running"] else "not running"
        thread = f" in thread {lp['thread_name'] or lp['thread']}" if lp["thread"] else ""
        lines.append("")
        lines.append(
            f"loop {lp['loop']} {state}{thread}: {len(lp['tasks'])} task(s), "
            f"{st['turns']} turns, {st['callbacks']} callbacks, busy {st['busy']:.3f} s, "
            f"idle {st['idle']:.3f} s, longest stall {st['longest_stall']:.3f} s"
        )
        if not lp["tasks"]:
            continue
        by_id = {t["id"]: t for t in lp["tasks"]}
        awaited_by = {}
        for t in lp["tasks"]:
            for i in t["awaiting"]:
                awaited_by.setdefault(i, []).append(t["name"])
        head = ["TASK", "NAME", "STATE", "COROUTINE STACK (outermost first)", "AWAITS (chain)",
                "AWAITED BY", "CREATED AT"]
        rows = []
        for t in lp["tasks"]:
            stack = " > ".join(f"{e['name']}() {_short(e['file'])}:{e['line']}" for e in t["stack"])
            rows.append([t["id"], t["name"], t["state"], stack or "-", _chain(t, by_id) or "-",
                         ", ".join(awaited_by.get(t["id"], [])) or "-",
                         _short(t["created"]) if t["created"] else "-"])
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
        for r in [head] + rows:
            lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


USAGE = "usage: python -m ferroloop ps [--json] PID"


def main(argv):
    as_json = False
    args = []
    for a in argv:
        if a == "--json":
            as_json = True
        elif a in ("-h", "--help"):
            print(USAGE)
            print(__doc__.split("\n\n")[1])
            return 0
        else:
            args.append(a)
    if len(args) != 1 or not args[0].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    pid = int(args[0])
    try:
        answer = request(pid)
    except (OSError, ValueError) as exc:
        print(f"ferroloop ps: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(answer, indent=1))
    else:
        print(format_table(answer))
    return 0
