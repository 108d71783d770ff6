"""`synthgap generate`: synthetic data without Unity as SOLO, Perception or COCO: procedural SynthDet-style
products, or (``--assets``) real product cut-outs pasted into randomized scenes."""

from __future__ import annotations

import click

FORMATS = ("solo", "perception", "coco")  # == synthgap.generate.FORMATS (not imported: keeps --help fast)
STYLES = ("synthetic", "target")
LAYOUTS = ("shelf", "table", "free")  # == synthgap.generate.layout.LAYOUTS
# PasteConfig's defaults as the help text shows them (tests/cli/test_generate.py checks they agree)
PASTE_DEFAULTS = {"layout": "shelf", "objects_per_frame": (8, 20), "object_height": (60.0, 160.0), "rotation": 10.0,
                  "max_overlap": 0.2, "hue": 15.0, "brightness": 0.2, "contrast": 0.2, "blur": 1.0, "noise": 0.02,
                  "background": "procedural", "distractors": (0, 4), "min_visible": 0.25}
PASTE_ONLY = ("assets_format", "assets_option", "single_class", "layout", "object_height", "rotation", "max_overlap",
              "hue", "brightness", "contrast", "blur", "noise", "background", "distractors", "min_visible")


def _parse_range(value: str | None, flag: str, cast=int, top: float = 10_000):
    """``"20"`` -> (20, 20); ``"15-25"`` -> (15, 25); 0 <= MIN <= MAX <= top."""
    if value is None:
        return None
    try:
        parts = [cast(v) for v in value.replace(",", "-").split("-")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 0 or parts[0] > parts[1] or parts[1] > top:
        raise click.BadParameter(f"expected N or MIN-MAX with 0 <= MIN <= MAX <= {top:g}, got {value!r}",
                                 param_hint=flag)
    return parts[0], parts[1]


def _parse_objects(value: str | None) -> tuple[int, int] | None:
    return _parse_range(value, "--objects-per-frame")


def _parse_options(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {v!r}", param_hint="--assets-option")
        out[key.strip()] = val
    return out


def _fraction(flag: str, top: float = 1.0):
    def check(ctx, param, value):
        if value is not None and not 0 <= value <= top:
            raise click.BadParameter(f"must be between 0 and {top:g}, got {value:g}", param_hint=flag)
        return value
    return check


@click.command()
@click.option("--out", required=True, help="Output folder (local path or URI). Must be empty unless --force, or "
              "(with --shard) hold only other shards of the same plan. One run at a time: a second run into the "
              "same folder fails at once.")
@click.option("--frames", required=True, type=int, help="Frames of the whole dataset (all shards together).")
@click.option("--format", "format_", type=click.Choice(FORMATS), default="solo", show_default=True,
              help="Output dataset format.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed = byte-identical output.")
@click.option("--width", type=int, default=640, show_default=True,
              help="Image width, pixels (16 to 8192; width x height at most 4096 x 4096).")
@click.option("--height", type=int, default=480, show_default=True, help="Image height, pixels (16 to 8192).")
@click.option("--classes", "classes_file", default=None,
              help="Procedural mode: class list file: JSON list, JSON {'object_type_names': [...]}, or one name per "
                   "line. Default: the 63 UnityGroceries products.")
@click.option("--shard", default="0/1", show_default=True,
              help="i/n: render only frames k with k % n == i (global indices kept: shards of one plan write into "
                   "one folder, at the same time or one after another, and give the unsharded dataset).")
@click.option("--style", type=click.Choice(STYLES), default="synthetic", show_default=True,
              help="Procedural mode: synthetic: SynthDet randomizers, PNG. target: a photo-like procedural stand-in "
                   "domain (shelves, camera noise, vignetting, JPEG), not real photographs.")
@click.option("--objects-per-frame", default=None,
              help="N or MIN-MAX. Procedural: foreground slots per frame, distractors included (default 15-25). "
                   "--assets: products tried per frame for table/free, an upper bound for shelf (default 8-20).")
@click.option("--assets", default=None,
              help="Cut-and-paste mode: the asset catalog, a dataset with masks (read by open_dataset: Supervisely, "
                   "COCO segmentation, ...) or a folder of RGBA PNGs with one subfolder per class (alpha = mask). "
                   "Default: none (procedural mode).")
@click.option("--assets-format", default=None,
              help="--assets: the catalog's format (a reader name, or png-folder). Default: detected.")
@click.option("--assets-option", multiple=True,
              help="--assets: KEY=VALUE passed to the catalog's reader (e.g. the option that takes classes from "
                   "a tag); repeatable. Default: none.")
@click.option("--single-class", default=None,
              help="--assets: one class of this name for every cut-out (a class-agnostic study, e.g. 'product'). "
                   "Default: the catalog's classes.")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="--assets: shelf (rows of products standing side by side, touching), table (clutter painted "
                   "back to front) or free (anywhere). Default: shelf.")
@click.option("--object-height", default=None,
              help="--assets: product height before rotation, pixels, N (off: every product N px) or MIN-MAX. "
                   "Default: 60-160.")
@click.option("--rotation", type=float, default=None, callback=_fraction("--rotation", 180.0),
              help="--assets: in-plane rotation U(-DEG, DEG), degrees (0 = off, max 180). Default: 10.")
@click.option("--max-overlap", type=float, default=None, callback=_fraction("--max-overlap", 0.9),
              help="--assets: overlap between products, a fraction (0 = off: touching on shelves, apart otherwise; "
                   "max 0.9): shelf: of a product's width over its neighbour; table/free: intersection over the "
                   "smaller box. Default: 0.2.")
@click.option("--hue", type=float, default=None, callback=_fraction("--hue", 180.0),
              help="--assets: per product hue rotation U(-DEG, DEG), degrees (0 = off). Default: 15.")
@click.option("--brightness", type=float, default=None, callback=_fraction("--brightness"),
              help="--assets: per product gain U(1 - B, 1 + B), a fraction (0 = off). Default: 0.2.")
@click.option("--contrast", type=float, default=None, callback=_fraction("--contrast"),
              help="--assets: per product contrast U(1 - C, 1 + C) around its mean colour (0 = off). Default: 0.2.")
@click.option("--blur", type=float, default=None, callback=_fraction("--blur", 20.0),
              help="--assets: per frame Gaussian blur sigma U(0, PX), pixels (0 = off). Default: 1.")
@click.option("--noise", type=float, default=None, callback=_fraction("--noise"),
              help="--assets: per frame white-noise std U(0, F), a fraction of 255 (0 = off). Default: 0.02.")
@click.option("--background", default=None,
              help="--assets: procedural (shelf boards for shelf, SynthDet clutter otherwise), plain (off: grey "
                   "128) or a folder of images (random crops, flips). Default: procedural.")
@click.option("--distractors", default=None,
              help="--assets: unlabelled clutter shapes per frame, N or MIN-MAX (0 = off). Default: 0-4.")
@click.option("--min-visible", type=float, default=None, callback=_fraction("--min-visible"),
              help="--assets: a product with a smaller visible fraction of its in-frame silhouette is dropped (no "
                   "box, erased from the instance map). Default: 0.25.")
@click.option("--force", is_flag=True, help="Replace the output folder: the dataset is written beside it and swapped "
              "in when complete (nothing of an earlier or killed run remains; on failure the old folder is kept). "
              "With --shard i/n (n > 1): replace this shard's frames only, keep the other shards' frames of the "
              "same plan, and empty a folder of another plan first.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def generate(ctx, out, frames, format_, seed, width, height, classes_file, shard, style, objects_per_frame, assets,
             force, quiet, **paste):
    """Generate a synthetic object-detection dataset of grocery products (SynthDet-style).

    Procedural mode (default): made-up 2D product designs. Cut-and-paste mode (--assets CATALOG): real
    product cut-outs pasted into randomized scenes. Boxes are the bounding boxes of each object's visible
    pixels in a rendered instance map (written too), so occlusion and cropping are exact. Examples:

    \b
        synthgap generate --out data/synth --frames 1000 --format solo --seed 0
        synthgap generate --out data/paste --frames 1000 --assets CATALOG --single-class product
    """
    from synthgap.errors import SynthgapError
    from synthgap.io import storage
    from synthgap.generate import SIDE_FOLDER, parse_shard
    from synthgap.generate.render import check_frame_size

    if frames < 1:
        raise click.BadParameter(f"must be >= 1, got {frames}", param_hint="--frames")
    try:
        check_frame_size(width, height)
    except SynthgapError as e:
        raise click.BadParameter(str(e), param_hint="--width/--height") from None
    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from None
    objects = _parse_objects(objects_per_frame)
    given = [k for k in PASTE_ONLY if paste[k] not in (None, ())]
    if assets is None and given:
        raise click.BadParameter("applies to the cut-and-paste mode only (--assets CATALOG)",
                                 param_hint="--" + given[0].replace("_", "-"))
    if assets is not None:
        if classes_file is not None:
            raise click.BadParameter("classes come from the --assets catalog (or --single-class)", param_hint="--classes")
        if ctx.get_parameter_source("style") is not click.core.ParameterSource.DEFAULT:
            raise click.BadParameter("applies to the procedural mode; --assets pastes real cut-outs", param_hint="--style")
        if not storage.exists(assets):
            raise click.BadParameter(f"asset catalog {assets!r} does not exist", param_hint="--assets")
        background = paste["background"]
        if background is not None and background not in ("procedural", "plain") and not storage.isdir(background):
            raise click.BadParameter(f"expected procedural, plain or a folder of images, got {background!r}",
                                     param_hint="--background")
        config = _paste_config(paste, objects)
    if classes_file is not None and not storage.exists(classes_file):
        raise click.BadParameter(f"class list file {classes_file!r} does not exist", param_hint="--classes")
    # a shard may start while another shard of the same run is claiming the folder (its side folder made, its
    # plan record not yet renamed into place): the generator's claim under the folder's lock compares the plans
    if not force and storage.isdir(out) and storage.listdir(out) and not (
            shard_t[1] > 1 and storage.isdir(storage.join(out, SIDE_FOLDER))):
        raise click.ClickException(f"{out} is not empty; choose an empty folder or pass --force to replace it")
    if assets is None:
        from synthgap.generate import generate as run

        summary = run(out, frames, format=format_, seed=seed, width=width, height=height, classes=classes_file,
                      shard=shard_t, style=style, objects_per_frame=objects, progress=not quiet, replace_out=force)
        what = summary["style"]
    else:
        from synthgap.generate import generate_paste, load_catalog

        catalog = load_catalog(assets, paste["assets_format"], single_class=paste["single_class"],
                               options=_parse_options(paste["assets_option"]))
        click.echo(f"catalog {assets}: {len(catalog)} cut-outs of {len(catalog.class_names)} classes"
                   + (f" ({len(catalog.skipped)} boxes without a usable mask left out)" if catalog.skipped else ""))
        summary = generate_paste(out, frames, catalog, format=format_, seed=seed, width=width, height=height,
                                 shard=shard_t, config=config, progress=not quiet, replace_out=force)
        what = f"paste {summary['layout']}"
    click.echo(f"wrote {summary['frames_written']} of {summary['frames_total']} frames "
               f"(shard {shard_t[0]}/{shard_t[1]}, {what}, {summary['format']}) to {summary['out']}: "
               f"{summary['boxes']} boxes, {summary['dropped_instances']} placed objects without a box (hidden or "
               f"below the size threshold), {summary['frames_per_second']} frames/s")
    if shard_t[1] > 1:
        click.echo(f"{len(summary['shards_done'])} of {shard_t[1]} shards done: the folder holds "
                   f"{summary['dataset_frames']} of {summary['frames_total']} frames")


def _paste_config(paste: dict, objects: tuple[int, int] | None):
    """PasteConfig from the flags given (the others keep PasteConfig's defaults)."""
    from synthgap.generate import PasteConfig

    fields = {k: paste[k] for k in ("layout", "rotation", "max_overlap", "hue", "brightness", "contrast", "blur",
                                    "noise", "background", "min_visible") if paste[k] is not None}
    if objects is not None:
        fields["objects_per_frame"] = objects
    height = _parse_range(paste["object_height"], "--object-height", float, 8192)
    if height is not None:
        if height[0] < 4:
            raise click.BadParameter(f"products must be at least 4 px high, got {paste['object_height']!r}",
                                     param_hint="--object-height")
        fields["object_height"] = height
    distract = _parse_range(paste["distractors"], "--distractors", int, 1000)
    if distract is not None:
        fields["distractors"] = distract
    return PasteConfig(**fields)
