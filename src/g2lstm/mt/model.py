"""The attention encoder-decoder of the paper's translation experiment, built from G2LSTM layers.

Encoder: embedding -> a bidirectional G2LSTM layer (``hidden_size`` per direction) -> ``encoder_layers - 1``
stacked G2LSTM layers. Decoder: embedding -> ``decoder_layers`` stacked G2LSTM layers, started from
``tanh(W · mean encoder state)``, then global attention over the encoder states (Luong et al. 2015, the
"general" score ``h_t^T W_a s_j``) and ``tanh(W_c [context; h_t])`` before the output layer. Attention sits on
top of the decoder's recurrence rather than feeding back into it, so that training runs each decoder layer
over the whole target sentence in one G2LSTM call. Dropout is applied to the embeddings, between layers and
before the output layer. ``gate`` picks the baseline (``"lstm"``), the sharpened sigmoid or G2, for every
recurrent layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from g2lstm import G2LSTM
from g2lstm.mt.bpe import PAD

__all__ = ["TranslationModelSpec", "AttentionSeq2Seq", "Encoded"]

State = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class TranslationModelSpec:
    """Architecture of the encoder-decoder (the model part of a translation config)."""

    vocab_size: int
    emb_size: int = 256
    hidden_size: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.2
    tie_embeddings: bool = False  # one matrix for source words, target words and the output layer
    gate: str = "g2"
    temperature: float | None = None
    noise_p: float = 0.2
    eval_gate: str | None = None


@dataclass
class Encoded:
    """What the decoder attends to, batch first: states ``(B, S, 2H or H)``, their attention keys
    ``(B, S, H)`` and the mask of real (not padding) positions ``(B, S)``."""

    states: Tensor
    keys: Tensor
    mask: Tensor

    def select(self, index: Tensor) -> Encoded:
        """The sentences at ``index`` (repeated or reordered), e.g. one row per beam."""
        return Encoded(self.states[index], self.keys[index], self.mask[index])


class AttentionSeq2Seq(nn.Module):
    """Encoder-decoder with attention over G2LSTM layers; :meth:`forward` gives teacher-forced logits,
    :meth:`encode` / :meth:`initial_state` / :meth:`decode` serve step-by-step search."""

    def __init__(self, spec: TranslationModelSpec) -> None:
        super().__init__()
        if spec.tie_embeddings and spec.emb_size != spec.hidden_size:
            raise ValueError(f"tie_embeddings needs emb_size == hidden_size, got {spec.emb_size} and "
                             f"{spec.hidden_size}")
        self.spec = spec
        gates: dict[str, Any] = {"gate": spec.gate, "temperature": spec.temperature, "noise_p": spec.noise_p,
                 "eval_gate": spec.eval_gate}
        hidden = spec.hidden_size
        self.source_embedding = nn.Embedding(spec.vocab_size, spec.emb_size, padding_idx=PAD)
        self.target_embedding = (self.source_embedding if spec.tie_embeddings
                                 else nn.Embedding(spec.vocab_size, spec.emb_size, padding_idx=PAD))
        self.bidirectional = G2LSTM(spec.emb_size, hidden, bidirectional=True, **gates)
        self.encoder = (G2LSTM(2 * hidden, hidden, spec.encoder_layers - 1, dropout=spec.dropout, **gates)
                        if spec.encoder_layers > 1 else None)
        states = hidden if self.encoder is not None else 2 * hidden
        self.decoder = G2LSTM(spec.emb_size, hidden, spec.decoder_layers, dropout=spec.dropout, **gates)
        self.bridge = nn.Linear(states, spec.decoder_layers * hidden)
        self.attention_key = nn.Linear(states, hidden, bias=False)
        self.combine = nn.Linear(states + hidden, hidden, bias=False)
        self.output = nn.Linear(hidden, spec.vocab_size)
        nn.init.uniform_(self.source_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.target_embedding.weight, -0.1, 0.1)
        if spec.tie_embeddings:
            self.output.weight = self.target_embedding.weight
        nn.init.zeros_(self.output.bias)

    def _dropout(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.spec.dropout, self.training)

    def encode(self, source: Tensor, lengths: Tensor) -> Encoded:
        """Encode ``source (S, B)`` (padded, with ``lengths (B,)`` on the CPU)."""
        total = source.shape[0]
        x = self._dropout(self.source_embedding(source))
        packed, _ = self.bidirectional(pack_padded_sequence(x, lengths, enforce_sorted=False))
        if self.encoder is not None:
            states, _ = pad_packed_sequence(packed, total_length=total)
            packed, _ = self.encoder(
                pack_padded_sequence(self._dropout(states), lengths, enforce_sorted=False)
            )
        states, _ = pad_packed_sequence(packed, total_length=total)
        states = self._dropout(states).transpose(0, 1)  # (B, S, D)
        mask = (source != PAD).t()
        return Encoded(states, self.attention_key(states), mask)

    def initial_state(self, encoded: Encoded) -> State:
        """The decoder's first (h, c), each ``(layers, B, H)``: h from the mean encoder state, c zero."""
        mask = encoded.mask.unsqueeze(-1).to(encoded.states.dtype)
        mean = (encoded.states * mask).sum(1) / mask.sum(1)
        layers, hidden = self.spec.decoder_layers, self.spec.hidden_size
        h = torch.tanh(self.bridge(mean)).view(-1, layers, hidden).transpose(0, 1).contiguous()
        return h, torch.zeros_like(h)

    def decode(self, target_input: Tensor, encoded: Encoded, state: State) -> tuple[Tensor, State]:
        """Logits ``(T, B, V)`` for ``target_input (T, B)`` from ``state``, and the state after it."""
        x = self._dropout(self.target_embedding(target_input))
        output, state = self.decoder(x, state)  # (T, B, H)
        scores = torch.einsum("tbh,bsh->tbs", output, encoded.keys)
        weights = torch.softmax(scores.masked_fill(~encoded.mask.unsqueeze(0), float("-inf")), dim=-1)
        context = torch.einsum("tbs,bsd->tbd", weights, encoded.states)
        attended = torch.tanh(self.combine(torch.cat([context, output], dim=-1)))
        return self.output(self._dropout(attended)), state

    def forward(self, source: Tensor, lengths: Tensor, target_input: Tensor) -> Tensor:
        """Teacher-forced logits ``(T, B, V)`` of the next target word at every position."""
        encoded = self.encode(source, lengths)
        logits, _ = self.decode(target_input, encoded, self.initial_state(encoded))
        return logits
