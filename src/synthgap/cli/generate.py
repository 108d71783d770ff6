"""`synthgap generate`: procedural SynthDet-style data (no Unity) as SOLO, Perception or COCO.

(The `demo` command also lives in this module; it is added below `generate`.)
"""

from __future__ import annotations

import click

FORMATS = ("solo", "perception", "coco")  # == synthgap.generate.FORMATS (not imported: keeps --help fast)
STYLES = ("synthetic", "target")


def _parse_objects(value: str | None) -> tuple[int, int] | None:
    """``"20"`` -> (20, 20); ``"15-25"`` -> (15, 25)."""
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.replace(",", "-").split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 0 or parts[0] > parts[1]:
        raise click.BadParameter(f"expected N or MIN-MAX with 0 <= MIN <= MAX, got {value!r}",
                                 param_hint="--objects-per-frame")
    return parts[0], parts[1]


@click.command()
@click.option("--out", required=True, help="Output folder (local path or URI). Must be empty unless --force.")
@click.option("--frames", required=True, type=int, help="Frames of the whole dataset (all shards together).")
@click.option("--format", "format_", type=click.Choice(FORMATS), default="solo", show_default=True,
              help="Output dataset format.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed = byte-identical output.")
@click.option("--width", type=int, default=640, show_default=True, help="Image width, pixels.")
@click.option("--height", type=int, default=480, show_default=True, help="Image height, pixels.")
@click.option("--classes", "classes_file", default=None,
              help="Class list file: JSON list, JSON {'object_type_names': [...]}, or one name per line. "
                   "Default: the 63 UnityGroceries products.")
@click.option("--shard", default="0/1", show_default=True,
              help="i/n: render only frames k with k % n == i (global indices kept, so shards merge).")
@click.option("--style", type=click.Choice(STYLES), default="synthetic", show_default=True,
              help="synthetic: SynthDet randomizers, PNG. target: a photo-like procedural stand-in domain "
                   "(shelves, camera noise, vignetting, JPEG), not real photographs.")
@click.option("--objects-per-frame", default=None,
              help="Foreground slots per frame, N or MIN-MAX (distractors included). Default 15-25.")
@click.option("--force", is_flag=True, help="Write into a non-empty output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(out, frames, format_, seed, width, height, classes_file, shard, style, objects_per_frame, force, quiet):
    """Generate a synthetic object-detection dataset of grocery-like products (SynthDet-style).

    Boxes are the bounding boxes of each object's visible pixels in a rendered instance map
    (written too), so occlusion and cropping are exact. Example:

        synthgap generate --out data/synth --frames 1000 --format solo --seed 0
    """
    from synthgap import storage
    from synthgap.data.errors import DatasetError
    from synthgap.generate import generate as run, parse_shard

    if frames < 1:
        raise click.BadParameter(f"must be >= 1, got {frames}", param_hint="--frames")
    if width < 16 or height < 16:
        raise click.BadParameter(f"image size must be at least 16x16, got {width}x{height}", param_hint="--width/--height")
    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from None
    objects = _parse_objects(objects_per_frame)
    if classes_file is not None and not storage.exists(classes_file):
        raise click.BadParameter(f"class list file {classes_file!r} does not exist", param_hint="--classes")
    if not force and storage.isdir(out) and storage.listdir(out):
        raise click.ClickException(f"{out} is not empty; choose an empty folder or pass --force")
    try:
        summary = run(out, frames, format=format_, seed=seed, width=width, height=height, classes=classes_file,
                      shard=shard_t, style=style, objects_per_frame=objects, progress=not quiet)
    except (DatasetError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {summary['frames_written']} of {summary['frames_total']} frames "
               f"(shard {shard_t[0]}/{shard_t[1]}, {summary['style']}, {summary['format']}) to {summary['out']}: "
               f"{summary['boxes']} boxes, {summary['dropped_instances']} placed objects without a box (hidden or below the size threshold), "
               f"{summary['frames_per_second']} frames/s")


# --- `synthgap demo` -------------------------------------------------------------------------


@click.command()
@click.option("--out", default="synthgap-demo", show_default=True,
              help="Output folder (local path or URI). A rerun reuses the datasets and study cells already there.")
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True,
              help="default: under 10 minutes on 2 CPU cores (320 synthetic + 160 target frames, 320x240 "
                   "pixels, 6 classes). tiny: a one-minute smoke run.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out, size, quiet):
    """Run the main job on a laptop CPU: how good is synthetic data for a detector of target images?

    Generates a synthetic training set (SynthDet-style randomizers) and a photo-like target domain (a
    procedural stand-in for real photographs, not real photographs), trains the small CPU model on
    synthetic, on target, and synthetic then target (fine-tuned on half the target training split),
    evaluates all three on the target test split with COCO and datasetinsights metrics, and writes an
    HTML report. Example:

        synthgap demo --out synthgap-demo
    """
    import logging
    import time

    from synthgap import storage
    from synthgap.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    report = run_demo(out, size=size, progress=not quiet)
    summary = storage.read_json(storage.join(out, "study", "summary.json"))
    click.echo(f"\nsynthgap demo finished in {time.perf_counter() - start:.0f} s")
    columns = ["coco AP", "coco AP50", "unity mAPIOU50"]
    click.echo(f"{'run':<16}" + "".join(f"{c:>16}" for c in columns))
    for row in summary["rows"]:
        cells = [row.get(c, {}).get("mean") for c in columns]
        click.echo(f"{row['name']:<16}" + "".join(f"{v:>16.4f}" if v is not None else f"{'-':>16}" for v in cells))
    click.echo(f"\nOutput folder: {out}\nReport:        {report}")
