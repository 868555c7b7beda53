"""Using the stdlib's own functions as methods of ferroloop's classes.

ferroloop's loop and transports take most of their rarely-run code from the installed asyncio
(``_loop.py``, ``_net.py``, ``_transport.py``): its behaviour, messages and version differences
(3.11, 3.12, 3.13) are then CPython's by construction. Two helpers do the borrowing.
"""

import types

__all__ = ["rebind_super", "borrow_into"]


def rebind_super(func, layer):
    """``func`` itself, or, when it uses zero-argument ``super()``, a copy of it (same code,
    globals, defaults, annotations, name) whose ``__class__`` cell is ``layer``."""
    code = getattr(func, "__code__", None)
    if code is None or "__class__" not in code.co_freevars:
        return func
    closure = tuple(
        types.CellType(layer) if name == "__class__" else cell
        for name, cell in zip(code.co_freevars, func.__closure__)
    )
    return _copy(func, func.__globals__, closure)


def borrow_into(layer, source, names):
    """Put the stdlib's ``source.<name>`` on ``layer`` for each name this Python defines."""
    for name in names:
        if name in source.__dict__:  # names differ between 3.11, 3.12 and 3.13
            setattr(layer, name, rebind_super(source.__dict__[name], layer))


def with_globals(func, **names):
    """A copy of ``func`` (same code, defaults, closure, name) that sees ``names`` in place of
    its module's globals of those names. For a stdlib function that builds a stdlib class by
    name where ferroloop has its own (``_make_ssl_transport`` builds ``_SelectorSocketTransport``).
    The copy's globals are a snapshot of the module's plus ``names``."""
    scope = dict(func.__globals__)
    scope.update(names)
    return _copy(func, scope, func.__closure__)


def _copy(func, scope, closure):
    """``func`` with other globals and closure cells: same code, defaults, names, attributes;
    ``__wrapped__`` is the stdlib original, for introspection."""
    new = types.FunctionType(func.__code__, scope, func.__name__, func.__defaults__, closure)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    new.__dict__.update(func.__dict__)
    new.__annotations__ = func.__annotations__
    new.__wrapped__ = func
    return new
