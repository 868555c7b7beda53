"""A coroutine called without `await`, and a fire-and-forget task whose exception nobody reads:
`python -m ferroloop --debug examples/diagnostics/never_awaited.py`."""

import asyncio


async def save(item):
    await asyncio.sleep(0)
    return item


async def job():
    raise ValueError("bad input")


async def main():
    save("report")  # missing await: the coroutine never runs
    task = asyncio.create_task(job(), name="job")
    await asyncio.sleep(0.01)
    del task


asyncio.run(main())
