"""Mistake: main() returns while a background task is still running; run() cancels it.

    python pending_at_exit.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] pending_at_exit.py
"""

import asyncio
import sys

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run

BACKGROUND = []  # a reference is kept: the task is not lost, just never finished


async def heartbeat():
    while True:
        await asyncio.sleep(10)


async def main():
    BACKGROUND.append(asyncio.create_task(heartbeat(), name="heartbeat"))  # CREATE
    await asyncio.sleep(0.01)
    print("prog: main done")


run(main(), debug=DEBUG)
print("prog: cancelled", BACKGROUND[0].cancelled())
