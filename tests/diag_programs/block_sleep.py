"""Mistake: a blocking time.sleep() inside a coroutine (the loop can run nothing else meanwhile).

    python block_sleep.py [--debug] [--asyncio-run]  # --debug: ferroloop.run(main(), debug=True)
    python -m ferroloop [--debug] block_sleep.py     # debug from the launcher

--asyncio-run: call asyncio.run() instead of ferroloop.run() (the stock loop when run directly).

The idle wait (asyncio.sleep) and the short sleep (under the threshold) must not be reported.
"""

import asyncio
import sys
import time

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


async def fetch():
    await asyncio.sleep(0.01)
    time.sleep(0.3)  # BLOCK
    print("prog: unblocked", file=sys.stderr, flush=True)
    await asyncio.sleep(0.2)  # idle: the loop waits, it is not blocked
    time.sleep(0.02)  # SHORT: under the threshold
    return "data"


async def main():
    task = asyncio.create_task(fetch(), name="fetcher")  # CREATE
    print("prog: result", await task)


run(main(), debug=DEBUG)
