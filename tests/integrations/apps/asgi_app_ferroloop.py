"""The recipe for servers that run the app in worker processes they *spawn* (hypercorn with
--workers 1 or more): such a worker starts a fresh interpreter, so neither `python -m ferroloop`
nor a policy set in the parent reaches it. The module that defines (or re-exports) the app sets
ferroloop's policy when the worker imports it, before the server creates its loop."""

import ferroloop

ferroloop.install()

from asgi_app import app  # noqa: E402,F401
