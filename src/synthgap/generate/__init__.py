"""Synthetic data without Unity: `generate` writes a SOLO, legacy Perception or COCO dataset of procedural
product images (SynthDet-style randomizers), `generate_paste` one of real product cut-outs pasted into
randomized scenes (`synthgap.generate.paste`); both take exact boxes from a rendered instance map.

Frame k depends only on (seed, k, total frames), so a run can be split into shards: shard i of n
renders the frames k with ``k % n == i`` and keeps their global index (SOLO ``sequence.k``,
Perception ``rgb_k``, COCO ``image_id = k``). Shards of one plan write into one folder, at the same
time or one after another, and give the unsharded dataset in every format (a COCO shard keeps its
part in ``generator/coco.shard-i-of-n.json`` and rewrites ``annotations.json`` from every part
present when it finishes); see docs/generator.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
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
from synthgap.generate.assets import AssetCatalog, load_catalog
from synthgap.generate.paste import Compositor, PasteConfig
from synthgap.generate.render import STYLES, Renderer, check_frame_size
from synthgap.generate.scene import SceneConfig

FORMATS = ("solo", "perception", "coco")
SIDE_FOLDER = "generator"  # generator parameters and per-frame statistics (not part of the dataset format)

MERGE_WAIT_SECONDS = 600.0  # how long a finishing shard waits for another one's merge (a few seconds in practice)

__all__ = ["FORMATS", "STYLES", "AssetCatalog", "Compositor", "PasteConfig", "Renderer", "SceneConfig",
           "check_frame_size", "default_class_names", "generate", "generate_paste", "load_catalog",
           "load_class_names", "parse_shard", "read_frame_stats", "shard_frames"]


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


def _check_run(frames: int, format: str, width: int, height: int, shard: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(frames, (int, np.integer)) or isinstance(frames, bool) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    check_frame_size(width, height)
    shard = (int(shard[0]), int(shard[1]))
    _check_shard(shard)
    return shard


def generate(out: str, frames: int, format: str = "solo", seed: int = 0, width: int = 640, height: int = 480,
             classes: str | list[str] | None = None, shard: tuple[int, int] = (0, 1), style: str = "synthetic",
             objects_per_frame: tuple[int, int] | None = None, config: SceneConfig | None = None,
             progress: bool = True, replace_out: bool = False) -> dict:
    """Render frames ``shard_frames(frames, shard)`` of a ``frames``-frame procedural dataset into ``out``.

    One writer at a time: ``out`` is locked (`synthgap.io.locks`) and a second run into it fails at once,
    naming the first. Shards of one plan (same everything but ``shard[0]``) may write into one folder
    together; a shard whose plan differs from one already in ``out`` (``generator/generation.*.json``,
    written when a run starts) is refused. ``replace_out`` (``--force``): unsharded, the dataset is
    written into a new folder beside ``out`` and swapped in at the end, so ``out`` holds exactly this
    run's dataset (frames of an earlier or killed run are gone) and, if this run fails, the old dataset
    is kept (local paths; on object stores the old objects are deleted first). Sharded (n > 1), only this
    shard's frames are replaced: the other shards' frames of the same plan are kept, and a folder
    holding anything else (another plan) is emptied first.

    Args:
        out: output folder (local path or URI).
        frames: total frames of the whole (unsharded) dataset; sets the scale curriculum.
        format: ``solo`` | ``perception`` | ``coco``.
        width, height: frame size in pixels (16 to 8192 a side, at most 4096 x 4096 pixels).
        classes: None (the 63 UnityGroceries names), a class-list file, or a list of names.
        shard: (i, n): render frames k with k % n == i.
        style: ``synthetic`` (SynthDet randomizers, PNG) or ``target`` (photo-like stand-in, JPEG).
        objects_per_frame: (min, max) foreground slots per frame; overrides ``config``.
        replace_out: replace what ``out`` holds (``synthgap generate --force``), see above.
    Returns a summary dict (frames written, boxes, dropped instances, seconds, frames/s, shards done, paths).
    """
    shard = _check_run(frames, format, width, height, shard)
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    names = check_class_names(list(classes)) if isinstance(classes, (list, tuple)) else load_class_names(classes)
    config = config or SceneConfig()
    if objects_per_frame is not None:
        config = replace(config, objects_per_frame=tuple(objects_per_frame))
    ext = "png" if style == "synthetic" else "jpg"
    plan = {"generator": "synthgap.generate", "format": format, "style": style, "seed": seed, "width": width,
            "height": height, "frames_total": frames, "shard": list(shard),
            "frames_written": len(shard_frames(frames, shard)), "frame_rule": "frame k is written by shard k % n",
            "image_format": ext, "classes": names, "config": json.loads(json.dumps(asdict(config)))}
    summary = _write_dataset(out, plan, label_map(names), lambda: Renderer(
        names, width=width, height=height, seed=seed, style=style, config=config), replace_out, progress)
    return {"out": str(out), "format": format, "style": style, "seed": seed, "frames_total": frames,
            "shard": shard, "frames_written": plan["frames_written"], "classes": len(names), **summary}


def generate_paste(out: str, frames: int, catalog: AssetCatalog | str, format: str = "solo", seed: int = 0,
                   width: int = 640, height: int = 480, shard: tuple[int, int] = (0, 1),
                   config: PasteConfig | None = None, progress: bool = True, replace_out: bool = False) -> dict:
    """Render frames of a cut-and-paste dataset (real product cut-outs in randomized scenes) into ``out``.

    ``catalog``: an `AssetCatalog` (`synthgap.generate.assets.load_catalog` reads one, with reader options
    and ``single_class``) or a path read with the defaults. ``config``: the randomizers (`PasteConfig`).
    Classes are the catalog's (label ids 1..N in its order). Locking, shards, ``replace_out`` and the
    outputs are those of `generate` (the plan also records the catalog's digest: shards of one folder
    need the same cut-outs). Returns the same summary, plus ``catalog``.
    """
    shard = _check_run(frames, format, width, height, shard)
    if not isinstance(catalog, AssetCatalog):
        catalog = load_catalog(catalog)
    config = config or PasteConfig()
    names = list(catalog.class_names)
    plan = {"generator": "synthgap.generate.paste", "format": format, "style": "paste", "seed": seed,
            "width": width, "height": height, "frames_total": frames, "shard": list(shard),
            "frames_written": len(shard_frames(frames, shard)), "frame_rule": "frame k is written by shard k % n",
            "image_format": "png", "classes": names, "assets": catalog.describe(),
            "config": json.loads(json.dumps(asdict(config)))}
    summary = _write_dataset(out, plan, label_map(names), lambda: Compositor(
        catalog, width=width, height=height, seed=seed, config=config), replace_out, progress)
    return {"out": str(out), "format": format, "style": "paste", "layout": config.layout, "seed": seed,
            "frames_total": frames, "shard": shard, "frames_written": plan["frames_written"], "classes": len(names),
            "catalog": plan["assets"], **summary}


def _write_dataset(out: str, plan: dict, labels: dict[int, str], make_renderer, replace_out: bool,
                   progress: bool) -> dict:
    """Lock ``out``, claim it for ``plan`` (shards) or prepare the replacement folder (``replace_out``),
    render the shard's frames with ``make_renderer()`` and finish the dataset."""
    shard = tuple(plan["shard"])
    tag = f"shard-{shard[0]}-of-{shard[1]}"
    sharded = shard[1] > 1
    with contextlib.ExitStack() as held:
        held.enter_context(locks.lock_folder(out, "synthgap generate", shared=sharded))
        if sharded:  # shards of one plan share the folder; one run per shard
            held.enter_context(locks.lock_folder(out, f"synthgap generate --shard {shard[0]}/{shard[1]}", key=tag))
            with _waiting_lock(out, "plan"):
                _claim(out, plan, tag, replace_out)
        target = _new_folder_beside(out) if replace_out and not sharded else out
        try:
            summary = _render(target, plan, tag, labels, make_renderer(), progress, sharded)
        except BaseException:
            if replace_out and not sharded:
                storage.remove(target)
            raise
        if replace_out and not sharded:
            _swap_in(target, out)
    return summary


