"""The one storage layer: every open, list and write of a path or URI goes through here (fsspec).

Local paths, ``file://``, ``memory://``, ``gs://`` (gcsfs, extra ``gcs``) and ``s3://`` (s3fs,
extra ``s3``) go through fsspec. ``http(s)://`` is read-only and goes through
`synthgap.io.httpfetch` (stdlib http.client) rather than fsspec's HTTPFileSystem, which would pull in
aiohttp for a single streamed GET.

Writes are atomic: data goes to a temporary name beside the target and is renamed into place
(local, memory, other filesystems), or is uploaded as one object (gs, s3: an object appears only
once its upload completes, and an exception discards the upload), so a reader never sees half a
file and a failed write keeps the old file.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from typing import IO, Any, Iterator

import fsspec

from synthgap.io import httpfetch
from synthgap.errors import DatasetError, WriteError

# Object stores whose uploads become visible only when complete: no rename needed (or possible).
_ATOMIC_UPLOAD_PROTOCOLS = {"gs", "gcs", "s3", "s3a", "az", "abfs", "abfss"}
_READ_MODES = ("rb", "r", "rt")
_WRITE_MODES = ("wb", "w", "wt")
COPY_CHUNK = 1 << 20  # bytes per read when streaming a copy


def split_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a local path or URI (not http: see `httpfetch`)."""
    try:
        fs, path = fsspec.core.url_to_fs(os.fspath(uri))
    except ImportError as e:
        extra = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}.get(protocol(uri))
        hint = f" (pip install 'synthgap[{extra}]')" if extra else ""
        raise ImportError(f"reading {protocol(uri)}:// URIs needs an optional package{hint}: {e}") from None
    return fs, path


def protocol(uri: str) -> str:
    """``file`` for local paths, else the lower-case URI scheme (``http``, ``gs``, ``memory`` ...)."""
    uri = os.fspath(uri)
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def is_local(uri: str) -> bool:
    return protocol(uri) == "file"


is_http = httpfetch.is_http  # one definition: http(s) URIs are read through httpfetch, not fsspec


def local_path(uri: str) -> str:
    """The filesystem path of a local path or ``file://`` URI."""
    uri = os.fspath(uri)
    return uri[len("file://"):] if uri.lower().startswith("file://") else uri


def absolute(uri: str) -> str:
    """A local path made absolute (so it still resolves from another working directory); URIs as given."""
    uri = os.fspath(uri)
    return os.path.abspath(local_path(uri)) if is_local(uri) else uri


