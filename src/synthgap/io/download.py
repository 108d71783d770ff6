"""Fetch a dataset file or folder to a local folder: resumable, retried, verified, then unpacked.

Sources: ``http(s)://`` (stdlib `synthgap.io.httpfetch`, resumed with Range requests), ``gs://``,
``s3://``, ``memory://`` and local paths (through `synthgap.io.storage`), and the named public
datasets in `DATASETS`. A file is written as ``<name>.part`` beside its target and renamed only
once complete and verified, so the final name never holds a partial or corrupt file. Archives are
unpacked with `synthgap.io.archive.extract`, which refuses entries that would land outside the output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import socket
import sys
import time
import urllib.parse
import zlib
from typing import Callable

import google_crc32c  # CRC-32C in C: ~3.7 GB/s here against ~1 MB/s in pure Python
from tqdm import tqdm

from synthgap.io import archive, httpfetch, locks, storage
from synthgap.errors import DatasetError, DownloadError
from synthgap.io.httpfetch import redact

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read and per hash update
DEFAULT_RETRIES = 5  # failed attempts in a row before giving up (one that got data counts as the first)
DEFAULT_BACKOFF = 1.0  # seconds before the first retry; doubles each time, capped at MAX_BACKOFF
MAX_BACKOFF = 30.0
# A body without Content-Length (chunked) is stopped past this many bytes (raise it with max_bytes /
# --max-size): a server streaming without end would otherwise fill the disk.
MAX_UNANNOUNCED_BYTES = 50 << 30
BASE_URL_ENV = "SYNTHGAP_DATASETS_BASE_URL"
DEFAULT_BASE_URL = "https://storage.googleapis.com/datasetinsights/data"


class SourceGoneError(DownloadError):
    """The source is not there: HTTP 404/410, or its host does not resolve."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected checksum (the file was deleted)."""


# ---------------------------------------------------------------- checksums

class _CRC:
    """zlib CRC-32 (datasetinsights' checksum) or CRC-32C (Castagnoli, GCS's), hashlib-style."""

    def __init__(self, castagnoli: bool):
        if castagnoli:
            self._c = google_crc32c.Checksum()
            self.update = self._c.update
            self.hexdigest = lambda: self._c.hexdigest().decode("ascii")
        else:
            self._v = 0
            self.update = self._update_zlib
            self.hexdigest = lambda: f"{self._v:08x}"

    def _update_zlib(self, data: bytes) -> None:
        self._v = zlib.crc32(data, self._v)


ALGORITHMS: dict[str, Callable[[], object]] = {
    "sha256": hashlib.sha256, "sha1": hashlib.sha1, "sha512": hashlib.sha512, "md5": hashlib.md5,
    "crc32": lambda: _CRC(castagnoli=False), "crc32c": lambda: _CRC(castagnoli=True),
}
_HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "crc32": 8, "crc32c": 8}
_ALGORITHM_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


@dataclasses.dataclass(frozen=True)
class Checksum:
    algorithm: str  # a key of ALGORITHMS
    hexdigest: str  # lower-case hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_checksum(spec: str) -> Checksum:
    """``ALGO:HEX`` (sha256, sha1, sha512, md5, crc32, crc32c) -> Checksum; DownloadError (a ValueError) otherwise."""
    algo, sep, value = spec.strip().partition(":")
    algo, value = algo.lower(), value.strip().lower()
    if not sep or algo not in ALGORITHMS:
        raise DownloadError(f"checksum must be ALGO:HEX with ALGO one of {', '.join(ALGORITHMS)}, got {spec!r}")
    if len(value) != _HEX_LENGTH[algo] or not re.fullmatch(r"[0-9a-f]+", value):
        raise DownloadError(f"a {algo} checksum is {_HEX_LENGTH[algo]} hex digits, got {value!r}")
    return Checksum(algo, value)


