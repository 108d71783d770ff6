"""Shared fixtures: the real Unity outputs in ../shared/fixtures (skipped with a reason when absent), and a
static HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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


class _RecordingHandler(SimpleHTTPRequestHandler):
    """Serves a folder quietly and records each requested path in the class's ``requests``."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL, requested paths) of a real HTTP server on 127.0.0.1 serving a fresh folder."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = type("Handler", (_RecordingHandler,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}", handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
