"""What differs between CPython versions follows the running Python exactly.

Handle reprs and "Exception in callback" messages (3.13 shows a callback's arguments only in
debug mode), ``create_task``'s keyword arguments, the module's GIL declaration (3.13+), and
readiness for 3.14 (no deprecated name touched on import, a ``python -m ferroloop`` route
without the policy system). The stdlib loop is the oracle wherever it has the behaviour.
"""

import asyncio
import ctypes
import subprocess
import sys
import textwrap
from asyncio import base_events

import pytest

from conftest import child_env


def cb(*args):
    pass


def _without_origin(r):
    return r.split(" created at ", 1)[0].rstrip(">")


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_handle_repr_follows_the_running_version(loop, debug):
    loop.set_debug(debug)
    # The same call through the stdlib's own Handle, on the same line, on the same loop.
    h, ref = loop.call_soon(cb, 1, "two"), asyncio.Handle(cb, (1, "two"), loop)
    t, tref = loop.call_later(10, cb, 1, "two"), asyncio.TimerHandle(
        h.when() if hasattr(h, "when") else 0, cb, (1, "two"), loop
    )
    try:
        assert _without_origin(repr(h)) == _without_origin(repr(ref))
        # TimerHandle: same shape, with when= in second place.
        assert repr(t).startswith(f"<TimerHandle when={t.when()} ")
        assert _without_origin(repr(t)).split(" ", 2)[2] == _without_origin(repr(tref)).split(
            " ", 2
        )[2]
        shows_args = "cb(1, 'two')" in repr(h)
        assert shows_args == (debug or sys.version_info < (3, 13))
        h.cancel()
        ref.cancel()
        assert _without_origin(repr(h)) == _without_origin(repr(ref))
    finally:
        t.cancel()


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_callback_error_message_follows_the_running_version(loop, debug):
    loop.set_debug(debug)
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def bad(*args):
        raise ValueError("boom")

    loop.call_soon(bad, 1, "two")
    ref = asyncio.Handle(bad, (1, "two"), loop)
    loop.run_until_complete(asyncio.sleep(0))
    ref._run()  # the stdlib's own message for the same callback, on the same loop
    assert len(contexts) == 2
    assert contexts[0]["message"] == contexts[1]["message"]
    assert contexts[0]["message"].startswith("Exception in callback ")
    shows_args = "(1, 'two')" in contexts[0]["message"]
    assert shows_args == (debug or sys.version_info < (3, 13))
    assert isinstance(contexts[0]["exception"], ValueError)


def _stdlib_create_task_outcome(coro_fn, **kwargs):
    """What the stdlib's create_task does with these keyword arguments on this Python."""
    lp = asyncio.new_event_loop()
    coro = coro_fn()
    try:
        task = base_events.BaseEventLoop.create_task(lp, coro, **kwargs)
        lp.run_until_complete(task)
        return ("ok", task.result())
    except TypeError as exc:
        coro.close()
        return ("TypeError", str(exc))
    finally:
        lp.close()


@pytest.mark.parametrize("kwargs", [{"eager_start": True}, {"eager_start": False}, {"bogus": 1}])
def test_create_task_keywords_as_the_running_version(loop, kwargs):
    async def work():
        return 7

    expected = _stdlib_create_task_outcome(work, **kwargs)
    coro = work()
    try:
        task = loop.create_task(coro, **kwargs)
        outcome = ("ok", loop.run_until_complete(task))
    except TypeError as exc:
        coro.close()
        outcome = ("TypeError", str(exc))
    assert outcome == expected


def test_create_task_name_and_context_still_native(loop):
    import contextvars

    var = contextvars.ContextVar("v", default="unset")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")

    async def read():
        return var.get()

    task = loop.create_task(read(), name="reader", context=ctx)
    assert task.get_name() == "reader"
    assert loop.run_until_complete(task) == "in ctx"


def test_task_factory_gets_context_keyword(loop):
    seen = []

    def factory(lp, coro, **kw):
        seen.append(sorted(kw))
        return asyncio.Task(coro, loop=lp, **kw)

    loop.set_task_factory(factory)

    async def work():
        return 1

    assert loop.run_until_complete(loop.create_task(work())) == 1
    import contextvars

    loop.run_until_complete(loop.create_task(work(), context=contextvars.copy_context()))
    assert seen[0] == [] and seen[-1] == ["context"]


# --------------------------------------------------------------------------------------------
# The module's GIL declaration


def _module_gil_slot(module):
    """The value of the ``Py_mod_gil`` slot of ``module``'s PyModuleDef (None when absent)."""
    api = ctypes.pythonapi
    api.PyModule_GetDef.restype = ctypes.c_void_p
    api.PyModule_GetDef.argtypes = [ctypes.py_object]
    mdef = api.PyModule_GetDef(module)
    assert mdef, "not an extension module with a PyModuleDef"
    word = ctypes.sizeof(ctypes.c_void_p)
    # PyModuleDef: PyModuleDef_Base (ob_refcnt, ob_type, m_init, m_index, m_copy), m_name,
    # m_doc, m_size, m_methods, m_slots.
    slots = ctypes.c_void_p.from_address(mdef + 9 * word).value
    if not slots:
        return None

    class Slot(ctypes.Structure):
        _fields_ = [("slot", ctypes.c_int), ("value", ctypes.c_void_p)]

    i = 0
    while True:
        s = Slot.from_address(slots + i * ctypes.sizeof(Slot))
        if s.slot == 0:
            return None
        if s.slot == 4:  # Py_mod_gil
            return s.value or 0
        i += 1


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Py_mod_gil exists from 3.13 on")
def test_ferroloop_native_module_declares_it_uses_the_gil(ferroloop_mod):
    from ferroloop import _native

    # Py_MOD_GIL_USED is 0, Py_MOD_GIL_NOT_USED is 1: a free-threaded interpreter must turn the
    # GIL back on when it imports the module, since every piece of loop state relies on it.
    assert _module_gil_slot(_native) == 0


# --------------------------------------------------------------------------------------------
# 3.14 readiness


def test_ferroloop_import_touches_no_deprecated_name():
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import ferroloop, ferroloop.__main__"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_ferroloop_child_watcher_owned_by_loop_only_where_the_stdlib_does(ferroloop_mod):
    from asyncio import events

    from ferroloop import _compat

    loop = ferroloop_mod.new_event_loop()
    try:
        if hasattr(events, "get_child_watcher"):  # 3.11-3.13: the policy owns it
            assert _compat.new_child_watcher() is None
            assert not hasattr(loop, "_watcher")
        else:  # 3.14+: the loop owns one, as _UnixSelectorEventLoop.__init__ does
            assert loop._watcher is not None
    finally:
        loop.close()


NO_POLICY_PROG = """
import asyncio, json, sys
import ferroloop

async def main():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return isinstance(asyncio.get_running_loop(), ferroloop.Loop), out.decode().strip()

on_ferroloop, child = asyncio.run(main())
policy = type(asyncio.get_event_loop_policy())
print(json.dumps({
    "run": on_ferroloop,
    "child": child,
    "new_event_loop": isinstance(asyncio.new_event_loop(), ferroloop.Loop),
    "policy_untouched": not issubclass(policy, ferroloop.EventLoopPolicy),
}))
"""


def test_ferroloop_main_without_the_policy_system(tmp_path):
    import json

    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(NO_POLICY_PROG))
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-m", "ferroloop", "--no-policy",
         str(script)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "run": True,
        "child": "child",
        "new_event_loop": True,
        "policy_untouched": True,
    }
