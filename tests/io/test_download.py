"""`synthgap download` against real HTTP servers on 127.0.0.x (threads, stopped by each test)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import socket
import tarfile
import threading
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest
from click.testing import CliRunner

from synthgap.io import download as dl
from synthgap.cli import main
from synthgap.data.errors import DatasetError

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several read chunks, small enough to stay fast
SHA = hashlib.sha256(PAYLOAD).hexdigest()
TOKEN = "s3cr3t-T0KEN-for-tests"
FAST = dict(backoff=0.01, timeout=5.0, progress=False)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        route(self)


class Server:
    """A threaded HTTP server on ``host`` with per-path routes; records every request's headers."""

    def __init__(self, host: str = "127.0.0.1"):
        self.httpd = ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that hang up are part of the tests
        self.httpd.routes, self.httpd.requests = {}, []
        self.routes, self.requests = self.httpd.routes, self.httpd.requests
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    with Server() as s:
        yield s


def send_file(h: BaseHTTPRequestHandler, data: bytes, *, etag: str = '"v1"', ranges: bool = True,
              drop_after: int | None = None) -> None:
    """Serve ``data`` with Range support (unless ``ranges`` is False); close the connection after
    ``drop_after`` body bytes to simulate a network cut."""
    start = 0
    rng = h.headers.get("Range")
    if_range = h.headers.get("If-Range")
    if ranges and rng and (if_range is None or if_range == etag):
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        h.send_response(200)
    body = data[start:]
    h.send_header("Content-Length", str(len(body)))
    h.send_header("ETag", etag)
    if ranges:
        h.send_header("Accept-Ranges", "bytes")
    h.end_headers()
    if drop_after is not None:
        h.wfile.write(body[:drop_after])
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True
        return
    h.wfile.write(body)


# ------------------------------------------------------------------ checksums

def test_checksum_algorithms_match_reference_values():
    for algo, want in (("crc32", "cbf43926"), ("crc32c", "e3069283"),
                       ("md5", hashlib.md5(b"123456789").hexdigest())):
        h = dl.ALGORITHMS[algo]()
        h.update(b"1234")
        h.update(b"56789")
        assert h.hexdigest() == want
    big = os.urandom(3 << 20)
    h = dl.ALGORITHMS["crc32"]()
    for i in range(0, len(big), 1 << 20):
        h.update(big[i:i + (1 << 20)])
    assert h.hexdigest() == f"{zlib.crc32(big):08x}"


def test_parse_checksum_forms():
    assert dl.parse_checksum("SHA256:" + SHA.upper()) == dl.Checksum("sha256", SHA)
    assert dl.parse_checksum_text(SHA + "\n", "x") == dl.Checksum("sha256", SHA)
    md5 = hashlib.md5(b"a").hexdigest()
    text = f"{md5}  other.zip\n{hashlib.md5(b'b').hexdigest()} *data/x.zip\n"
    assert dl.parse_checksum_text(text, "x.zip") == dl.Checksum("md5", hashlib.md5(b"b").hexdigest())
    # datasetinsights' checksum files hold a bare decimal zlib CRC-32
    assert dl.parse_checksum_text("2322380006", "v3.zip") == dl.Checksum("crc32", "8a6cb4e6")
    assert dl.parse_checksum_text("crc32c:e3069283 x", "x") == dl.Checksum("crc32c", "e3069283")
    for bad in ("sha256:abc", "sha999:" + SHA, SHA):
        with pytest.raises(ValueError):
            dl.parse_checksum(bad)
    with pytest.raises(ValueError, match="cannot tell the algorithm"):
        dl.parse_checksum_text("deadbeef", "x")
    with pytest.raises(ValueError, match="name 'y'"):
        dl.parse_checksum_text(f"{md5}  a\n{md5}  b\n", "y")
    with pytest.raises(ValueError, match="is for 'a', not 'y'"):
        dl.parse_checksum_text(f"{md5}  a\n", "y")


# ------------------------------------------------------------------ HTTP

