"""remove_reader()/remove_writer() given a socket object closed while registered (what anyio's
_RawSocketMixin does: aclose() closes the socket, then the future's done callback calls
loop.remove_reader(sock))."""
import asyncio, socket
import ferroloop

def case(make, kind):
    loop = make()
    a, b = socket.socketpair()
    getattr(loop, "add_" + kind)(a, print, kind)
    a.close()                                   # a.fileno() is now -1
    try:
        res = repr(getattr(loop, "remove_" + kind)(a))
    except Exception as e:
        res = f"{type(e).__name__}: {e}"
    b.close(); loop.close()
    return f"{type(loop).__name__:24} remove_{kind}(closed socket) -> {res}"

for kind in ("reader", "writer"):
    for make in (asyncio.new_event_loop, ferroloop.new_event_loop):
        print(case(make, kind))
