"""`synthgap info` (what is in a dataset, what is wrong with it) and `synthgap convert` (any format -> COCO)."""

from __future__ import annotations

import json
from typing import Any

import click

from synthgap.data.dataset import READERS  # numpy only: keeps `--help` fast

FORMAT_HELP = "Dataset format. Default: detected from the path."
SPLIT_HELP = "Split to read (groceries-real: all, train, val, test, train_small, ...; yolo: all, train, val, " \
             "test). Default: all images."
IMAGE_ROOT_HELP = "coco only: folder that image file_name values are relative to. Default: the JSON's folder, " \
                  "or images/ (or ../<split>/ for instances_<split>.json) when the images are there."
GROUP_BY_HELP = ("With --split train or val of data without split files: datasetinsights' seeded train / val split "
                 "keeping groups of images whole (frames of one video, one session, one SOLO sequence): "
                 "regex:PATTERN (PATTERN's first capture group in the file name, e.g. 'regex:^(IMG_\\d+)_'), folder "
                 "(the image's folder) or field:NAME (a sample metadata field, e.g. field:sequence). Prints the "
                 "validation share reached. Default: no grouping (--split then applies to groceries-real and yolo).")
MAX_LISTED_PROBLEMS = 20


def _open(path: str, format: str | None, split: str | None, image_root: str | None, skip_invalid: bool,
          group: tuple[str, float, int] | None = None):
    """open_dataset with the options that apply to the format; ``group`` (group_by, val_fraction, seed): then
    ``split`` is a generated train / val split keeping groups whole (`synthgap.data.splits.generated_split`)."""
    from synthgap.io import storage
    from synthgap.data import detect_format, open_dataset

    if not storage.exists(path):
        raise click.ClickException(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    options: dict[str, Any] = {}
    if group is not None and split not in ("train", "val"):
        raise click.UsageError("--group-by needs --split train or --split val (the generated split it draws)")
    if split is not None and group is None:
        if fmt not in ("groceries-real", "yolo"):
            raise click.UsageError(f"--split applies to groceries-real and yolo datasets, not {fmt}")
        options["split"] = split
    if image_root is not None:
        if fmt != "coco":
            raise click.UsageError(f"--image-root applies to coco datasets, not {fmt}")
        options["image_root"] = image_root
    try:
        ds = open_dataset(path, fmt, skip_invalid=skip_invalid, **options)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    if group is not None:
        from synthgap.data.splits import generated_split

        ds = generated_split(ds, split, group_by=group[0], val_fraction=group[1], seed=group[2])
        click.echo(f"{path}: {ds.description}")
    return ds


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
@click.option("--decode", is_flag=True, default=False,
              help="Decode every image file completely and report those that do not decode (0 bytes, truncated, "
                   "not an image) or whose size differs from the annotation. Slow: every pixel of every image is decoded. "
                   "Default: only check that image files exist.")
@click.option("--leakage", "leakage_pool", default=None, metavar="POOL",
              help="A training pool (path or URI, any format): for each image of PATH, its nearest image in POOL by "
                   "perceptual hash (pHash, near-copy at <= 10 of 64 bits differing: the same picture re-encoded, "
                   "resized or shifted a little); prints how many have a near-copy there (docs/training.md, "
                   "'Honest splits'). Decodes every image of both at reduced size. Default: not checked.")
@click.option("--leakage-features", default=None, metavar="CHECKPOINT",
              help="With --leakage: also by the cosine similarity of this trained checkpoint's pooled backbone "
                   "features (near-copy at >= 0.8; finds other views of one scene, e.g. frames of one video).")
def info(path, format, split, image_root, skip_invalid, as_json, decode, leakage_pool, leakage_features):
    """Summarise the dataset at PATH (local path or URI) and list every problem found in it. A checkpoint
    PATH (.estimator, .pth, .pt) is described instead: architecture, classes, epoch, metrics, its config.

    Reports the format, number of images and boxes, classes with their box counts, images without
    boxes, box sizes (pixels) and each invalid record with its file, record and field. Every record
    is scanned; exits 1 when a problem is found unless --skip-invalid is given. Warnings (boxes that
    run past the image edge: kept as written, clipped for training) and captures of sensors that are
    not RGB cameras (left out) are listed but are not problems.
    """
    from synthgap.cli.engine import checkpoint_info
    from synthgap.data.info import dataset_info

    if checkpoint_info(path, as_json):  # a checkpoint (.estimator, .pth, .pt): what it holds, not a dataset
        return
    if leakage_features is not None and leakage_pool is None:
        raise click.UsageError("--leakage-features goes with --leakage POOL")
    ds = _open(path, format, split, image_root, skip_invalid=True)
    report, problems = dataset_info(ds, decode=decode)
    if leakage_pool is not None:  # near-copies of PATH's images in the training pool (synthgap.data.leakage)
        from synthgap.data.leakage import dataset_leakage

        extract = None
        if leakage_features is not None:
            from synthgap.stats.features import checkpoint_backbone, image_features

            extract = image_features(checkpoint_backbone(leakage_features))
        found = dataset_leakage(leakage_pool, ds, features=extract)
        report["leakage"] = [r.to_dict() for r in found]
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
        if report["skipped_sensors"]:
            parts = ", ".join(f"{n} {k}" for k, n in report["skipped_sensors"].items())
            click.echo(f"skipped captures: {parts} (sensors that are not RGB cameras)")
        if report["images_exif_rotated"] is not None:
            click.echo(f"decoded: {report['images_exif_rotated']} images turned upright by their EXIF orientation, "
                       f"{report['images_size_mismatch']} not the size their annotation says")
        overhanging = report["warnings"]["boxes_partly_outside_image"]
        if overhanging:
            click.echo(f"warnings: {overhanging} boxes run past the image edge (kept as written; clipped for "
                       "training)")
        if problems:
            parts = ", ".join(f"{n} {k}" for k, n in report["problem_counts"].items())
            click.echo(f"problems: {len(problems)} ({parts})")
            _print_problems(problems)
        else:
            click.echo("problems: none" + ("" if decode else " (image files exist; --decode decodes them)"))
        if leakage_pool is not None:
            for r in found:
                click.echo(f"leakage: {r.text()}")
    if problems and not skip_invalid:
        click.get_current_context().exit(1)


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--to", "to", type=click.Choice(["coco", "yolo", "fiftyone"]), default="coco", show_default=True,
              help="coco: COCO instances JSON. yolo: Ultralytics' layout (images/, labels/ with normalised "
                   "class cx cy w h, data.yaml). fiftyone: FiftyOne's COCODetectionDataset layout (data/, "
                   "labels.json) plus --predictions as predictions.json; DST is replaced as a whole, so it may not "
                   "hold SRC or the predictions.")