def parse_checksum_text(text: str, name: str, where: str = "checksum file") -> Checksum:
    """The checksum for file ``name`` in the text of a checksum file.

    Lines may be ``ALGO:HEX [name]``, ``HEX  [*]name`` (sha256sum/md5sum output; the algorithm is
    told by the length: 32 md5, 40 sha1, 64 sha256, 128 sha512) or one bare value. A bare decimal
    integer is datasetinsights' format: a zlib CRC-32. A named line must name ``name`` (its base
    name); with several lines, the one naming ``name`` is used.
    """
    entries: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 1)
        entries.append((fields[0], fields[1].lstrip("*").strip() if len(fields) > 1 else None))
    if not entries:
        raise DownloadError(f"{where} is empty")
    if len(entries) > 1:
        named = [e for e in entries if e[1] is not None and posixpath.basename(e[1]) == name]
        if len(named) != 1:
            raise DownloadError(f"{where} has {len(entries)} lines and {len(named)} of them name {name!r}")
        entries = named
    token, named_for = entries[0]
    if named_for is not None and posixpath.basename(named_for) != name:
        raise DownloadError(f"{where} is for {posixpath.basename(named_for)!r}, not {name!r}")
    if ":" in token:
        return parse_checksum(token)
    if token.isdigit() and len(token) not in _ALGORITHM_BY_LENGTH:
        if int(token) >= 1 << 32:
            raise DownloadError(f"{where}: decimal value {token} is too large for a CRC-32")
        return Checksum("crc32", f"{int(token):08x}")
    algo = _ALGORITHM_BY_LENGTH.get(len(token))
    if algo is None or not re.fullmatch(r"[0-9a-fA-F]+", token):
        raise DownloadError(f"{where}: cannot tell the algorithm of {token!r}; write it as ALGO:HEX")
    return Checksum(algo, token.lower())


def file_checksum(path: str, algorithm: str) -> str:
    """Hex digest of a local file."""
    h = ALGORITHMS[algorithm]()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str, checksum: Checksum, source: str | None = None) -> None:
    """Raise ChecksumError (naming the file, source, expected and actual values) on a mismatch.

    A CRC guards against corruption only (a file can be forged to any CRC): after a CRC match the file's
    sha256, computed in the same pass, is logged so it can be pinned (``--checksum sha256:HEX``)."""
    h = ALGORITHMS[checksum.algorithm]()
    sha = hashlib.sha256() if checksum.algorithm in ("crc32", "crc32c") else None
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            if sha is not None:
                sha.update(block)
    got = h.hexdigest()
    if got != checksum.hexdigest:
        raise ChecksumError(f"{checksum.algorithm} mismatch for {redact(source or path)}: expected "
                            f"{checksum.hexdigest}, got {got}; the downloaded file was deleted")
    if sha is not None:
        logger.warning("%s matches its %s, which detects corruption but not tampering; its sha256 is %s "
                       "(pin it with --checksum sha256:%s)", redact(source or path), checksum.algorithm,
                       sha.hexdigest(), sha.hexdigest())


# ---------------------------------------------------------------- named datasets

@dataclasses.dataclass(frozen=True)
class NamedDataset:
    """A public dataset: where it was published, how it is verified, and the folder it unpacks into.

    Unity's datasets (``checksum``): what Unity published is a CRC-32 of the archive, which catches
    corruption in transit but not tampering (anyone can make a file with a given CRC-32). ``sha256``, when
    known, is verified instead; it is None for both because their files could not be fetched to compute it
    (Unity's bucket is gone, no network here). Pin one yourself with ``--checksum sha256:HEX``; the download
    logs the sha256 of what it got.

    Datasets with a ``manifest`` (the real photographs from GitHub): the archive's bytes are not stable
    (GitHub builds a repository's zip on demand), so each extracted file is verified instead, against the
    sha256 of every file of the pinned commit (`MANIFESTS`); ``url`` is that commit's archive, and the data
    is the archive's one top folder (``<repository>-<commit>/``).
    """

    name: str
    path: str  # below the base URL (Unity's datasets); "" where ``url`` is absolute
    checksum: Checksum | None
    subfolder: str  # inside --output; the archive unpacks here
    layout: str  # what the user gets, for --help and the docs
    sha256: str | None = None
    url: str | None = None  # the full URL, where the dataset is not below the base URL
    manifest: bool = False  # verify every extracted file against MANIFESTS[name]


def _manifests() -> dict[str, dict]:
    """name -> {"repository", "commit", "files": {path inside the repository: sha256}} of the real-photo
    datasets, computed from the files of the pinned commits (``synthgap/resources/real_manifests.json``)."""
    from importlib import resources

    return json.loads(resources.files("synthgap").joinpath("resources", "real_manifests.json").read_text("utf-8"))


MANIFESTS = _manifests()


def _github(name: str, layout: str) -> NamedDataset:
    m = MANIFESTS[name]
    return NamedDataset(name, "", None, name, layout, url=f"https://github.com/{m['repository']}/archive/"
                                                           f"{m['commit']}.zip", manifest=True)


