"""`synthgap generate`: procedural SynthDet-style data (no Unity) as SOLO, Perception or COCO."""

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
    if len(parts) != 2 or parts[0] < 0 or parts[0] > parts[1] or parts[1] > 10_000:
        raise click.BadParameter(f"expected N or MIN-MAX with 0 <= MIN <= MAX <= 10000, got {value!r}",
                                 param_hint="--objects-per-frame")
    return parts[0], parts[1]


@click.command()
@click.option("--out", required=True, help="Output folder (local path or URI). Must be empty unless --force, or "
              "(with --shard) hold only other shards of the same plan. One run at a time: a second run into the "
              "same folder fails at once.")
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
@click.option("--force", is_flag=True, help="Replace the output folder: the dataset is written beside it and swapped "
              "in when complete (nothing of an earlier or killed run remains; on failure the old folder is kept).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(out, frames, format_, seed, width, height, classes_file, shard, style, objects_per_frame, force, quiet):
    """Generate a synthetic object-detection dataset of grocery-like products (SynthDet-style).

    Boxes are the bounding boxes of each object's visible pixels in a rendered instance map
    (written too), so occlusion and cropping are exact. Example:

        synthgap generate --out data/synth --frames 1000 --format solo --seed 0
    """
    from synthgap.io import storage
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
    if not force and storage.isdir(out) and storage.listdir(out) and not (
            shard_t[1] > 1 and storage.glob(storage.join(out, "generator", "generation.shard-*.json"))):
        raise click.ClickException(f"{out} is not empty; choose an empty folder or pass --force to replace it")
    summary = run(out, frames, format=format_, seed=seed, width=width, height=height, classes=classes_file,
                  shard=shard_t, style=style, objects_per_frame=objects, progress=not quiet, replace_out=force)
    click.echo(f"wrote {summary['frames_written']} of {summary['frames_total']} frames "
               f"(shard {shard_t[0]}/{shard_t[1]}, {summary['style']}, {summary['format']}) to {summary['out']}: "
               f"{summary['boxes']} boxes, {summary['dropped_instances']} placed objects without a box (hidden or below the size threshold), "
               f"{summary['frames_per_second']} frames/s")
