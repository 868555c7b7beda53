"""ferroloop's PEP 517 build backend: maturin's, without its silent Rust download.

When ``cargo`` is not on PATH, maturin's backend (1.8+) asks pip for ``puccinialin`` and
downloads a Rust toolchain into ``~/.cache/puccinialin`` on its own (and, where the download
fails, prints an 80-line traceback). For ferroloop a build from source without Rust is almost
always a missing wheel (another platform or Python), so this backend stops at once with a
message saying so; ``FERROLOOP_ALLOW_RUST_DOWNLOAD=1`` restores maturin's behaviour.

Used by pyproject.toml's ``[build-system]`` (``build-backend = "ferroloop_build"``,
``backend-path = ["build_backend"]``); every hook is maturin's.
"""

import os
import shutil
import sys

from maturin import *  # noqa: F401,F403  (the PEP 517 hooks)
from maturin import build_sdist  # noqa: F401
from maturin import build_editable as _build_editable
from maturin import build_wheel as _build_wheel
from maturin import prepare_metadata_for_build_wheel as _prepare_metadata_for_build_wheel

MESSAGE = """
ferroloop: building from source needs Rust (cargo), which is not on PATH.

There is no ferroloop wheel for this system, so pip is building one. ferroloop publishes wheels
for CPython 3.11-3.13 on x86_64 Linux with glibc 2.28+ (manylinux_2_28) and musl
(musllinux_1_2). Either:
  - install Rust (https://rustup.rs, or your distribution's rust and cargo packages), then
    install ferroloop again; or
  - set FERROLOOP_ALLOW_RUST_DOWNLOAD=1 to let maturin download a temporary Rust toolchain.
"""

_ALLOW = bool(os.environ.get("FERROLOOP_ALLOW_RUST_DOWNLOAD"))
if not _ALLOW:
    # maturin reads this in every hook (get_requires_for_build_*, _get_env): no puccinialin.
    os.environ["MATURIN_NO_INSTALL_RUST"] = "1"


def _require_cargo():
    if not _ALLOW and not shutil.which("cargo"):
        sys.stderr.write(MESSAGE)
        sys.exit(1)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _require_cargo()
    return _prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _require_cargo()
    return _build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _require_cargo()
    return _build_editable(wheel_directory, config_settings, metadata_directory)
