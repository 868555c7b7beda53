"""gunicorn + uvicorn on ferroloop::

    gunicorn app:app -k ferroloop.integrations.uvicorn_worker.FerroloopUvicornWorker -w 4

uvicorn's gunicorn worker creates its event loop through uvicorn's ``loop`` setting (``auto``:
uvloop when installed, else asyncio's ``SelectorEventLoop``), not through the event-loop policy,
so ``ferroloop.install()`` in a gunicorn config does not reach it. This worker is uvicorn's,
with that setting naming ferroloop's loop factory (what ``uvicorn --loop
ferroloop:new_event_loop`` does on the command line). ``FerroloopUvicornH11Worker`` is the same
with uvicorn's pure-Python h11 HTTP parser.

The base class is the ``uvicorn-worker`` package's ``UvicornWorker`` when that is installed
(uvicorn deprecates its own ``uvicorn.workers`` in its favour), else ``uvicorn.workers``'. The
classes are made on first access (gunicorn's ``-k`` looks them up by name), so importing this
module needs neither uvicorn nor gunicorn.
"""

from __future__ import annotations

import warnings
from typing import Any

LOOP = "ferroloop:new_event_loop"


def _make_classes() -> dict[str, type]:
    base: Any
    try:
        from uvicorn_worker import UvicornWorker as base  # type: ignore[import-not-found,no-redef]
    except ImportError:
        with warnings.catch_warnings():
            # uvicorn >= 0.30 warns on import that uvicorn.workers moved to uvicorn-worker.
            warnings.simplefilter("ignore", DeprecationWarning)
            from uvicorn.workers import UvicornWorker as base  # type: ignore[import-not-found,no-redef]

    worker = type("FerroloopUvicornWorker", (base,), {
        "__module__": __name__,
        "__doc__": "uvicorn's gunicorn worker, running its event loop on ferroloop.",
        "CONFIG_KWARGS": {"loop": LOOP, "http": "auto"},
    })
    h11_worker = type("FerroloopUvicornH11Worker", (worker,), {
        "__module__": __name__,
        "__doc__": "The same, with uvicorn's h11 HTTP implementation.",
        "CONFIG_KWARGS": {"loop": LOOP, "http": "h11"},
    })
    return {"FerroloopUvicornWorker": worker, "FerroloopUvicornH11Worker": h11_worker}


def __getattr__(name: str) -> Any:
    if name in ("FerroloopUvicornWorker", "FerroloopUvicornH11Worker"):
        classes = _make_classes()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
