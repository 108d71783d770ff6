"""`synthgap info` (what is in a dataset, what is wrong with it) and `synthgap convert` (any format -> COCO)."""

from __future__ import annotations

import json
import os
import posixpath
import sys
from typing import Any

import click

from synthgap.data.dataset import READERS  # numpy only: keeps `--help` fast

FORMAT_HELP = "Dataset format. Default: detected from the path."
SPLIT_HELP = "Split to read (groceries-real: all, train, val, test, train_small, ...). Default: all images."
IMAGE_ROOT_HELP = "coco only: folder that image file_name values are relative to. Default: the JSON's folder, " \
                  "or images/ (or ../<split>/ for instances_<split>.json) when the images are there."
MAX_LISTED_PROBLEMS = 20


def _open(path: str, format: str | None, split: str | None, image_root: str | None, skip_invalid: bool):
    """open_dataset with the options that apply to the format; DatasetError/ValueError become click errors."""
    from synthgap import storage
    from synthgap.data import DatasetError, detect_format, open_dataset

    if not storage.exists(path):
        raise click.ClickException(f"{path}: no such file or folder")
    try:
        fmt = format or detect_format(path)
        options: dict[str, Any] = {}
        if split is not None:
            if fmt != "groceries-real":
                raise click.UsageError(f"--split applies to groceries-real datasets, not {fmt}")
            options["split"] = split
        if image_root is not None:
            if fmt != "coco":
                raise click.UsageError(f"--image-root applies to coco datasets, not {fmt}")
            options["image_root"] = image_root
        return open_dataset(path, fmt, skip_invalid=skip_invalid, **options)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)


def _iter_samples(ds, report, desc: str):
    """Yield the dataset's samples; a record that fails while read is added to ``report`` (then skipped)
    when ``report`` is given, else raised as a click error."""
    from synthgap.data import DatasetError

    for i in _progress(range(len(ds)), len(ds), desc):
        try:
            yield ds[i]
        except DatasetError as e:
            if report is None:
                raise click.ClickException(str(e)) from None
            report.add(e)


def _missing_images(samples_images: list[tuple[int, str]]) -> list:
    """DatasetErrors for image files that do not exist: one listing per folder, not one stat per file."""
    from synthgap import storage
    from synthgap.data import DatasetError

    by_folder: dict[str, list[tuple[int, str]]] = {}
    for image_id, uri in samples_images:
        folder = os.path.dirname(uri) if storage.is_local(uri) else posixpath.dirname(uri)
        by_folder.setdefault(folder, []).append((image_id, uri))
    errors = []
    for folder, items in by_folder.items():
        try:
            present = set(storage.listdir(folder or "."))
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        for image_id, uri in items:
            base = os.path.basename(uri) if storage.is_local(uri) else posixpath.basename(uri)
            if base not in present:
                errors.append(DatasetError("image file not found", file=uri, record=f"image_id {image_id}",
                                           field="file_name", kind="missing_image"))
    return errors


def _summary(values) -> dict[str, float]:
    import numpy as np

    if len(values) == 0:
        return {}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "mean": float(np.mean(values)),
            "max": float(np.max(values))}


def dataset_info(ds, problems: list) -> dict:
    """The `info` report of an opened dataset (problems found while scanning are appended to ``problems``)."""
    import numpy as np

    from synthgap.data import DatasetError, SkipReport

    report = SkipReport()
    counts: dict[int, int] = {}
    sizes, areas, images = [], [], []
    n_images = n_empty = 0
    for s in _iter_samples(ds, report, "scanning"):
        n_images += 1
        images.append((s.image_id, s.image))
        if len(s) == 0:
            n_empty += 1
            continue
        labels, n = np.unique(s.labels, return_counts=True)
        for lab, k in zip(labels.tolist(), n.tolist()):
            counts[lab] = counts.get(lab, 0) + k
        sizes.append(s.boxes[:, 2:])
        areas.append(s.box_areas)
    problems.extend(report.errors)
    problems.extend(_missing_images(images))
    if n_images == 0:
        problems.append(DatasetError("the dataset has no usable images", file=str(ds.root), kind="empty_dataset"))
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    area = np.concatenate(areas) if areas else np.zeros(0)
    names = dict(ds.label_map)
    classes = [{"name": names.get(k, f"<unknown {k}>"), "id": int(k), "count": counts.get(k, 0)}
               for k in sorted(set(names) | set(counts))]
    return {
        "path": str(ds.root),
        "format": ds.format,
        "split": getattr(ds, "split", None),
        "images": n_images,
        "boxes": int(len(wh)),
        "classes": classes,
        "images_without_boxes": n_empty,
        "box_size_px": {"width": _summary(wh[:, 0]), "height": _summary(wh[:, 1]), "area": _summary(area),
                        # COCO's size buckets: small < 32^2 <= medium < 96^2 <= large (area in pixels^2)
                        "coco_small": int((area < 32 ** 2).sum()),
                        "coco_medium": int(((area >= 32 ** 2) & (area < 96 ** 2)).sum()),
                        "coco_large": int((area >= 96 ** 2).sum())},
    }


def _problem_dict(e) -> dict:
    return {"kind": e.kind, "file": e.file, "record": None if e.record is None else str(e.record),
            "field": e.field, "message": e.message}


