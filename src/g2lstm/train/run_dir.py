"""The run folder: the resolved config, the environment it ran in, and the metrics as JSON lines.

::

    run_dir/
      config.json        the resolved config of the latest start
      environment.json   versions, platform, seed, command line, git commit, start time (earlier starts kept)
      metrics.jsonl      one JSON object per log() call, appended across resumes
      log.txt            the messages shown to the user, time-stamped
      tensorboard/       the same scalars, when the tensorboard package is installed
      last.pt, best.pt   checkpoints (g2lstm.train.checkpoint)
      .lock              holds the PID of the process writing the folder (see lock_run_folder)

One process writes a run folder at a time: :func:`lock_run_folder` takes an exclusive advisory lock
(``fcntl.flock``) on ``.lock`` for as long as a run writes, and a second writer stops at once with an error
naming the holder. The kernel drops the lock when its process ends, however it ends, so the lock of a killed
run never blocks its resume. Every write that fails (disk full, read-only folder, a file where the folder
should be) raises :class:`~g2lstm.errors.StorageError` naming the path.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from g2lstm.errors import DataError, MissingFileError, RunFolderBusy
from g2lstm.train.storage import make_output_folder, storage_error, write_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so run folders go unguarded there
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLog", "describe_environment", "git_commit", "lock_run_folder", "read_metrics", "run_names"]

_METRICS = "metrics.jsonl"
_LOCK = ".lock"


@contextmanager
def lock_run_folder(run_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the block; yields the folder.

    Raises:
        RunFolderBusy: another process holds the lock; the message names its PID.
        StorageError: the folder or its lock file cannot be created.
    """
    run_dir = make_output_folder(run_dir)
    path = run_dir / _LOCK
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise storage_error(f"cannot create the lock file {path}", path, error) from error
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise storage_error(f"cannot lock {path}", path, error) from error
                holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
                raise RunFolderBusy(
                    f"run folder {run_dir} is being written by process {holder} (it holds {path}); wait for "
                    f"it to finish or stop it (kill {holder}), or choose another output folder"
                ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield run_dir
    finally:
        os.close(descriptor)  # releases the lock; the file stays, as deleting it would race a new writer


def describe_environment(seed: int | None = None) -> dict[str, Any]:
    """What a reported number depends on besides the config: versions, platform, command line and commit."""
    from g2lstm import __version__

    commit, dirty = git_commit()
    return {
        "g2lstm_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "argv": list(sys.argv),
        "git_commit": commit,
        "git_dirty": dirty,
        "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of ``run_dir/metrics.jsonl`` as dicts; a torn last line (a killed writer's) is skipped."""
    path = Path(run_dir) / _METRICS
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; is {run_dir} a run folder?")
    return _read_lines(path)


class RunLog:
    """Writes a run folder: the config and environment at start, then metrics and messages as they come.

    Args:
        run_dir: The folder, created when missing. A resumed run passes the same folder: metrics are appended
            to the same file (call :meth:`truncate` with the checkpoint's line count and step first),
            ``config.json`` is rewritten and the earlier starts are kept in ``environment.json`` under
            ``"earlier_starts"``.
        enabled: ``False`` makes every method do nothing, so that only rank 0 of a distributed run writes.
        tensorboard: Also write scalars for TensorBoard when ``torch.utils.tensorboard`` imports.

    Example::

        >>> log = RunLog("runs/demo", enabled=context.is_main)
        >>> log.write_config(config_to_dict(config), seed=config.seed)
        >>> log.log(step=100, train_loss=4.2)
        >>> log.message("epoch 1 done")
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled)
        self._tensorboard = bool(tensorboard)
        self._writer: Any = None
        self._purge_step: int | None = None
        self._lines = 0
        if self.enabled:
            make_output_folder(self.run_dir)
            self._drop_torn_line()
            if self.metrics_path.is_file():
                self._lines = len(self.metrics_path.read_text(encoding="utf-8").splitlines())

    def write_config(
        self,
        config: Mapping[str, Any],
        *,
        seed: int | None = None,
        resumed_at_step: int | None = None,
        changes: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> None:
        """Write ``config.json`` (the resolved config as plain values, e.g. from ``config_to_dict``) and
        ``environment.json`` (:func:`describe_environment` with ``seed``); call once at each start.

        A resumed run passes the step it resumes at and the settings it changes (``{key: (old, new)}``, only
        those that may change on resume): ``environment.json`` records them with this start, so that the
        record says from which step each value applied."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of plain values, got {type(config).__name__}")
        if not self.enabled:
            return
        _write_json(self.run_dir / "config.json", dict(config))
        environment = describe_environment(seed)
        if resumed_at_step is not None:
            environment["resumed_at_step"] = resumed_at_step
            environment["changed_on_resume"] = {key: list(values) for key, values in (changes or {}).items()}
        previous = self.run_dir / "environment.json"
        if previous.is_file():
            try:
                earlier = json.loads(previous.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise DataError(f"{previous} is not valid JSON ({error}); fix or delete it") from None
            environment["earlier_starts"] = earlier.pop("earlier_starts", []) + [earlier]
        _write_json(previous, environment)

    def message(self, text: str) -> None:
        """Show ``text`` to the user (above any progress bar) and append it, time-stamped, to ``log.txt``."""
        if not self.enabled:
            return
        tqdm.write(text, file=sys.stdout)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        _append(self.run_dir / "log.txt", f"{stamp} {text}\n")

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / _METRICS

    def log(self, **values: Any) -> None:
        """Append ``values`` (numbers, strings, bools, one-element tensors) with a ``time`` stamp as one line.

        A ``step`` value, when given, is the x axis of the TensorBoard scalars.
        """
        if not self.enabled:
            return
        record: dict[str, Any] = {"time": round(time.time(), 3)}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise TypeError(
                        f"log value {key} must be a number, got a tensor of shape {list(value.shape)}"
                    )
                value = value.item()
            if not isinstance(value, (int, float, str, bool, type(None))):
                raise TypeError(
                    f"log value {key} must be a number, string, bool or None, got {type(value).__name__}"
                )
            record[key] = value
        _append(self.metrics_path, json.dumps(record) + "\n")
        self._lines += 1
        writer = self._tensorboard_writer()
        if writer is not None:
            step = record.get("step")
            for key, value in record.items():
                if key not in ("time", "step") and type(value) in (int, float):
                    writer.add_scalar(key, value, step)

    @property
    def lines(self) -> int:
        """How many metric lines the run has written so far; a checkpoint records it for :meth:`truncate`."""
        return self._lines

    def truncate(self, lines: int, *, step: int) -> None:
        """Keep the first ``lines`` metric lines, dropping those a killed run logged after its checkpoint.

        ``lines`` is the checkpoint's record of :attr:`lines`, ``step`` its training step: TensorBoard events
        after ``step`` are purged as well when the writer opens.
        """
        for name, value in (("lines", lines), ("step", step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"{name} must be an int >= 0, got {value!r}")
        if not self.enabled:
            return
        self._purge_step = step + 1
        if not self.metrics_path.is_file() or lines >= self._lines:
            return
        kept = self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]
        write_file(self.metrics_path, "".join(kept))
        self._lines = lines

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if one was opened."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _drop_torn_line(self) -> None:
        """Cut a last line left without its newline by a killed run, so appended lines start clean."""
        if self.metrics_path.is_file():
            text = self.metrics_path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                write_file(self.metrics_path, text[: text.rfind("\n") + 1])

    def _tensorboard_writer(self) -> Any:
        if self._writer is None and self._tensorboard:
            self._writer = _open_tensorboard(self.run_dir / "tensorboard", self._purge_step)
            self._tensorboard = self._writer is not None
        return self._writer


def _open_tensorboard(log_dir: Path, purge_step: int | None) -> Any:
    """A ``SummaryWriter``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def git_commit() -> tuple[str | None, bool | None]:
    """The commit of the source tree g2lstm is imported from, and whether it has uncommitted changes."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source, capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, without its newline: a write cut short
                break
            raise ValueError(
                f"{path} line {number} is not valid JSON: {line[:80]!r}; delete or fix that line"
            ) from None
    return records


def _write_json(path: Path, value: Any) -> None:
    write_file(path, json.dumps(value, indent=2) + "\n")


def _append(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise storage_error(f"cannot write {path}", path, error) from error


def run_names(checkpoints: Sequence[str | Path]) -> list[str]:
    """Short names for checkpoints in tables and legends: each one's run folder (``finetune/`` belongs to its
    run), with as many parent folders as it takes to tell them apart; the paths as given when two
    checkpoints share a run folder: ``runs/g2/finetune/best.pt``, ``runs/lstm/best.pt`` -> ``g2``,
    ``lstm``."""
    paths = [Path(checkpoint) for checkpoint in checkpoints]
    runs = []
    for path in paths:
        folder = path.resolve().parent
        runs.append(folder.parent if folder.name == "finetune" else folder)
    if len(set(runs)) == len(runs):
        for depth in range(1, max(len(run.parts) for run in runs) + 1):
            names = ["/".join(run.parts[-depth:]) for run in runs]
            if len(set(names)) == len(names):
                return names
    return [str(path) for path in paths]

