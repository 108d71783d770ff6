"""The real photographs in ../shared/real (two Supervisely projects copied from GitHub), and GitHub-style
archives of them for download tests served from 127.0.0.1."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from synthgap.io.download import MANIFESTS

REPO = Path(__file__).resolve().parents[2]
SHARED_REAL = Path(os.environ.get("SYNTHGAP_SHARED_REAL", REPO.parent / "shared" / "real"))


def shared_real(name: str) -> Path:
    """``../shared/real/<name>`` (grocery-store-shelves, snacks-catalog), or skip the test saying why."""
    path = SHARED_REAL / name
    if not path.exists():
        pytest.skip(f"real photographs {path} are absent (they live in ../shared/real beside the repo)")
    return path


def github_zip(name: str, dest: Path, *, only=None, replace: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as GitHub serves a commit (one top folder ``<repository>-<commit>/``) of the shared copy
    of dataset ``name``; ``only(rel) -> bool`` keeps a subset of the files, ``replace`` swaps some files'
    bytes (to test verification)."""
    source = shared_real(name)
    m = MANIFESTS[name]
    top = f"{m['repository'].split('/')[1]}-{m['commit']}"
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for rel in sorted(m["files"]):
            if only is not None and not only(rel):
                continue
            data = (replace or {}).get(rel)
            if data is None:
                data = (source / rel).read_bytes()
            z.writestr(f"{top}/{rel}", data)
    return dest
