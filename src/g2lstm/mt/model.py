"""The attention encoder-decoder of the paper's translation experiment, built from G2LSTM layers.

Encoder: embedding -> a bidirectional G2LSTM layer (``hidden_size`` per direction) -> ``encoder_layers - 1``
stacked G2LSTM layers. The decoder starts from ``tanh(W · mean encoder state)`` and attends globally over the
encoder states (Luong et al. 2015, the "general" score ``q^T W_a s_j``); ``tanh(W_o [context; h_t])`` of
the top layer's state and the context feeds the output layer. Dropout is applied to the embeddings, between
layers and before the output layer. ``gate`` picks the baseline (``"lstm"``), the sharpened sigmoid or G2,
for every recurrent layer. ``decoder`` picks one of two decoders:

* ``"conditional"`` (the paper's, the default): the first decoder layer is the conditional LSTM of dl4mt
  that the authors' Theano code uses (``lstm_cond_layer``, attention at decoder layer 0). Each step makes
  two LSTM updates of one state: an *input update* ``a = x_t·W + h_{t-1}·U + b`` gives ``(h', c')``, the
  attention queried with ``h'`` gives the context ``ctx_t``, and a *context update*
  ``a = ctx_t·W_c + h'·U_nl + b_nl`` continues from ``(h', c')`` to ``(h_t, c_t)``. Both updates have G2
  input and forget gates, and the context update's gates see the source through their own weight ``W_c``.
  Each update is a one-layer G2LSTM run one step at a time, so ``W_c`` is the Parameter
  ``decoder.context_update.weight_ih_l0`` ``(4H, D)`` and compression can target it on its own. The layers
  above are stacked G2LSTM layers over the first layer's outputs (the authors add ``ctx_t·W_c`` to those
  layers' gates too; here they read only the layer below, so they run over the whole sentence at once).
* ``"attention-on-top"`` (the model before issue 18): ``decoder_layers`` stacked G2LSTM layers over the
  target words and the attention on top of them; the decoder's gates see the source only through the
  initial state. Checkpoints without a ``decoder`` key hold this model.

Why the two-stage update rather than one update whose gates read the context computed from ``h_{t-1}``: it
is what the authors ran, its attention is queried by a state that has already read the current word, and it
maps onto two public G2LSTM modules with ``W_c`` a Parameter of its own. It costs a second LSTM update per
step; its first (input) update sees the source only through ``h_{t-1}``, its second through ``W_c``.
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

__all__ = ["DECODERS", "TranslationModelSpec", "AttentionSeq2Seq", "ConditionalDecoder", "Encoded", "attend"]

State = tuple[Tensor, Tensor]
DECODERS = ("conditional", "attention-on-top")


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
    decoder: str = "conditional"  # or "attention-on-top", see the module docstring
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


def attend(queries: Tensor, encoded: Encoded) -> Tensor:
    """The attention contexts ``(T, B, D)`` of ``queries (T, B, H)``: softmax over the real source positions
    of ``q^T k_j``, weights applied to the encoder states."""
    scores = torch.einsum("tbh,bsh->tbs", queries, encoded.keys)
    weights = torch.softmax(scores.masked_fill(~encoded.mask.unsqueeze(0), float("-inf")), dim=-1)
    return torch.einsum("tbs,bsd->tbd", weights, encoded.states)


class ConditionalDecoder(nn.Module):
    """The paper's decoder: a conditional first layer whose gates see the attention context, and
    ``num_layers - 1`` stacked G2LSTM layers above it (see the module docstring for the equations).

    Children, in the order :func:`g2lstm.record_gates` numbers their gates: ``input_update`` (G2LSTM
    ``emb -> H``: ``W``, ``U``, ``b``), ``context_update`` (G2LSTM ``D -> H``: ``W_c`` is its
    ``weight_ih_l0``, ``U_nl`` its ``weight_hh_l0``) and ``upper`` (G2LSTM ``H -> H`` with
    ``num_layers - 1`` layers, or None). The state ``(h, c)`` holds ``(num_layers, B, H)`` tensors, as a
    stacked G2LSTM's.
    """

    def __init__(self, emb_size: int, context_size: int, hidden_size: int, num_layers: int, dropout: float,
                 **gates: Any) -> None:
        super().__init__()
        self.dropout = dropout
        self.input_update = G2LSTM(emb_size, hidden_size, **gates)
        self.context_update = G2LSTM(context_size, hidden_size, **gates)
        # G2LSTM's dropout acts between its own layers only (and warns, as nn.LSTM, when it has one)
        upper_dropout = dropout if num_layers > 2 else 0.0
        self.upper = (G2LSTM(hidden_size, hidden_size, num_layers - 1, dropout=upper_dropout, **gates)
                      if num_layers > 1 else None)

    def forward(self, x: Tensor, encoded: Encoded, state: State) -> tuple[Tensor, Tensor, State]:
        """The top layer's outputs ``(T, B, H)``, the contexts ``(T, B, D)`` and the state after the words
        ``x (T, B, E)``.

        The first layer steps through time with the whole batch at each step; the upper layers then read
        its outputs in one call.
        """
        h, c = state
        first = (h[:1], c[:1])
        outputs, contexts = [], []
        for word in x.split(1):
            query, intermediate = self.input_update(word, first)
            context = attend(query, encoded)
            output, first = self.context_update(context, intermediate)
            outputs.append(output)
            contexts.append(context)
        output = torch.cat(outputs)
        if self.upper is None:
            return output, torch.cat(contexts), first
        output, upper = self.upper(F.dropout(output, self.dropout, self.training), (h[1:], c[1:]))
        return output, torch.cat(contexts), (torch.cat([first[0], upper[0]]), torch.cat([first[1], upper[1]]))

    def gate_layer_names(self) -> list[str]:
        """A name for each layer whose gates :func:`g2lstm.record_gates` records, in its order."""
        upper = self.upper.num_layers if self.upper is not None else 0
        return ["0 input update", "0 context update", *(str(layer) for layer in range(1, upper + 1))]


class AttentionSeq2Seq(nn.Module):
    """Encoder-decoder with attention over G2LSTM layers; :meth:`forward` gives teacher-forced logits,
    :meth:`encode` / :meth:`initial_state` / :meth:`decode` serve step-by-step search."""

    def __init__(self, spec: TranslationModelSpec) -> None:
        super().__init__()
        if spec.tie_embeddings and spec.emb_size != spec.hidden_size:
            raise ValueError(f"tie_embeddings needs emb_size == hidden_size, got {spec.emb_size} and "
                             f"{spec.hidden_size}")
        if spec.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {spec.decoder!r}")
        self.spec = spec
        gates: dict[str, Any] = {"gate": spec.gate, "temperature": spec.temperature, "noise_p": spec.noise_p,
                 "eval_gate": spec.eval_gate}
        hidden = spec.hidden_size
        self.source_embedding = nn.Embedding(spec.vocab_size, spec.emb_size, padding_idx=PAD)
        self.target_embedding = (self.source_embedding if spec.tie_embeddings
                                 else nn.Embedding(spec.vocab_size, spec.emb_size, padding_idx=PAD))
        self.bidirectional = G2LSTM(spec.emb_size, hidden, bidirectional=True, **gates)
        # G2LSTM's dropout acts between its own layers only (and warns, as nn.LSTM, when it has one)
        encoder_dropout = spec.dropout if spec.encoder_layers > 2 else 0.0
        self.encoder = (G2LSTM(2 * hidden, hidden, spec.encoder_layers - 1, dropout=encoder_dropout, **gates)
                        if spec.encoder_layers > 1 else None)
        states = hidden if self.encoder is not None else 2 * hidden
        self.decoder: ConditionalDecoder | G2LSTM = (
            ConditionalDecoder(spec.emb_size, states, hidden, spec.decoder_layers, spec.dropout, **gates)
            if spec.decoder == "conditional"
            else G2LSTM(spec.emb_size, hidden, spec.decoder_layers,
                        dropout=spec.dropout if spec.decoder_layers > 1 else 0.0, **gates)
        )
        self.bridge = nn.Linear(states, spec.decoder_layers * hidden)
        self.attention_key = nn.Linear(states, hidden, bias=False)
        self.combine = nn.Linear(states + hidden, hidden, bias=False)
        self.output = nn.Linear(hidden, spec.vocab_size)
        nn.init.uniform_(self.source_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.target_embedding.weight, -0.1, 0.1)
        if spec.tie_embeddings:
            self.output.weight = self.target_embedding.weight
        nn.init.zeros_(self.output.bias)

    def recurrent_layers(self) -> list[G2LSTM]:
        """Every G2LSTM of the model: the encoder's and the decoder's."""
        return [m for m in self.modules() if isinstance(m, G2LSTM)]

    def decoder_gate_layers(self) -> list[str]:
        """The names of the gate layers that :func:`g2lstm.record_gates` numbers 0, 1, ... in
        ``self.decoder``; a name starting with ``"0"`` belongs to the first decoder layer (the paper's
        Figure 3)."""
        if isinstance(self.decoder, ConditionalDecoder):
            return self.decoder.gate_layer_names()
        return [str(layer) for layer in range(self.decoder.num_layers)]

    def gate_matrices(self, kind: str) -> list[str]:
        """Names (as in ``named_parameters``) of the dense gate weight matrices of one ``kind``:

        ``"recurrent"``: the hidden-to-hidden matrices and the decoder's context-to-gate ``W_c``, the blocks
        the authors compress (Table 4); ``"input"``: the input-to-hidden matrices (``W_c`` excluded).
        """
        if kind not in ("recurrent", "input"):
            raise ValueError(f"kind must be 'recurrent' or 'input', got {kind!r}")
        names = []
        for path, layer in self.named_modules():
            if not isinstance(layer, G2LSTM):
                continue
            for name, _ in layer.named_parameters(recurse=False):
                context_to_gate = path == "decoder.context_update" and name.startswith("weight_ih")
                recurrent = name.startswith("weight_hh") or context_to_gate
                if name.startswith("weight_") and recurrent == (kind == "recurrent"):
                    names.append(f"{path}.{name}")
        return names

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
        if isinstance(self.decoder, ConditionalDecoder):
            output, context, state = self.decoder(x, encoded, state)  # (T, B, H), (T, B, D)
        else:
            output, state = self.decoder(x, state)
            context = attend(output, encoded)
        attended = torch.tanh(self.combine(torch.cat([context, output], dim=-1)))
        return self.output(self._dropout(attended)), state

    def forward(self, source: Tensor, lengths: Tensor, target_input: Tensor) -> Tensor:
        """Teacher-forced logits ``(T, B, V)`` of the next target word at every position."""
        encoded = self.encode(source, lengths)
        logits, _ = self.decode(target_input, encoded, self.initial_state(encoded))
        return logits
