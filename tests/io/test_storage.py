"""The storage layer on local paths, memory://, an upload-on-close object store, and real HTTP."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import fsspec
import pytest
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from synthgap.io import storage
from synthgap.data.errors import DatasetError


@pytest.fixture
def memroot():
    """A fresh memory:// folder, removed afterwards (the memory store is process-global)."""
    fs = fsspec.filesystem("memory")
    root = "memory://sgtest-storage"
    yield root
    if fs.exists("/sgtest-storage"):
        fs.rm("/sgtest-storage", recursive=True)


@pytest.fixture(params=["local", "file-uri", "memory"])
def root(request, tmp_path, memroot):
    return {"local": str(tmp_path), "file-uri": f"file://{tmp_path}", "memory": memroot}[request.param]


def test_round_trip(root):
    a = storage.join(root, "sub", "a.json")
    storage.write_json(a, {"x": [1, 2]})
    storage.write_text(storage.join(root, "sub", "b.txt"), "héllo\n")
    storage.write_bytes(storage.join(root, "c.bin"), b"\x00\x01")
    with storage.open(storage.join(root, "sub", "d.txt"), "w") as f:
        f.write("written via open")
    assert storage.read_json(a) == {"x": [1, 2]}
    assert storage.read_text(storage.join(root, "sub", "b.txt")) == "héllo\n"
    assert storage.read_bytes(storage.join(root, "c.bin")) == b"\x00\x01"
    with storage.open(storage.join(root, "sub", "d.txt"), "r") as f:
        assert f.read() == "written via open"
    assert storage.exists(a) and storage.isfile(a) and not storage.isdir(a)
    assert storage.isdir(storage.join(root, "sub")) and not storage.exists(storage.join(root, "nope"))
    assert storage.listdir(root) == ["c.bin", "sub"]
    assert storage.listdir(storage.join(root, "sub")) == ["a.json", "b.txt", "d.txt"]
    assert storage.walk_files(root) == ["c.bin", "sub/a.json", "sub/b.txt", "sub/d.txt"]
    # glob answers in the form it was asked in, and the answers open
    found = storage.glob(storage.join(root, "sub", "*.txt"))
    assert found == [storage.join(root, "sub", "b.txt"), storage.join(root, "sub", "d.txt")]
    assert storage.read_text(found[0]) == "héllo\n"
    assert storage.glob(storage.join(root, "*", "a.json")) == [a]


def test_copy_between_stores(tmp_path, memroot):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))  # > one copy chunk
    storage.copy(str(src), storage.join(memroot, "x", "c.bin"))
    storage.copy(storage.join(memroot, "x", "c.bin"), str(tmp_path / "back" / "c.bin"))
    assert (tmp_path / "back" / "c.bin").read_bytes() == src.read_bytes()
    assert os.listdir(tmp_path / "back") == ["c.bin"]


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(root, mode):
    path = storage.join(root, "f.txt")
    storage.write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with storage.atomic_write(path, mode) as f:
            f.write(b"new, half" if mode == "wb" else "new, half")
            raise RuntimeError("boom")
    assert storage.read_text(path) == "old"
    assert storage.listdir(root) == ["f.txt"]
    new = storage.join(root, "new.txt")
    with pytest.raises(RuntimeError):
        with storage.atomic_write(new, mode):
            raise RuntimeError("boom")
    assert not storage.exists(new) and storage.listdir(root) == ["f.txt"]


def test_local_atomic_write_has_normal_permissions(tmp_path):
    storage.write_text(str(tmp_path / "p.txt"), "x")
    (tmp_path / "ref.txt").write_text("x")
    assert (tmp_path / "p.txt").stat().st_mode == (tmp_path / "ref.txt").stat().st_mode


def test_bad_modes_and_join():
    for mode in ("a", "ab", "r+", "x"):
        with pytest.raises(ValueError, match="atomic"):
            with storage.open("/tmp/whatever", mode):
                pass
    assert storage.join("gs://bucket/a", "/b/", "c.json") == "gs://bucket/a/b/c.json"
    assert storage.join("memory://", "x") == "memory://x"
    assert storage.join("s3://b/", "k") == "s3://b/k"
    assert storage.join("/data", "x", "y") == os.path.join("/data", "x", "y")
    assert storage.protocol("GS://b/x") == "gs" and storage.is_local("file:///x") and storage.is_http("https://h/x")


def test_read_json_error_names_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": 1,\n}')
    with pytest.raises(DatasetError, match=r"bad\.json: malformed JSON.*line 2"):
        storage.read_json(str(tmp_path / "bad.json"))