def _render(out: str, plan: dict, tag: str, labels: dict[int, str], renderer, progress: bool, sharded: bool) -> dict:
    """Render and write the shard's frames into ``out``; the plan first (unless a shard claimed the folder
    with it already), the per-frame statistics and the dataset-wide files last."""
    format, ext, frames = plan["format"], plan["image_format"], plan["frames_total"]
    indices = shard_frames(frames, tuple(plan["shard"]))
    if not sharded:
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
    seconds = time.perf_counter() - start
    storage.write_text(storage.join(out, SIDE_FOLDER, f"frames.{tag}.jsonl"), "".join(s + "\n" for s in stats_lines))
    # dataset-wide files (SOLO metadata.json counts the sequences on disk, COCO annotations.json joins every
    # shard's part): one shard at a time, so the last one to finish sees every other shard's frames
    with _waiting_lock(out, "merge") if sharded else contextlib.nullcontext():
        if format == "coco":
            storage.write_json(storage.join(out, SIDE_FOLDER, f"coco.{tag}.json"), writer.to_dict(), indent=None)
            _merge_coco_parts(out, plan["shard"][1])
        else:
            writer.close()
        done = _shards_done(out, plan["shard"][1])
    return {"boxes": n_boxes, "dropped_instances": n_dropped, "seconds": round(seconds, 3),
            "frames_per_second": round(len(indices) / seconds, 2) if seconds else None, "shards_done": done,
            "dataset_frames": sum(len(shard_frames(frames, (i, plan["shard"][1]))) for i in done)}


_SHARD_FILE = re.compile(r"^(?:frames|coco)\.shard-(\d+)-of-(\d+)\.json(?:l)?$")


