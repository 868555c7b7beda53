"""ferroloop's pytest plugin (ferroloop/pytest_plugin.py) on sample suites of the four kinds a
project has: pytest-asyncio, anyio's plugin, aiohttp's plugins (aiohttp.pytest_plugin and
pytest-aiohttp) and unittest.IsolatedAsyncioTestCase. Each sample is a project of its own under
samples/ (its own pytest.ini, so ferroloop's tests/conftest.py does not apply), unaware of
ferroloop except that its tests assert ``isinstance(asyncio.get_running_loop(), ferroloop.Loop)``;
it runs in a child pytest and must pass, with the plugin's summary line counting its tests."""

import re
import sys
from importlib.metadata import entry_points

import pytest
from .support import SAMPLES, run_child

# sample -> (extra pytest arguments, tests, tests that run a loop, ferroloop loops created)
SAMPLE_RUNS = {
    # 5 tests, 1 of them sync; the two module-scoped tests share one loop.
    "pytest_asyncio": ((), 5, 4, 3),
    # 3 tests x 2 anyio_backend params, one loop per test.
    "anyio": ((), 6, 6, 6),
    # aiohttp's own plugin; -p no:aiohttp blocks pytest-aiohttp's entry point (named "aiohttp").
    "aiohttp": (("-p", "no:aiohttp", "-p", "aiohttp.pytest_plugin"), 3, 3, 3),
    "pytest_aiohttp": ((), 2, 2, 2),
    # 3 IsolatedAsyncioTestCase tests (the sync one too runs asyncSetUp on the loop), asyncio.run,
    # asyncio.new_event_loop.
    "unittest": ((), 5, 5, 5),
}

SUMMARY = re.compile(r"^ferroloop: (\d+) tests? ran on ferroloop \((\d+) loops?\)$", re.M)


def run_sample(name, child_env, *args):
    return run_child([sys.executable, "-m", "pytest", "-q", *SAMPLE_RUNS[name][0], *args],
                     cwd=SAMPLES / name, env=child_env())


def outcome(proc):
    out = proc.stdout + proc.stderr
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|error|errors)\b", out))
    return counts, out


@pytest.mark.parametrize("name", sorted(SAMPLE_RUNS))
def test_sample_suite_runs_on_ferroloop(name, child_env):
    _, tests, on_ferroloop, loops = SAMPLE_RUNS[name]
    proc = run_sample(name, child_env, "-p", "ferroloop.pytest_plugin")
    counts, out = outcome(proc)
    assert proc.returncode == 0, out
    assert counts == {"passed": tests}, out
    m = SUMMARY.search(out)
    assert m, f"no ferroloop summary line:\n{out}"
    assert (int(m.group(1)), int(m.group(2))) == (on_ferroloop, loops), out
    assert f"ferroloop: {on_ferroloop} tests ran on ferroloop ({loops} loops)" in out


def _entry_point_installed():
    return any(ep.value == "ferroloop.pytest_plugin:entry_point"
               for ep in entry_points(group="pytest11", name="ferroloop"))


@pytest.fixture
def entry_point():
    if not _entry_point_installed():
        pytest.fail("ferroloop's pytest11 entry point is not in the installed metadata: rebuild "
                    "(make build) after pyproject.toml changed", pytrace=False)


@pytest.mark.parametrize("name", ["pytest_asyncio", "unittest"])
def test_option_from_entry_point(name, child_env, entry_point):
    """`pytest --ferroloop`: the entry point that every pytest run loads enables the plugin."""
    _, tests, on_ferroloop, loops = SAMPLE_RUNS[name]
    proc = run_sample(name, child_env, "--ferroloop")
    counts, out = outcome(proc)
    assert proc.returncode == 0 and counts == {"passed": tests}, out
    assert f"ferroloop: {on_ferroloop} tests ran on ferroloop ({loops} loops)" in out