def test_plain_download_with_checksum_file(server, tmp_path):
    server.routes["/d/file.bin"] = lambda h: send_file(h, PAYLOAD)
    server.routes["/d/SHA256SUMS"] = lambda h: send_file(h, f"{SHA}  file.bin\n{'0' * 64}  other\n".encode())
    res = dl.download(server.url + "/d/file.bin", str(tmp_path / "out"),
                      checksum_file=server.url + "/d/SHA256SUMS", **FAST)
    assert (tmp_path / "out" / "file.bin").read_bytes() == PAYLOAD
    assert res.files == ["file.bin"] and sorted(os.listdir(tmp_path / "out")) == ["file.bin"]
    # a second run finds the verified file and does not fetch it again
    n = len(server.requests)
    dl.download(server.url + "/d/file.bin", str(tmp_path / "out"), checksum=dl.Checksum("sha256", SHA), **FAST)
    assert len(server.requests) == n


def test_connection_drop_resumes_with_range(server, tmp_path):
    calls = []

    def route(h):
        calls.append(h.headers.get("Range"))
        send_file(h, PAYLOAD, drop_after=100_000 if len(calls) == 1 else None)

    server.routes["/cut.bin"] = route
    out = tmp_path / "out"
    dl.download(server.url + "/cut.bin", str(out), checksum=dl.Checksum("sha256", SHA), **FAST)
    assert (out / "cut.bin").read_bytes() == PAYLOAD
    assert calls == [None, "bytes=100000-"]
    assert server.requests[1][1]["if-range"] == '"v1"'
    assert sorted(os.listdir(out)) == ["cut.bin"]  # no .part / .part.json left


def test_interrupted_run_leaves_part_and_next_run_resumes(server, tmp_path):
    calls = []

    def route(h):
        calls.append(h.headers.get("Range"))
        send_file(h, PAYLOAD, drop_after=70_000 if len(calls) == 1 else None)

    server.routes["/big.bin"] = route
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError, match="giving up"):
        dl.download(server.url + "/big.bin", str(out), retries=0, **FAST)
    assert not (out / "big.bin").exists()
    assert (out / "big.bin.part").stat().st_size == 70_000
    dl.download(server.url + "/big.bin", str(out), checksum=dl.Checksum("sha256", SHA), **FAST)
    assert calls == [None, "bytes=70000-"]
    assert (out / "big.bin").read_bytes() == PAYLOAD and sorted(os.listdir(out)) == ["big.bin"]


def test_changed_file_is_restarted_not_spliced(server, tmp_path):
    """A .part from an older version (ETag changed) must not be glued to the new bytes."""
    new = PAYLOAD[::-1]
    server.routes["/f.bin"] = lambda h: send_file(h, PAYLOAD, drop_after=50_000)
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError):
        dl.download(server.url + "/f.bin", str(out), retries=0, **FAST)
    server.routes["/f.bin"] = lambda h: send_file(h, new, etag='"v2"')
    dl.download(server.url + "/f.bin", str(out), checksum=dl.Checksum("sha256", hashlib.sha256(new).hexdigest()),
                **FAST)
    assert (out / "f.bin").read_bytes() == new


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    calls = []

    def route(h):
        calls.append(h.headers.get("Range"))
        send_file(h, PAYLOAD, ranges=False, drop_after=90_000 if len(calls) == 1 else None)

    server.routes["/norange.bin"] = route
    out = tmp_path / "out"
    dl.download(server.url + "/norange.bin", str(out), checksum=dl.Checksum("sha256", SHA), **FAST)
    assert calls == [None, "bytes=90000-"]  # asked to resume, got the whole file, started over
    assert (out / "norange.bin").read_bytes() == PAYLOAD


def test_500_twice_then_success(server, tmp_path):
    calls = []

    def route(h):
        calls.append(1)
        if len(calls) <= 2:
            h.send_error(500)
        else:
            send_file(h, PAYLOAD)

    server.routes["/flaky.bin"] = route
    dl.download(server.url + "/flaky.bin", str(tmp_path), **FAST)
    assert len(calls) == 3 and (tmp_path / "flaky.bin").read_bytes() == PAYLOAD


def test_persistent_503_gives_up_after_bounded_retries(server, tmp_path):
    calls = []
    server.routes["/down.bin"] = lambda h: (calls.append(1), h.send_error(503))
    with pytest.raises(dl.DownloadError, match="after 2 retries"):
        dl.download(server.url + "/down.bin", str(tmp_path), retries=2, **FAST)
    assert len(calls) == 3 and os.listdir(tmp_path) == []


