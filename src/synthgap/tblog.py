"""TensorBoard logs for a local folder or a URI.

Event files are appended to while a run goes on, which object stores cannot do: a remote
``tb_log_dir`` is written to a temporary local folder and copied there (`sync`), and the copy is
refreshed each time `sync` runs (each epoch during training) and once more on `close`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from synthgap import storage


def open_writer(tb_log_dir: str):
    """A ``SummaryWriter`` writing to ``tb_log_dir`` itself (local) or to a temporary folder (URI)."""
    from torch.utils.tensorboard import SummaryWriter

    local = storage.local_path(tb_log_dir) if storage.is_local(tb_log_dir) else tempfile.mkdtemp("-tb")
    return SummaryWriter(local)


def sync(writer, tb_log_dir: str) -> None:
    """Copy the writer's event files to a remote ``tb_log_dir`` (nothing to do for a local one)."""
    writer.flush()
    if storage.is_local(tb_log_dir):
        return
    local = writer.log_dir
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            storage.copy(path, storage.join(tb_log_dir, os.path.relpath(path, local).replace(os.sep, "/")))


def close(writer, tb_log_dir: str) -> None:
    """Close the writer, copy its files to a remote ``tb_log_dir`` and drop the temporary folder."""
    writer.close()
    sync(writer, tb_log_dir)
    if not storage.is_local(tb_log_dir):
        shutil.rmtree(writer.log_dir, ignore_errors=True)
