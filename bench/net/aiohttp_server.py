"""aiohttp's own web server (aiohttp.web) serving a plaintext "Hello, World!" on a chosen event loop
(bench/net/run.py loads it with wrk, as it does bench/net/http_server.py's uvicorn).

    python bench/net/aiohttp_server.py --loop ferroloop --port 0

The application is started with aiohttp's AppRunner/TCPSite inside asyncio.Runner(loop_factory=...),
so the loop is ours to choose, the same way for every loop (uvloop and asyncio included). aiohttp
uses its C HTTP parser (the wheel's `_http_parser`) when it is importable, as in production.
Once accepting it prints "READY <port>" on stdout; it runs until killed.
"""

import argparse
import asyncio
import os
import sys

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker import _factory, _version  # noqa: E402

BODY = b"Hello, World!"


async def hello(request):
    return web.Response(body=BODY, content_type="text/plain")


async def serve(args):
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(f"READY {port} {args.loop} {_version(args.loop)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, help="asyncio, uvloop, ferroloop, rloop, rsloop")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
