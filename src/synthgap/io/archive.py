"""Safe extraction of zip and tar (plain, gz, bz2, xz) archives.

Every entry is checked before anything is written: absolute names, ``..`` components, entries
below a symlink of the same archive, symlinks or hardlinks whose target leaves the output folder,
and device/fifo entries are refused with a `DatasetError` naming the archive and the entry. The
archive is then extracted into a temporary folder beside the output and moved into place, so a
refused or failing archive leaves no partial output and nothing is ever written outside it.

Archive bombs are refused before anything is written: the entries' total uncompressed size may not
exceed ``max_bytes`` (default `MAX_EXTRACT_BYTES`) nor ``max_ratio`` times the archive's size on disk
(default `MAX_EXTRACT_RATIO`); both are far above a real dataset (images do not compress, JSON ~10x)
and can be raised (``synthgap download --max-extract-size / --max-extract-ratio``). The bytes written
are counted too, so an entry that inflates past its declared size is stopped. A temporary folder left by
a killed extraction is removed by the next extraction into the same folder (`synthgap.io.locks`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from typing import Iterable

from synthgap.io import locks
from synthgap.errors import DatasetError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip",) + TAR_SUFFIXES
COPY_CHUNK = 1 << 20  # bytes
MAX_EXTRACT_BYTES = 1 << 40  # 1 TiB uncompressed in total
MAX_EXTRACT_RATIO = 200.0  # total uncompressed size / archive size (a 1 MB zip of a 1 GB file: ~1000)


def is_archive(name: str) -> bool:
    """True for names ending in a zip or tar suffix (case-insensitive)."""
    return str(name).lower().endswith(ARCHIVE_SUFFIXES)


def _refuse(archive: str, entry: str, why: str) -> DatasetError:
    return DatasetError(f"refusing unsafe archive entry {entry!r}: {why}; nothing was extracted",
                        file=str(archive), record=entry, kind="unsafe_archive")


def _parts(archive: str, entry: str) -> list[str]:
    """The components of an entry name, refusing absolute names and ``..``."""
    name = entry.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, entry, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, entry, "'..' leaves the output folder")
    return parts


def _resolve_link(archive: str, entry: str, base: list[str], target: str, links: set[str]) -> None:
    """Walk ``target`` from the folder ``base``; refuse if it leaves the root or passes through a
    symlink of the archive (whose real depth a lexical walk cannot know)."""
    target = target.replace("\\", "/")
    if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise _refuse(archive, entry, f"link target {target!r} is an absolute path")
    stack = list(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if stack and "/".join(stack) in links:
            raise _refuse(archive, entry, f"link target {target!r} goes through another symlink")
        if part == "..":
            if not stack:
                raise _refuse(archive, entry, f"link target {target!r} leaves the output folder")
            stack.pop()
        else:
            stack.append(part)


def _check_entries(archive: str, entries: Iterable[tuple[str, str, str | None]]) -> None:
    """Validate ``(name, kind, link_target)`` entries; kind is file, dir, symlink, hardlink or special."""
    entries = list(entries)
    links = {"/".join(_parts(archive, name)) for name, kind, _ in entries if kind == "symlink"}
    for name, kind, target in entries:
        parts = _parts(archive, name)
        if not parts:
            continue
        if kind == "special":
            raise _refuse(archive, name, "device, fifo or other special file")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise _refuse(archive, name, f"its folder {'/'.join(parts[:i])!r} is a symlink")
        if kind == "symlink":
            _resolve_link(archive, name, parts[:-1], target or "", links)
        elif kind == "hardlink":
            _resolve_link(archive, name, [], target or "", links)
            if not (target or "").strip("/."):
                raise _refuse(archive, name, "hardlink to the output folder itself")


class _Budget:
    """The bytes an extraction may still write; refuses a bomb by its declared sizes, then counts."""

    def __init__(self, archive: str, max_bytes: int | None, max_ratio: float | None):
        self.archive = archive
        size = os.path.getsize(archive)
        self.max_bytes = MAX_EXTRACT_BYTES if max_bytes is None else int(max_bytes)
        ratio = MAX_EXTRACT_RATIO if max_ratio is None else float(max_ratio)
        self.limit = min(self.max_bytes, int(ratio * max(size, 1)))
        self.why = (f"more than --max-extract-size {self.max_bytes} bytes" if self.limit == self.max_bytes else
                    f"more than --max-extract-ratio {ratio:g} times the archive's {size} bytes")
        self.left = self.limit

    def declare(self, sizes: Iterable[int]) -> None:
        total = sum(max(int(n), 0) for n in sizes)
        if total > self.limit:
            raise self.error(f"its entries declare {total} bytes uncompressed")

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise self.error("it inflates past its declared sizes")

    def error(self, what: str) -> DatasetError:
        return DatasetError(f"refusing archive: {what}, {self.why} (an archive bomb, or raise the limit); "
                            "nothing was extracted", file=self.archive, kind="archive_too_large")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # type bits are optional
        return "special"
    return "file"


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isfile():
        return "file"
    return "special"


def _extract_zip(path: str, dest: str, budget: _Budget) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        budget.declare(i.file_size for i in infos)
        kinds = [_zip_kind(i) for i in infos]
        targets = [zf.read(i).decode("utf-8") if k == "symlink" else None for i, k in zip(infos, kinds)]
        _check_entries(path, [(i.filename, k, t) for i, k, t in zip(infos, kinds, targets)])
        names = []
        for info, kind, target in zip(infos, kinds, targets):
            parts = _parts(path, info.filename)
            if not parts:
                continue
            out = os.path.join(dest, *parts)
            if kind == "dir":
                os.makedirs(out, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if kind == "symlink":
                os.symlink(target, out)
            else:
                with zf.open(info) as src, open(out, "wb") as dst:
                    for block in iter(lambda: src.read(COPY_CHUNK), b""):
                        budget.take(len(block))
                        dst.write(block)
            names.append("/".join(parts))
        return names


def _extract_tar(path: str, dest: str, budget: _Budget) -> list[str]:
    with tarfile.open(path, "r:*") as tf:
        members = tf.getmembers()  # reads the whole (decompressed) stream once: sizes are then exact
        budget.declare(m.size for m in members if m.isfile())
        _check_entries(path, [(m.name, _tar_kind(m), m.linkname or None) for m in members])
        # Python's own "data" filter (3.11.4+) re-checks every path against the real folder.
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(dest, members=members, **kwargs)
        return ["/".join(_parts(path, m.name)) for m in members if not m.isdir() and _parts(path, m.name)]


def extract(archive_path: str, output_dir: str, *, max_bytes: int | None = None,
            max_ratio: float | None = None) -> list[str]:
    """Extract a local zip/tar archive into ``output_dir``; return the extracted file names
    (``/``-separated, relative to ``output_dir``).

    Files already in ``output_dir`` with the same names are replaced; others are kept.
    Raises `DatasetError` (kind ``unsafe_archive``) before writing anything when an entry is unsafe,
    (kind ``archive_too_large``) when it would expand past ``max_bytes`` bytes or ``max_ratio`` times its
    own size (None: `MAX_EXTRACT_BYTES`, `MAX_EXTRACT_RATIO`), and (kind ``bad_archive``) when the file is
    not a readable archive.
    """
    archive_path = os.fspath(archive_path)
    lower = archive_path.lower()
    if lower.endswith(".zip"):
        extractor = _extract_zip
    elif lower.endswith(TAR_SUFFIXES):
        extractor = _extract_tar
    else:
        raise DatasetError(f"not a zip or tar archive (expected one of {', '.join(ARCHIVE_SUFFIXES)})",
                           file=archive_path, kind="bad_archive")
    os.makedirs(output_dir, exist_ok=True)
    budget = _Budget(archive_path, max_bytes, max_ratio)
    locks.remove_stale_temps(output_dir)  # what a killed extraction left (named with its pid)
    tmp = tempfile.mkdtemp(prefix=f".synthgap-extract-{os.getpid()}-", dir=output_dir)
    try:
        try:
            names = extractor(archive_path, tmp, budget)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read archive: {e}", file=archive_path, kind="bad_archive") from None
        _merge(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(names)


def _merge(src: str, dst: str) -> None:
    """Move the tree ``src`` into ``dst`` (same filesystem): folders merge, files and links replace."""
    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isdir(s) and not os.path.islink(s) and os.path.isdir(d) and not os.path.islink(d):
            _merge(s, d)
            continue
        if os.path.lexists(d):
            if os.path.isdir(d) and not os.path.islink(d):
                shutil.rmtree(d)
            else:
                os.unlink(d)
        os.replace(s, d)


def top_level(names: list[str]) -> list[str]:
    """The distinct first components of extracted names, e.g. ``["v3"]`` for ``v3/images/a.jpg``."""
    return sorted({posixpath.normpath(n).split("/")[0] for n in names})