def test_wrong_checksum_leaves_no_file(server, tmp_path):
    server.routes["/x.bin"] = lambda h: send_file(h, PAYLOAD)
    with pytest.raises(dl.ChecksumError, match="sha256 mismatch.*expected 0{64}, got " + SHA):
        dl.download(server.url + "/x.bin", str(tmp_path), checksum=dl.Checksum("sha256", "0" * 64), **FAST)
    assert os.listdir(tmp_path) == []


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_slip_over_http_is_refused_and_nothing_written(server, tmp_path):
    server.routes["/evil.zip"] = lambda h: send_file(h, _zip_bytes({"ok.txt": b"fine", "../escaped.txt": b"x"}))
    out = tmp_path / "out"
    with pytest.raises(DatasetError) as e:
        dl.download(server.url + "/evil.zip", str(out), **FAST)
    assert "evil.zip" in str(e.value) and "../escaped.txt" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == []


def test_tar_symlink_escape_over_http_is_refused(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(link)
        body = tarfile.TarInfo("data/link/pwned.txt")
        body.size = 1
        tf.addfile(body, io.BytesIO(b"x"))
    server.routes["/evil.tar.gz"] = lambda h: send_file(h, buf.getvalue())
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"evil\.tar\.gz.*data/link"):
        dl.download(server.url + "/evil.tar.gz", str(out), **FAST)
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(out) == []


def test_zip_download_is_extracted(server, tmp_path):
    server.routes["/good.zip"] = lambda h: send_file(h, _zip_bytes({"ds/a.json": b"{}", "ds/img/1.png": b"p"}))
    res = dl.download(server.url + "/good.zip", str(tmp_path), **FAST)
    assert res.files == ["ds/a.json", "ds/img/1.png"] and res.file is None
    assert sorted(os.listdir(tmp_path)) == ["ds"] and (tmp_path / "ds/img/1.png").read_bytes() == b"p"


def test_token_goes_to_source_host_only_and_is_never_printed(server, tmp_path, caplog):
    with Server("127.0.0.2") as other:
        other.routes["/file.zip"] = lambda h: send_file(h, _zip_bytes({"a.txt": b"A"}))

        def redirect(h):
            h.send_response(302)
            h.send_header("Location", other.url + "/file.zip")
            h.send_header("Content-Length", "0")
            h.end_headers()

        server.routes["/file.zip"] = redirect
        caplog.set_level(logging.DEBUG)
        result = CliRunner().invoke(main, ["download", "--source-uri", server.url + "/file.zip",
                                           "--output", str(tmp_path / "out"), "--access-token", TOKEN])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "out" / "a.txt").read_bytes() == b"A"
        assert server.requests[0][1]["authorization"] == f"Bearer {TOKEN}"
        assert other.requests and all("authorization" not in hdrs for _, hdrs in other.requests)
        # failing run too: the error path must not leak it either
        server.routes["/boom.bin"] = lambda h: h.send_error(403)
        failed = CliRunner().invoke(main, ["download", "-s", server.url + "/boom.bin?sig=abc",
                                           "-o", str(tmp_path / "o2")], env={"SYNTHGAP_ACCESS_TOKEN": TOKEN})
        assert failed.exit_code == 1 and "HTTP 403" in failed.output and "sig=abc" not in failed.output
        assert server.requests[-1][1]["authorization"] == f"Bearer {TOKEN}"
    everything = result.output + failed.output + caplog.text
    assert TOKEN not in everything


