"""Where CPython versions differ for a loop: every version switch of ferroloop's, in one module.

ferroloop supports 3.11, 3.12 and 3.13 and prepares for 3.14. Where the stdlib's behaviour
changed between versions, ferroloop takes the running version's own code (the functions below
call into the installed ``asyncio``) or switches on ``sys.version_info`` here, never elsewhere.

- ``handle_repr`` / ``format_callback_source``: the native ``Handle``'s repr and its
  "Exception in callback ..." message. 3.13 added ``debug=`` to
  ``format_helpers._format_callback_source`` (callback arguments are shown only in debug mode);
  3.11 and 3.12 always show them. The repr is built by the stdlib's own
  ``events.Handle._repr_info`` for the running version.
- ``DEFAULT_POLICY_BASE``: the class ``ferroloop.EventLoopPolicy`` extends. 3.14 deprecates the
  public ``asyncio.DefaultEventLoopPolicy`` name (a ``DeprecationWarning`` on access); its
  implementation stays, as ``asyncio.events._DefaultEventLoopPolicy`` (3.14) /
  ``unix_events._UnixDefaultEventLoopPolicy``, which is what is used here.
- ``POLICY_DEPRECATED``: 3.14+, where ``python -m ferroloop`` must not rely on the policy system.
- ``SERVER_ATTACH_TAKES_TRANSPORT``: 3.13's ``Server._attach``/``_detach`` take the transport
  (kept in ``server._clients`` for ``close_clients``/``abort_clients``); 3.11-3.12's take nothing.
- ``TRANSPORT_WRITELINES``: 3.12+'s ``_SelectorSocketTransport`` defines its own ``writelines``
  (one ``sendmsg``); 3.11 inherits ``WriteTransport.writelines``. ``_transport.py`` publishes the
  native one on 3.12+ only.
- ``version_in(since, until)``: whether the running Python is in a range declared in
  ``_borrowed.py`` (``VERSIONED``: stdlib functions that exist on some versions only).
- ``new_child_watcher``: 3.14 removed child watchers from the policy; its loop creates its own in
  ``_UnixSelectorEventLoop.__init__`` (``self._watcher``, pidfd where available, else a waitpid
  thread), which its ``_make_subprocess_transport`` reads. ferroloop's ``Loop`` does the same
  there. On 3.11-3.13 ``_make_subprocess_transport`` asks the policy, and this returns None.
"""

import sys
from asyncio import events, format_helpers, unix_events

from ._borrowing import borrow

__all__ = [
    "DEFAULT_POLICY_BASE",
    "POLICY_DEPRECATED",
    "SERVER_ATTACH_TAKES_TRANSPORT",
    "TRANSPORT_WRITELINES",
    "format_callback_source",
    "handle_repr",
    "new_child_watcher",
    "version_in",
]

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)
PY314 = sys.version_info >= (3, 14)


def version_in(since=None, until=None):
    """Whether this Python is at least ``since`` and below ``until`` ((major, minor) tuples)."""
    here = sys.version_info[:2]
    return (since is None or here >= since) and (until is None or here < until)


# ----------------------------------------------------------------------------------------------
# Transports

SERVER_ATTACH_TAKES_TRANSPORT = PY313
TRANSPORT_WRITELINES = PY312
# 3.12+: _SelectorSocketTransport.close drops the read/write callbacks before closing.
TRANSPORT_CLOSE_DROPS_CALLBACKS = PY312

# ----------------------------------------------------------------------------------------------
# Handles: repr and the callback-error message

_stdlib_repr_info = borrow(events.Handle, "_repr_info")

if PY313:
    # 3.13+: a callback's arguments are shown only in debug mode (they may hold secrets).
    def format_callback_source(func, args, debug):
        """``format_helpers._format_callback_source`` as the running version calls it."""
        return format_helpers._format_callback_source(func, args, debug=debug)

else:

    def format_callback_source(func, args, debug):
        """``format_helpers._format_callback_source`` as the running version calls it."""
        return format_helpers._format_callback_source(func, args)


def handle_repr(handle):
    """``repr()`` of a native ``Handle``/``TimerHandle`` (not cached): the stdlib's own
    ``Handle._repr_info`` of the running version, plus ``TimerHandle``'s ``when=`` at the place
    ``events.TimerHandle._repr_info`` puts it (that method calls zero-argument ``super()``, which
    a native class cannot satisfy; its body is one insert, unchanged since 3.7)."""
    info = _stdlib_repr_info(handle)
    if type(handle).__name__ == "TimerHandle":
        info.insert(2 if handle._cancelled else 1, f"when={handle._when}")
    return "<{}>".format(" ".join(info))


# ----------------------------------------------------------------------------------------------
# Policies

POLICY_DEPRECATED = PY314

if PY314:
    DEFAULT_POLICY_BASE = getattr(events, "_DefaultEventLoopPolicy", None) or getattr(
        unix_events, "_UnixDefaultEventLoopPolicy"
    )
else:
    DEFAULT_POLICY_BASE = unix_events.DefaultEventLoopPolicy


# ----------------------------------------------------------------------------------------------
# Subprocesses


def new_child_watcher():
    """The child watcher a 3.14+ loop owns (``self._watcher``), chosen as 3.14's
    ``_UnixSelectorEventLoop.__init__`` chooses it; None before 3.14, where the policy owns it."""
    if not hasattr(unix_events, "_ThreadedChildWatcher") or hasattr(events, "get_child_watcher"):
        return None
    if unix_events.can_use_pidfd():
        return unix_events._PidfdChildWatcher()
    return unix_events._ThreadedChildWatcher()
