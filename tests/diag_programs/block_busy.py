"""Mistake: a CPU-bound pure-Python loop in a plain callback (the GIL is held all along).

    python block_busy.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] block_busy.py
"""

import asyncio
import sys
import time

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


def count_until(deadline):
    n = 0
    while time.monotonic() < deadline: n += 1  # BLOCK  # noqa: E701
    return n


def crunch(done):
    n = count_until(time.monotonic() + 0.3)  # CALLER
    print("prog: unblocked", file=sys.stderr, flush=True)
    done.set_result(n > 0)


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(crunch, done)  # SCHEDULE
    print("prog: result", await done)


run(main(), debug=DEBUG)