def test_named_dataset_gone_gives_clear_message(server, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.BASE_URL_ENV, server.url + "/datasetinsights/data")
    result = CliRunner().invoke(main, ["download", "--dataset", "unity-groceries-real", "--output", str(tmp_path)])
    assert result.exit_code == 1
    msg = result.output
    assert "unity-groceries-real" in msg and "is gone (HTTP 404" in msg and "/groceries/v3.zip" in msg
    assert "--source-uri" in msg  # says what to do instead
    assert server.requests[0][0] == "/datasetinsights/data/groceries/v3.zip"
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_named_dataset_from_local_copy_checks_published_checksum(tmp_path):
    copy = tmp_path / "SynthDet.zip"
    copy.write_bytes(_zip_bytes({"Dataset/captures_000.json": b"{}"}))
    with pytest.raises(dl.ChecksumError, match="crc32 mismatch.*expected 1743e93c"):
        dl.download_dataset("unity-groceries-synthetic-sample", str(tmp_path / "data"), source_uri=str(copy),
                            **FAST)
    assert not (tmp_path / "data" / "synthetic" / "SynthDet.zip").exists()
    want = dl.Checksum("crc32", f"{zlib.crc32(copy.read_bytes()):08x}")
    res = dl.download_dataset("unity-groceries-synthetic-sample", str(tmp_path / "data"), source_uri=str(copy),
                              checksum=want, **FAST)
    assert res.folder == str(tmp_path / "data" / "synthetic")
    assert (tmp_path / "data" / "synthetic" / "Dataset" / "captures_000.json").exists()


def test_404_and_410_are_source_gone(server, tmp_path):
    # (DNS failures map to SourceGoneError too; not tested: a lookup would leave this machine)
    server.routes["/old.bin"] = lambda h: h.send_error(410)
    for path, status in (("/nope.bin", 404), ("/old.bin", 410)):
        with pytest.raises(dl.SourceGoneError, match=f"is gone .HTTP {status}"):
            dl.download(server.url + path, str(tmp_path), **FAST)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ other sources

