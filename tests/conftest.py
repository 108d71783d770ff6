"""Shared fixtures: the real Unity outputs in ../shared/fixtures (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("SYNTHGAP_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))


def shared_fixture(name: str) -> Path:
    """Path of a folder/file in ../shared/fixtures, or skip the test saying why."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"real Unity fixture {path} is absent (it lives in ../shared/fixtures beside the repo)")
    return path


@pytest.fixture
def solo_fixture() -> Path:
    return shared_fixture("unity_solo_perception_0.10")


@pytest.fixture
def legacy_fixture() -> Path:
    return shared_fixture("unity_perception_legacy_0.8")
