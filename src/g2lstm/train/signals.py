"""Turn SIGINT and SIGTERM into a request to stop at the next step boundary, so a run can save and exit.

A training loop wrapped in :func:`stop_on_signals` checks ``request.requested`` after each step; when it is
set, the loop saves a checkpoint, says how to resume and returns. A second Ctrl-C while a stop is pending
raises ``KeyboardInterrupt`` at once, for a user who does not want to wait.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

__all__ = ["StopRequest", "TrainingInterrupted", "stop_if_requested", "stop_on_signals"]


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving its last checkpoint; the same command resumes it."""

    def __init__(self, message: str, signal_name: str | None) -> None:
        super().__init__(message)
        self.signal_name = signal_name


class StopRequest:
    """Whether a stop was requested, and by which signal (e.g. ``"SIGTERM"``)."""

    def __init__(self) -> None:
        self.requested: bool = False
        self.signal_name: str | None = None

    def __repr__(self) -> str:
        return f"StopRequest(requested={self.requested}, signal_name={self.signal_name!r})"

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name


def stop_if_requested(
    stop: StopRequest, requested: bool, save: Callable[[], None], checkpoint: Path, where: str
) -> None:
    """When ``requested`` (``stop.requested``, or its value on any rank of a distributed run): call ``save``
    (which writes ``checkpoint``), then raise :class:`TrainingInterrupted` saying ``where`` the run stopped.

    Every rank must call it at the same point: ``save`` may gather from all of them.
    """
    if not requested:
        return
    save()
    raise TrainingInterrupted(
        f"stopped by {stop.signal_name} at {where} after saving {checkpoint}; run the same command again "
        f"to resume",
        stop.signal_name,
    )


@contextmanager
def stop_on_signals(
    signals: Sequence[signal.Signals | int] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[StopRequest]:
    """Within the block, ``signals`` set the yielded :class:`StopRequest` instead of stopping the process.

    The previous handlers are restored on exit. Python delivers signals to the main thread only: in another
    thread no handler is installed and the request is never set.

    Example::

        >>> with stop_on_signals() as stop:
        ...     for step in range(steps):
        ...         train_step()
        ...         if stop.requested:
        ...             save_checkpoint(paths.last, state)
        ...             break
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {}
    try:
        for number in signals:
            previous[number] = signal.signal(number, request._handle)
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
