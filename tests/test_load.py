"""Under load: a 10,000-step sequence and a large batch train in memory proportional to what they hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

MEMORY_BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "memory.py"


def peak_growth_mib(kind: str, steps: int, batch: int, inputs: int, hidden: int) -> float:
    """Peak-RSS growth of one training step, measured in a fresh process by benchmarks/memory.py."""
    child = [
        sys.executable,
        str(MEMORY_BENCHMARK),
        "--child",
        kind,
        str(steps),
        str(batch),
        str(inputs),
        str(hidden),
    ]
    done = subprocess.run(child, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("steps, batch", [(10_000, 1), (35, 2048)], ids=["long-sequence", "large-batch"])
def test_training_step_memory_is_linear_in_the_sequence_and_near_nn_lstm(steps: int, batch: int) -> None:
    inputs, hidden = 16, 32
    one_tensor = steps * batch * hidden * 4 / 2**20  # MiB of one (T, B, H) float32 tensor
    g2 = peak_growth_mib("G2LSTM", steps, batch, inputs, hidden)
    lstm = peak_growth_mib("nn.LSTM", steps, batch, inputs, hidden)
    half = peak_growth_mib("G2LSTM", steps // 2 if batch == 1 else steps, batch if batch == 1 else batch // 2,
                           inputs, hidden)
    # what backpropagation through time has to keep, with room for workspaces; measured: about 30 tensors
    assert g2 < 40 * one_tensor + 40, (g2, one_tensor)
    assert g2 < 2.0 * lstm + 40, (g2, lstm)
    assert g2 < 2.5 * half + 40, f"twice the work may take about twice the memory, not more: {half} -> {g2}"
