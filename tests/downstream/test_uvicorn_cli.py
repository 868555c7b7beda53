"""uvicorn's own command line running an app on the loop under test, as a user would:
``python -m uvicorn cli_app:app --loop ferroloop:new_event_loop`` (uvicorn creates the loop
through that factory and runs it itself), stopped with SIGINT like a Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

LOOP_FACTORY = {"asyncio": "asyncio:new_event_loop", "ferroloop": "ferroloop:new_event_loop"}
LOOP_MODULE = {"asyncio": "asyncio.", "ferroloop": "ferroloop."}
HERE = os.path.dirname(os.path.abspath(__file__))


def test_uvicorn_command_line(loop_name, not_listening):
    env = dict(os.environ)
    for k in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cli_app:app", "--app-dir", HERE,
         "--host", "127.0.0.1", "--port", "0", "--loop", LOOP_FACTORY[loop_name],
         "--http", "httptools", "--ws", "none", "--log-level", "info", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(20, proc.kill)  # never hang
    watchdog.start()
    try:
        seen = []
        port = None
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "uvicorn did not start:\n" + "".join(seen)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as r:
            assert r.status == 200
            got = json.loads(r.read())
        assert got["loop"].startswith(LOOP_MODULE[loop_name]), got
        assert got == {"loop": got["loop"], "path": "/hello", "body": ""}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/post", data=b"payload " * 1000)
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["body"] == "payload " * 1000

        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(10) == 0, "".join(seen) + rest
        assert "Shutting down" in rest and "Finished server process" in rest, rest
        assert "Traceback" not in "".join(seen) + rest, "".join(seen) + rest
        not_listening(port)
    finally:
        watchdog.cancel()
        watchdog.join()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
