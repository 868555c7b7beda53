"""A plain ASGI app for test_uvicorn_cli.py, which serves it with uvicorn's command line in a
child process (``python -m uvicorn cli_app:app --loop <factory>``). It reports the running loop's
class, so the test can tell which loop uvicorn really ran."""

import asyncio
import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # uvicorn's lifespan protocol, "auto" mode
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    loop = asyncio.get_running_loop()
    answer = json.dumps({
        "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "path": scope["path"],
        "body": body.decode(),
    }).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