# ---------------------------------------------------------------- object store semantics

class _UploadFile(AbstractBufferedFile):
    """Like gcsfs/s3fs files: bytes become an object only when the final chunk is uploaded."""

    def _initiate_upload(self):
        self.parts = []

    def _upload_chunk(self, final=False):
        self.parts.append(self.buffer.getvalue())
        if final:
            self.fs.objects[self.path] = b"".join(self.parts)
        return True

    def discard(self):
        self.fs.discarded.append(self.path)


class UploadFS(AbstractFileSystem):
    protocol = "sgupload"
    objects: dict = {}
    discarded: list = []

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        return _UploadFile(self, path, mode, block_size=block_size or 5 << 20, autocommit=autocommit,
                           cache_options=cache_options)

    def info(self, path, **kwargs):
        if path in self.objects:
            return {"name": path, "size": len(self.objects[path]), "type": "file"}
        raise FileNotFoundError(path)


def test_object_store_upload_is_discarded_on_error(monkeypatch):
    fsspec.register_implementation("sgupload", UploadFS, clobber=True)
    monkeypatch.setattr(storage, "_ATOMIC_UPLOAD_PROTOCOLS", storage._ATOMIC_UPLOAD_PROTOCOLS | {"sgupload"})
    fs = fsspec.filesystem("sgupload")
    fs.objects.clear()
    # why the care is needed: fsspec commits a buffered upload even when a `with` block fails
    with pytest.raises(RuntimeError):
        with fs.open("bucket/raw.bin", "wb") as f:
            f.write(b"half")
            raise RuntimeError
    assert fs.objects["bucket/raw.bin"] == b"half"
    storage.write_text("sgupload://bucket/ok.txt", "old")
    assert fs.objects["bucket/ok.txt"] == b"old"
    for mode in ("wb", "w"):
        with pytest.raises(RuntimeError):
            with storage.atomic_write("sgupload://bucket/ok.txt", mode) as f:
                f.write(b"new" if mode == "wb" else "new")
                raise RuntimeError
        assert fs.objects["bucket/ok.txt"] == b"old"
    assert fs.discarded == ["bucket/ok.txt", "bucket/ok.txt"]
    with storage.atomic_write("sgupload://bucket/ok.txt", "w") as f:
        f.write("new ✓")
    assert fs.objects["bucket/ok.txt"] == "new ✓".encode()


# ---------------------------------------------------------------- http(s)

@pytest.fixture
def http_root(tmp_path):
    (tmp_path / "www" / "d").mkdir(parents=True)
    (tmp_path / "www" / "d" / "a.json").write_text('{"k": "v"}')
    (tmp_path / "www" / "big.bin").write_bytes(os.urandom(3 << 20))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "www"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_http_reads(http_root):
    url, www = http_root
    assert storage.read_json(f"{url}/d/a.json") == {"k": "v"}
    with storage.open(f"{url}/big.bin", "rb") as f:
        head = f.read(10)
        rest = f.read()
    assert head + rest == (www / "big.bin").read_bytes()
    with storage.open(f"{url}/d/a.json", "r") as f:
        assert f.read() == '{"k": "v"}'
    assert storage.exists(f"{url}/d/a.json") and storage.isfile(f"{url}/big.bin")
    assert not storage.exists(f"{url}/d/missing.json") and not storage.isdir(f"{url}/d/a.json")
    storage.copy(f"{url}/big.bin", str(www.parent / "copy.bin"))
    assert (www.parent / "copy.bin").read_bytes() == (www / "big.bin").read_bytes()
    with pytest.raises(OSError, match="HTTP 404"):
        storage.read_bytes(f"{url}/d/missing.json")
    with pytest.raises(ValueError, match="read-only"):
        storage.write_text(f"{url}/d/new.txt", "x")
    with pytest.raises(ValueError, match="not folders"):
        storage.listdir(f"{url}/d")


def test_remove_deletes_files_and_folders_local_and_memory(tmp_path):
    for base in (str(tmp_path / "r"), "memory://remove-test"):
        storage.write_text(storage.join(base, "a", "b.txt"), "x")
        storage.write_text(storage.join(base, "c.txt"), "y")
        storage.remove(storage.join(base, "c.txt"))
        assert not storage.exists(storage.join(base, "c.txt"))
        storage.remove(base)
        assert not storage.exists(storage.join(base, "a", "b.txt")) and not storage.exists(base)
        storage.remove(base)  # missing: no error


