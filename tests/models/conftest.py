"""Weights caches for the model tests: an empty $TORCH_HOME and Hugging Face hub cache, the network out of reach."""

from __future__ import annotations

import pytest


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty $TORCH_HOME; the network is out of reach (https through a closed local port)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    return home


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, torch_home):
    """An empty Hugging Face hub cache (where timm downloads to) beside the empty $TORCH_HOME, offline.
    huggingface_hub reads $HF_HUB_CACHE once, at import, into ``constants.HF_HUB_CACHE``: that setting is
    changed here (the variable too, for subprocesses)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf_hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
