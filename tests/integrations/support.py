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
    """A server in a child process (its own process group), killed after CHILD_TIMEOUT s
    whatever happens, stopped with ``stop()`` (SIGINT, then SIGKILL after ``grace``)."""

    def __init__(self, args, *, env, cwd=None):
        self.args = args
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.deadline = time.monotonic() + CHILD_TIMEOUT
        self._watchdog = threading.Timer(CHILD_TIMEOUT, self._kill)
        self._watchdog.start()
        self.output = ""

    def _kill(self):
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass

    def wait_listening(self, port):
        if not wait_for_port(port, self.proc, self.deadline):
            self.stop(grace=1)
            pytest.fail(f"{self.args} did not listen on 127.0.0.1:{port}; output:\n{self.output}",
                        pytrace=False)

    def stop(self, sig=2, grace=10):
        """Signal the whole process group (the server and any workers), wait, collect output;
        returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            out, _ = self.proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            self._kill()
            out, _ = self.proc.communicate()
        self.output += out or ""
        self._watchdog.cancel()
        self._watchdog.join()
        self._kill()  # workers a supervisor left behind, if any
        return self.proc.returncode
