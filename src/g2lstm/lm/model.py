"""The AWD-LSTM language model (Merity et al. 2017) built from G2LSTM layers.

Embedding -> stacked one-layer G2LSTMs (DropConnect on their hidden-to-hidden weights) -> tied decoder,
with variational (locked) dropout on the input, between layers and on the output, and embedding dropout
that drops whole words. ``gate`` picks the paper's baseline (``"lstm"``), the sharpened sigmoid or G2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from g2lstm import G2LSTM

__all__ = ["LanguageModelSpec", "AWDLSTM", "ForwardResult", "locked_dropout", "embedding_dropout"]

State = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class LanguageModelSpec:
    """Architecture and regularisation of an AWD-LSTM (the model part of an LM config)."""

    vocab_size: int
    emb_size: int = 400
    hidden_size: int = 1150
    num_layers: int = 3
    dropout: float = 0.4
    dropout_hidden: float = 0.25
    dropout_input: float = 0.4
    dropout_embedding: float = 0.1
    weight_dropout: float = 0.5
    tie_weights: bool = True
    gate: str = "g2"
    temperature: float | None = None
    noise_p: float = 0.2
    eval_gate: str | None = None


@dataclass
class ForwardResult:
    """What the trainer needs from a forward pass: logits input and the AR/TAR activations."""

    output: Tensor  # (T, B, emb) last layer after output dropout, fed to the decoder
    raw_last: Tensor  # (T, B, emb) last layer before dropout (temporal activation regularisation)
    hidden: State


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout on ``(T, B, F)``: one mask per sequence, shared by all time steps."""
    if not training or p == 0:
        return x
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(embedding: nn.Embedding, words: Tensor, p: float, training: bool) -> Tensor:
    """Look up ``words`` with whole rows of the embedding dropped (a dropped word is zero everywhere)."""
    weight = embedding.weight
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(words, weight)


class AWDLSTM(nn.Module):
    """AWD-LSTM over G2LSTM layers; ``forward`` returns hidden outputs, ``decode`` the logits."""

    def __init__(self, spec: LanguageModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.vocab_size, spec.emb_size)
        sizes = [spec.emb_size] + [spec.hidden_size] * (spec.num_layers - 1)
        last = spec.emb_size if spec.tie_weights else spec.hidden_size
        outputs = [spec.hidden_size] * (spec.num_layers - 1) + [last]
        self.state_sizes = outputs  # the hidden size of each layer, for init_hidden
        self.layers = nn.ModuleList(
            G2LSTM(
                in_size,
                out_size,
                gate=spec.gate,
                temperature=spec.temperature,
                noise_p=spec.noise_p,
                eval_gate=spec.eval_gate,
                weight_dropout=spec.weight_dropout,
            )
            for in_size, out_size in zip(sizes, outputs)
        )
        self.decoder = nn.Linear(last, spec.vocab_size)
        if spec.tie_weights:
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int) -> State:
        weight = self.embedding.weight
        shapes = [(1, batch_size, size) for size in self.state_sizes]
        return [(weight.new_zeros(shape), weight.new_zeros(shape)) for shape in shapes]

    def forward(self, words: Tensor, hidden: State) -> ForwardResult:
        spec = self.spec
        x = embedding_dropout(self.embedding, words, spec.dropout_embedding, self.training)
        x = locked_dropout(x, spec.dropout_input, self.training)
        new_hidden = []
        for index, (layer, state) in enumerate(zip(self.layers, hidden)):
            x, new_state = layer(x, state)
            new_hidden.append(new_state)
            raw = x
            if index != len(self.layers) - 1:
                x = locked_dropout(x, spec.dropout_hidden, self.training)
        output = locked_dropout(x, spec.dropout, self.training)
        return ForwardResult(output=output, raw_last=raw, hidden=new_hidden)

    def decode(self, output: Tensor) -> Tensor:
        """Logits over the vocabulary for every position of ``output``."""
        return self.decoder(output)
