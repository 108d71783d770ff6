"""Procedural synthetic data (SynthDet-style, no Unity): `generate` writes a SOLO, legacy Perception or
COCO dataset of product images with exact boxes from a rendered instance map.

Frame k depends only on (seed, k, total frames), so a run can be split into shards: shard i of n
renders the frames k with ``k % n == i`` and keeps their global index (SOLO ``sequence.k``,
Perception ``rgb_k``, COCO ``image_id = k``); see docs/generator.md for merging shard folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import asdict, replace

import numpy as np
from PIL import Image

from synthgap.io import locks, storage
from synthgap.errors import SynthgapError
from synthgap.generate.classes import check_class_names, default_class_names, label_map, load_class_names
from synthgap.data.png import encode_png
from synthgap.generate.render import STYLES, Renderer
from synthgap.generate.scene import SceneConfig

FORMATS = ("solo", "perception", "coco")
SIDE_FOLDER = "generator"  # generator parameters and per-frame statistics (not part of the dataset format)

__all__ = ["FORMATS", "STYLES", "Renderer", "SceneConfig", "default_class_names", "generate", "load_class_names",
           "parse_shard", "read_frame_stats", "shard_frames"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), with 0 <= i < n; ValueError with the reason otherwise."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    _check_shard((i, n))
    return i, n


def _check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is invalid: need n >= 1 and 0 <= i < n")


def shard_frames(frames: int, shard: tuple[int, int] = (0, 1)) -> range:
    """Global frame indices rendered by shard (i, n): k in [0, frames) with k % n == i."""
    _check_shard(shard)
    return range(shard[0], frames, shard[1])


def _encode(rgb: np.ndarray, ext: str, quality: int) -> bytes:
    if ext == "png":
        return encode_png(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _make_writer(format: str, out: str, labels: dict[int, str]):
    if format == "solo":
        from synthgap.data.solo import SoloWriter

        return SoloWriter(out, labels)
    if format == "perception":
        from synthgap.data.perception import PerceptionWriter

        return PerceptionWriter(out, labels)
    from synthgap.data.coco import CocoWriter

    return CocoWriter(out, labels)


def generate(out: str, frames: int, format: str = "solo", seed: int = 0, width: int = 640, height: int = 480,
             classes: str | list[str] | None = None, shard: tuple[int, int] = (0, 1), style: str = "synthetic",
             objects_per_frame: tuple[int, int] | None = None, config: SceneConfig | None = None,
             progress: bool = True, replace_out: bool = False) -> dict:
    """Render frames ``shard_frames(frames, shard)`` of a ``frames``-frame dataset into ``out``.

    One writer at a time: ``out`` is locked (`synthgap.io.locks`) and a second run into it fails at once,
    naming the first. Shards of one plan (same everything but ``shard[0]``) may write into one folder
    together; a shard whose plan differs from one already in ``out`` (``generator/generation.*.json``,
    written when a run starts) is refused. ``replace_out`` writes into a new folder beside ``out`` and
    swaps it in at the end, so ``out`` holds exactly this run's dataset (frames of an earlier or killed
    run are gone) and, if this run fails, the old dataset is kept (local paths; on object stores the old
    objects are deleted first).

    Args:
        out: output folder (local path or URI).
        frames: total frames of the whole (unsharded) dataset; sets the scale curriculum.
        format: ``solo`` | ``perception`` | ``coco``.
        classes: None (the 63 UnityGroceries names), a class-list file, or a list of names.
        shard: (i, n): render frames k with k % n == i.
        style: ``synthetic`` (SynthDet randomizers, PNG) or ``target`` (photo-like stand-in, JPEG).
        objects_per_frame: (min, max) foreground slots per frame; overrides ``config``.
        replace_out: replace whatever ``out`` holds (``synthgap generate --force``).
    Returns a summary dict (frames written, boxes, dropped instances, seconds, frames/s, paths).
    """
    if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    shard = (int(shard[0]), int(shard[1]))
    indices = shard_frames(frames, shard)
    names = check_class_names(list(classes)) if isinstance(classes, (list, tuple)) else load_class_names(classes)
    config = config or SceneConfig()
    if objects_per_frame is not None:
        config = replace(config, objects_per_frame=tuple(objects_per_frame))
    labels = label_map(names)
    ext = "png" if style == "synthetic" else "jpg"
    tag = f"shard-{shard[0]}-of-{shard[1]}"
    plan = {"generator": "synthgap.generate", "format": format, "style": style, "seed": seed, "width": width,
            "height": height, "frames_total": frames, "shard": list(shard), "frames_written": len(indices),
            "frame_rule": "frame k is written by shard k % n", "image_format": ext, "classes": names,
            "config": json.loads(json.dumps(asdict(config)))}
    sharded = shard[1] > 1 and not replace_out
    with contextlib.ExitStack() as held:
        held.enter_context(locks.lock_folder(out, "synthgap generate", shared=sharded))
        if sharded:  # shards of one plan share the folder; one run per shard
            held.enter_context(locks.lock_folder(out, f"synthgap generate --shard {shard[0]}/{shard[1]}", key=tag))
            _check_same_plan(out, plan)
        target = _new_folder_beside(out) if replace_out else out
        try:
            summary = _render(target, plan, tag, labels, Renderer(names, width=width, height=height, seed=seed,
                                                                  style=style, config=config), indices, progress)
        except BaseException:
            if replace_out:
                storage.remove(target)
            raise
        if replace_out:
            _swap_in(target, out)
    return {"out": str(out), "format": format, "style": style, "seed": seed, "frames_total": frames,
            "shard": shard, "frames_written": len(indices), "classes": len(names), **summary}


def _render(out: str, plan: dict, tag: str, labels: dict[int, str], renderer: Renderer, indices: range,
            progress: bool) -> dict:
    """Render and write the frames ``indices`` into ``out``; the plan first, per-frame statistics last."""
    format, ext, frames = plan["format"], plan["image_format"], plan["frames_total"]
    storage.write_json(storage.join(out, SIDE_FOLDER, f"generation.{tag}.json"), plan)
    writer = _make_writer(format, out, labels)
    stats_lines: list[str] = []
    n_boxes = n_dropped = 0
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(indices), desc=f"generate {plan['style']}", unit="frame", file=sys.stderr,
               disable=not progress)
    try:
        for k in indices:
            rgb, inst, sample = renderer.render(k, frames)
            meta = dict(sample.metadata)
            sample = replace(sample, image=f"frame_{k:06d}.{ext}", metadata={})
            data = _encode(rgb, ext, int(meta.get("jpeg_quality", 90)))
            if format == "coco":
                from synthgap.data.solo import instance_colors

                writer.add(sample, data)
                storage.write_bytes(storage.join(out, "instances", f"frame_{k:06d}.png"),
                                    encode_png(instance_colors(inst), photo=False))
            else:
                writer.add(sample, data, instance_map=inst, index=k, image_ext=ext)
            n_boxes += len(sample)
            n_dropped += int(meta.get("dropped_instances", 0))
            stats_lines.append(json.dumps({"frame": k, "boxes": len(sample), "labels": sample.labels.tolist(),
                                           **meta}, separators=(",", ":")))
            bar.update(1)
    finally:
        bar.close()
    writer.close()
    seconds = time.perf_counter() - start
    storage.write_text(storage.join(out, SIDE_FOLDER, f"frames.{tag}.jsonl"), "".join(s + "\n" for s in stats_lines))
    return {"boxes": n_boxes, "dropped_instances": n_dropped, "seconds": round(seconds, 3),
            "frames_per_second": round(len(indices) / seconds, 2) if seconds else None}


def _check_same_plan(out: str, plan: dict) -> None:
    """Refuse a shard whose plan differs from a plan already in ``out`` (all but the shard index must agree)."""
    def key(p: dict) -> dict:
        return {k: v for k, v in p.items() if k not in ("shard", "frames_written")} | {"shards": p["shard"][1]}

    for path in storage.glob(storage.join(out, SIDE_FOLDER, "generation.*.json")):
        try:
            other = storage.read_json(path)
            same = key(other) == key(plan)
        except (ValueError, KeyError, TypeError, IndexError):
            same = False
        if not same:
            raise SynthgapError(f"{out} holds the output of another generate plan ({path}): shards written into one "
                             "folder need the same frames, seed, format, style, size, classes and shard count; "
                             "choose another --out, or --force to replace it")


def _new_folder_beside(out: str) -> str:
    """An empty folder to render into before it replaces ``out`` (named with this pid, so the next run can
    remove it if this one is killed); object stores: ``out`` itself, emptied."""
    if not storage.is_local(out):
        storage.remove(out)
        return out
    parent = os.path.dirname(os.path.abspath(storage.local_path(out)))
    os.makedirs(parent, exist_ok=True)
    locks.remove_stale_temps(parent)
    path = os.path.join(parent, f".synthgap-replace-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    return path


def _swap_in(new: str, out: str) -> None:
    """Put the finished folder ``new`` in place of ``out`` (two renames; the old tree is deleted after)."""
    if new == out:
        return
    path = storage.local_path(out)
    old = None
    if os.path.lexists(path):
        old = os.path.join(os.path.dirname(new), f".synthgap-old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
    os.rename(new, path)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.unlink(old)


def read_frame_stats(root: str) -> list[dict]:
    """Per-frame generator statistics of a generated dataset (all shards found under ``root``), by frame.

    Each dict has ``frame``, ``boxes``, ``labels``, ``visible_pixels``, ``full_pixels``,
    ``occluder_coverage`` (per box, in box order), ``dropped_instances`` and the light/camera values.
    """
    rows = []
    for path in storage.glob(storage.join(root, SIDE_FOLDER, "frames.*.jsonl")):
        rows += [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["frame"])
