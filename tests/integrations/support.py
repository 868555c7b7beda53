"""What the integration tests share: child processes under a timeout, free ports, servers in
their own process group (imported by the tests as ``from .support import ...``)."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
SITE = Path(os.environ.get("FERROLOOP_INTEGRATIONS_SITE", Path(sys.prefix) / "integrations"))
REQUIREMENTS = HERE.parent.parent / "requirements-integrations.txt"
CHILD_TIMEOUT = 20.0  # seconds: a child still running then is killed and the test fails

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers that cannot report the
    port they bound, such as multi-process ones)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, deadline, host="127.0.0.1"):
    """Wait until (host, port) accepts a connection; fail if ``proc`` exits or time runs out."""
    while True:
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def run_child(args, *, env, cwd=None, timeout=CHILD_TIMEOUT):
    """Run a command to completion under a timeout; returns CompletedProcess (text)."""
    try:
        return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args} still running after {timeout} s; stdout:\n{exc.stdout}\n"
                    f"stderr:\n{exc.stderr}", pytrace=False)


class Server:
    """A server in a child process (its own process group) whose output a thread collects,
    killed after CHILD_TIMEOUT s whatever happens, stopped with ``stop()``: SIGINT to the server
    process (as a process manager sends it), then SIGKILL to the whole group after ``grace``."""

    def __init__(self, args, *, env, cwd=None):
        self.args = args
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.deadline = time.monotonic() + CHILD_TIMEOUT
        self._lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watchdog = threading.Timer(CHILD_TIMEOUT, self._kill)
        self._watchdog.start()

    @property
    def output(self):
        with self._changed:
            return "".join(self._lines)

    def _read(self):
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._lines.append("")  # EOF marker for wait_output
            self._changed.notify_all()
        self.proc.stdout.close()

    def _kill(self):
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass

    def wait_output(self, text, count=1):
        """Wait until ``text`` has appeared ``count`` times in the output (the server's workers
        are all up, say); fail if the server exits or time runs out first."""
        with self._changed:
            while "".join(self._lines).count(text) < count:
                left = self.deadline - time.monotonic()
                if left <= 0 or (self._lines and self._lines[-1] == ""):
                    break
                self._changed.wait(min(left, 0.5))
            else:
                return
        self.stop(grace=1)
        pytest.fail(f"{self.args}: {text!r} did not appear {count} time(s); output:\n"
                    f"{self.output}", pytrace=False)

    def wait_listening(self, port):
        if not wait_for_port(port, self.proc, self.deadline):
            self.stop(grace=1)
            pytest.fail(f"{self.args} did not listen on 127.0.0.1:{port}; output:\n{self.output}",
                        pytrace=False)

    def stop(self, sig=2, grace=10):
        """Signal the server process, wait for it and its output; kill what is left of its
        process group. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()
        self._watchdog.cancel()
        self._watchdog.join()
        self._kill()  # workers a supervisor left behind, if any
        self._reader.join(timeout=grace)
        return self.proc.returncode