def _shard_files(out: str, kind: str, n: int) -> dict[int, str]:
    """shard index -> path of ``generator/<kind>.shard-i-of-n.*`` files in ``out``."""
    found = {}
    for path in storage.glob(storage.join(out, SIDE_FOLDER, f"{kind}.shard-*-of-{n}.json*")):
        m = _SHARD_FILE.match(path.replace("\\", "/").rsplit("/", 1)[-1])
        if m and int(m.group(2)) == n:
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def _shards_done(out: str, n: int) -> list[int]:
    """Indices of the shards of an n-shard plan that finished in ``out`` (their frame statistics are there)."""
    return list(_shard_files(out, "frames", n))


def _merge_coco_parts(out: str, n: int) -> None:
    """Write ``annotations.json`` from every shard's part in ``generator/``: images by id, annotation ids
    renumbered 1.. in image order, so the shards of a plan give the unsharded file byte for byte."""
    parts = [(path, storage.read_json(path)) for path in _shard_files(out, "coco", n).values()]
    images = sorted((im for _, p in parts for im in p["images"]), key=lambda im: im["id"])
    ids = [im["id"] for im in images]
    if len(set(ids)) != len(ids):
        raise SynthgapError(f"{out}: the COCO parts {[path for path, _ in parts]} list an image id twice; remove "
                            "the folder and generate again")
    by_image: dict[int, list[dict]] = {}
    for _, p in parts:
        for a in p["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
    annotations = []
    for i in ids:
        for a in by_image.get(i, ()):
            annotations.append({**a, "id": len(annotations) + 1})
    first = parts[0][1]
    doc = {"info": first["info"], "images": images, "annotations": annotations, "categories": first["categories"]}
    from synthgap.data.coco import DEFAULT_JSON_NAME

    storage.write_text(storage.join(out, DEFAULT_JSON_NAME), json.dumps(doc, separators=(",", ":"), allow_nan=False)
                       + "\n")


@contextlib.contextmanager
def _waiting_lock(out: str, key: str, timeout: float = MERGE_WAIT_SECONDS):
    """Hold the exclusive lock ``key`` of ``out``, waiting for another holder (a short critical section of
    another shard: claiming the folder, or merging) instead of failing at once."""
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(locks.lock_folder(out, f"synthgap generate ({key})", key=key))
                break
            except locks.FolderLockedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield


def _plan_key(p: dict) -> dict:
    """What shards of one folder must agree on: everything but the shard index (and the catalog's path)."""
    key = {k: v for k, v in p.items() if k not in ("shard", "frames_written")} | {"shards": p["shard"][1]}
    if isinstance(key.get("assets"), dict):
        key["assets"] = {k: v for k, v in key["assets"].items() if k != "source"}
    return key


def _other_plans(out: str, plan: dict) -> list[str]:
    """Plan files in ``out`` of another plan than ``plan`` (unreadable ones count as another)."""
    others = []
    for path in storage.glob(storage.join(out, SIDE_FOLDER, "generation.*.json")):
        try:
            same = _plan_key(storage.read_json(path)) == _plan_key(plan)
        except (ValueError, KeyError, TypeError, IndexError):
            same = False
        if not same:
            others.append(path)
    return others


def _claim(out: str, plan: dict, tag: str, replace_out: bool) -> None:
    """Make ``out`` a folder of ``plan``'s shards and record this shard's plan in it. Without
    ``replace_out`` a folder of another plan is refused; with it, a folder holding anything but this
    plan's shards is emptied (the other shards of this plan are kept)."""
    if replace_out:
        plans = storage.glob(storage.join(out, SIDE_FOLDER, "generation.*.json"))
        if storage.exists(out) and (_other_plans(out, plan) or not plans):
            storage.remove(out)
    else:
        _check_same_plan(out, plan)
    storage.write_json(storage.join(out, SIDE_FOLDER, f"generation.{tag}.json"), plan)


def _check_same_plan(out: str, plan: dict) -> None:
    """Refuse a shard whose plan differs from a plan already in ``out`` (all but the shard index must agree)."""
    others = _other_plans(out, plan)
    if others:
        raise SynthgapError(f"{out} holds the output of another generate plan ({others[0]}): shards written into "
                            "one folder need the same frames, seed, format, style, size, classes, assets and shard "
                            "count; choose another --out, or --force to replace it")


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

    Each dict has ``frame``, ``boxes``, ``labels``, ``visible_pixels``, ``full_pixels`` (per box, in box
    order), ``dropped_instances``, ``placed_objects`` and the camera values; procedural frames add
    ``occluder_coverage`` and the light, cut-and-paste frames ``occluded_fraction``, ``assets`` and
    ``hue_gain_contrast`` per box (see docs/generator.md).
    """
    rows = []
    for path in storage.glob(storage.join(root, SIDE_FOLDER, "frames.*.jsonl")):
        rows += [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["frame"])
