"""Checkpoints that are exact, atomic and safe to load.

A checkpoint is a dict of tensors and plain Python values written by ``torch.save``, so that it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. Writes go to a temporary file in the
same folder, reach the disk (``fsync``) and then replace the old checkpoint in one step (``os.replace``), so a
run killed while saving leaves the previous checkpoint intact.

Reading one is checked in two steps: :func:`load_checkpoint` refuses files that are damaged or foreign, and
the recipes' loaders use :func:`require_entries`, :func:`checkpoint_config` and :func:`restore_model` to
refuse a well-formed file whose contents do not fit together (a missing entry, a config that does not match
the stored tensors, non-finite weights) before any model is allocated.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from g2lstm.errors import CheckpointError, MissingFileError
from g2lstm.train.storage import storage_error

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointPaths",
    "check_layer_count",
    "checkpoint_config",
    "load_checkpoint",
    "require_entries",
    "restore_model",
    "save_checkpoint",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
ConfigT = TypeVar("ConfigT")

CHECKPOINT_FORMAT = "g2lstm-checkpoint"
CHECKPOINT_VERSION = 1
_MARKER_KEYS = ("format", "version")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


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
        StorageError: the file cannot be written (disk full, read-only folder, ...); an earlier checkpoint
            at ``path`` is left as it was.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    reserved = [key for key in _MARKER_KEYS if key in state]
    if reserved:
        raise ValueError(f"checkpoint state uses the reserved keys {reserved}; rename them")
    _check_plain(state, "state")
    path = Path(path)
    temporary = _temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except (OSError, RuntimeError) as error:  # torch's writer reports a full disk as a RuntimeError
        _remove_quietly(temporary)
        raise storage_error(f"cannot write checkpoint {path}", path, error) from error
    except BaseException:
        _remove_quietly(temporary)
        raise


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
        raise MissingFileError(f"checkpoint {path} does not exist")
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


def require_entries(
    state: Mapping[str, Any], keys: Iterable[str], source: str | Path, use: str, *, trains: bool = False
) -> None:
    """Refuse a checkpoint ``state`` (read from ``source``) that lacks one of ``keys``, which ``use`` needs.

    With ``trains`` (``use`` trains the model further), a compressed model is refused as well: compressed
    checkpoints are for evaluation.
    """
    if trains and state.get("compression") is not None:
        raise CheckpointError(
            f"checkpoint {source} holds a compressed model, which {use} cannot train from (compressed "
            f"checkpoints are for evaluation); give the uncompressed checkpoint it was made from"
        )
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {source} lacks {', '.join(missing)}, which {use} needs; it holds "
            f"{', '.join(sorted(state)) or 'nothing'}. Use a checkpoint written by g2lstm's training for that"
        )


def checkpoint_config(cls: type[ConfigT], state: Mapping[str, Any], source: str | Path) -> ConfigT:
    """The recipe config ``cls`` stored in ``state["config"]``, every key and value checked."""
    from g2lstm.train.config import config_from_dict

    stored = state.get("config")
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"checkpoint {source} has no config dict (found {type(stored).__name__}); "
                              f"use a checkpoint written by g2lstm")
    try:
        return config_from_dict(cls, stored, source=f"checkpoint {source}")
    except ValueError as error:
        raise CheckpointError(f"checkpoint {source} holds a config g2lstm cannot use: {error}") from None


def check_layer_count(weights: Any, pattern: str, expected: int, what: str, source: str | Path) -> None:
    """Refuse a checkpoint whose config says ``expected`` layers of ``what`` while its weights hold another
    number: the keys of ``weights`` matching ``pattern`` (a regular expression whose first group is the layer
    index) count them. Cheap, so it runs before :func:`restore_model`, which would spend a long time (and
    the memory of a million module objects) building even on the meta device what such a config claims."""
    if not isinstance(weights, Mapping):
        return  # restore_model says what is wrong with it
    found = {
        match.group(1) for key in weights if isinstance(key, str) and (match := re.fullmatch(pattern, key))
    }
    if len(found) != expected:
        raise CheckpointError(
            f"checkpoint {source}: its config says {expected} {what} layer(s), its weights hold "
            f"{len(found)}; the file's config and weights do not belong together"
        )


def restore_model(
    build: Callable[[], ModuleT], state_dict: Any, source: str | Path, device: str | torch.device = "cpu"
) -> ModuleT:
    """The module ``build()`` makes, with the weights ``state_dict`` read from checkpoint ``source``.

    ``build`` makes the module the checkpoint's config describes (compressed layout included). It runs
    first on the ``meta`` device, which allocates nothing, so that a state dict whose entries, shapes or
    dtypes differ from that module is refused before any memory is spent on it (a config claiming a huge
    model next to small weights); non-finite weights are refused too. Only then is the module built for
    real and loaded.

    Raises:
        CheckpointError: ``build`` refuses the checkpoint's settings, or ``state_dict`` does not fit.
    """
    try:
        with torch.device("meta"):
            skeleton = build()
    except (TypeError, ValueError) as error:  # the config's values, read from the file, do not make a model
        raise CheckpointError(f"checkpoint {source} describes a model g2lstm cannot build: {error}") from None
    _check_state_dict(skeleton.state_dict(), state_dict, source)
    module = build()
    module.load_state_dict(state_dict)
    return module.to(device)


def _check_state_dict(expected: Mapping[str, torch.Tensor], stored: Any, source: str | Path) -> None:
    """Refuse ``stored`` unless it has exactly ``expected``'s entries, each a finite tensor of the same
    shape and dtype."""
    where = f"checkpoint {source}"
    if not isinstance(stored, Mapping):
        raise CheckpointError(f"{where} holds no model weights (found {type(stored).__name__})")
    missing = [key for key in expected if key not in stored]
    extra = [key for key in stored if key not in expected]
    if missing or extra:
        listed = [
            f"missing {', '.join(missing[:5])}" if missing else "",
            f"unexpected {', '.join(extra[:5])}" if extra else "",
        ]
        raise CheckpointError(
            f"{where} holds weights of another model than its config describes "
            f"({'; '.join(filter(None, listed))})"
        )
    for key, reference in expected.items():
        value = stored[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: weight {key} is a {type(value).__name__}, not a tensor")
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise CheckpointError(
                f"{where}: weight {key} is {value.dtype} {list(value.shape)}, but the config describes "
                f"{reference.dtype} {list(reference.shape)}; the file's config and weights do not belong "
                "together"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{where}: weight {key} holds NaN or infinite values (a diverged run); use an earlier "
                f"checkpoint, e.g. best.pt"
            )


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # e.g. a read-only folder, where the file was never created either
        pass


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
