"""synthgap.io.locks: one writer per output folder across processes, and what dead writers leave behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from synthgap.io import locks

HOLD = """
import sys, time
from synthgap.io import locks
with locks.lock_folder(sys.argv[1], "synthgap generate --out held", shared=sys.argv[2] == "shared"):
    print("locked", flush=True)
    time.sleep(60)
"""


def hold(folder, shared=False):
    """A real other process holding the lock of ``folder``; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "shared" if shared else "exclusive"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_at_once_naming_the_first(tmp_path):
    proc = hold(tmp_path / "out")
    try:
        start = time.monotonic()
        with pytest.raises(locks.FolderLockedError) as e:
            with locks.lock_folder(str(tmp_path / "out"), "me"):
                pass
        assert time.monotonic() - start < 5  # fails fast, does not wait
        assert f"pid {proc.pid}" in str(e.value) and "synthgap generate --out held" in str(e.value)
        assert str(tmp_path / "out") in str(e.value)
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_releases_the_lock_and_the_last_holder_removes_the_file(tmp_path):
    proc = hold(tmp_path / "out")
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait()
    with locks.lock_folder(str(tmp_path / "out"), "me"):
        assert os.path.exists(locks.lock_path(str(tmp_path / "out")))
    assert not os.path.exists(locks.lock_path(str(tmp_path / "out")))


def test_shared_holders_coexist_and_exclude_an_exclusive_writer(tmp_path):
    proc = hold(tmp_path / "out", shared=True)
    try:
        with locks.lock_folder(str(tmp_path / "out"), "shard 1", shared=True):
            with pytest.raises(locks.FolderLockedError, match=f"pid {proc.pid}"):
                with locks.lock_folder(str(tmp_path / "out"), "unsharded"):
                    pass
    finally:
        proc.kill()
        proc.wait()


def test_same_process_second_lock_is_refused_too(tmp_path):
    with locks.lock_folder(str(tmp_path / "d"), "first"):
        with pytest.raises(locks.FolderLockedError, match="first"):
            with locks.lock_folder(str(tmp_path / "d"), "second"):
                pass


def test_uris_are_not_locked():
    with locks.lock_folder("memory://x/y"):
        with locks.lock_folder("memory://x/y"):
            pass


