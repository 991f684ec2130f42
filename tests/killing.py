"""Kill a real training process with SIGKILL at random steps, resume it, compare with a run never killed."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from g2lstm.train import CheckpointPaths, load_checkpoint, read_metrics


def _steps_logged(run: Path) -> int:
    if not (run / "metrics.jsonl").exists():
        return 0
    return sum("train_loss" in line for line in read_metrics(run))


def assert_killed_runs_resume_bit_identical(
    argv: Callable[[Path], list[str]], root: Path, kills: int = 2
) -> None:
    """``argv(run_dir)`` is a training command that checkpoints after every step and logs every step. Run it
    to the end once; then start it ``kills`` times, each killed at a random step it has still to take (so a
    kill can land inside a save, a validation or an epoch boundary), and let it finish. Both runs must end
    with bit-identical ``last.pt`` and ``best.pt`` models and the same metrics, times aside."""
    straight = root / "straight"
    finished = subprocess.run(argv(straight), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    total_steps = load_checkpoint(CheckpointPaths(straight).last)["progress"]["step"]

    seed = random.randrange(10**6)
    chooser = random.Random(seed)
    killed = root / "killed"
    kill_points = []
    for _ in range(kills):
        first = _steps_logged(killed) + 1
        if first > total_steps - 1:
            break  # the last kill landed late (a slow machine): no step is left to kill at
        target = chooser.randint(first, total_steps - 1)
        process = subprocess.Popen(argv(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while _steps_logged(killed) < target:
            assert time.monotonic() < deadline, f"no progress (seed {seed})"
            if process.poll() is not None:
                break  # finished before the chosen point: nothing left to kill
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        kill_points.append(target)
    resumed = subprocess.run(argv(killed), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, f"seed {seed}: {resumed.stderr}"

    context = f"killed near steps {kill_points} of {total_steps} (seed {seed})"
    for name in ("last", "best"):
        expected = load_checkpoint(getattr(CheckpointPaths(straight), name))["model"]
        got = load_checkpoint(getattr(CheckpointPaths(killed), name))["model"]
        assert all(torch.equal(expected[key], got[key]) for key in expected), f"{name}.pt differs; {context}"

    def untimed(run: Path) -> list[dict]:
        return [
            {k: v for k, v in line.items() if k not in ("time", "ms_per_step")} for line in read_metrics(run)
        ]

    assert untimed(straight) == untimed(killed), f"metrics differ; {context}"
