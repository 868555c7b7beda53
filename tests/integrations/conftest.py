"""Helpers for the integration tests: ferroloop under other projects' test runners and servers.

Every test here runs the other project in a child process (a sample suite under pytest with
ferroloop's plugin, a server on 127.0.0.1) and checks that it ran on ferroloop. The packages they
need beyond requirements-downstream.txt (requirements-integrations.txt: pytest-asyncio,
pytest-aiohttp, gunicorn, hypercorn) are installed by ``make test-downstream`` into a directory of
their own, ``<venv>/integrations``, that only those child processes put on their path.

Like tests/downstream, this directory runs only when named::

    .venv/bin/python -m pytest -q tests/integrations      # make test-downstream runs it

A bare ``pytest tests`` leaves it out (the check below; pyproject's ``norecursedirs`` does the
same for tests/downstream), and ``samples/`` is never collected here: each sample is a project of
its own, with its own pytest.ini, run by test_pytest_plugin.py.
"""

import os
import sys
from pathlib import Path

import pytest

from .support import HERE, REQUIREMENTS, SAMPLES, SITE, Server


def _named_on_command_line(config):
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    if path == SAMPLES or SAMPLES in path.parents:
        return True
    if path.parent == HERE and not _named_on_command_line(config):
        return True
    return None


@pytest.fixture(scope="session")
def integrations_site():
    """The directory holding requirements-integrations.txt's packages (fails, never skips, when
    it is missing: `make test-downstream` installs it)."""
    if not (SITE / "pytest_asyncio").is_dir():
        pytest.fail(
            f"{SITE} does not hold requirements-integrations.txt's packages: run "
            "`make test-downstream`, or\n  "
            f"{sys.executable} -m pip install --only-binary=:all: --no-deps --target {SITE} "
            f"-r {REQUIREMENTS}",
            pytrace=False,
        )
    return SITE


@pytest.fixture
def child_env(integrations_site):
    """``child_env(**extra)``: the environment of a child process: the integration packages on
    its path, no debug or warning settings inherited from this run."""

    def make(**extra):
        env = dict(os.environ)
        for k in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS", "PYTEST_ADDOPTS",
                  "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
            env.pop(k, None)
        paths = [str(integrations_site)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(extra)
        return env

    return make


@pytest.fixture
def server(request):
    """``server(args, env=..., cwd=...)`` starts a Server; every one is stopped at teardown."""
    started = []

    def start(args, **kwargs):
        srv = Server(args, **kwargs)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(grace=5)
