"""Using the stdlib's own functions as methods of ferroloop's classes: one call, ``borrow``.

ferroloop's loop and stream transport take most of their rarely-run code from the installed
asyncio (``_loop.py``, ``_net.py``, ``_transport.py``; also ``_compat.py`` for handle reprs): its
behaviour, messages and version differences (3.11, 3.12, 3.13) are then CPython's by
construction. That code runs with a ferroloop object as ``self`` and reads the private
attributes the stdlib's classes have; which ones, per Python version, is recorded in
``tests/borrowed_manifest/`` and checked by ``tests/test_borrowed_manifest.py``
(``docs/borrowing.md``).

``borrow(source, name)`` returns the function ``source.__dict__[name]`` (the stdlib class's own
attribute, not an inherited one). It fails loudly, with a ``BorrowError`` (an
``AttributeError``) naming the class, the name and the running Python, when the name is missing:
at ``import ferroloop``, not at the first call. A name that exists only on some Python versions
is declared in ``_borrowed.py`` (``VERSIONED``, with ``since``/``until``); ``borrow_into`` skips
such a name outside its declared versions, and nothing else is ever skipped.

Two variants, both explicit keywords of the same call:

* ``super_layer=cls``: the function uses zero-argument ``super()`` (its code has a ``__class__``
  cell naming its stdlib class, so ``super()`` would fail on a ferroloop object). It is borrowed as
  a copy of the same code whose ``__class__`` cell is ``cls``, the ferroloop class it is put on,
  so ``super()`` continues with the next class of ferroloop's MRO. ``borrow`` refuses a function
  that uses ``super()`` when no ``super_layer`` is given (it would fail at its first call).
* ``globals={name: value}``: a copy of the function that sees ``value`` in place of its module's
  global ``name`` (the stdlib's ``_make_ssl_transport`` builds ``_SelectorSocketTransport`` by
  name: it gets ferroloop's transport). The copy's globals are a snapshot of the module's taken
  at import: a later monkeypatch of that stdlib module is not seen by that one copy.

Copies keep the code, defaults, names, docstring, annotations and attributes, with
``__wrapped__`` set to the stdlib original. ``borrow_into(layer, source, names)`` is ``borrow``
for several names, each put on ``layer`` with ``super_layer=layer``.
"""

import types

from . import _borrowed

__all__ = ["BorrowError", "borrow", "borrow_into"]


class BorrowError(AttributeError):
    """A stdlib function ferroloop borrows is missing (or cannot be borrowed as declared)."""


def borrow(source, name, *, super_layer=None, globals=None):
    """The stdlib's ``source.<name>``, to use as a method of a ferroloop class (module
    docstring): the function itself, or a copy of it with ``super_layer``/``globals``."""
    func = source.__dict__.get(name)
    if func is None:
        raise BorrowError(_missing(source, name))
    code = getattr(func, "__code__", None)
    if code is None:
        raise BorrowError(f"ferroloop borrows {_where(source, name)}, which is not a function "
                          f"on {_python()}: {func!r}")
    closure = func.__closure__
    if "__class__" in code.co_freevars:
        if super_layer is None:
            raise BorrowError(f"{_where(source, name)} calls zero-argument super(): borrow it with "
                              f"super_layer= (or borrow_into), naming the class it is put on")
        closure = tuple(
            types.CellType(super_layer) if var == "__class__" else cell
            for var, cell in zip(code.co_freevars, closure)
        )
    if globals is not None:
        missing = sorted(set(globals) - set(func.__globals__))
        if missing:
            raise BorrowError(f"{_where(source, name)}: globals= replaces {missing}, which its "
                              f"module does not define on {_python()}")
        scope = dict(func.__globals__)
        scope.update(globals)
    else:
        scope = func.__globals__
    if closure is func.__closure__ and scope is func.__globals__:
        return func
    return _copy(func, scope, closure)


def borrow_into(layer, source, names, *, globals=None):
    """``setattr(layer, name, borrow(source, name, super_layer=layer, globals=globals))`` for
    each name, except a name that ``_borrowed.VERSIONED`` declares absent on this Python."""
    for name in names:
        if _declared_absent(source, name):
            continue
        setattr(layer, name, borrow(source, name, super_layer=layer, globals=globals))


def _declared_absent(source, name):
    versions = _borrowed.VERSIONED.get(_where(source, name))
    if versions is None:
        return False
    from . import _compat  # imported here: _compat itself borrows (handle reprs)

    return not _compat.version_in(**versions)


def _where(source, name):
    return f"{source.__module__}.{source.__qualname__}.{name}"


def _python():
    import platform

    return f"Python {platform.python_version()}"


def _missing(source, name):
    where = _where(source, name)
    versions = _borrowed.VERSIONED.get(where)
    if versions is None:
        return (f"ferroloop borrows {where}, which {_python()} does not define. If it exists only "
                f"on some Python versions, declare them in ferroloop/_borrowed.py (VERSIONED) and "
                f"borrow it with borrow_into; otherwise the stdlib changed: see docs/borrowing.md")
    declared = ", ".join(f"{k}={v}" for k, v in versions.items())
    if _declared_absent(source, name):
        return (f"ferroloop borrows {where}, which {_python()} does not define, as declared in "
                f"ferroloop/_borrowed.py ({declared}): borrow it with borrow_into, which skips it "
                f"on this version")
    return (f"ferroloop borrows {where}, declared in ferroloop/_borrowed.py with {declared}, "
            f"but {_python()} does not define it: the declaration is wrong")


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
