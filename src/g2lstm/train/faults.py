"""Numerical faults in a training loop: steps with a non-finite loss or gradient are skipped and counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from g2lstm.errors import TrainingDiverged

__all__ = ["TrainingDiverged", "skip_non_finite_step"]


def skip_non_finite_step(
    loss: Tensor, grad_norm: Tensor, progress: Any, max_bad_steps: int, last_checkpoint: Path, log: Any
) -> bool:
    """Whether this step must be skipped (its loss or gradient norm is not finite), counted in
    ``progress.bad_steps``; a finite step resets the count. Raises :class:`TrainingDiverged` after
    ``max_bad_steps`` skipped steps in a row, before any non-finite value reaches the weights.

    The answer is needed before the optimizer step (an exact skip leaves weights and optimizer state as
    they were), so it is read at every step, as one value: a single device sync on a GPU, none on the CPU."""
    if bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
        progress.bad_steps = 0
        return False
    progress.bad_steps += 1
    log.message(f"step {progress.step}: non-finite loss or gradient, skipped ({progress.bad_steps} in a row)")
    if progress.bad_steps >= max_bad_steps:
        saved = (f"{last_checkpoint} holds the last finite weights saved" if last_checkpoint.exists()
                 else "no checkpoint was saved before")
        raise TrainingDiverged(
            f"{progress.bad_steps} consecutive steps had a non-finite loss or gradient (step "
            f"{progress.step}); "
            f"{saved}. Train again with a lower lr or clip, in a new output folder"
        )
    return True