DATASETS = {d.name: d for d in (
    NamedDataset("unity-groceries-real", "groceries/v3.zip", Checksum("crc32", f"{2322380006:08x}"),
                 "groceries", "groceries/v3/{images/, annotations.json, annotation_definitions.json, "
                              "groceries_real_<split>.txt}"),
    NamedDataset("unity-groceries-synthetic-sample", "synthetic/SynthDet.zip",
                 Checksum("crc32", f"{390326588:08x}"), "synthetic",
                 "synthetic/ (a Unity Perception legacy dataset: Dataset<id>/*.json, RGB<id>/*.png)"),
    _github("grocery-store-shelves", "grocery-store-shelves/<repository>-<commit>/project/ (Supervisely: 37 real "
                                     "shelf photos, 926 product boxes)"),
    _github("snacks-catalog", "snacks-catalog/<repository>-<commit>/project/ (Supervisely: 83 product packshots "
                              "with masks)"),
)}


def dataset_url(name: str) -> str:
    """The public URL of a named dataset; the base of Unity's can be changed with $SYNTHGAP_DATASETS_BASE_URL."""
    info = DATASETS[name]
    if info.url is not None:
        return info.url
    base = os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/{info.path}"


def verify_manifest(folder: str, name: str) -> str:
    """Check every file of dataset ``name``'s manifest below ``folder`` (or below its one top folder, as a
    GitHub archive unpacks); returns the folder holding them. ChecksumError lists what is missing or differs
    (files not in the manifest are allowed: a later commit's extras do not matter)."""
    files = MANIFESTS[name]["files"]
    entries = [e for e in os.listdir(folder) if not e.startswith(".")]
    root = folder
    if len(entries) == 1 and os.path.isdir(os.path.join(folder, entries[0])) and entries[0] not in \
            {p.split("/", 1)[0] for p in files}:
        root = os.path.join(folder, entries[0])
    missing, different = [], []
    for rel, digest in files.items():
        path = os.path.join(root, *rel.split("/"))
        if not os.path.isfile(path):
            missing.append(rel)
        elif file_checksum(path, "sha256") != digest:
            different.append(rel)
    if missing or different:
        shown = [f"missing {r}" for r in missing[:5]] + [f"different {r}" for r in different[:5]]
        raise ChecksumError(f"dataset {name} in {root}: {len(missing)} of {len(files)} files missing and "
                            f"{len(different)} different from commit {MANIFESTS[name]['commit'][:12]} "
                            f"({'; '.join(shown)}{'; ...' if len(missing) + len(different) > len(shown) else ''})")
    return root


# ---------------------------------------------------------------- HTTP with resume

class _Truncated(OSError):
    """The connection ended before the announced length: retry from where it stopped."""


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) -> (start, end, total); None where unknown."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (int(start) if start else None, int(end) if end else None,
            int(total) if total and total != "*" else None)


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()  # never store the URL: it may be signed


def _load_meta(meta_path: str, url: str) -> dict | None:
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("url") == _url_key(url) else None


def _progress_bar(total: int | None, initial: int, desc: str, progress: bool):
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)


