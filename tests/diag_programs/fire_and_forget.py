"""Mistake: fire-and-forget tasks whose references are dropped. The loop only keeps weak
references to tasks, so a task that waits on something that does not reference it back (here a
timer holding a weak reference to the future the task waits on, as a registry of weak callbacks
would) is garbage-collected mid-flight and never finishes. keep_tasks=True keeps every pending
task alive until it finishes.

    python fire_and_forget.py [--debug] [--asyncio-run] [--keep-tasks | --set-keep-tasks]

--asyncio-run: asyncio.run(main()) instead of ferroloop.run(main()) (the stock loop, unless
launched by python -m ferroloop). --keep-tasks: ferroloop.run(main(), keep_tasks=True);
--set-keep-tasks: loop.set_keep_tasks(True) from inside main(). Prints "prog: results [...]" (both tasks done: ['loop.create_task',
'asyncio.create_task']) and whether the finished tasks were released.
"""

import asyncio
import gc
import sys
import weakref

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
ASYNCIO_RUN = "--asyncio-run" in ARGS
KEEP = "--keep-tasks" in ARGS

RESULTS = []
REFS = []


def _wake(ref):
    fut = ref()
    if fut is not None and not fut.done():
        fut.set_result(None)


async def weak_sleep(delay):
    """asyncio.sleep(), except that the timer holds only a weak reference to the future."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_later(delay, _wake, weakref.ref(fut))
    await fut


async def work(label):
    for _ in range(3):
        await weak_sleep(0.02)
    RESULTS.append(label)


async def main():
    loop = asyncio.get_running_loop()
    if "--set-keep-tasks" in ARGS:
        loop.set_keep_tasks(True)
    if not ASYNCIO_RUN:
        print("prog: keep_tasks", loop.get_keep_tasks())
    REFS.append(weakref.ref(loop.create_task(work("loop.create_task"))))  # FORGET1
    REFS.append(weakref.ref(asyncio.create_task(work("asyncio.create_task"))))  # FORGET2
    for _ in range(30):  # collect every 5 ms, while the tasks sleep
        await asyncio.sleep(0.005)
        gc.collect()
    gc.collect()
    print("prog: results", RESULTS)
    print("prog: released", all(r() is None for r in REFS))


if ASYNCIO_RUN:
    asyncio.run(main(), debug=DEBUG)
else:
    ferroloop.run(main(), debug=DEBUG, keep_tasks=KEEP)
