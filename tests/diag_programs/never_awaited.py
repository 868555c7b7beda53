"""Mistake: calling a coroutine function without awaiting it (the coroutine never runs).

    python never_awaited.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] never_awaited.py
"""

import asyncio
import sys

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run

SAVED = []


async def save(item):
    SAVED.append(item)


async def main():
    save("report")  # NEVER_AWAITED
    await asyncio.sleep(0.01)
    print("prog: saved", SAVED)


run(main(), debug=DEBUG)
