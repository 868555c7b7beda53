"""A plain ASGI app for test_frameworks.py: it answers every request with the running loop's
class and the serving process's pid, so a test can tell which loop the server really ran."""

import asyncio
import json
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    while (await receive()).get("more_body", False):
        pass
    loop = asyncio.get_running_loop()
    body = json.dumps({
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "pid": os.getpid(),
        "path": scope["path"],
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
