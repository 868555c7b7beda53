"""The framework recipes of docs/user-guide.md ("Integrations"), each served as a user would:
a server in a child process on 127.0.0.1, one request (or a few, when there are several
workers), the answer checked, and the loop it reports checked to be ferroloop's; then the server
is stopped as a user or a process manager would (SIGINT; gunicorn: SIGTERM, its graceful stop)
and must exit with 0. Every child is killed after 20 s whatever happens."""

import json
import signal
import sys
import urllib.request

import pytest

from .support import HERE, free_port

APPS = HERE / "apps"
FERROLOOP_LOOP = "ferroloop._loop.Loop"


def get(port, path="/hello"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())


def serve_and_check(server, child_env, args, *, requests=1, expect_loop=FERROLOOP_LOOP,
                    ready=None, stop=signal.SIGINT):
    """Start ``args`` (a server listening on the port it is given), wait until it listens (and
    until ``ready`` = (text, count) has appeared in its output: every worker up), request, stop
    with ``stop``; returns the answers and the server's output."""
    port = free_port()
    srv = server([sys.executable, *[str(a).replace("{port}", str(port)) for a in args]],
                 env=child_env(), cwd=APPS)
    srv.wait_listening(port)
    if ready:
        srv.wait_output(*ready)
    answers = []
    try:
        for i in range(requests):
            answers.append(get(port, f"/r{i}"))
    finally:
        code = srv.stop(stop)
    assert code == 0, f"exit code {code} after {stop!r}; output:\n{srv.output}"
    for i, got in enumerate(answers):
        assert got["path"] == f"/r{i}", got
        assert got["loop"] == expect_loop, (got, srv.output)
    assert "Traceback" not in srv.output, srv.output
    return answers, srv.output


# uvicorn ------------------------------------------------------------------------------------


def test_uvicorn_loop_option(server, child_env):
    serve_and_check(server, child_env, [
        "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "ferroloop:new_event_loop"])


def test_uvicorn_loop_option_two_workers(server, child_env):
    # uvicorn's supervisor spawns the workers; each builds its loop from the --loop string.
    answers, out = serve_and_check(server, child_env, [
        "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "ferroloop:new_event_loop", "--workers", "2"], requests=4,
        ready=("Application startup complete", 2))
    assert out.count("Started server process") == 2, out


def test_python_m_ferroloop_uvicorn_without_loop_option(server, child_env):
    """`python -m ferroloop -m uvicorn app:app`: uvicorn's own default (--loop auto) would build
    uvloop's or asyncio's loop; ferroloop passes its factory instead, and says nothing."""
    _, out = serve_and_check(server, child_env, [
        "-m", "ferroloop", "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1",
        "--port", "{port}"])
    assert "ferroloop:" not in out, out


def test_python_m_ferroloop_uvicorn_explicit_loop_is_kept(server, child_env):
    """An explicit --loop is the user's choice: kept, with a note saying it is not ferroloop."""
    _, out = serve_and_check(server, child_env, [
        "-m", "ferroloop", "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1",
        "--port", "{port}", "--loop", "asyncio"], expect_loop="asyncio.unix_events._UnixSelectorEventLoop")
    assert "ferroloop: uvicorn --loop asyncio creates its own event loop" in out, out


# gunicorn -----------------------------------------------------------------------------------


def test_gunicorn_ferroloop_uvicorn_worker(server, child_env):
    answers, out = serve_and_check(server, child_env, [
        "-m", "gunicorn", "asgi_app:app", "--bind", "127.0.0.1:{port}", "--workers", "2",
        "-k", "ferroloop.integrations.uvicorn_worker.FerroloopUvicornWorker",
        "--no-control-socket"], requests=4, ready=("Application startup complete", 2),
        stop=signal.SIGTERM)
    assert out.count("Booting worker") == 2, out


def test_gunicorn_aiohttp_worker_with_install_in_config(server, child_env):
    serve_and_check(server, child_env, [
        "-m", "gunicorn", "aiohttp_app:app", "--bind", "127.0.0.1:{port}",
        "-k", "aiohttp.GunicornWebWorker", "-c", "gunicorn_conf.py", "--no-control-socket"],
        stop=signal.SIGTERM)


def test_python_m_ferroloop_gunicorn_aiohttp_worker(server, child_env):
    """gunicorn forks its workers: they inherit the policy `python -m ferroloop` set."""
    serve_and_check(server, child_env, [
        "-m", "ferroloop", "-m", "gunicorn", "aiohttp_app:app", "--bind", "127.0.0.1:{port}",
        "-k", "aiohttp.GunicornWebWorker", "--no-control-socket"], stop=signal.SIGTERM)


# hypercorn ----------------------------------------------------------------------------------


def test_python_m_ferroloop_hypercorn(server, child_env):
    """`python -m ferroloop -m hypercorn --worker-class asyncio app:app`: hypercorn would spawn a
    worker process that never sees ferroloop; ferroloop passes --workers 0 (serve from this
    process)."""
    _, out = serve_and_check(server, child_env, [
        "-m", "ferroloop", "-m", "hypercorn", "--worker-class", "asyncio",
        "--bind", "127.0.0.1:{port}", "asgi_app:app"])
    assert "ferroloop:" not in out, out


def test_hypercorn_spawned_worker_with_install_in_app_module(server, child_env):
    """Spawned workers (--workers 1 or more): the app's module calls ferroloop.install()."""
    serve_and_check(server, child_env, [
        "-m", "hypercorn", "--worker-class", "asyncio", "--workers", "1",
        "--bind", "127.0.0.1:{port}", "asgi_app_ferroloop:app"])


def test_python_m_ferroloop_hypercorn_workers_note(server, child_env):
    """`--workers 2` under `python -m ferroloop`: the spawned workers run stock asyncio; a note
    on stderr says so and what to do."""
    _, out = serve_and_check(server, child_env, [
        "-m", "ferroloop", "-m", "hypercorn", "--workers", "1",
        "--bind", "127.0.0.1:{port}", "asgi_app:app"],
        expect_loop="asyncio.unix_events._UnixSelectorEventLoop")
    assert "ferroloop: hypercorn runs the app in worker processes it spawns" in out, out


# aiohttp ------------------------------------------------------------------------------------


def test_aiohttp_run_app_with_ferroloop_loop(server, child_env):
    serve_and_check(server, child_env, ["aiohttp_app.py", "{port}"])