def is_within(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies below it. Local paths are compared after resolving ``..``
    and symlinks (``data/../data/x`` and a link to ``data`` are inside ``data``); URIs by their text."""
    path, folder = os.fspath(path), os.fspath(folder)
    if is_local(path) != is_local(folder):
        return False
    if is_local(path):
        path, folder = os.path.realpath(local_path(path)), os.path.realpath(local_path(folder))
        return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def join(base: str, *parts: str) -> str:
    """Join path parts: ``os.path.join`` for local paths, ``/`` for URIs.

    For URIs a part never replaces the base (``join("gs://b/x", "/y")`` is ``gs://b/x/y``), so a
    join cannot silently drop the bucket or the scheme.
    """
    base = os.fspath(base)
    if is_local(base):
        prefix = "file://" if base.lower().startswith("file://") else ""
        return prefix + os.path.join(local_path(base), *map(os.fspath, parts))
    out = base
    for part in map(os.fspath, parts):
        part = part.strip("/")
        if not part:
            continue
        out = out + part if out.endswith("/") else f"{out}/{part}"
    return out


def _check_mode(mode: str) -> None:
    if mode not in _READ_MODES + _WRITE_MODES:
        raise ValueError(f"storage.open mode must be one of {_READ_MODES + _WRITE_MODES}, got {mode!r} "
                         "(appending and updating are not supported: writes are atomic)")


@contextlib.contextmanager
def open(uri: str, mode: str = "rb", encoding: str = "utf-8", **kwargs: Any) -> Iterator[IO]:  # noqa: A001
    """Open a path or URI. Read modes: ``rb``, ``r``. Write modes ``wb``, ``w`` are atomic
    (see `atomic_write`): the file appears complete when the block exits without an exception."""
    _check_mode(mode)
    uri = os.fspath(uri)
    if mode in _WRITE_MODES:
        with atomic_write(uri, "w" if "b" not in mode else "wb") as f:
            yield f
        return
    if is_http(uri):
        raw = httpfetch.open_url(uri, **kwargs)
        with io.BufferedReader(raw, buffer_size=COPY_CHUNK) as f:
            yield io.TextIOWrapper(f, encoding=encoding) if "b" not in mode else f
        return
    if is_local(uri):
        with builtins.open(local_path(uri), mode, **({"encoding": encoding} if "b" not in mode else {})) as f:
            yield f
        return
    with fsspec.open(uri, mode, **({"encoding": encoding} if "b" not in mode else {}), **kwargs) as f:
        yield f



def read_bytes(uri: str) -> bytes:
    with open(uri, "rb") as f:
        return f.read()


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def read_json(uri: str) -> Any:
    """Parse a JSON file. A syntax error, bytes that are not UTF-8, nesting too deep for the parser, or a
    file that cannot be read (no permission, a folder) becomes a DatasetError naming the file."""
    try:
        data = read_bytes(uri)
    except (PermissionError, IsADirectoryError) as e:
        raise DatasetError(f"cannot read the file ({e.strerror or type(e).__name__})", file=str(uri),
                           kind="unreadable_file") from None
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                           file=str(uri), kind="malformed_json") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start}", file=str(uri),
                           kind="malformed_json") from None
    except RecursionError:
        raise DatasetError("JSON nested too deeply to parse", file=str(uri), kind="malformed_json") from None


JSON_CHUNK_CHARS = 1 << 22  # characters read at a time by iter_json_array
MAX_JSON_ITEM_CHARS = 1 << 26  # one array item longer than this is taken as malformed, not read whole
_NUMBER_CHARS = frozenset("0123456789.eE+-")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def iter_json_array(uri: str, chunk_chars: int = JSON_CHUNK_CHARS,
                    max_item_chars: int = MAX_JSON_ITEM_CHARS) -> Iterator[Any]:
    """Yield the items of a file whose top-level JSON value is an array, parsing one item at a time.

    Memory stays about ``chunk_chars`` plus one item, whatever the file size (``json.load`` of a
    780 MB results list holds ~6 GB of Python objects). The items are exactly what ``json.load``
    would give (same decoder). Raises `DatasetError` naming the file, the item index, line and column
    for malformed JSON, and kind ``not_a_json_array`` (before yielding anything) when the top-level
    value is not an array, so a caller can fall back to `read_json`.
    """
    decoder = json.JSONDecoder()
    with open(uri, "r") as f:
        buf, pos, line, col, eof = "", 0, 1, 1, False  # line, col: where buf[0] is in the file (1-based)

        def more() -> None:
            nonlocal buf, pos, line, col, eof
            try:
                chunk = f.read(chunk_chars)
            except UnicodeDecodeError as e:
                raise DatasetError(f"not UTF-8 text: {e.reason}", file=str(uri), kind="malformed_json") from None
            line += buf.count("\n", 0, pos)
            nl = buf.rfind("\n", 0, pos)
            col = pos - nl if nl >= 0 else col + pos
            buf, pos, eof = buf[pos:] + chunk, 0, not chunk

        def error(msg: str, at: int, item: int | None) -> DatasetError:
            nl = buf.rfind("\n", 0, at)
            where = f"item {item}, " if item is not None else ""
            return DatasetError(f"malformed JSON: {msg} ({where}line {line + buf.count(chr(10), 0, at)}, "
                                f"column {at - nl if nl >= 0 else col + at})", file=str(uri), kind="malformed_json")

        def skip_space() -> str:
            """The next non-space character ('' at the end of the file); pos points at it."""
            nonlocal pos
            while True:
                pos = _JSON_SPACE.match(buf, pos).end()
                if pos < len(buf) or eof:
                    return buf[pos] if pos < len(buf) else ""
                more()

        if skip_space() != "[":
            raise DatasetError("the top-level JSON value is not an array", file=str(uri), kind="not_a_json_array")
        pos += 1
        item = 0
        closing = skip_space() == "]"
        while not closing:
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    if eof or len(buf) - pos > max_item_chars:
                        raise error(e.msg, e.pos, item) from None
                    more()
                    continue
                except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
                    raise error(str(e).split(";")[0], pos, item) from None
                # A number cut by the buffer's end ("12|3", "1.5|e-7") parses short: read on and parse again.
                if eof or len(buf) - pos > max_item_chars or (end < len(buf) and buf[end] not in _NUMBER_CHARS):
                    break
                more()
            pos = end
            yield value
            item += 1
            c = skip_space()
            if c == ",":
                pos += 1
                skip_space()
            elif c == "]":
                closing = True
            else:
                raise error("Expecting ',' delimiter" if c else "unterminated array", pos, item)
        pos += 1
        if skip_space():
            raise error("Extra data", pos, None)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        with builtins.open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def temp_tag() -> str:
    """The part of every temporary name this package writes that names its writer, ``synthgap-<pid>-``,
    so a later run can tell what a killed run left behind (`synthgap.io.locks.remove_stale_temps`)."""
    return f"synthgap-{os.getpid()}-"


# OSErrors that mean "this output cannot be written here" (disk full, quota, read-only, no permission,
# file too large): a `WriteError` naming the file, one line on the command line instead of a traceback.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
                 errno.EISDIR}


def _write_error(uri: str, e: OSError) -> WriteError:
    return WriteError(f"cannot write {uri}: {e.strerror or e} (errno {e.errno})")


@contextlib.contextmanager
def atomic_write(uri: str, mode: str = "wb") -> Iterator[IO]:
    """Write a file so that readers see either the old file or the complete new one, never a part.

    Local: a temporary file in the same folder, fsync, then ``os.replace`` (permissions as a
    plain ``open`` would give, not mkstemp's 0600). Object stores: the upload is committed only
    when the block exits cleanly; an exception discards it. Other filesystems (memory://): a
    temporary name, then a move. Parent folders are created. On an exception nothing is left
    under the final name (an existing file there is kept) and no temporary file is left.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    uri = os.fspath(uri)
    if is_http(uri):
        raise ValueError(f"cannot write to {httpfetch.redact(uri)}: http(s) URIs are read-only")
    if is_local(uri):
        path = local_path(uri)
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{temp_tag()}", suffix=".tmp", dir=folder)
        except OSError as e:
            raise _write_error(uri, e) from e
        try:
            with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS and e.filename in (None, tmp, path):
                raise _write_error(uri, e) from e
            raise
        return
    fs, path = split_uri(uri)
    if protocol(uri) in _ATOMIC_UPLOAD_PROTOCOLS:
        with _discard_on_error(fs.open(path, "wb"), mode) as f:
            yield f
        return
    parent = posixpath.dirname(path)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    if parent:
        fs.makedirs(parent, exist_ok=True)
    try:
        with _discard_on_error(fs.open(tmp, "wb"), mode) as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


@contextlib.contextmanager
def _discard_on_error(raw: IO, mode: str) -> Iterator[IO]:
    """Yield ``raw`` (text-wrapped for ``w``); on an exception throw the data away instead of
    committing it. fsspec's buffered files upload on ``close()`` even when leaving a ``with``
    block by an exception, so a failed write to gs:// or s3:// would publish a truncated object."""
    f = io.TextIOWrapper(raw, encoding="utf-8") if mode == "w" else raw
    try:
        yield f
        f.flush()
    except BaseException:
        discard = getattr(raw, "discard", None)
        if callable(discard):
            with contextlib.suppress(Exception):
                discard()
        if hasattr(raw, "forced"):  # AbstractBufferedFile: mark closed without the final flush
            raw.closed = True
        else:
            with contextlib.suppress(Exception):
                raw.close()
        raise
    if mode == "w":
        f.detach()
    raw.close()


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_write(uri, "wb") as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as standard JSON: a NaN or infinite float (an undefined metric) is written ``null``, not
    Python's bare ``NaN`` / ``Infinity``, which JSON parsers outside Python reject."""
    try:
        text = json.dumps(obj, indent=indent, allow_nan=False)
    except ValueError:  # only then walk the object: large prediction lists stay one dumps call
        text = json.dumps(_finite(obj), indent=indent, allow_nan=False)
    write_text(uri, text + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN / infinite float replaced by None (dicts, lists and tuples walked)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def replacing_folder(uri: str, tag: str = "replace") -> Iterator[str]:
    """Write a whole folder so that ``uri`` holds either what it held before or the complete new content,
    never a part: yields an empty folder beside ``uri`` to write into; on a clean exit it takes the place of
    ``uri`` (two renames; the old tree is deleted after), on an exception it is deleted and ``uri`` is left
    as it was. The temporary names (``.synthgap-<tag>-<pid>-...``) are the ones
    `synthgap.io.locks.remove_stale_temps` of the parent folder removes after a kill. A symlink ``uri`` has
    its target replaced. Object stores have no folder rename: there ``uri`` itself is yielded, written in
    place."""
    uri = os.fspath(uri)
    if not is_local(uri):
        yield uri
        return
    path = os.path.realpath(local_path(uri))
    parent = os.path.dirname(path)
    stamp = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    new = os.path.join(parent, f".synthgap-{tag}-{stamp}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(new)
    except OSError as e:
        raise _write_error(uri, e) from e
    try:
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = None
    try:
        if os.path.lexists(path):
            old = os.path.join(parent, f".synthgap-old-{stamp}")
            os.rename(path, old)
        os.rename(new, path)
    except OSError as e:
        if old is not None and not os.path.lexists(path):
            os.rename(old, path)  # the old folder back in place
        shutil.rmtree(new, ignore_errors=True)
        raise _write_error(uri, e) from e
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)


def copy(src_uri: str, dst_uri: str) -> None:
    """Stream ``src_uri`` to ``dst_uri`` (any two supported URIs); atomic at the destination."""
    with open(src_uri, "rb") as src, atomic_write(dst_uri, "wb") as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def exists(uri: str) -> bool:
    if is_http(uri):
        return _http_exists(uri)
    if is_local(uri):
        return os.path.exists(local_path(uri))
    fs, path = split_uri(uri)
    return fs.exists(path)


def _http_exists(uri: str) -> bool:
    """HEAD (then a one-byte GET, for servers that refuse HEAD): True for 2xx, False for 404/410."""
    for method, headers in (("HEAD", {}), ("GET", {"Range": "bytes=0-0"})):
        try:
            httpfetch.open_url(uri, method=method, headers=headers).close()
            return True
        except httpfetch.HTTPStatusError as e:
            if e.gone:
                return False
            if e.status not in (405, 501):
                raise
    return False


def isdir(uri: str) -> bool:
    if is_http(uri):
        return False
    if is_local(uri):
        return os.path.isdir(local_path(uri))
    fs, path = split_uri(uri)
    return fs.isdir(path)


def isfile(uri: str) -> bool:
    if is_http(uri):
        return _http_exists(uri)
    if is_local(uri):
        return os.path.isfile(local_path(uri))
    fs, path = split_uri(uri)
    return fs.isfile(path)


def remove(uri: str) -> None:
    """Delete a file or a whole folder (recursively); a missing path is not an error."""
    if is_local(uri):
        path = local_path(uri)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        return
    _no_http(uri, "delete")
    fs, path = split_uri(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def makedirs(uri: str) -> None:
    if is_local(uri):
        os.makedirs(local_path(uri), exist_ok=True)
        return
    _no_http(uri, "create folders at")
    fs, path = split_uri(uri)
    fs.makedirs(path, exist_ok=True)


def _no_http(uri: str, what: str) -> None:
    if is_http(uri):
        raise ValueError(f"cannot {what} {httpfetch.redact(uri)}: http(s) URIs are files, not folders")


def listdir(uri: str) -> list[str]:
    """Sorted base names of the entries of a folder."""
    if is_local(uri):
        return sorted(os.listdir(local_path(uri)))
    _no_http(uri, "list")
    fs, path = split_uri(uri)
    if not fs.isdir(path):
        raise (NotADirectoryError if fs.exists(path) else FileNotFoundError)(f"not a folder: {uri}")
    path = path.rstrip("/")
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)
                  if p.rstrip("/") != path)


def walk_files(uri: str) -> list[str]:
    """Sorted ``/``-separated paths, relative to the folder ``uri``, of every file below it."""
    if is_local(uri):
        root = local_path(uri)
        out = []
        for folder, _, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            out += [name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}" for name in files]
        return sorted(out)
    _no_http(uri, "list")
    fs, path = split_uri(uri)
    path = path.rstrip("/")
    return sorted(posixpath.relpath(p, path) for p in fs.find(path) if p.rstrip("/") != path)


def glob(uri_pattern: str) -> list[str]:
    """Sorted matches of a glob pattern, returned in the same form (local path or URI) as given."""
    uri_pattern = os.fspath(uri_pattern)
    if is_local(uri_pattern):
        import glob as _glob

        prefix = "file://" if uri_pattern.lower().startswith("file://") else ""
        return sorted(prefix + p for p in _glob.glob(local_path(uri_pattern)))
    _no_http(uri_pattern, "glob")
    fs, path = split_uri(uri_pattern)
    scheme = uri_pattern.split("://", 1)[0]
    # fsspec strips the scheme (and memory's leading "/"); put back the form the caller used.
    return sorted(f"{scheme}://{p.lstrip('/') if scheme.lower() == 'memory' else p}" for p in fs.glob(path))
