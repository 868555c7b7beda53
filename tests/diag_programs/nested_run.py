"""Mistake: calling run() from a coroutine, i.e. inside a running event loop.

    python nested_run.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] nested_run.py

Exits with the RuntimeError's traceback (status 1).
"""

import asyncio
import sys

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


async def fetch():
    return "data"


async def main():
    coro = fetch()
    try:
        return run(coro)  # NESTED
    finally:
        coro.close()  # not the mistake under test: keep the never-awaited warning out


run(main(), debug=DEBUG)
