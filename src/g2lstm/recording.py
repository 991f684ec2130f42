"""Recording the input- and forget-gate values a G2LSTM actually used, for analysis and plots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from g2lstm.lstm import G2LSTM, G2LSTMCell

__all__ = ["GateRecording", "record_gates"]

GATE_NAMES = ("input", "forget")


class GateRecording:
    """Gate values recorded by :func:`record_gates`, one entry per layer and forward call.

    Layers are numbered across every G2LSTM / G2LSTMCell inside the recorded module in
    ``module.modules()`` order; a module with ``num_layers = k`` contributes k consecutive layers (so the
    three one-layer G2LSTMs of an AWD-LSTM are layers 0, 1, 2).
    """

    def __init__(self, layer_counts: list[int]) -> None:
        self.num_layers = sum(layer_counts)
        self._values: dict[tuple[int, str], list[Any]] = {
            (layer, name): [] for layer in range(self.num_layers) for name in GATE_NAMES
        }

    def _sink(self, first_layer: int) -> Any:
        def append(layer: int, input_gates: Any, forget_gates: Any) -> None:
            self._values[first_layer + layer, "input"].append(input_gates)
            self._values[first_layer + layer, "forget"].append(forget_gates)

        return append

    def gates(self, layer: int, gate: str) -> list[Any]:
        """The recorded ``"input"`` or ``"forget"`` gate values of ``layer``, one per forward call.

        Each is detached, on the CPU, and shaped like that layer's output (a PackedSequence for packed
        input); directions are concatenated on the last dimension.
        """
        if gate not in GATE_NAMES:
            raise ValueError(f"gate must be one of {GATE_NAMES}, got {gate!r}")
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")
        return list(self._values[layer, gate])

    def clear(self) -> None:
        """Forget what was recorded so far (recording goes on)."""
        for values in self._values.values():
            values.clear()


@contextmanager
def record_gates(module: nn.Module) -> Iterator[GateRecording]:
    """Record the gate values of every G2LSTM / G2LSTMCell in ``module`` during the ``with`` block.

    Example::

        >>> rnn = G2LSTM(4, 8, num_layers=2).eval()
        >>> with record_gates(rnn) as recording:
        ...     _ = rnn(torch.randn(5, 3, 4))
        >>> recording.gates(1, "forget")[0].shape
        torch.Size([5, 3, 8])

    While recording, forward passes run the fused kernel (which exposes the gates); outside the block
    nothing is recorded and nothing is paid.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"record_gates expects an nn.Module, got {type(module).__name__}")
    recurrent = [m for m in module.modules() if isinstance(m, (G2LSTM, G2LSTMCell))]
    if not recurrent:
        raise ValueError(
            f"{type(module).__name__} contains no G2LSTM or G2LSTMCell whose gates could be recorded"
        )
    if any(m._gate_sink is not None for m in recurrent):
        raise RuntimeError(
            "these gates are already being recorded; nested record_gates blocks are not supported"
        )
    counts = [m.num_layers if isinstance(m, G2LSTM) else 1 for m in recurrent]
    recording = GateRecording(counts)
    first = 0
    try:
        for m, count in zip(recurrent, counts):
            m._gate_sink = recording._sink(first)
            first += count
        yield recording
    finally:
        for m in recurrent:
            m._gate_sink = None