def _remove(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def fetch_http(url: str, dest: str, *, access_token: str | None = None, checksum: Checksum | None = None,
               retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
               timeout: float = httpfetch.DEFAULT_TIMEOUT, progress: bool = True, max_bytes: int | None = None) -> str:
    """Download ``url`` to the local file ``dest``, resuming ``dest + ".part"`` if a previous run
    left one, retrying transient failures, verifying ``checksum``; return ``dest``.

    Resume sends ``Range: bytes=N-`` with ``If-Range`` (the ETag, or Last-Modified, of the first
    response, kept in ``dest + ".part.json"``), so a file that changed on the server comes back
    whole (200) rather than spliced. A 206 whose Content-Range does not start at N, or a server
    that ignores Range, restarts the file cleanly. Transient failures (connection errors,
    timeouts, truncated bodies, 408/429/5xx) are retried ``retries`` times in a row with
    exponential backoff; an attempt that received data restarts that count at one. ``max_bytes`` caps the
    file: a larger Content-Length is refused, and a body without one is stopped past the cap (None:
    Content-Length is trusted, a body without one stops past `MAX_UNANNOUNCED_BYTES`).
    """
    part, meta_path = dest + ".part", dest + ".part.json"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    meta = _load_meta(meta_path, url)
    if meta is None:
        _remove(part, meta_path)
        meta = {"url": _url_key(url)}
    failures = 0
    bar = _progress_bar(meta.get("size"), 0, os.path.basename(dest), progress)
    try:
        while True:
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            try:
                if _attempt(url, part, meta_path, meta, offset, access_token, timeout, bar, max_bytes):
                    break
                error: Exception = DownloadError("restarted")
            except httpfetch.HTTPStatusError as e:
                if e.gone:
                    raise SourceGoneError(f"{redact(url)} is gone (HTTP {e.status} {e.reason})") from None
                if not e.transient:
                    raise DownloadError(f"cannot download {redact(url)}: HTTP {e.status} {e.reason}") from None
                error = e
            except socket.gaierror as e:
                host = urllib.parse.urlsplit(url).hostname
                raise SourceGoneError(f"cannot resolve host {host!r} for {redact(url)} "
                                      f"(no network here, or the host is gone): {e.strerror}") from None
            except (OSError, http.client.HTTPException) as e:
                error = e
            progressed = os.path.exists(part) and os.path.getsize(part) > offset
            failures = 1 if progressed else failures + 1
            if failures > retries:
                raise DownloadError(f"giving up on {redact(url)} after {retries} retries: "
                                    f"{type(error).__name__}: {error}")
            if failures:
                delay = min(backoff * 2 ** (failures - 1), MAX_BACKOFF)
                logger.info("retrying %s in %.2f s after %s: %s", redact(url), delay, type(error).__name__, error)
                time.sleep(delay)
    finally:
        bar.close()
    if checksum is not None:
        try:
            verify(part, checksum, url)
        except ChecksumError:
            _remove(part, meta_path)
            raise
    os.replace(part, dest)
    _remove(meta_path)
    return dest


def _attempt(url, part, meta_path, meta, offset, access_token, timeout, bar, max_bytes=None) -> bool:
    """One GET appending to ``part``. True when the file is complete, False to restart it.
    Raises on transport errors and truncated bodies."""
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    with httpfetch.open_url(url, headers=headers, access_token=access_token, timeout=timeout,
                            allow_status=(416,)) as resp:
        if resp.status == 416:  # nothing after offset: complete if the server's size says so
            _, _, total = _content_range(resp.headers.get("Content-Range"))
            if offset and total == offset:
                return True
            logger.info("server refused the resume range for %s; restarting", redact(url))
            _remove(part)
            return False
        if resp.status == 206:
            start, _, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset or (meta.get("size") is not None and total != meta["size"]):
                logger.info("unexpected Content-Range %r for %s; restarting",
                            resp.headers.get("Content-Range"), redact(url))
                _remove(part)
                return False
            mode, expected = "ab", total
        elif resp.status == 200:
            if offset:
                logger.info("server sent the whole file for %s (Range ignored or file changed); restarting",
                            redact(url))
            length = resp.headers.get("Content-Length")
            etag = resp.headers.get("ETag")
            meta.clear()
            meta.update(url=_url_key(url), size=int(length) if length and length.isdigit() else None,
                        etag=etag if etag and not etag.startswith("W/") else None,
                        last_modified=resp.headers.get("Last-Modified"))
            with open(meta_path, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            mode, expected, offset = "wb", meta["size"], 0
        else:
            raise DownloadError(f"unexpected HTTP {resp.status} {resp.reason} from {redact(url)}")
        if expected is not None and max_bytes is not None and expected > max_bytes:
            _remove(part, meta_path)
            raise DownloadError(f"{redact(url)} is {expected} bytes, more than --max-size {max_bytes}; nothing kept")
        limit = (MAX_UNANNOUNCED_BYTES if max_bytes is None else max_bytes) if expected is None else None
        bar.reset(total=expected)
        bar.update(offset)
        received = 0
        with open(part, mode) as f:
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
                    if limit is not None and offset + received > limit:
                        break
            finally:
                f.flush()
                os.fsync(f.fileno())
        size = offset + received
        if limit is not None and size > limit:
            _remove(part, meta_path)
            raise DownloadError(f"{redact(url)} sent more than {limit} bytes without announcing a length "
                                f"(no Content-Length); stopped and deleted. Raise the cap with --max-size if the "
                                f"file is really that large")
        if expected is not None and size < expected:
            raise _Truncated(f"connection closed after {size} of {expected} bytes")
        if expected is not None and size > expected:
            _remove(part)
            raise _Truncated(f"received {size} bytes, more than the announced {expected}")
        return True


# ---------------------------------------------------------------- any source

def fetch_file(source_uri: str, dest: str, *, access_token: str | None = None, checksum: Checksum | None = None,
               retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
               timeout: float = httpfetch.DEFAULT_TIMEOUT, progress: bool = True, max_bytes: int | None = None) -> str:
    """Copy one file from any source to the local path ``dest`` via ``dest.part``; verify; rename.
    ``max_bytes``: see `fetch_http` (http(s) only; other sources have a known size)."""
    if httpfetch.is_http(source_uri):
        return fetch_http(source_uri, dest, access_token=access_token, checksum=checksum, retries=retries,
                          backoff=backoff, timeout=timeout, progress=progress, max_bytes=max_bytes)
    part = dest + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    try:
        fs, path = storage.split_uri(source_uri)
        total = fs.size(path)
    except Exception:  # size is only for the progress bar
        total = None
    bar = _progress_bar(total, 0, os.path.basename(dest), progress)
    try:
        with storage.open(source_uri, "rb") as src, open(part, "wb") as dst:
            for block in iter(lambda: src.read(CHUNK), b""):
                dst.write(block)
                bar.update(len(block))
        if checksum is not None:
            verify(part, checksum, source_uri)
    except FileNotFoundError:
        _remove(part)
        raise SourceGoneError(f"{source_uri} does not exist") from None
    except BaseException:
        _remove(part)
        raise
    finally:
        bar.close()
    os.replace(part, dest)
    return dest


def _file_name(source_uri: str) -> str:
    path = urllib.parse.urlsplit(source_uri).path if "://" in source_uri else source_uri
    name = posixpath.basename(urllib.parse.unquote(path).rstrip("/").replace("\\", "/"))
    if name in ("", ".", ".."):
        raise DownloadError(f"cannot tell a file name from {redact(source_uri)}")
    return name


@dataclasses.dataclass
class DownloadResult:
    """What a download left on disk: the file (None when an extracted archive was removed) and
    the extracted or copied files, relative to ``folder``."""

    folder: str
    file: str | None
    files: list[str]


def download(source_uri: str, output: str, *, checksum: Checksum | None = None, checksum_file: str | None = None,
             access_token: str | None = None, extract: bool = True, keep_archive: bool = False,
             retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF,
             timeout: float = httpfetch.DEFAULT_TIMEOUT, progress: bool = True, max_bytes: int | None = None,
             max_extract_bytes: int | None = None, max_extract_ratio: float | None = None) -> DownloadResult:
    """Download a file or folder from ``source_uri`` into the local folder ``output``.

    A file lands as ``output/<name>``; a zip/tar archive is then unpacked into ``output`` (and
    removed unless ``keep_archive``). A folder (local, gs://, s3://, memory://) is copied file by
    file below ``output``. An existing ``output/<name>`` that matches ``checksum`` is not fetched
    again. ``access_token`` is sent to the http(s) source host only. ``max_bytes`` caps an http(s)
    download (see `fetch_http`); ``max_extract_bytes`` / ``max_extract_ratio`` bound what an archive may
    expand to (see `synthgap.io.archive.extract`). ``output`` is locked while this runs: a second download
    into it fails at once with `synthgap.io.locks.FolderLockedError` naming the first.
    """
    source_uri = os.fspath(source_uri)
    if storage.protocol(source_uri) == "usim":
        raise DownloadError("usim:// sources (Unity Simulation) cannot be downloaded: Unity Simulation was "
                            "shut down. Pass the URL, bucket URI or local path of a copy of the data instead.")
    if checksum is not None and checksum_file is not None:
        raise DownloadError("give either a checksum or a checksum file, not both")
    if access_token and not httpfetch.is_http(source_uri):
        logger.warning("--access-token is only sent to http(s) sources; ignored for %s", storage.protocol(source_uri))
    if not storage.is_local(output):
        raise DownloadError(f"--output must be a local folder, got {output}")
    output = storage.local_path(output)
    os.makedirs(output, exist_ok=True)
    # One download into a folder at a time: two would append to one .part file and extract over each
    # other. A second one fails at once, naming the first (synthgap.io.locks).
    with locks.lock_folder(output, f"synthgap download {redact(source_uri)}"):
        if not httpfetch.is_http(source_uri) and storage.isdir(source_uri):
            if checksum is not None or checksum_file is not None:
                raise DownloadError(f"a checksum applies to one file, but {source_uri} is a folder")
            return _copy_folder(source_uri, output, progress)
        name = _file_name(source_uri)
        if checksum_file is not None:
            checksum = read_checksum_file(checksum_file, name, source_uri=source_uri, access_token=access_token)
        dest = os.path.join(output, name)
        if checksum is not None and os.path.isfile(dest) and \
                file_checksum(dest, checksum.algorithm) == checksum.hexdigest:
            logger.info("%s is already downloaded and matches %s", dest, checksum.algorithm)
        else:
            fetch_file(source_uri, dest, access_token=access_token, checksum=checksum, retries=retries,
                       backoff=backoff, timeout=timeout, progress=progress, max_bytes=max_bytes)
        if not (extract and archive.is_archive(name)):
            return DownloadResult(output, dest, [name])
        try:
            files = archive.extract(dest, output, max_bytes=max_extract_bytes, max_ratio=max_extract_ratio)
        except DatasetError:
            _remove(dest)  # an unsafe or unreadable archive is of no use; nothing was extracted
            raise
        if keep_archive:
            return DownloadResult(output, dest, files)
        _remove(dest)
        return DownloadResult(output, None, files)


def _copy_folder(source_uri: str, output: str, progress: bool) -> DownloadResult:
    names = storage.walk_files(source_uri)
    for rel in tqdm(names, desc=posixpath.basename(source_uri.rstrip("/")), unit="file",
                    file=sys.stderr, disable=not progress, leave=False):
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise DownloadError(f"refusing {rel!r} under {source_uri}: '..' would leave {output}")
        storage.copy(storage.join(source_uri, rel), os.path.join(output, *parts))
    return DownloadResult(output, None, names)


def read_checksum_file(uri: str, name: str, *, source_uri: str | None = None,
                       access_token: str | None = None) -> Checksum:
    """The checksum of file ``name`` from a checksum file at any path or URI (see
    `parse_checksum_text`). The access token goes along only when the checksum file lives on the
    same origin as ``source_uri``."""
    try:
        if httpfetch.is_http(uri):
            token = access_token if source_uri and httpfetch.is_http(source_uri) and \
                httpfetch.origin(uri) == httpfetch.origin(source_uri) else None
            with httpfetch.open_url(uri, access_token=token) as resp:
                text = resp.read().decode("utf-8")
        else:
            text = storage.read_text(uri)
    except httpfetch.HTTPStatusError as e:
        raise (SourceGoneError if e.gone else DownloadError)(
            f"cannot read checksum file {e.url}: HTTP {e.status} {e.reason}") from None
    except FileNotFoundError:
        raise SourceGoneError(f"checksum file {uri} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DownloadError(f"cannot read checksum file {redact(uri)}: {e}") from None
    try:
        return parse_checksum_text(text, name, where=f"checksum file {redact(uri)}")
    except ValueError as e:
        raise DownloadError(str(e)) from None


def download_dataset(name: str, output: str, *, source_uri: str | None = None, **kwargs) -> DownloadResult:
    """Download a named public dataset (a key of `DATASETS`) into ``output/<subfolder>``.

    ``source_uri`` replaces the published URL (a mirror or a local copy); the published
    checksum, or the manifest of every file, is still checked unless ``checksum``/``checksum_file`` is given.
    For a manifest dataset the result's ``folder`` is the verified data folder.
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    info = DATASETS[name]
    url = source_uri or dataset_url(name)
    if kwargs.get("checksum") is None and kwargs.get("checksum_file") is None and not info.manifest:
        kwargs["checksum"] = Checksum("sha256", info.sha256) if info.sha256 else info.checksum
    target = os.path.join(output, info.subfolder)
    if info.manifest and kwargs.get("checksum") is None and os.path.isdir(target):
        try:  # already there and intact: nothing to fetch
            return DownloadResult(verify_manifest(target, name), None, [])
        except ChecksumError:
            pass
    try:
        result = download(url, target, **kwargs)
    except ChecksumError:
        raise
    except DownloadError as e:
        where = "GitHub" if info.manifest else "Unity"
        raise type(e)(
            f"dataset {name}: {e}. {where} published it at {redact(dataset_url(name))}, which may no longer "
            f"exist or not be reachable from here. If you have a copy, run `synthgap download --dataset {name} "
            f"--source-uri PATH_OR_URL --output {output}` (it is still verified), "
            f"or set ${BASE_URL_ENV} to a mirror.") from None
    if info.manifest:
        return DownloadResult(verify_manifest(target, name), result.file, result.files)
    return result
