"""Writers of output folders: one at a time (a lock beside the folder), and what dead ones leave behind.

Two `synthgap generate` runs into one ``--out`` used to interleave their frames silently. Now each
writer holds ``fcntl.flock`` on ``<parent>/.<folder name>.synthgap-lock`` for as long as it writes; a
second writer fails at once with `FolderLockedError`, naming the holder (pid, host, command, start
time), as git refuses a second writer of a repository (``index.lock``). The kernel drops a flock when
its process dies, even by ``kill -9``, so a crashed run never leaves a stale lock behind.

The lock belongs to the folder's resolved path (`lock_path`), so a symlink to the folder, or to one of
its parents, names the same lock. It lives beside the folder, not in it, so it survives the folder being swapped for a new one
(``generate --force``), and it is removed when its last holder releases it. Shared locks let
cooperating writers in (shards of one `generate` plan). Local paths only: object stores (``gs://``,
``s3://``) and ``memory://`` have no advisory locks, and there the lock is a no-op.

Temporary files and folders carry their writer's pid (`synthgap.io.storage.temp_tag`); `remove_stale_temps`
deletes those of dead processes, so a run killed mid-write costs disk space only until the next run.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import sys
import time
from typing import Iterable, Iterator

from synthgap.io import storage
from synthgap.errors import SynthgapError, WriteError

LOCK_SUFFIX = ".synthgap-lock"
# Temporary entries written by this package: ".<name>.synthgap-<pid>-<random>.tmp" files (storage.atomic_write)
# and ".synthgap-<what>-<pid>-<random>" folders (archive extraction, generate --force).
_TEMP_RE = re.compile(r"^\.(?:.+\.synthgap-(\d+)-[^/]*\.tmp|synthgap-[a-z]+-(\d+)-[^/]*)$")
_OLD_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$|^\.synthgap-extract-[A-Za-z0-9_]{8}$")  # no pid (<= 0.x)
STALE_TEMP_SECONDS = 24 * 3600  # a temporary entry this old is removed whatever its pid says (pid reuse)


def remove_stale_temps(folder: str, subfolders: Iterable[str] = ()) -> list[str]:
    """Remove the temporary files and folders that dead synthgap processes left in the local ``folder``
    (e.g. after ``kill -9``): entries named by `synthgap.io.storage.temp_tag` whose pid is not running on this
    host, and any synthgap temporary entry older than `STALE_TEMP_SECONDS`. Returns the names removed
    (relative to ``folder``); URIs: nothing.

    Not recursive (a dataset can hold 100k images): `synthgap.io.storage.atomic_write` puts a file's temporary
    beside the file, so callers pass ``subfolders`` (relative to ``folder``, e.g. ``images``) where their
    writers put files; each is listed once, and a missing one is skipped."""
    if not storage.is_local(folder) or not os.path.isdir(storage.local_path(folder)):
        return []
    removed = _remove_stale_in(storage.local_path(folder))
    for sub in subfolders:
        path = os.path.join(storage.local_path(folder), *[p for p in sub.replace("\\", "/").split("/") if p])
        if os.path.isdir(path) and not os.path.islink(path):
            removed += [f"{sub.rstrip('/')}/{name}" for name in _remove_stale_in(path)]
    return removed


def _remove_stale_in(root: str) -> list[str]:
    """`remove_stale_temps` of one folder, not recursive."""
    removed, now = [], time.time()
    for name in os.listdir(root):
        m = _TEMP_RE.match(name)
        if not m and not _OLD_TEMP_RE.match(name):
            continue
        path = os.path.join(root, name)
        try:
            age = now - os.lstat(path).st_mtime
        except FileNotFoundError:
            continue
        pid = int(m.group(1) or m.group(2)) if m else None
        if age < STALE_TEMP_SECONDS and (pid is None or pid == os.getpid() or pid_alive(pid)):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        removed.append(name)
    return removed


class FolderLockedError(SynthgapError):
    """Another process is writing the folder; the message names it."""


def lock_path(folder: str, key: str = "") -> str:
    """The lock file of a local folder: ``<parent>/.<name>[.<key>].synthgap-lock``, of the folder's resolved
    path (symlinks followed, as far as the path exists): ``ck`` and ``link-to-ck`` are one folder and so
    one lock, else two writers could share the folder through two names."""
    path = os.path.realpath(storage.local_path(folder))
    parent, name = os.path.split(path.rstrip(os.sep) or os.sep)
    return os.path.join(parent, f".{name or 'root'}{'.' + key if key else ''}{LOCK_SUFFIX}")


def _holder_line(command: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command or " ".join(sys.argv),
                       "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")})


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this host (or may: one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _describe_holders(fd: int) -> str:
    """The live holders recorded in a lock file, as text for the error message."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    except OSError:
        text = ""
    here = socket.gethostname()
    holders = []
    for line in text.splitlines():
        try:
            h = json.loads(line)
            if h.get("host") == here and not pid_alive(int(h["pid"])):
                continue  # a shared holder that died: its flock is gone too
            holders.append(f"pid {h['pid']} on {h['host']}, `{h['command']}`, since {h['since']}")
        except (ValueError, KeyError, TypeError):
            continue
    return "; ".join(holders) or "a process that did not record itself"


@contextlib.contextmanager
def lock_folder(folder: str, command: str = "", *, shared: bool = False, key: str = "") -> Iterator[None]:
    """Hold the write lock of ``folder`` for the ``with`` block; raise `FolderLockedError` at once if
    another process holds it (exclusively, or shared when ``shared`` is False).

    ``command`` is recorded for the error message another process would show (default: this
    process's argv). ``shared`` lets cooperating writers in together; ``key`` names a separate lock of the
    same folder (e.g. one shard of it). No-op for URIs that are not local paths.
    """
    import fcntl

    if not storage.is_local(folder):
        yield
        return
    path = lock_path(folder, key)
    while True:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:  # a read-only disk, no permission: the folder cannot be written either
            raise WriteError(f"cannot write {folder}: {e.strerror or e} (errno {e.errno})") from e
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = _describe_holders(fd)
            os.close(fd)
            raise FolderLockedError(f"{folder} is being written by another synthgap process ({holders}); wait "
                                    f"for it to finish or stop it, or write elsewhere (lock: {path})") from None
        try:  # a releasing holder may have removed the file between our open and flock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        line = (_holder_line(command) + "\n").encode("utf-8")
        if shared:
            os.lseek(fd, 0, os.SEEK_END)
        else:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, line)
        yield
    finally:
        try:  # the last holder removes the file (an exclusive lock proves no one else holds it)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
