"""An aiohttp app for test_frameworks.py (its handler answers with the running loop's class and
the pid), served by ``web.run_app`` when run as a script (``python aiohttp_app.py PORT``) or by
gunicorn's aiohttp worker (``gunicorn aiohttp_app:app -k aiohttp.GunicornWebWorker``)."""

import asyncio
import os
import sys

from aiohttp import web


async def hello(request):
    loop = asyncio.get_running_loop()
    return web.json_response({
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "pid": os.getpid(),
        "path": request.path,
    })


app = web.Application()
app.router.add_get("/{tail:.*}", hello)

if __name__ == "__main__":
    import ferroloop

    # The recipe: run_app on a loop of ferroloop's (aiohttp >= 3.8 takes loop=).
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), loop=ferroloop.new_event_loop(),
                print=lambda *a: print(*a, flush=True))
