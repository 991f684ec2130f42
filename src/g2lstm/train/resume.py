"""Resuming a run only with what it was started with: the same configuration (but for the keys a recipe
declares resumable, e.g. ``epochs``) and the same data.

A resumed run restores its weights, optimizer and random generators from ``last.pt``; training on with
another learning rate, gate, batch size, seed or corpus would mix two configurations into one record that
claims only the new one. So a resume compares the new command's resolved configuration with the one saved
in the checkpoint, and a fingerprint of the data with the saved one, before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from g2lstm.errors import ConfigError

__all__ = ["check_resume", "check_same_data", "data_fingerprint", "other_data"]


def check_resume(
    saved: Mapping[str, Any], current: Mapping[str, Any], resumable: Collection[str], run_dir: str | Path
) -> dict[str, tuple[Any, Any]]:
    """The settings a resume changes, ``{key: (old, new)}``, all of them in ``resumable``.

    ``saved`` and ``current`` are the run's and the new command's configs as plain dicts
    (``config_to_dict``).

    Raises:
        ConfigError: a key outside ``resumable`` differs; the message lists each difference with the run's
            value and the new one, and how to proceed.
    """
    changes = {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current))
               if saved.get(key) != current.get(key)}
    refused = [f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items() if key not in resumable]
    if refused:
        raise ConfigError(
            f"{run_dir} holds a run started with other settings than this command's: {'; '.join(refused)}. "
            f"Only {', '.join(sorted(resumable))} may change on resume. To continue that run, repeat the "
            f"settings it was started with ({Path(run_dir) / 'config.json'} lists them); to start a new run "
            f"with these settings, choose another output folder"
        )
    return changes


def check_same_data(saved: str | None, current: str, run_dir: str | Path, data: str | Path | None) -> None:
    """Refuse to resume the run in ``run_dir`` on other data: ``saved`` and ``current`` are the fingerprints
    (:func:`data_fingerprint`) of the run's data and of ``data``; a run saved before fingerprints existed
    (``saved`` None) is not compared."""
    if saved is not None and saved != current:
        raise ConfigError(other_data(run_dir, data))


def other_data(run_dir: str | Path, data: str | Path | None, detail: str = "") -> str:
    """The message for a resume on other data than the run's (``detail``: what gave it away)."""
    given = f"--data {data}" if data is not None else "the default data set"
    return (f"{run_dir} holds a run trained on other data than {given}{detail}; to continue that run, give "
            f"the data it was started with; to train on this data, choose another output folder")


def data_fingerprint(parts: Iterable[bytes]) -> str:
    """A SHA-256 digest of the data a run trains on, given as byte strings in a fixed order."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()
