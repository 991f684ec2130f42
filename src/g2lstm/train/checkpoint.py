"""Checkpoints that are exact, atomic and safe to load.

A checkpoint is a dict of tensors and plain Python values written by ``torch.save``, so that it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. Writes go to a temporary file in the
same folder, reach the disk (``fsync``) and then replace the old checkpoint in one step (``os.replace``), so a
run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointPaths",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "g2lstm-checkpoint"
CHECKPOINT_VERSION = 1
_MARKER_KEYS = ("format", "version")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A file that is not a readable g2lstm checkpoint; the message names the file and what is wrong."""


class CheckpointPaths:
    """Where a run keeps its checkpoints: ``last.pt`` (to resume) and ``best.pt`` (best validation score)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"CheckpointPaths({str(self.run_dir)!r})"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.run_dir / "best.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, with the format marker added.

    ``state`` may hold only tensors and plain values (dict, list, tuple, str, int, float, bool, None), checked
    before anything is written; the folder is created when missing. One process writes a given path (rank 0
    of a distributed run): the temporary file is ``<path>.tmp``.

    Raises:
        TypeError: ``state`` holds another kind of object; the message gives its key path.
        ValueError: ``state`` uses one of the reserved keys ``"format"`` and ``"version"``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    reserved = [key for key in _MARKER_KEYS if key in state]
    if reserved:
        raise ValueError(f"checkpoint state uses the reserved keys {reserved}; rename them")
    _check_plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """The state written by :func:`save_checkpoint`, without the marker, read with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated or damaged, is not a g2lstm checkpoint, was written
            by a newer version, or holds objects other than tensors and plain values (which are never built:
            no code from the file runs).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    damaged = f"checkpoint {path} is damaged or truncated"
    fix = "use another checkpoint (e.g. best.pt)"
    with open(path, "rb") as file:
        magic = file.read(4)
    if not magic:
        raise CheckpointError(f"{damaged}: the file is empty; {fix}")
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path} is not a g2lstm checkpoint: it is not a file written by torch.save")
    # torch.load does not verify the archive's checksums, so a flipped bit would load silently.
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except Exception as error:  # zipfile raises many kinds of errors on a broken archive
        raise CheckpointError(f"{damaged}: {type(error).__name__}: {error}; {fix}") from None
    if bad_member is not None:
        raise CheckpointError(f"{damaged}: {bad_member} fails its CRC check; {fix}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"unsupported GLOBAL (\S+)", str(error))
        if found is None:
            raise CheckpointError(f"{damaged}: unreadable data; {fix}") from None
        raise CheckpointError(
            f"checkpoint {path} holds a {found.group(1)} object; g2lstm refuses to load objects other than "
            f"tensors and plain values, so nothing was loaded (open such a file only if you trust its source)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        if isinstance(error, RuntimeError) and ("device" in str(error) or "CUDA" in str(error)):
            raise  # e.g. a map_location naming a device this machine lacks: not the file's fault
        reason = str(error).split(". ")[0] or type(error).__name__
        raise CheckpointError(f"{damaged}: {reason}; {fix}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a g2lstm checkpoint: it lacks the format marker")
    version = data.get("version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}, this g2lstm reads version "
            f"{CHECKPOINT_VERSION}; use the g2lstm release that wrote it"
        )
    return {key: value for key, value in data.items() if key not in _MARKER_KEYS}


def _temporary_path(path: Path) -> Path:
    """Where :func:`save_checkpoint` writes before the atomic rename (the same folder, so the same disk)."""
    return path.with_name(path.name + ".tmp")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; POSIX only (Windows cannot open a folder for fsync)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_plain(value: Any, key_path: str) -> None:
    """Raise TypeError naming the first object under ``value`` that ``weights_only`` loading would refuse."""
    kind = type(value)
    if kind in (torch.Tensor, nn.Parameter) or kind in _PLAIN_SCALARS:
        return
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in _PLAIN_SCALARS:
                raise TypeError(
                    f"checkpoint {key_path} has a key of type {type(key).__name__} ({key!r}); "
                    f"use str or int keys"
                )
            _check_plain(item, f"{key_path}[{key!r}]")
        return
    if kind in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{key_path}[{index}]")
        return
    raise TypeError(
        f"checkpoint {key_path} is a {kind.__module__}.{kind.__qualname__}, which loading with "
        f"weights_only=True refuses; store only tensors and plain values (dict, list, tuple, str, int, "
        f"float, bool, None), e.g. a state_dict() instead of a module, torch.from_numpy(a) for an array"
    )
