"""Mistake: a task fails and nobody ever looks at its exception.

    python task_exception.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] task_exception.py
"""

import asyncio
import gc
import sys

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


async def parse(text):
    raise ValueError(f"bad input {text!r}")  # RAISE


async def main():
    task = asyncio.create_task(parse("x42"), name="parser")  # CREATE
    await asyncio.sleep(0.01)  # the task fails meanwhile
    del task
    gc.collect()
    await asyncio.sleep(0)
    print("prog: done")


run(main(), debug=DEBUG)
