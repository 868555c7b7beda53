"""ferroloop.run(): asyncio.run() on a ferroloop loop."""

import asyncio
from asyncio import events

__all__ = ["run"]

_NESTED_ADVICE = (
    "asyncio.run() cannot be called from a running event loop. "
    "ferroloop.run() was called while an event loop is already running in this thread "
    "(as in Jupyter/IPython or inside a web framework's handler). Instead: inside a coroutine, "
    "`await` the coroutine directly; to run it concurrently, use "
    "`asyncio.create_task(coro)` and keep a reference to the task; in a notebook, use "
    "top-level `await coro`."
)


def run(main, *, debug=None):
    """Run the coroutine ``main`` on a new ferroloop loop and return its result.

    The semantics are ``asyncio.run``'s: the loop is created, ``main`` runs to completion,
    leftover tasks are cancelled, async generators and the default executor are shut down and
    the loop is closed. Ctrl-C cancels ``main`` and then raises ``KeyboardInterrupt``.
    """
    if events._get_running_loop() is not None:
        # The stdlib's message, and what to do instead.
        raise RuntimeError(_NESTED_ADVICE)
    from . import new_event_loop

    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
