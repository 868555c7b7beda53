"""Mistake: a blocking socket recv() inside a coroutine; the peer answers 0.3 s later.

    python block_socket.py [--debug] [--asyncio-run]
    python -m ferroloop [--debug] block_socket.py

The writer thread sleeps too: the report must name the loop thread's line, not the writer's.
"""

import asyncio
import socket
import sys
import threading
import time

import ferroloop

ARGS = sys.argv[1:]
DEBUG = True if "--debug" in ARGS else None  # None: the loop's default (PYTHONASYNCIODEBUG)
run = asyncio.run if "--asyncio-run" in ARGS else ferroloop.run


def answer_late(sock):
    time.sleep(0.3)  # WRITER (another thread: not the blocking line)
    sock.sendall(b"pong")


async def receive(sock):
    data = sock.recv(4)  # BLOCK
    print("prog: unblocked", file=sys.stderr, flush=True)
    return data


async def read_reply(sock):
    await asyncio.sleep(0.01)
    return await receive(sock)  # CALLER


async def main():
    a, b = socket.socketpair()  # blocking sockets
    writer = threading.Thread(target=answer_late, args=(b,))
    writer.start()
    try:
        task = asyncio.create_task(read_reply(a), name="reader")  # CREATE
        print("prog: result", await task)
    finally:
        writer.join()
        a.close()
        b.close()


run(main(), debug=DEBUG)
