"""`python -m ferroloop -m <server>`: the arguments ferroloop adds for servers that would not run
on ferroloop by the policy alone, and the notes it prints when the user's own arguments keep
them off it (ferroloop/__main__.py, _server_args). The servers themselves are run by
test_frameworks.py; this checks the argument handling case by case, in-process."""

import pytest

from ferroloop.__main__ import _server_args

FACTORY = "ferroloop:new_event_loop"


@pytest.mark.parametrize("args, expected, note", [
    (["app:app"], ["--loop", FACTORY, "app:app"], None),
    (["app:app", "--workers", "2"], ["--loop", FACTORY, "app:app", "--workers", "2"], None),
    (["app:app", "--loop", FACTORY], None, None),
    (["app:app", "--loop=none"], None, None),
    (["app:app", "--loop", "uvloop"], None, "uvicorn --loop uvloop creates its own event loop"),
    (["app:app", "--loop=asyncio"], None, "uvicorn --loop asyncio creates its own event loop"),
    # after "--" it is the app's business
    (["app:app", "--", "--loop", "x"], ["--loop", FACTORY, "app:app", "--", "--loop", "x"], None),
])
def test_uvicorn(args, expected, note, capsys):
    assert _server_args("uvicorn", list(args)) == (args if expected is None else expected)
    err = capsys.readouterr().err
    assert (note in err) if note else err == ""


@pytest.mark.parametrize("args, expected, note", [
    (["app:app"], ["--workers", "0", "app:app"], None),
    (["-k", "asyncio", "app:app"], ["--workers", "0", "-k", "asyncio", "app:app"], None),
    (["-w", "0", "app:app"], None, None),
    (["--workers", "2", "app:app"], None, "worker processes it spawns"),
    (["--workers=2", "app:app"], None, "worker processes it spawns"),
    (["--reload", "app:app"], None, "worker processes it spawns"),
    (["-c", "hypercorn.toml", "app:app"], None, "worker processes it spawns"),
    (["--worker-class", "uvloop", "app:app"], None, "uvloop worker class does not run on ferroloop"),
    (["-k", "trio", "app:app"], None, "trio worker class does not run on ferroloop"),
])
def test_hypercorn(args, expected, note, capsys):
    assert _server_args("hypercorn", list(args)) == (args if expected is None else expected)
    err = capsys.readouterr().err
    assert (note in err) if note else err == ""


def test_other_modules_untouched(capsys):
    for module in ("gunicorn", "uvicorn.main", "aiohttp.web", "app"):
        assert _server_args(module, ["--loop", "x", "-w", "3"]) == ["--loop", "x", "-w", "3"]
    assert capsys.readouterr().err == ""