def _problem_counts(problems) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in problems:
        out[e.kind] = out.get(e.kind, 0) + 1
    return dict(sorted(out.items()))


def _print_problems(problems, limit: int = MAX_LISTED_PROBLEMS) -> None:
    for e in problems[:limit]:
        click.echo(f"  - [{e.kind}] {e}")
    if len(problems) > limit:
        click.echo(f"  ... and {len(problems) - limit} more (use --json to list all)")


def _fmt_summary(d: dict) -> str:
    return "n/a" if not d else f"min {d['min']:.1f}, median {d['median']:.1f}, mean {d['mean']:.1f}, max {d['max']:.1f}"


@click.command()
@click.argument("path")
@click.option("--format", "format", type=click.Choice(list(READERS)), default=None, help=FORMAT_HELP)
@click.option("--split", default=None, help=SPLIT_HELP)
@click.option("--image-root", default=None, help=IMAGE_ROOT_HELP)
@click.option("--skip-invalid", is_flag=True, default=False,
              help="Report invalid records but exit 0 (default: exit 1 when any problem is found).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the report as JSON instead of text.")
def info(path, format, split, image_root, skip_invalid, as_json):
    """Summarise the dataset at PATH (local path or URI) and list every problem found in it.

    Reports the format, number of images and boxes, classes with their box counts, images without
    boxes, box sizes (pixels) and each invalid record with its file, record and field. Every record
    is scanned; exits 1 when a problem is found unless --skip-invalid is given.
    """
    ds = _open(path, format, split, image_root, skip_invalid=True)
    problems = list(ds.skipped.errors)
    report = dataset_info(ds, problems)
    report["problems"] = [_problem_dict(e) for e in problems]
    report["problem_counts"] = _problem_counts(problems)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"path:    {report['path']}")
        click.echo(f"format:  {report['format']}" + (f" (split {report['split']})" if report["split"] else ""))
        click.echo(f"images:  {report['images']} ({report['images_without_boxes']} without boxes)")
        click.echo(f"boxes:   {report['boxes']}")
        click.echo(f"classes: {len(report['classes'])}")
        width = max([len(c["name"]) for c in report["classes"]] + [4])
        for c in report["classes"]:
            click.echo(f"  {c['name']:<{width}}  id {c['id']:>4}  {c['count']:>8} boxes")
        b = report["box_size_px"]
        click.echo("box size (pixels):")
        click.echo(f"  width:  {_fmt_summary(b['width'])}")
        click.echo(f"  height: {_fmt_summary(b['height'])}")
        click.echo(f"  area:   {_fmt_summary(b['area'])}  (COCO small/medium/large: "
                   f"{b['coco_small']}/{b['coco_medium']}/{b['coco_large']})")
        if problems:
            parts = ", ".join(f"{n} {k}" for k, n in report["problem_counts"].items())
            click.echo(f"problems: {len(problems)} ({parts})")
            _print_problems(problems)
        else:
            click.echo("problems: none")
    if problems and not skip_invalid:
        click.get_current_context().exit(1)


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--to", "to", type=click.Choice(["coco"]), default="coco", show_default=True,
              help="Output format (only COCO instances JSON is written).")
@click.option("--from", "format", type=click.Choice(list(READERS)), default=None, help=FORMAT_HELP)
@click.option("--split", default=None, help=SPLIT_HELP)
@click.option("--image-root", default=None, help=IMAGE_ROOT_HELP)
@click.option("--copy-images", is_flag=True, default=False,
              help="Copy image files into DST/images/ and reference them relatively (default: reference the "
                   "source images by absolute path/URI).")
@click.option("--skip-invalid", is_flag=True, default=False,
              help="Leave invalid records out and report how many and why (default: stop at the first one).")
def convert(src, dst, to, format, split, image_root, copy_images, skip_invalid):
    """Convert the dataset at SRC to COCO at DST.

    DST is a .json file path or a folder (the JSON is then DST/annotations.json). Boxes are copied
    exactly (xywh pixels); categories come from the source's label map; annotation ids are 1..N.
    """
    from synthgap.data import DatasetError, SkipReport
    from synthgap.data.coco import CocoWriter

    ds = _open(src, format, split, image_root, skip_invalid=skip_invalid)
    report = SkipReport() if skip_invalid else None
    n_boxes = 0
    try:
        with CocoWriter(dst, ds.label_map, copy_images=copy_images) as writer:
            for sample in _iter_samples(ds, report, "converting"):
                writer.add(sample)
                n_boxes += len(sample)
            if len(writer) == 0:  # raising here leaves no file behind
                raise click.ClickException(f"nothing to convert: no usable images in {src}")
    except (DatasetError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    skipped = list(ds.skipped.errors) + (report.errors if report else [])
    click.echo(f"wrote {len(writer)} images, {n_boxes} boxes, {len(ds.label_map)} classes "
               f"({ds.format} -> coco) to {writer.json_path}")
    if skipped:
        parts = ", ".join(f"{n} {k}" for k, n in _problem_counts(skipped).items())
        click.echo(f"skipped {len(skipped)} invalid records ({parts}):")
        _print_problems(skipped)
    else:
        click.echo("skipped 0 records")