@click.option("--subset", default="train", show_default=True,
              help="yolo only: the subset written (images/SUBSET, labels/SUBSET, its key in data.yaml); "
                   "convert train, val and test into one DST one after the other.")
@click.option("--predictions", default=None,
              help="fiftyone only: a run's predictions.json (COCO results, from `synthgap evaluate`) on SRC.")
@click.option("--from", "format", type=click.Choice(list(READERS)), default=None, help=FORMAT_HELP)
@click.option("--split", default=None, help=SPLIT_HELP)
@click.option("--image-root", default=None, help=IMAGE_ROOT_HELP)
@click.option("--copy-images", is_flag=True, default=False,
              help="Copy image files into DST/images/ and reference them relatively; only files that decode as "
                   "images are copied (default: reference the source images by absolute path/URI).")
@click.option("--skip-invalid", is_flag=True, default=False,
              help="Leave invalid records out and report how many and why (default: stop at the first one).")
@click.option("--group-by", default=None, metavar="SPEC", help=GROUP_BY_HELP)
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="--group-by: the validation share asked for, of the images (whole groups "
                                      "come as near as they can).")
@click.option("--split-seed", type=int, default=47, show_default=True,
              help="--group-by: seed of the group draw (datasetinsights' 47).")
def convert(src, dst, to, subset, predictions, format, split, image_root, copy_images, skip_invalid, group_by,
            val_fraction, split_seed):
    """Convert the dataset at SRC to COCO (or YOLO, or a FiftyOne export of a run) at DST.

    COCO: DST is a .json file path or a folder (the JSON is then DST/annotations.json). Boxes are copied
    exactly (xywh pixels); categories come from the source's label map; annotation ids are 1..N.
    YOLO: DST is a folder; images are copied, boxes clipped to the image and normalised, classes
    numbered 0..N-1 in label id order. FiftyOne: DST is a folder; docs/training.md shows the loader.
    """
    if (predictions is not None) != (to == "fiftyone"):
        raise click.UsageError("--predictions goes with --to fiftyone (and --to fiftyone needs it)")
    if to == "yolo" and (not subset or "/" in subset or "\\" in subset or subset in (".", "..")):
        raise click.BadParameter(f"a plain folder name (train, val, test), got {subset!r}", param_hint="--subset")
    from synthgap.data.convert import check_destination, convert_dataset

    check_destination(src, dst, copy_images=copy_images and to == "coco")
    group = (group_by, val_fraction, split_seed) if group_by is not None else None
    ds = _open(src, format, split, image_root, skip_invalid=skip_invalid, group=group)
    done = convert_dataset(ds, src, dst, to, subset=subset, predictions=predictions, copy_images=copy_images,
                           skip_invalid=skip_invalid)
    if to == "coco":
        click.echo(f"wrote {done.images} images, {done.boxes} boxes, {done.classes} classes "
                   f"({done.source_format} -> coco) to {done.path}")
    elif to == "yolo":
        click.echo(f"wrote {done.images} images, {done.boxes} boxes, {done.classes} classes "
                   f"({done.source_format} -> yolo, subset {subset}) to {dst}; data.yaml: {done.yaml_path}")
        if done.dropped_boxes:
            click.echo(f"dropped {done.dropped_boxes} boxes that lie entirely outside their image")
    else:
        click.echo(f"wrote {done.images} images, {done.boxes} ground-truth boxes and {done.detections} detections "
                   f"({done.source_format} -> fiftyone) to {dst} (labels.json, predictions.json, data/); "
                   "docs/training.md shows how to load it")
    if done.skipped:
        from synthgap.data.info import problem_counts

        parts = ", ".join(f"{n} {k}" for k, n in problem_counts(done.skipped).items())
        click.echo(f"skipped {len(done.skipped)} invalid records ({parts}):")
        _print_problems(done.skipped)
    elif to == "coco":
        click.echo("skipped 0 records")