def test_absolute_anchors_local_paths_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("data/x") == str(tmp_path / "data" / "x")
    assert storage.absolute("memory://bucket/x") == "memory://bucket/x"
    assert storage.absolute("gs://bucket/x") == "gs://bucket/x"


# ---------------------------------------------------------------- issue 14: write errors, containment, streamed JSON

from tests.helpers.disks import fill, tmpfs

from synthgap.errors import WriteError  # noqa: E402


def test_full_disk_is_a_write_error_naming_the_file_and_the_old_file_is_kept(tmp_path):
    with tmpfs(tmp_path / "small", size="64k") as disk:
        target = os.path.join(disk, "metrics.json")
        storage.write_text(target, "old")
        fill(disk)
        with pytest.raises(WriteError, match=r"cannot write .*metrics.json: No space left on device"):
            storage.write_bytes(target, b"x" * 200_000)
        assert open(target).read() == "old"
        assert sorted(os.listdir(disk)) == ["filler.bin", "metrics.json"]  # no temporary file left


def test_read_only_disk_is_a_write_error(tmp_path):
    with tmpfs(tmp_path / "ro", readonly=True) as disk:
        with pytest.raises(WriteError, match=r"cannot write .*sub/x.json: Read-only file system"):
            storage.write_json(os.path.join(disk, "sub", "x.json"), {})


def test_is_within(tmp_path):
    (tmp_path / "data" / "x").mkdir(parents=True)
    os.symlink(tmp_path / "data", tmp_path / "link")
    assert storage.is_within(str(tmp_path / "data"), str(tmp_path / "data"))
    assert storage.is_within(str(tmp_path / "data" / "x" / "new.json"), str(tmp_path / "data"))
    assert storage.is_within(str(tmp_path / "link" / "x"), str(tmp_path / "data"))  # through a symlink
    assert storage.is_within(str(tmp_path / "data" / ".." / "data" / "y"), str(tmp_path / "data"))
    assert not storage.is_within(str(tmp_path / "data2"), str(tmp_path / "data"))
    assert not storage.is_within(str(tmp_path), str(tmp_path / "data"))
    assert storage.is_within("gs://b/data/x", "gs://b/data/") and not storage.is_within("gs://b/data2", "gs://b/data")
    assert not storage.is_within("gs://b/data", str(tmp_path))


def test_atomic_write_temporary_names_carry_the_writer_pid(tmp_path):
    with storage.atomic_write(str(tmp_path / "a.json"), "w") as f:
        f.write("{}")
        (tmp,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert tmp.startswith(f".a.json.synthgap-{os.getpid()}-")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_iter_json_array_equals_json_load_at_any_chunk_size(tmp_path, chunk):
    import json

    items = [{"image_id": 2 ** 127 + 3, "bbox": [1.5, -2e-7, 3, 1e300], "score": 0.5, "s": "a\"],{\u00e9"},
             12345, -1.5e-7, "x,]", [1, [2, {}]], None, True, False, {}, [], 0, "\u2603"]
    for text in (json.dumps(items), json.dumps(items, indent=2), "\n  " + json.dumps(items) + " \n", "[]", " [ ] "):
        path = tmp_path / "a.json"
        path.write_text(text, encoding="utf-8")
        assert list(storage.iter_json_array(str(path), chunk_chars=chunk)) == json.loads(text)


@pytest.mark.parametrize("text, message", [
    ("[1,]", "Expecting value (item 1, line 1, column 4)"),
    ("[1 2]", "Expecting ',' delimiter (item 1, line 1, column 4)"),
    ('[{"a": 1}', "unterminated array (item 1"),
    ("[1] x", "Extra data"),
    ('[\n {"a": 1},\n {"b": x}]', "Expecting value (item 1, line 3, column 8)"),
    ("[" + "9" * 5000 + "]", "Exceeds the limit (4300 digits)"),
    ("[" * 100_000 + "]" * 100_000, "item 0"),
])
def test_iter_json_array_names_item_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    for chunk in (3, 1 << 20):
        with pytest.raises(DatasetError) as e:
            list(storage.iter_json_array(str(path), chunk_chars=chunk))
        assert message in str(e.value) and e.value.file == str(path) and e.value.kind == "malformed_json"


def test_iter_json_array_refuses_a_non_array_before_yielding(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"annotations": []}')
    with pytest.raises(DatasetError) as e:
        next(storage.iter_json_array(str(path)))
    assert e.value.kind == "not_a_json_array"
