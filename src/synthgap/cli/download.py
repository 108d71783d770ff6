"""`synthgap download`: datasetinsights' download command, resumable, verified and zip-slip safe."""

from __future__ import annotations

import logging

import click

from synthgap.io.download import DATASETS, DEFAULT_RETRIES

_DATASET_HELP = "; ".join(f"{d.name} -> {d.layout}" for d in DATASETS.values())


@click.command()
@click.option("-s", "--source-uri", metavar="URI",
              help="What to download: http(s)://, gs://, s3://, memory:// URI or a local path, of a file "
                   "or (not http) a folder. With --dataset: a mirror or local copy of that dataset.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Local folder to download into (created if missing).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)),
              help=f"A named public dataset, fetched from its published URL with its published checksum "
                   f"and unpacked into OUTPUT as: {_DATASET_HELP}.")
@click.option("--checksum-file", metavar="URI",
              help="Path or URI of a checksum file: 'HEX  name' lines (sha256sum/md5sum output), "
                   "'ALGO:HEX' or a bare value (a bare decimal is datasetinsights' CRC-32).")
@click.option("--checksum", "checksum_spec", metavar="ALGO:HEX",
              help="Expected checksum: sha256, sha1, sha512, md5, crc32 or crc32c, e.g. sha256:9f86...")
@click.option("-b", "--include-binary", is_flag=True,
              help="Kept for datasetinsights compatibility: there it also fetched the images of Unity "
                   "Simulation (usim://) runs; synthgap always downloads whole files and folders.")
@click.option("--access-token", envvar="SYNTHGAP_ACCESS_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Bearer token sent to the source URI's host only (never to a redirect to another "
                   "host, never printed). Prefer the environment variable to keep it out of `ps`.")
@click.option("--extract/--no-extract", default=True, show_default=True,
              help="Unpack zip / tar(.gz|.bz2|.xz) archives into OUTPUT.")
@click.option("--keep-archive", is_flag=True, help="Keep the archive after unpacking it.")
@click.option("--retries", type=click.IntRange(0, 50), default=DEFAULT_RETRIES, show_default=True,
              help="Retries in a row on transient errors (resets whenever data arrives).")
@click.option("--max-size", type=click.IntRange(1), default=None, metavar="BYTES",
              help="Refuse an http(s) file larger than this; a body without Content-Length is stopped past it. "
                   "Default: Content-Length trusted, 50 GiB without one.")
@click.option("--max-extract-size", type=click.IntRange(1), default=None, metavar="BYTES",
              help="Refuse an archive whose entries expand to more than this in total. Default: 1 TiB.")
@click.option("--max-extract-ratio", type=click.FloatRange(1, min_open=False), default=None, metavar="X",
              help="Refuse an archive that expands to more than X times its own size (archive bombs). "
                   "Default: 200 (images do not compress; JSON ~10x).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def download(source_uri, output, dataset, checksum_file, checksum_spec, include_binary, access_token,
             extract, keep_archive, retries, max_size, max_extract_size, max_extract_ratio, quiet):
    """Download a dataset file or folder to OUTPUT, resuming and verifying it, and unpack archives.

    An interrupted http(s) download resumes from OUTPUT/NAME.part on the next run; the final
    name only ever holds a complete, verified file. Archive entries that would land outside
    OUTPUT (absolute paths, '..', escaping links) make the whole archive refused.

    \b
    synthgap download --dataset unity-groceries-real --output data
    synthgap download --source-uri https://host/x.zip --checksum sha256:HEX --output data
    synthgap download --source-uri gs://bucket/run1/ --output data/run1
    """
    from synthgap.io import download as dl

    del include_binary  # accepted for compatibility; see --help
    if not source_uri and not dataset:
        raise click.UsageError("give --source-uri or --dataset")
    if checksum_file and checksum_spec:
        raise click.UsageError("give --checksum-file or --checksum, not both")
    try:
        checksum = dl.parse_checksum(checksum_spec) if checksum_spec else None
    except dl.DownloadError as e:
        raise click.BadParameter(str(e), param_hint="--checksum") from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="synthgap: %(message)s")
    kwargs = dict(checksum=checksum, checksum_file=checksum_file, access_token=access_token, extract=extract,
                  keep_archive=keep_archive, retries=retries, progress=not quiet, max_bytes=max_size,
                  max_extract_bytes=max_extract_size, max_extract_ratio=max_extract_ratio)
    try:
        if dataset:
            result = dl.download_dataset(dataset, output, source_uri=source_uri, **kwargs)
        else:
            result = dl.download(source_uri, output, **kwargs)
    except (ImportError, OSError) as e:  # a missing extra (gcsfs, s3fs), the disk, the network
        raise click.ClickException(str(e)) from None
    what = f"{len(result.files)} file(s)" if len(result.files) != 1 else result.files[0]
    click.echo(f"downloaded {what} into {result.folder}")
