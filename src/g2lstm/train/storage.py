"""Writing outputs so that a failed write is one clear error: disk full, read-only folder, a file in the way.

Everything g2lstm writes (run folders, checkpoints, tables, figures, translations) goes through these
helpers or :func:`storage_error`, which turn the operating system's error into a
:class:`~g2lstm.errors.StorageError` naming the path, the reason and the free space left.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from g2lstm.errors import StorageError

__all__ = ["make_output_folder", "storage_error", "write_file"]


def storage_error(action: str, path: Path, error: BaseException) -> StorageError:
    """A :class:`StorageError` saying that ``action`` on ``path`` failed, why, and how much space is left."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
    try:
        existing = next(folder for folder in (path, *path.parents) if folder.exists())
        space = f"; {shutil.disk_usage(existing).free / 2**20:.1f} MiB free on that disk"
    except (OSError, StopIteration):
        space = ""
    return StorageError(f"{action}: {reason}{space}; free space or make the folder writable, or choose "
                        f"another output path (files written earlier are intact)")


def make_output_folder(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) if missing; :class:`StorageError` when it cannot be a folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"output folder {folder} is an existing file, not a folder; give a folder "
                           f"(e.g. --out runs/NAME) or move the file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise storage_error(f"cannot create the output folder {folder}", folder, error) from error
    return folder


def write_file(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically: to ``<path>.tmp``, flushed to disk, then
    renamed over ``path``, so that a failed write leaves an earlier file whole."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:  # e.g. a read-only folder, where the file was never created either
            pass
        raise storage_error(f"cannot write {path}", path, error) from error
    return path