def test_local_file_and_folder_sources(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(PAYLOAD)
    (src / "sub" / "b.txt").write_text("b")
    dl.download(str(src / "a.bin"), str(tmp_path / "o1"), checksum=dl.Checksum("sha256", SHA), progress=False)
    assert (tmp_path / "o1" / "a.bin").read_bytes() == PAYLOAD
    res = dl.download(str(src), str(tmp_path / "o2"), progress=False)
    assert res.files == ["a.bin", "sub/b.txt"] and (tmp_path / "o2" / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(dl.SourceGoneError):
        dl.download(str(src / "missing.bin"), str(tmp_path / "o3"), progress=False)
    assert not (tmp_path / "o3" / "missing.bin.part").exists()


def test_memory_sources_file_folder_and_archive(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/dlsrc/x/one.bin", PAYLOAD)
    fs.pipe("/dlsrc/x/deep/two.bin", b"2")
    fs.pipe("/dlsrc/pack.zip", _zip_bytes({"p/q.txt": b"q"}))
    try:
        dl.download("memory://dlsrc/x/one.bin", str(tmp_path / "f"), checksum=dl.Checksum("sha256", SHA),
                    progress=False)
        assert (tmp_path / "f" / "one.bin").read_bytes() == PAYLOAD
        res = dl.download("memory://dlsrc/x", str(tmp_path / "d"), progress=False)
        assert res.files == ["deep/two.bin", "one.bin"] and (tmp_path / "d" / "deep" / "two.bin").read_bytes() == b"2"
        res = dl.download("memory://dlsrc/pack.zip", str(tmp_path / "z"), keep_archive=True, progress=False)
        assert (tmp_path / "z" / "p" / "q.txt").read_bytes() == b"q" and (tmp_path / "z" / "pack.zip").exists()
        with pytest.raises(dl.ChecksumError):
            dl.download("memory://dlsrc/x/one.bin", str(tmp_path / "bad"), checksum=dl.Checksum("md5", "0" * 32),
                        progress=False)
        assert os.listdir(tmp_path / "bad") == []
    finally:
        fs.rm("/dlsrc", recursive=True)


def test_cli_usage_errors(tmp_path):
    r = CliRunner().invoke(main, ["download", "--output", str(tmp_path)])
    assert r.exit_code == 2 and "--source-uri or --dataset" in r.output
    r = CliRunner().invoke(main, ["download", "-s", "x", "-o", str(tmp_path), "--checksum", "sha256:zz"])
    assert r.exit_code == 2 and "64 hex digits" in r.output
    r = CliRunner().invoke(main, ["download", "-s", "x.bin", "-o", "gs://bucket/out"])
    assert r.exit_code == 1 and "local folder" in r.output
    r = CliRunner().invoke(main, ["download", "-s", f"usim://{TOKEN}@proj/run", "-o", str(tmp_path), "-b"])
    assert r.exit_code == 1 and "Unity Simulation" in r.output and TOKEN not in r.output


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs installed: would reach the network")
def test_gs_without_extra_names_the_extra(tmp_path):
    r = CliRunner().invoke(main, ["download", "-s", "gs://bucket/x.zip", "-o", str(tmp_path)])
    assert r.exit_code == 1 and "synthgap[gcs]" in r.output


def test_timeout_is_retried_and_same_origin_redirect_keeps_token(server, tmp_path):
    import time

    calls = []

    def slow_then_fine(h):
        calls.append(h.headers.get("Authorization"))
        if len(calls) == 1:
            time.sleep(0.6)  # longer than the client's timeout below
        send_file(h, PAYLOAD)

    def redirect(h):
        h.send_response(307)
        h.send_header("Location", "/real.bin")
        h.send_header("Content-Length", "0")
        h.end_headers()

    server.routes["/alias.bin"], server.routes["/real.bin"] = redirect, slow_then_fine
    dl.download(server.url + "/alias.bin", str(tmp_path), access_token=TOKEN, retries=2, backoff=0.01,
                timeout=0.3, progress=False)
    assert (tmp_path / "alias.bin").read_bytes() == PAYLOAD
    assert calls == [f"Bearer {TOKEN}"] * 2  # same origin: the token follows the redirect


def test_complete_part_from_an_earlier_run_is_finished_with_416(server, tmp_path):
    server.routes["/done.bin"] = lambda h: send_file(h, PAYLOAD)
    url = server.url + "/done.bin"
    (tmp_path / "done.bin.part").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    (tmp_path / "done.bin.part.json").write_text(
        '{"url": "%s", "size": %d, "etag": "\\"v1\\"", "last_modified": null}' % (dl._url_key(url), len(PAYLOAD)))
    dl.download(url, str(tmp_path), checksum=dl.Checksum("sha256", SHA), **FAST)
    assert server.requests[-1][1]["range"] == f"bytes={len(PAYLOAD)}-"
    assert sorted(os.listdir(tmp_path)) == ["done.bin"] and (tmp_path / "done.bin").read_bytes() == PAYLOAD


def test_cli_progress_goes_to_stderr_and_datasetinsights_checksum_file(server, tmp_path):
    server.routes["/p.bin"] = lambda h: send_file(h, PAYLOAD)
    (tmp_path / "crc.txt").write_text(str(zlib.crc32(PAYLOAD)))  # datasetinsights' format: decimal CRC-32
    r = CliRunner().invoke(main, ["download", "-s", server.url + "/p.bin", "-o", str(tmp_path / "out"),
                                  "--checksum-file", str(tmp_path / "crc.txt")])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"downloaded p.bin into {tmp_path / 'out'}\n"
    assert "p.bin:" in r.stderr and "B/s" in r.stderr
    (tmp_path / "crc.txt").write_text(str(zlib.crc32(PAYLOAD) ^ 1))
    r = CliRunner().invoke(main, ["download", "-s", server.url + "/p.bin", "-o", str(tmp_path / "out2"), "-q",
                                  "--checksum-file", str(tmp_path / "crc.txt")])
    assert r.exit_code == 1 and "crc32 mismatch" in r.output and r.stderr.count("\r") == 0
    assert os.listdir(tmp_path / "out2") == []


def test_http_proxy_from_environment_is_used_but_not_for_loopback(server, tmp_path, monkeypatch):
    for var in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # the test server acts as the proxy: it receives the absolute URL of a host that does not exist,
    # so the request can only have gone through it (and no DNS lookup happened)
    server.routes["http://dataset-mirror.test/x.bin"] = lambda h: send_file(h, PAYLOAD)
    monkeypatch.setenv("http_proxy", server.url)
    dl.download("http://dataset-mirror.test/x.bin", str(tmp_path / "a"), **FAST)
    assert (tmp_path / "a" / "x.bin").read_bytes() == PAYLOAD
    assert server.requests[-1][1]["host"] == "dataset-mirror.test"
    # loopback bypasses the (here dead) proxy
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    server.routes["/direct.bin"] = lambda h: send_file(h, b"direct")
    dl.download(server.url + "/direct.bin", str(tmp_path / "b"), **FAST)
    assert (tmp_path / "b" / "direct.bin").read_bytes() == b"direct"


def test_redirect_loop_is_a_clear_error(server, tmp_path):
    def loop(h):
        h.send_response(302)
        h.send_header("Location", "/loop.bin")
        h.send_header("Content-Length", "0")
        h.end_headers()

    server.routes["/loop.bin"] = loop
    with pytest.raises(dl.DownloadError, match="followed 10 redirects"):
        dl.download(server.url + "/loop.bin", str(tmp_path), **FAST)
    assert len(server.requests) == 11 and os.listdir(tmp_path) == []


# ------------------------------------------------------------------ size limits (issue 14 item 7)

def send_unannounced(h: BaseHTTPRequestHandler, total: int) -> None:
    """A body with no Content-Length (ended by closing the connection), ``total`` bytes at most."""
    h.send_response(200)
    h.send_header("Connection", "close")
    h.end_headers()
    block = b"z" * 65536
    try:
        for _ in range(total // len(block)):
            h.wfile.write(block)
    except OSError:  # the client stopped reading: expected
        pass
    h.close_connection = True


def test_body_without_content_length_is_stopped_past_the_cap(server, tmp_path):
    server.routes["/endless.bin"] = lambda h: send_unannounced(h, 8 << 20)
    with pytest.raises(dl.DownloadError, match="without announcing a length") as e:
        dl.download(server.url + "/endless.bin", str(tmp_path), max_bytes=1 << 20, retries=0, **FAST)
    assert "--max-size" in str(e.value)
    assert os.listdir(tmp_path) == []  # no file, no .part, no .part.json
    assert len(server.requests) == 1  # not retried: a cap is not a transient failure
    server.routes["/small.bin"] = lambda h: send_unannounced(h, 1 << 20)
    res = dl.download(server.url + "/small.bin", str(tmp_path), max_bytes=2 << 20, **FAST)
    assert os.path.getsize(res.file) == 1 << 20


def test_declared_length_over_the_cap_is_refused(server, tmp_path):
    server.routes["/big.bin"] = lambda h: send_file(h, PAYLOAD)
    with pytest.raises(dl.DownloadError, match="more than --max-size 1000"):
        dl.download(server.url + "/big.bin", str(tmp_path), max_bytes=1000, retries=0, **FAST)
    assert os.listdir(tmp_path) == []


def test_archive_bomb_over_http_is_refused_unless_the_cli_raises_the_ratio(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ds/zeros.bin", b"\0" * (4 << 20))
    server.routes["/bomb.zip"] = lambda h: send_file(h, buf.getvalue())
    res = CliRunner().invoke(main, ["download", "-s", server.url + "/bomb.zip", "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1 and "max-extract-ratio" in res.output and "Traceback" not in res.output
    assert os.listdir(tmp_path / "o") == []
    res = CliRunner().invoke(main, ["download", "-s", server.url + "/bomb.zip", "-o", str(tmp_path / "o"), "-q",
                                    "--max-extract-ratio", "5000"])
    assert res.exit_code == 0, res.output
    assert os.path.getsize(tmp_path / "o" / "ds" / "zeros.bin") == 4 << 20


def test_a_crc_match_logs_the_sha256_to_pin_and_a_named_sha256_is_verified(tmp_path, caplog, monkeypatch):
    """CRC-32 catches corruption, not tampering: the sha256 is logged; a dataset with a known sha256 uses it."""
    copy = tmp_path / "SynthDet.zip"
    copy.write_bytes(_zip_bytes({"Dataset/captures_000.json": b"{}"}))
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    crc = dl.Checksum("crc32", f"{zlib.crc32(copy.read_bytes()):08x}")
    with caplog.at_level(logging.WARNING, logger="synthgap.io.download"):
        dl.download(str(copy), str(tmp_path / "a"), checksum=crc, **FAST)
    assert f"--checksum sha256:{sha}" in caplog.text and "not tampering" in caplog.text
    info = dl.DATASETS["unity-groceries-synthetic-sample"]
    monkeypatch.setitem(dl.DATASETS, info.name, dl.dataclasses.replace(info, sha256="0" * 64))
    with pytest.raises(dl.ChecksumError, match="sha256 mismatch"):
        dl.download_dataset(info.name, str(tmp_path / "b"), source_uri=str(copy), **FAST)
    monkeypatch.setitem(dl.DATASETS, info.name, dl.dataclasses.replace(info, sha256=sha))
    assert dl.download_dataset(info.name, str(tmp_path / "c"), source_uri=str(copy), **FAST).files


def test_a_second_download_into_the_same_folder_fails_naming_the_first(server, tmp_path):
    """issue 14 item 2: two downloads into one folder would append to one .part and extract over each other.
    The first (a real `synthgap download` process) is held mid-body by the server; the second fails at once."""
    import subprocess
    import sys
    import time

    from synthgap.io import locks

    data = _zip_bytes({"ds/a.json": b"{}", "ds/img/1.png": PAYLOAD})
    go = threading.Event()

    def slow(h):  # half the body, then wait until the test lets it finish
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:len(data) // 2])
        h.wfile.flush()
        go.wait(30)
        h.wfile.write(data[len(data) // 2:])

    server.routes["/ds.zip"] = slow
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "synthgap", "download", "--source-uri", server.url + "/ds.zip",
                              "--output", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not server.requests and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.requests, "the first download never reached the server"
        with pytest.raises(locks.FolderLockedError, match=f"pid {first.pid}") as e:
            dl.download(server.url + "/ds.zip", str(out), **FAST)
        assert "synthgap download" in str(e.value) and str(out) in str(e.value)
        assert len(server.requests) == 1  # the second never fetched a byte
    finally:
        go.set()
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert (out / "ds/img/1.png").read_bytes() == PAYLOAD and sorted(os.listdir(out)) == ["ds"]
    assert not os.path.exists(locks.lock_path(str(out)))  # released: the next download runs
    assert dl.download(server.url + "/ds.zip", str(out), **FAST).files == ["ds/a.json", "ds/img/1.png"]


# ---------------------------------------------------------------- the real photographs (GitHub archives)

def test_the_shared_real_copies_match_the_packaged_manifests():
    """The manifests were computed from ../shared/real; a change of either shows here."""
    from synthgap.io.download import verify_manifest
    from tests.helpers.real import shared_real

    for name in ("grocery-store-shelves", "snacks-catalog"):
        assert verify_manifest(str(shared_real(name)), name) == str(shared_real(name))


def test_a_github_archive_is_verified_file_by_file(http_folder, tmp_path):
    from synthgap.io.download import DATASETS, download_dataset
    from tests.helpers.real import github_zip

    www, base, requests = http_folder
    github_zip("grocery-store-shelves", www / "shelves.zip")
    assert DATASETS["grocery-store-shelves"].url.startswith("https://github.com/supervisely-ecosystem/")
    result = download_dataset("grocery-store-shelves", str(tmp_path / "data"), source_uri=f"{base}/shelves.zip",
                              progress=False)
    root = Path(result.folder)
    assert root.name == "grocery-store-shelves-abe7d311d2cf198b340907964db17c5529f69eb1"
    assert len(list((root / "project" / "ds0" / "img").iterdir())) == 37
    # a second call finds it intact and fetches nothing
    n = len(requests)
    assert download_dataset("grocery-store-shelves", str(tmp_path / "data"), source_uri=f"{base}/shelves.zip",
                            progress=False).folder == str(root)
    assert len(requests) == n


def test_a_changed_or_missing_file_in_the_archive_is_refused_by_name(http_folder, tmp_path):
    from synthgap.io.download import ChecksumError, download_dataset
    from tests.helpers.real import github_zip

    www, base, _ = http_folder
    github_zip("snacks-catalog", www / "bad.zip", only=lambda rel: not rel.endswith("ds1/ann/MAT-1000591-PCE-EE.png.json"),
               replace={"project/meta.json": b"{}"})
    with pytest.raises(ChecksumError) as e:
        download_dataset("snacks-catalog", str(tmp_path / "data"), source_uri=f"{base}/bad.zip", progress=False)
    msg = str(e.value)
    assert "1 of 169 files missing and 1 different" in msg and "different project/meta.json" in msg
