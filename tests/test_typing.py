"""ferroloop's public API as type checkers see it: mypy --strict and pyright (strict) on a
program that uses every entry point, and mypy.stubtest of the package's stubs against the built
module.

mypy and pyright are pinned in requirements-dev.txt. pyright's PyPI wheel bundles its
JavaScript and runs it with the machine's `node` (this project's machines have one); it would
download Node.js only where none is installed, so without `node` its test fails rather than
fetching anything (PYRIGHT_PYTHON_NODE... variables are not set).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every entry point, with the types a user would write. Also run, so that what type-checks is
# also what works.
PROGRAM = textwrap.dedent(
    """\
    import asyncio
    import contextvars
    import sys
    from typing import Any

    import ferroloop


    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2


    async def main() -> int:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[int] = loop.create_task(double(1))
        return await task


    def callback(n: int) -> None:
        pass


    def use_loop() -> None:
        loop: ferroloop.Loop = ferroloop.new_event_loop()
        abstract: asyncio.AbstractEventLoop = loop
        handle: asyncio.Handle = loop.call_soon(callback, 1)
        later: asyncio.TimerHandle = loop.call_later(0.5, callback, 2)
        at: asyncio.TimerHandle = loop.call_at(
            loop.time() + 1.0, callback, 3, context=contextvars.copy_context()
        )
        when: float = later.when()
        assert when <= at.when()
        handle.cancel()
        later.cancel()
        at.cancel()
        assert later.cancelled()
        task: asyncio.Task[int] = loop.create_task(double(2), name="double")
        result: int = loop.run_until_complete(task)
        assert result == 4
        fut: asyncio.Future[Any] = abstract.create_future()
        fut.cancel()
        loop.set_keep_tasks(True)
        turns: int = loop.stats()["turns"]
        assert turns > 0
        loop.close()

        direct = ferroloop.Loop()
        native = direct.call_soon(callback, 4)
        assert isinstance(native, ferroloop.Handle)  # the runtime class (see _loop.pyi)
        direct.close()


    def use_runners() -> None:
        value: int = ferroloop.run(main())
        value += ferroloop.run(main(), debug=False, keep_tasks=True)
        with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
            value += runner.run(main())
        if sys.version_info >= (3, 12):
            value += asyncio.run(main(), loop_factory=ferroloop.new_event_loop)
        assert value >= 6

        policy: asyncio.AbstractEventLoopPolicy = ferroloop.EventLoopPolicy()
        asyncio.set_event_loop_policy(policy)
        ferroloop.install()
        asyncio.set_event_loop_policy(None)
        ferroloop.install_loop_factory()
        version: str = ferroloop.__version__
        print("ok", version)


    if __name__ == "__main__":
        use_loop()
        use_runners()
    """
)

# Mistakes mypy must catch in the same program: (marker, line appended to use_loop()).
MISTAKES = [
    ('Argument 1 to "call_later"', '    loop.call_later("1", callback, 2)'),
    # callback(int) given a str argument: the *args are checked against the callback
    ('Argument 1 to "call_soon"', '    loop.call_soon(callback, "not an int")'),
]


def _mypy(path, cache_dir):
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache_dir), path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("typing")


def test_mypy_strict_accepts_every_entry_point(workdir):
    prog = workdir / "prog.py"
    prog.write_text(PROGRAM)
    res = _mypy(prog, workdir / ".mypy_cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("Success: no issues found"), res.stdout
    # ... and the program runs.
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    run = subprocess.run(
        [sys.executable, str(prog)], capture_output=True, text=True, timeout=60, env=env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok "), run.stdout


def test_mypy_strict_catches_mistakes(workdir):
    lines = PROGRAM.splitlines()
    at = lines.index("    loop.close()")  # in use_loop(), after `loop` is defined
    bad = lines[:at] + [line for _, line in MISTAKES] + lines[at:]
    prog = workdir / "prog_bad.py"
    prog.write_text("\n".join(bad) + "\n")
    res = _mypy(prog, workdir / ".mypy_cache")
    assert res.returncode == 1, res.stdout + res.stderr
    errors = [line for line in res.stdout.splitlines() if ": error: " in line]
    for n, (marker, _) in enumerate(MISTAKES):
        expected = f"prog_bad.py:{at + 1 + n}: error: {marker}"
        assert any(e.startswith(expected) for e in errors), res.stdout
    assert len(errors) == len(MISTAKES), res.stdout


def test_stubtest():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "ferroloop",
            "--mypy-config-file",
            "pyproject.toml",
            "--allowlist",
            "tests/stubtest_allowlist.txt",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("Success: no issues found"), res.stdout


def _pyright(path):
    # reportDeprecated off: the program calls asyncio.set_event_loop_policy, which typeshed marks
    # deprecated (3.14) whatever the target version; that is the stdlib's API, not ferroloop's.
    (path.parent / "pyrightconfig.json").write_text(
        '{"typeCheckingMode": "strict", "pythonVersion": "%d.%d", "reportDeprecated": false}'
        % (sys.version_info[0], sys.version_info[1])
    )
    pyright = Path(sys.executable).parent / "pyright"
    return subprocess.run(
        [str(pyright), "--pythonpath", sys.executable, path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYRIGHT_PYTHON_IGNORE_WARNINGS="1"),
    )


def test_pyright_strict_accepts_every_entry_point(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    res = _pyright(prog)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 errors" in res.stdout


def test_pyright_catches_mistakes(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM.replace("    loop.close()\n", "    loop.close()\n"
                                    + MISTAKES[0][1] + "\n", 1))
    res = _pyright(prog)
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'call_later' in res.stdout and "1 error" in res.stdout, res.stdout
