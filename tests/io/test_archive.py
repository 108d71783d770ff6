"""Safe archive extraction: good archives unpack; unsafe ones are refused before anything is written."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile

import pytest

from synthgap.io import archive
from synthgap.data.errors import DatasetError


def make_zip(path, entries):
    """entries: name -> bytes, or ("symlink", target)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            if isinstance(data, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data[1])
            else:
                zf.writestr(name, data)
    return str(path)


def make_tar(path, entries, mode="w:gz"):
    """entries: name -> bytes | ("symlink"|"hardlink"|"fifo"|"dir", target)."""
    types = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE}
    with tarfile.open(path, mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = types[data[0]], data[1] or ""
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture
def box(tmp_path):
    """(folder holding the archive and a sentinel, output folder inside it)."""
    (tmp_path / "sentinel.txt").write_text("keep")
    return tmp_path, tmp_path / "out"


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("suffix,mode", [(".zip", None), (".tar", "w"), (".tar.gz", "w:gz"),
                                         (".tgz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz")])
def test_good_archives_unpack(box, suffix, mode):
    root, out = box
    entries = {"ds/a.json": b"{}", "ds/img/1.png": b"png", "ds/latest": ("symlink", "img/1.png")}
    path = root / f"good{suffix}"
    make_zip(path, entries) if mode is None else make_tar(path, entries, mode)
    names = archive.extract(str(path), str(out))
    assert names == ["ds/a.json", "ds/img/1.png", "ds/latest"]
    assert (out / "ds/img/1.png").read_bytes() == b"png"
    assert os.readlink(out / "ds/latest") == "img/1.png" and (out / "ds/latest").read_bytes() == b"png"
    assert sorted(os.listdir(out)) == ["ds"]  # no temporary folder left
    assert archive.top_level(names) == ["ds"]


def test_extract_replaces_same_names_and_keeps_others(box):
    root, out = box
    (out / "ds").mkdir(parents=True)
    (out / "ds" / "a.json").write_text("old")
    (out / "ds" / "mine.txt").write_text("mine")
    archive.extract(make_zip(root / "u.zip", {"ds/a.json": b"new"}), str(out))
    assert (out / "ds" / "a.json").read_text() == "new" and (out / "ds" / "mine.txt").read_text() == "mine"


UNSAFE = [
    ("zip", {"ok.txt": b"1", "../evil.txt": b"x"}, "../evil.txt", "'..'"),
    ("zip", {"ok.txt": b"1", "/tmp/evil.txt": b"x"}, "/tmp/evil.txt", "absolute"),
    ("zip", {"a/../../evil.txt": b"x"}, "a/../../evil.txt", "'..'"),
    ("zip", {"ok.txt": b"1", "link": ("symlink", "../../etc")}, "link", "leaves the output"),
    ("tar", {"ok.txt": b"1", "../evil.txt": b"x"}, "../evil.txt", "'..'"),
    ("tar", {"ok.txt": b"1", "/abs.txt": b"x"}, "/abs.txt", "absolute"),
    ("tar", {"d/link": ("symlink", "../../outside"), "d/link/p.txt": b"x"}, "d/link", "leaves the output"),
    ("tar", {"link": ("symlink", "/etc")}, "link", "absolute"),
    ("tar", {"hard": ("hardlink", "../outside.txt")}, "hard", "leaves the output"),
    ("tar", {"fifo": ("fifo", None)}, "fifo", "special"),
    # a symlink to a shallower place fools a purely lexical check of the next link: refused
    ("tar", {"s": ("symlink", "."), "t": ("symlink", "s/..")}, "t", "through another symlink"),
    ("tar", {"s": ("symlink", "sub"), "s/x.txt": b"x"}, "s/x.txt", "is a symlink"),
]


@pytest.mark.parametrize("kind,entries,entry,why", UNSAFE, ids=[f"{u[0]}:{u[2]}" for u in UNSAFE])
def test_unsafe_entries_are_refused_before_writing_anything(box, kind, entries, entry, why):
    root, out = box
    path = make_zip(root / "evil.zip", entries) if kind == "zip" else make_tar(root / "evil.tar.gz", entries)
    before = snapshot(root)
    with pytest.raises(DatasetError) as e:
        archive.extract(path, str(out))
    msg = str(e.value)
    assert os.path.basename(path) in msg and repr(entry) in msg and why in msg
    assert e.value.kind == "unsafe_archive" and e.value.record == entry
    assert snapshot(root) == sorted(before + ["out"]) and os.listdir(out) == []
    assert (root / "sentinel.txt").read_text() == "keep"


def test_bad_archive_is_a_clear_error(box):
    root, out = box
    (root / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="junk.zip: cannot read archive"):
        archive.extract(str(root / "junk.zip"), str(out))
    with pytest.raises(DatasetError, match="not a zip or tar"):
        archive.extract(str(root / "sentinel.txt"), str(out))
    assert os.listdir(out) == []
    assert archive.is_archive("A.TAR.XZ") and not archive.is_archive("a.json")


# ---------------------------------------------------------------- archive bombs and leftovers (issue 14 items 7, 13)

def bomb_zip(path, size=8 << 20):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ds/zeros.bin", b"\0" * size)
        zf.writestr("ds/a.json", b"{}")
    return str(path)


def bomb_tar(path, size=8 << 20):
    return make_tar(path, {"ds/zeros.bin": b"\0" * size, "ds/a.json": b"{}"}, mode="w:gz")


@pytest.mark.parametrize("make", [bomb_zip, bomb_tar], ids=["zip", "tar.gz"])
def test_archive_bomb_is_refused_before_writing_and_limits_can_be_raised(box, make):
    root, out = box
    path = make(root / ("bomb.zip" if make is bomb_zip else "bomb.tar.gz"))
    assert os.path.getsize(path) < (8 << 20) / 200  # deflate: ~1000x
    with pytest.raises(DatasetError, match="max-extract-ratio 200") as e:
        archive.extract(path, str(out))
    assert e.value.kind == "archive_too_large" and e.value.file == path
    assert snapshot(out) == []
    with pytest.raises(DatasetError, match="max-extract-size 1000000 bytes"):
        archive.extract(path, str(out), max_bytes=1_000_000, max_ratio=1e6)
    assert snapshot(out) == []
    assert archive.extract(path, str(out), max_ratio=1e6) == ["ds/a.json", "ds/zeros.bin"]
    assert os.path.getsize(out / "ds" / "zeros.bin") == 8 << 20


def test_zip_entry_inflating_past_its_declared_size_is_stopped(box, monkeypatch):
    """The budget counts written bytes too (a lying header): simulated by lowering the declared sizes."""
    root, out = box
    path = bomb_zip(root / "b.zip", size=4 << 20)
    real = zipfile.ZipFile.infolist

    def lying(self):
        infos = real(self)
        for i in infos:
            i.file_size = 10
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying)
    with pytest.raises(DatasetError):  # zipfile's own size check or the budget: either way nothing is kept
        archive.extract(path, str(out), max_bytes=1 << 20, max_ratio=1e9)
    assert snapshot(out) == []


def test_next_extraction_removes_what_a_killed_one_left(box):
    import subprocess
    import sys

    root, out = box
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    leftover = out / f".synthgap-extract-{dead_pid}-abc123"
    (leftover / "ds").mkdir(parents=True)
    (leftover / "ds" / "big.bin").write_bytes(b"x" * 1000)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = out / f".synthgap-extract-{alive.pid}-def456"  # another extraction still at work: kept
        running.mkdir()
        path = make_zip(root / "ok.zip", {"ds/a.json": b"{}"})
        archive.extract(path, str(out))
        assert snapshot(out) == [f".synthgap-extract-{alive.pid}-def456", "ds", "ds/a.json"]
    finally:
        alive.kill()
        alive.wait()
