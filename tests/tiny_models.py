"""Small models that several test modules train, compile and export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from g2lstm import G2LSTM


class TinyLM(nn.Module):
    """Embedding -> 2-layer G2LSTM (noise p = 0.5, so that the noise shows in every step) -> Linear."""

    def __init__(self, eval_gate: str = "sigmoid") -> None:
        super().__init__()
        self.embedding = nn.Embedding(30, 8)
        self.rnn = G2LSTM(8, 12, 2, noise_p=0.5, eval_gate=eval_gate)
        self.decoder = nn.Linear(12, 30)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.embedding(tokens))[0])


class LayerOutput(nn.Module):
    """A recurrent layer's output alone, the function that export tests export."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def train_steps(model: nn.Module, shapes: list[tuple[int, int]]) -> list[float]:
    """SGD steps on random tokens of each ``(T, B)``; the losses, after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for steps, batch in shapes:
        tokens = torch.randint(0, 30, (steps, batch))
        loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def export_with_dynamic_length(module: nn.Module, features: int) -> torch.export.ExportedProgram:
    """``module`` exported with a dynamic time axis, checked to hold the fused operator and to give what the
    module gives, under the same seed, at a length other than the one exported with."""
    length = torch.export.Dim("length", min=2)
    program = torch.export.export(module, (torch.randn(6, 3, features),), dynamic_shapes=({0: length},))
    assert any("g2lstm.lstm_sequence" in str(node.target) for node in program.graph.nodes)
    other = torch.randn(9, 3, features)
    torch.manual_seed(3)
    actual = program.module()(other)
    torch.manual_seed(3)
    expected = module(other)
    torch.testing.assert_close(actual[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual[1][1], expected[1][1], atol=1e-5, rtol=1e-5)
    return program