@pytest.mark.parametrize("name", sorted(SAMPLE_RUNS))
def test_entry_point_alone_does_nothing(name, child_env, entry_point):
    """Without the option the entry point changes nothing: the samples run on the stock loop,
    so their ferroloop assertions fail, and there is no summary line."""
    _, tests, on_ferroloop, _ = SAMPLE_RUNS[name]
    proc = run_sample(name, child_env)
    counts, out = outcome(proc)
    assert proc.returncode == 1, out
    assert counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0) >= 1, out
    assert "AssertionError" in out, out
    assert "ran on ferroloop" not in out, out
    assert "ferroloop" not in out.split("\n", 3)[2], out  # no report-header line either


def test_both_routes_at_once(child_env, entry_point):
    """`-p ferroloop.pytest_plugin --ferroloop` (an addopts line plus a command line, say):
    one plugin, one summary line."""
    proc = run_sample("pytest_asyncio", child_env, "-p", "ferroloop.pytest_plugin", "--ferroloop")
    counts, out = outcome(proc)
    assert proc.returncode == 0 and counts == {"passed": 5}, out
    assert len(SUMMARY.findall(out)) == 1, out


def test_project_loop_factories_hook_wins(child_env, tmp_path):
    """A project's own pytest_asyncio_loop_factories (to test on uvloop, say) answers before
    the plugin's: the plugin replaces only the default."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:cacheprovider\n")
    (tmp_path / "conftest.py").write_text(
        "import asyncio\n"
        "def pytest_asyncio_loop_factories(config, item):\n"
        "    return {'stock': asyncio.SelectorEventLoop}\n")
    (tmp_path / "test_own.py").write_text(
        "import asyncio, pytest, ferroloop\n"
        "@pytest.mark.asyncio\n"
        "async def test_own_factory():\n"
        "    assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop\n"
        "def test_asyncio_run():\n"
        "    async def main():\n"
        "        return isinstance(asyncio.get_running_loop(), ferroloop.Loop)\n"
        "    assert asyncio.run(main())\n")
    proc = run_child([sys.executable, "-m", "pytest", "-q", "-p", "ferroloop.pytest_plugin"],
                     cwd=tmp_path, env=child_env())
    counts, out = outcome(proc)
    assert proc.returncode == 0 and counts == {"passed": 2}, out
    assert "ferroloop: 1 test ran on ferroloop (1 loop)" in out, out


def test_policy_reset_by_a_test_comes_back(child_env, tmp_path):
    """A test that resets the policy (set_event_loop_policy(None), as leak-checking fixtures
    do) does not send the following tests back to the stock loop; the stock policy is back
    after the run."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:cacheprovider\n")
    (tmp_path / "test_reset.py").write_text(
        "import asyncio, ferroloop\n"
        "async def kind():\n"
        "    return type(asyncio.get_running_loop())\n"
        "def test_1_resets():\n"
        "    assert asyncio.run(kind()) is ferroloop.Loop\n"
        "    asyncio.set_event_loop_policy(None)\n"
        "    assert asyncio.run(kind()) is not ferroloop.Loop\n"
        "def test_2_ferroloop_again():\n"
        "    assert asyncio.run(kind()) is ferroloop.Loop\n")
    (tmp_path / "conftest.py").write_text(
        "import asyncio, ferroloop, pytest\n"
        "@pytest.hookimpl(trylast=True)\n"
        "def pytest_unconfigure(config):\n"
        "    loop = asyncio.new_event_loop()\n"
        "    loop.close()\n"
        "    if type(loop) is ferroloop.Loop:\n"
        "        raise SystemExit('ferroloop still the default after the run')\n")
    proc = run_child([sys.executable, "-m", "pytest", "-q", "-p", "ferroloop.pytest_plugin"],
                     cwd=tmp_path, env=child_env())
    counts, out = outcome(proc)
    assert proc.returncode == 0 and counts == {"passed": 2}, out
    assert "ferroloop: 2 tests ran on ferroloop (2 loops)" in out, out
    assert "still the default" not in out, out
