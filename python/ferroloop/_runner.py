"""ferroloop.run(): asyncio.run() on a ferroloop loop."""

from __future__ import annotations

import asyncio
from asyncio import events
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._loop import Loop

__all__ = ["run"]

_NESTED_ADVICE = (
    "asyncio.run() cannot be called from a running event loop. "
    "ferroloop.run() was called while an event loop is already running in this thread "
    "(as in Jupyter/IPython or inside a web framework's handler). Instead: inside a coroutine, "
    "`await` the coroutine directly; to run it concurrently, use "
    "`asyncio.create_task(coro)` and keep a reference to the task; in a notebook, use "
    "top-level `await coro`."
)


_T = TypeVar("_T")


def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    keep_tasks: bool = False,
    watchdog: float | None = None,
    ps: bool = False,
) -> _T:
    """Run the coroutine ``main`` on a new ferroloop loop and return its result.

    The semantics are ``asyncio.run``'s: the loop is created, ``main`` runs to completion,
    leftover tasks are cancelled, async generators and the default executor are shut down and
    the loop is closed. Ctrl-C cancels ``main`` and then raises ``KeyboardInterrupt``.

    ``keep_tasks=True`` keeps every pending task the loop creates alive until it finishes
    (fire-and-forget tasks can no longer be garbage-collected mid-flight). In debug mode, tasks
    still pending when ``main`` returns are reported, with where they were created, before
    they are cancelled.

    ``watchdog=SECONDS`` turns on production mode's blocked-loop reports (``loop.set_watchdog``,
    without debug mode's cost); ``ps=True`` lets ``python -m ferroloop ps PID`` list this
    process's tasks through a private Unix socket.
    """
    if events._get_running_loop() is not None:
        # The stdlib's message, and what to do instead.
        raise RuntimeError(_NESTED_ADVICE)
    from . import new_event_loop

    def factory() -> Loop:
        loop = new_event_loop()
        if keep_tasks:
            loop.set_keep_tasks(True)
        if watchdog is not None:
            loop.set_watchdog(watchdog)
        return loop

    if ps:
        from . import _ps

        _ps.serve()

    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        try:
            return runner.run(main)
        finally:
            loop = runner.get_loop()
            if loop.get_debug() and not loop.is_closed():
                from . import _diagnostics

                _diagnostics.report_pending_at_exit(loop)
