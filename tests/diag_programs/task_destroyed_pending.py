"""Mistake: a task whose only reference is dropped while it waits on a future nobody resolves;
the garbage collector destroys it mid-flight.

    python task_destroyed_pending.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] task_destroyed_pending.py
"""

import asyncio
import gc
import sys

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


async def wait_for_reply(fut):
    return await fut


async def main():
    fut = asyncio.get_running_loop().create_future()
    asyncio.create_task(wait_for_reply(fut), name="orphan")  # CREATE
    await asyncio.sleep(0)  # the task starts and parks on fut
    del fut  # now only the task and fut reference each other
    gc.collect()
    await asyncio.sleep(0.01)
    print("prog: done")


run(main(), debug=DEBUG)
