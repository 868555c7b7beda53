"""ferroloop's main job, end to end: an ordinary asyncio program running on ferroloop.

Three workers share one thread: timers, a queue, a task group, a blocking call moved to a thread,
and a timeout, all scheduled by ferroloop's Rust core.
"""

import asyncio
import time

import ferroloop


async def worker(name, queue, results):
    while True:
        n = await queue.get()
        await asyncio.sleep(0.01 * n)  # a timer on the loop
        results.append((name, n, n * n))
        queue.task_done()


def blocking_sum(n):
    time.sleep(0.05)  # blocking work belongs in a thread, not on the loop
    return sum(range(n))


async def main():
    loop = asyncio.get_running_loop()
    print(f"running on {type(loop).__module__}.{type(loop).__qualname__}")
    queue, results = asyncio.Queue(), []
    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker(f"w{i}", queue, results), name=f"w{i}") for i in range(3)]
        for n in range(1, 10):
            queue.put_nowait(n)
        total = await asyncio.to_thread(blocking_sum, 1_000_000)
        await queue.join()
        for w in workers:
            w.cancel()
    for name, n, sq in sorted(results, key=lambda r: r[1]):
        print(f"  {name} squared {n} -> {sq}")
    print(f"sum(range(1e6)) computed in a thread: {total}")
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(10)
    except TimeoutError:
        print("a 10 s sleep was cut short by a 50 ms timeout")
    stats = loop.stats()
    print(f"loop stats: {stats['turns']} turns, {stats['callbacks']} callbacks run")
    return len(results)


if __name__ == "__main__":
    done = ferroloop.run(main())
    print(f"done: {done} jobs")
