"""The declared part of ferroloop's contract with the borrowed stdlib code (docs/borrowing.md).

The generated part, per Python version (every borrowed function, where it comes from, the
``self`` attributes it reads and assigns, the ``self._loop`` attributes and the module globals it
reads), is ``tests/borrowed_manifest/<version>.toml``; ``tests/test_borrowed_manifest.py``
regenerates it from the installed stdlib and fails with a diff when it differs. This module holds
what cannot be generated, and is read by that test and by ``_borrowing``:

* ``VERSIONED``: the borrowed names that exist only on some Python versions. ``since`` is the
  first version that defines the name, ``until`` the first that no longer does. ``borrow_into``
  skips such a name outside its versions; any other missing name fails ``import ferroloop``.
* ``PROVIDED_LATER``: private attributes a borrowed function reads that a fresh ferroloop object
  does not have (not set in ``__init__``, no class attribute, method or property), with why the
  read is nevertheless safe. The test fails on any other such attribute.

Plain data, no imports: ``_borrowing`` reads it while ferroloop is being imported.
"""

# "module.Class.name" of the stdlib function -> the versions (inclusive since, exclusive until,
# as (major, minor)) that define it.
VERSIONED: dict[str, dict[str, tuple[int, int]]] = {
    # 3.13+: also unlinks the path of a listening Unix socket (calls super()._stop_serving).
    "asyncio.unix_events._UnixSelectorEventLoop._stop_serving": {"since": (3, 13)},
}

# "ferroloop class" -> {private attribute: why reading it is safe although a fresh object lacks it}
PROVIDED_LATER: dict[str, dict[str, str]] = {}
