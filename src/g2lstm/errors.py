"""The errors g2lstm raises for problems outside its own code: what it was given, or where it runs.

Every class derives from :class:`G2LSTMError`. The command line prints such an error as one line and exits
with its :attr:`~G2LSTMError.exit_code` (2, or 1 for a diverged run); any other exception escaping a command
is a bug in g2lstm and is shown with its traceback. Each class also derives from the built-in exception that
its cases raised before the hierarchy existed (``ValueError``, ``FileNotFoundError``, ``OSError``,
``MemoryError``, ``RuntimeError``), so code that catches those keeps working.

::

    G2LSTMError
    ├── ConfigError          a preset, option or override that does not fit, or a resume that would change one
    ├── DataError            a corpus, parallel corpus or standard input that cannot be used
    ├── CheckpointError      a file that is not a usable g2lstm checkpoint
    ├── MissingFileError     a file or folder named by the user that does not exist
    ├── RunFolderBusy        another process is writing the same run folder
    ├── StorageError         a write that failed: disk full, read-only folder, a file where a folder belongs
    ├── KernelBuildError     G2LSTM_CPU_KERNEL=compiled and the CPU kernel cannot be built
    ├── OutOfMemory          sizes beyond what the machine can allocate
    └── TrainingDiverged     too many consecutive non-finite steps (exit code 1)
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "G2LSTMError",
    "KernelBuildError",
    "MissingFileError",
    "OutOfMemory",
    "RunFolderBusy",
    "StorageError",
    "TrainingDiverged",
]


class G2LSTMError(Exception):
    """A problem in g2lstm's input or environment, never a bug; the message says what is wrong and the fix."""

    exit_code = 2


class ConfigError(G2LSTMError, ValueError):
    """A preset, command-line option or override that does not fit its config, or a resume that would change
    the configuration a run was started with; the message ends with a fix."""


class DataError(G2LSTMError, ValueError):
    """A corpus, parallel corpus or standard input that cannot be used; the message names the file or line."""


class CheckpointError(G2LSTMError, ValueError):
    """A file that is not a usable g2lstm checkpoint (damaged, foreign, or inconsistent with itself); the
    message names the file and what is wrong."""


class MissingFileError(G2LSTMError, FileNotFoundError):
    """A file or folder named by the user (or expected inside a run folder) does not exist."""


class RunFolderBusy(G2LSTMError):
    """Another process holds the run folder's lock: two writers would corrupt each other's checkpoints."""


class StorageError(G2LSTMError, OSError):
    """Writing an output failed (disk full, read-only folder, a file where a folder belongs); the message
    names the path. Checkpoints already on disk are intact."""


class KernelBuildError(G2LSTMError, RuntimeError):
    """``G2LSTM_CPU_KERNEL=compiled`` asks for the compiled CPU kernel and it cannot be built here."""


class OutOfMemory(G2LSTMError, MemoryError):
    """An allocation failed because the sizes asked for more memory than the machine has."""


class TrainingDiverged(G2LSTMError, RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient; ``last.pt`` holds the last finite
    weights."""

    exit_code = 1
