"""`python -m ferroloop script.py [args...]`: run an unmodified asyncio script on ferroloop.

Each behaviour is compared with running the same script as `python script.py`.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import child_env

PROBE = """
import asyncio, json, os, sys, warnings
import helper_module  # sibling of the script: sys.path[0] must be its directory

def loop_kind(lp):
    fl = sys.modules.get("ferroloop")  # imported by `python -m ferroloop` only
    if fl is not None and isinstance(lp, fl.Loop):
        return "ferroloop"
    return type(lp).__module__.split(".")[0]

async def main():
    await asyncio.sleep(0)
    return loop_kind(asyncio.get_running_loop())

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    lp = asyncio.get_event_loop()
get_event_loop_kind = loop_kind(lp)
lp.close()
asyncio.set_event_loop(None)

report = {
    "get_event_loop": get_event_loop_kind,
    "argv": sys.argv,
    "name": __name__,
    "file": os.path.abspath(__file__),
    "path0": os.path.abspath(sys.path[0]),
    "helper": helper_module.VALUE,
    "run": asyncio.run(main()),
}
lp = asyncio.new_event_loop()
report["new_event_loop"] = loop_kind(lp)
report["run_until_complete"] = lp.run_until_complete(main())
lp.close()
print(json.dumps(report))
"""


@pytest.fixture
def script_dir(tmp_path):
    (tmp_path / "helper_module.py").write_text("VALUE = 'helper'\n")
    return tmp_path


def run(args, cwd, timeout=30):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=child_env(),
    )


def write(dirpath, name, src):
    path = dirpath / name
    path.write_text(textwrap.dedent(src))
    return path


def test_ferroloop_main_runs_script_on_ferroloop(script_dir):
    write(script_dir, "probe.py", PROBE)
    args = ["probe.py", "first", "--flag", "x y"]
    plain = run(args, script_dir)
    assert plain.returncode == 0, plain.stderr
    ref = json.loads(plain.stdout)
    assert ref["run"] == "asyncio"  # sanity check of the probe itself

    res = run(["-m", "ferroloop", *args], script_dir)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    for key in ("argv", "name", "file", "path0", "helper"):
        assert got[key] == ref[key], key
    assert got["argv"] == ["probe.py", "first", "--flag", "x y"]
    assert got["name"] == "__main__"
    for key in ("run", "new_event_loop", "run_until_complete", "get_event_loop"):
        assert got[key] == "ferroloop", (key, got)


def test_ferroloop_main_absolute_script_path(script_dir, tmp_path_factory):
    script = write(script_dir, "probe.py", PROBE)
    elsewhere = tmp_path_factory.mktemp("cwd")
    res = run(["-m", "ferroloop", str(script)], elsewhere)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["argv"] == [str(script)]
    assert got["path0"] == str(script_dir)
    assert got["run"] == "ferroloop"


@pytest.mark.parametrize("code", [0, 3, 77])
def test_ferroloop_main_exit_code_propagates(script_dir, code):
    write(script_dir, "exits.py", f"""
        import asyncio, sys
        async def main():
            return {code}
        sys.exit(asyncio.run(main()))
    """)
    assert run(["exits.py"], script_dir).returncode == code
    assert run(["-m", "ferroloop", "exits.py"], script_dir).returncode == code


def test_ferroloop_main_exit_with_message(script_dir):
    write(script_dir, "msg.py", "import sys\nsys.exit('fatal: bad things')\n")
    res = run(["-m", "ferroloop", "msg.py"], script_dir)
    assert res.returncode == 1
    assert res.stderr.strip().endswith("fatal: bad things")


def test_ferroloop_main_uncaught_exception(script_dir):
    write(script_dir, "fails.py", """
        import asyncio
        async def main():
            raise LookupError("from the script")
        asyncio.run(main())
    """)
    res = run(["-m", "ferroloop", "fails.py"], script_dir)
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr
    assert "LookupError: from the script" in res.stderr
    assert 'fails.py", line' in res.stderr


def test_ferroloop_main_script_output_and_stdin(script_dir):
    write(script_dir, "echo.py", """
        import asyncio, sys
        async def main():
            data = sys.stdin.read()
            await asyncio.sleep(0.01)
            print(data.upper(), end="")
        asyncio.run(main())
    """)
    res = subprocess.run(
        [sys.executable, "-m", "ferroloop", "echo.py"], cwd=script_dir, input="hello\n",
        capture_output=True, text=True, timeout=30, env=child_env(),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "HELLO\n"


def test_ferroloop_main_if_name_main_guard(script_dir):
    write(script_dir, "guarded.py", """
        import asyncio, sys
        async def main():
            fl = sys.modules.get("ferroloop")
            on_ferroloop = fl is not None and isinstance(asyncio.get_running_loop(), fl.Loop)
            print("ran", "ferroloop" if on_ferroloop else "other")
        if __name__ == "__main__":
            asyncio.run(main())
    """)
    res = run(["-m", "ferroloop", "guarded.py"], script_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ran", "ferroloop"]


def test_ferroloop_main_missing_script(script_dir):
    res = run(["-m", "ferroloop", "does_not_exist.py"], script_dir)
    assert res.returncode != 0
    assert "does_not_exist.py" in res.stderr


def test_ferroloop_main_missing_script_is_pythons_one_line_error(script_dir):
    plain = run(["does_not_exist.py"], script_dir)
    res = run(["-m", "ferroloop", "does_not_exist.py"], script_dir)
    assert "Traceback" not in res.stderr
    assert res.returncode == plain.returncode == 2
    # Python's own line, word for word ("<python>: can't open file '<abs path>': [Errno 2] ...").
    assert res.stderr.strip().splitlines() == plain.stderr.strip().splitlines()


def test_ferroloop_main_missing_module_is_pythons_error(script_dir):
    plain = run(["-m", "no_such_module_xyz"], script_dir)
    res = run(["-m", "ferroloop", "-m", "no_such_module_xyz"], script_dir)
    assert "Traceback" not in res.stderr
    assert res.returncode == plain.returncode == 1
    assert res.stderr.strip() == plain.stderr.strip()


def test_ferroloop_main_version(script_dir):
    import ferroloop

    res = run(["-m", "ferroloop", "--version"], script_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"ferroloop {ferroloop.__version__} (CPython {sys.version.split()[0]}")


def test_ferroloop_main_dash_c(script_dir):
    code = (
        "import asyncio, sys, ferroloop\n"
        "async def main():\n"
        "    return isinstance(asyncio.get_running_loop(), ferroloop.Loop)\n"
        "print(__name__, sys.argv, asyncio.run(main()))\n"
    )
    res = run(["-m", "ferroloop", "-c", code, "a", "b"], script_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "__main__ ['-c', 'a', 'b'] True"
