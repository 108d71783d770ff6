"""The one storage layer: every open, list and write of a path or URI goes through here (fsspec).

Local paths, ``file://``, ``memory://``, ``http(s)://`` (read), ``gs://`` (gcsfs extra) and
``s3://`` (s3fs extra) all work the same way. Writes are atomic: data goes to a temporary name
and is renamed into place (local, memory) or uploaded as one object (gs, s3, whose objects only
appear once complete), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
import uuid
from typing import IO, Any, Iterator

import fsspec

# Object stores whose uploads become visible only when complete: no rename needed (or possible).
_ATOMIC_UPLOAD_PROTOCOLS = {"gs", "gcs", "s3", "s3a", "az", "abfs", "abfss"}


def split_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    fs, path = fsspec.core.url_to_fs(os.fspath(uri))
    return fs, path


def protocol(uri: str) -> str:
    """``file`` for local paths, else the URI scheme (``http``, ``gs``, ``memory`` ...)."""
    uri = os.fspath(uri)
    return uri.split("://", 1)[0] if "://" in uri else "file"


def is_local(uri: str) -> bool:
    return protocol(uri) == "file"


def local_path(uri: str) -> str:
    """The filesystem path of a local path or ``file://`` URI."""
    uri = os.fspath(uri)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for URIs and ``os.path.join`` for local paths."""
    base = os.fspath(base)
    if is_local(base):
        return os.path.join(local_path(base), *parts)
    return posixpath.join(base, *parts)


@contextlib.contextmanager
def open(uri: str, mode: str = "rb", **kwargs: Any) -> Iterator[IO]:  # noqa: A001 - mirrors builtins.open
    """Open a path or URI for reading (or non-atomic appending). Use `atomic_write` to write."""
    if any(c in mode for c in "wxa+") and "a" not in mode:
        raise ValueError("use synthgap.storage.atomic_write to write files")
    with fsspec.open(os.fspath(uri), mode, **kwargs) as f:
        yield f


def read_bytes(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def read_json(uri: str) -> Any:
    """Parse a JSON file; a syntax error becomes a DatasetError naming the file, line and column."""
    from synthgap.data.errors import DatasetError

    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                           file=str(uri), kind="malformed_json") from None


@contextlib.contextmanager
def atomic_write(uri: str, mode: str = "wb") -> Iterator[IO]:
    """Write a file so that readers see either the old file or the complete new one, never a part.

    Local: a temporary file in the same folder, fsync, then ``os.replace``. Object stores: the
    upload itself is atomic. Other filesystems: a temporary name, then a move. Parent folders are
    created. On an exception nothing is left under the final name.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    uri = os.fspath(uri)
    if is_local(uri):
        path = local_path(uri)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    fs, path = split_uri(uri)
    if protocol(uri) in _ATOMIC_UPLOAD_PROTOCOLS:
        with fs.open(path, mode) as f:
            yield f
        return
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, mode) as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_write(uri, "wb") as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any, indent: int | None = 2) -> None:
    write_text(uri, json.dumps(obj, indent=indent) + "\n")


def exists(uri: str) -> bool:
    fs, path = split_uri(uri)
    return fs.exists(path)


def isdir(uri: str) -> bool:
    fs, path = split_uri(uri)
    return fs.isdir(path)


def isfile(uri: str) -> bool:
    fs, path = split_uri(uri)
    return fs.isfile(path)


def makedirs(uri: str) -> None:
    fs, path = split_uri(uri)
    fs.makedirs(path, exist_ok=True)


def listdir(uri: str) -> list[str]:
    """Sorted base names of the entries of a folder."""
    if is_local(uri):
        return sorted(os.listdir(local_path(uri)))
    fs, path = split_uri(uri)
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def glob(uri_pattern: str) -> list[str]:
    """Sorted matches of a glob pattern, returned in the same form (local path or URI) as given."""
    uri_pattern = os.fspath(uri_pattern)
    if is_local(uri_pattern):
        import glob as _glob

        return sorted(_glob.glob(local_path(uri_pattern)))
    fs, path = split_uri(uri_pattern)
    proto = protocol(uri_pattern)
    return sorted(fs.unstrip_protocol(p) if proto != "memory" else f"memory://{p.lstrip('/')}"
                  for p in fs.glob(path))
