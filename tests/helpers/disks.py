"""Real small and read-only filesystems for tests of write errors: a tmpfs mounted for the test (root only;
the tests that need one are skipped elsewhere)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator

import pytest


@contextlib.contextmanager
def tmpfs(path, size: str = "64k", readonly: bool = False) -> Iterator[str]:
    """Mount a tmpfs of ``size`` at ``path`` (read-only after creation if asked); unmounted on exit."""
    path = str(path)
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        if readonly:
            subprocess.run(["mount", "-o", "remount,ro", path], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path: str) -> None:
    """Fill the filesystem at ``path`` until it is full."""
    try:
        with open(os.path.join(path, "filler.bin"), "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass
