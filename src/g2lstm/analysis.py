"""Looking inside trained models: gate-value histograms over a data stream, and outer-bin shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from g2lstm.recording import record_gates

__all__ = ["GateHistogram", "gate_histograms", "BIN_EDGES"]

BIN_EDGES = torch.linspace(0.0, 1.0, 11)  # 10 bins of width 0.1, as the paper's Figures 1 and 3


@dataclass
class GateHistogram:
    """Shares (summing to 1) of gate values in the 10 bins of width 0.1, for one layer and gate."""

    layer: int
    gate: str
    shares: list[float]
    count: int

    @property
    def outer_share(self) -> float:
        """Share of values in [0, 0.1) or [0.9, 1]: how binary the gate is."""
        return self.shares[0] + self.shares[-1]


def _bin_counts(values: Tensor) -> Tensor:
    # The last bin is closed, [0.9, 1], as in the paper's tables.
    index = torch.clamp((values.double() * 10).floor().long(), 0, 9)
    return torch.bincount(index.flatten(), minlength=10)


@torch.no_grad()
def gate_histograms(model: nn.Module, batches: list[tuple[Tensor, ...]], forward) -> list[GateHistogram]:
    """Histograms of the input and forget gates of every G2LSTM layer in ``model``.

    ``forward(model, batch)`` runs the model on one batch; the gates are recorded as the cell used them
    (deterministic in eval mode, the paper's setting for its figures).
    """
    counts: dict[tuple[int, str], Tensor] = {}
    with record_gates(model) as recording:
        for batch in batches:
            forward(model, batch)
            for layer in range(recording.num_layers):
                for gate in ("input", "forget"):
                    for values in recording.gates(layer, gate):
                        data = values.data if hasattr(values, "batch_sizes") else values
                        counts[layer, gate] = counts.get((layer, gate), torch.zeros(10, dtype=torch.long)) + _bin_counts(data)
            recording.clear()
    histograms = []
    for (layer, gate), count in sorted(counts.items()):
        total = int(count.sum())
        histograms.append(GateHistogram(layer, gate, (count.double() / max(total, 1)).tolist(), total))
    return histograms