def test_remove_stale_temps_by_pid_and_age(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    names = {f".a.json.synthgap-{dead}-x1y2.tmp": "dead file", f".synthgap-extract-{dead}-q": "dead dir",
             f".a.json.synthgap-{os.getpid()}-k.tmp": "mine", ".b.json.abcd1234.tmp": "old style, recent",
             ".c.json.efgh5678.tmp": "old style, 2 days", "data.json": "not a temporary", ".hidden": "user file"}
    for name, what in names.items():
        path = tmp_path / name
        if "dir" in what:
            (path / "x").mkdir(parents=True)
        else:
            path.write_text(what)
    old = time.time() - 2 * 86400
    os.utime(tmp_path / ".c.json.efgh5678.tmp", (old, old))
    removed = locks.remove_stale_temps(str(tmp_path))
    assert sorted(removed) == sorted([f".a.json.synthgap-{dead}-x1y2.tmp", f".synthgap-extract-{dead}-q",
                                      ".c.json.efgh5678.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted([f".a.json.synthgap-{os.getpid()}-k.tmp", ".b.json.abcd1234.tmp",
                                                   "data.json", ".hidden"])


def test_study_and_demo_refuse_a_folder_another_run_writes(tmp_path):
    """issue 14 item 2: `synthgap study` / `demo` take the lock of their output folder before any work."""
    from synthgap.study.demo import run_demo
    from synthgap.study import run_study, study_config_from_dict

    cfg = study_config_from_dict({"datasets": {"real_train": "r", "real_test": "t"}, "cells": ["real"]})
    proc = hold(tmp_path / "study")
    try:
        with pytest.raises(locks.FolderLockedError, match=f"pid {proc.pid}"):
            run_study(cfg, str(tmp_path / "study"))
        assert not (tmp_path / "study").exists()  # nothing written
    finally:
        proc.kill()
        proc.wait()
    proc = hold(tmp_path / "demo")
    try:
        with pytest.raises(locks.FolderLockedError, match=f"pid {proc.pid}"):
            run_demo(str(tmp_path / "demo"), size="tiny", progress=False)
        assert not (tmp_path / "demo").exists()
    finally:
        proc.kill()
        proc.wait()


def test_train_refuses_a_checkpoint_dir_another_run_writes(tmp_path):
    """issue 14 item 2: `synthgap train` locks its checkpoint dir before reading data or building a model
    (the training data here does not exist: the lock error comes first)."""
    from synthgap.config import Config
    from synthgap.data import DatasetError
    from synthgap.engine.train import train

    ckpt, missing = tmp_path / "ckpt", str(tmp_path / "no-such-data.json")
    proc = hold(ckpt)
    try:
        with pytest.raises(locks.FolderLockedError, match=f"pid {proc.pid}") as e:
            train(Config(), train_data=missing, checkpoint_dir=str(ckpt), no_cuda=True, progress=False)
        assert str(ckpt) in str(e.value)
        assert not ckpt.exists()  # nothing written
    finally:
        proc.kill()
        proc.wait()
    # holder gone: the same call gets past the lock (to the missing data) and releases it on the way out
    with pytest.raises((DatasetError, FileNotFoundError)):
        train(Config(), train_data=missing, checkpoint_dir=str(ckpt), no_cuda=True, progress=False)
    assert not os.path.exists(locks.lock_path(str(ckpt)))


def test_a_study_lock_does_not_block_its_own_cells_checkpoint_dirs(tmp_path):
    """study / demo hold their out folder and train cells in subfolders: different folders, different locks."""
    from synthgap.config import Config
    from synthgap.data import DatasetError
    from synthgap.engine.train import train

    out = tmp_path / "study"
    with locks.lock_folder(str(out), "synthgap study"):
        with pytest.raises((DatasetError, FileNotFoundError)):  # past the lock, to the missing data
            train(Config(), train_data=str(tmp_path / "missing.json"),
                  checkpoint_dir=str(out / "cells" / "real-1.0" / "seed0" / "checkpoints"), no_cuda=True,
                  progress=False)


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_remove_stale_temps_covers_the_subfolders_named_and_only_those(tmp_path):
    """issue 14 item 13: atomic writes put a temporary beside its file, so a killed writer of images leaves it
    in the images folder; the named subfolders are listed once each, nothing deeper is walked."""
    dead = _dead_pid()
    for rel in ("images/train", "labels/train", "deep/er"):
        (tmp_path / rel).mkdir(parents=True)
    stale = {f"images/train/.a.png.synthgap-{dead}-x.tmp", f"labels/train/.a.txt.synthgap-{dead}-y.tmp"}
    kept = {f"deep/er/.b.png.synthgap-{dead}-z.tmp",                    # not named: not looked at
            f"images/train/.c.png.synthgap-{os.getpid()}-w.tmp",        # a live writer's
            "images/train/a.png"}
    for rel in stale | kept:
        (tmp_path / rel).write_text("x")
    removed = locks.remove_stale_temps(str(tmp_path), subfolders=("images/train", "labels/train", "missing"))
    assert sorted(removed) == sorted(stale)
    assert all((tmp_path / rel).exists() for rel in kept) and not any((tmp_path / rel).exists() for rel in stale)


def test_convert_cleans_where_its_writers_put_files_and_exports_are_locked(tmp_path):
    """convert --copy-images / --to yolo: a killed run's image temporaries are removed by the next run; a
    second writer of an export's DST is refused like a COCO convert's."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from synthgap.cli import main

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (32, 24)).save(src / "im1.png")
    (src / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "im1.png", "width": 32, "height": 24}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cereal"}]}))
    dead = _dead_pid()
    coco, yolo = tmp_path / "coco", tmp_path / "yolo"
    (coco / "images").mkdir(parents=True)
    (coco / "images" / f".im1.png.synthgap-{dead}-abcd.tmp").write_bytes(b"half an image")
    res = CliRunner().invoke(main, ["convert", str(src / "instances.json"), str(coco), "--copy-images"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(coco / "images")) == ["im1.png"]

    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "images" / "train" / f".im1.png.synthgap-{dead}-abcd.tmp").write_bytes(b"half an image")
    proc = hold(yolo)
    try:
        res = CliRunner().invoke(main, ["convert", str(src / "instances.json"), str(yolo), "--to", "yolo"])
        assert res.exit_code == 1 and f"pid {proc.pid}" in res.output, res.output
    finally:
        proc.kill()
        proc.wait()
    res = CliRunner().invoke(main, ["convert", str(src / "instances.json"), str(yolo), "--to", "yolo"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(yolo / "images" / "train")) == ["im1.png"]


def test_a_symlink_to_a_locked_folder_is_the_same_lock(tmp_path):
    """issue 23: `--checkpoint-dir ck` and `--checkpoint-dir link-to-ck` trained into one folder at once: the
    lock is taken on the resolved path, so a second name for the folder (a symlink to it, or to its parent)
    meets the first writer's lock."""
    (tmp_path / "ck").mkdir()
    os.symlink(tmp_path / "ck", tmp_path / "link-to-ck")
    os.symlink(tmp_path, tmp_path / "link-to-parent")
    assert locks.lock_path(str(tmp_path / "link-to-ck")) == locks.lock_path(str(tmp_path / "ck"))
    proc = hold(tmp_path / "ck")
    try:
        for alias in ("link-to-ck", "link-to-parent/ck", "ck/../ck"):
            with pytest.raises(locks.FolderLockedError, match=f"pid {proc.pid}"):
                with locks.lock_folder(str(tmp_path / alias), "second writer"):
                    pass
    finally:
        proc.kill()
        proc.wait()
    with locks.lock_folder(str(tmp_path / "link-to-ck"), "after"):  # the holder is gone: the alias locks
        assert os.path.exists(locks.lock_path(str(tmp_path / "ck")))
