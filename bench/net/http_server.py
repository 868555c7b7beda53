"""uvicorn (httptools parser) serving a plaintext "Hello, World!" ASGI app on a chosen event loop
(bench/net/run.py loads it with wrk).

    python bench/net/http_server.py --loop ferroloop --port 0

uvicorn is started programmatically with loop="none", inside asyncio.Runner(loop_factory=...),
so the loop is ours to choose (the same way for every loop, uvloop and asyncio included).
Once accepting it prints "READY <port>" on stdout; it runs until killed (or SIGINT/SIGTERM,
which uvicorn handles with its graceful shutdown).
"""

import argparse
import asyncio
import os
import sys

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker import _factory, _version  # noqa: E402

BODY = b"Hello, World!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send(START)
    await send(RESPONSE)


async def serve(args):
    # uvicorn binds by address itself (rloop 0.5 cannot serve on a socket it is given; and a
    # socket made here with socket.socket() would have proto 0, for which asyncio's transports
    # skip TCP_NODELAY: every response would then wait for a delayed ACK, ~40 ms).
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, loop="none", http="httptools",
                            lifespan="off", log_level="warning", access_log=False, backlog=1024)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what went wrong
            raise RuntimeError("uvicorn exited before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"READY {port} {args.loop} {_version(args.loop)}", flush=True)
    await task


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, help="asyncio, uvloop, ferroloop, rloop, rsloop")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    args = ap.parse_args()
    with asyncio.Runner(loop_factory=_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
