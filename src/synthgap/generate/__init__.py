"""Procedural synthetic data (SynthDet-style, no Unity): `generate` writes a SOLO, legacy Perception or
COCO dataset of product images with exact boxes from a rendered instance map.

Frame k depends only on (seed, k, total frames), so a run can be split into shards: shard i of n
renders the frames k with ``k % n == i`` and keeps their global index (SOLO ``sequence.k``,
Perception ``rgb_k``, COCO ``image_id = k``); see docs/generator.md for merging shard folders.
"""

from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import asdict, replace

import numpy as np
from PIL import Image

from synthgap import storage
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
             progress: bool = True) -> dict:
    """Render frames ``shard_frames(frames, shard)`` of a ``frames``-frame dataset into ``out``.

    Args:
        out: output folder (local path or URI).
        frames: total frames of the whole (unsharded) dataset; sets the scale curriculum.
        format: ``solo`` | ``perception`` | ``coco``.
        classes: None (the 63 UnityGroceries names), a class-list file, or a list of names.
        shard: (i, n): render frames k with k % n == i.
        style: ``synthetic`` (SynthDet randomizers, PNG) or ``target`` (photo-like stand-in, JPEG).
        objects_per_frame: (min, max) foreground slots per frame; overrides ``config``.
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
    renderer = Renderer(names, width=width, height=height, seed=seed, style=style, config=config)
    ext = "png" if style == "synthetic" else "jpg"
    tag = f"shard-{shard[0]}-of-{shard[1]}"
    writer = _make_writer(format, out, labels)
    stats_lines: list[str] = []
    n_boxes = n_dropped = 0
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(indices), desc=f"generate {style}", unit="frame", file=sys.stderr, disable=not progress)
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
    storage.write_json(storage.join(out, SIDE_FOLDER, f"generation.{tag}.json"), {
        "generator": "synthgap.generate", "format": format, "style": style, "seed": seed, "width": width,
        "height": height, "frames_total": frames, "shard": list(shard), "frames_written": len(indices),
        "frame_rule": "frame k is written by shard k % n", "image_format": ext, "classes": names,
        "config": asdict(config),
    })
    return {"out": str(out), "format": format, "style": style, "seed": seed, "frames_total": frames,
            "shard": shard, "frames_written": len(indices), "boxes": n_boxes, "dropped_instances": n_dropped,
            "seconds": round(seconds, 3), "frames_per_second": round(len(indices) / seconds, 2) if seconds else None,
            "classes": len(names)}


def read_frame_stats(root: str) -> list[dict]:
    """Per-frame generator statistics of a generated dataset (all shards found under ``root``), by frame.

    Each dict has ``frame``, ``boxes``, ``labels``, ``visible_pixels``, ``full_pixels``,
    ``occluder_coverage`` (per box, in box order), ``dropped_instances`` and the light/camera values.
    """
    rows = []
    for path in storage.glob(storage.join(root, SIDE_FOLDER, "frames.*.jsonl")):
        rows += [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["frame"])
