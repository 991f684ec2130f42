"""Evaluation-mode layers as loops that the ONNX exporters keep whole, for any sequence length.

The legacy exporter turns torch's own LSTM (σ and tempered gates) into an ONNX ``LSTM`` node, but hard
gates ``1[a >= 0]`` beside a σ output gate are no ONNX ``LSTM`` (one activation serves the input, forget and
output gates there), and the dynamo exporter fixes the sequence length of torch's LSTM at the example's
(measured with torch 2.13). So under export one layer direction is a loop over time: a TorchScript function
for the legacy exporter (which traces, and keeps a scripted loop as an ONNX ``Loop``) and a ``while_loop``
for the dynamo exporter (an ONNX ``Loop`` as well). Both compute what the module computes in evaluation.

Under the legacy exporter, low-rank gate blocks stay factored in the loop (:class:`RecurrentWeight`): a
graph holding ``u @ v`` would be folded back into the dense matrix by onnxruntime's constant folding, losing
the compression's speed and memory where the model is deployed. Their gates come first in the loop's
pre-activations, so that one batched product serves all of them; each step finds every gate by its position.
"""

from typing import List, NamedTuple, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._higher_order_ops.while_loop import while_loop

from g2lstm.kernels.stored import GATE_ORDER, StoredForms, dense_block

__all__ = ["RecurrentWeight", "eval_layer", "eval_step", "low_rank_first", "ordered_projection"]

GATE_POSITIONS = [0, 1, 2, 3]  # the module's own order: input, forget, cell, output


def low_rank_first(forms: StoredForms) -> List[int]:
    """The gates (indices into ``GATE_ORDER``) in the order the exported loop computes them: low-rank
    blocks first, the others after, each in the module's order."""
    ranked = [index for index, gate in enumerate(GATE_ORDER) if forms[gate][0] == "rank"]
    return ranked + [index for index in range(len(GATE_ORDER)) if index not in ranked]


def ordered_projection(x: Tensor, forms: StoredForms, order: List[int]) -> Tensor:
    """``x @ W^T`` along ``x``'s last dimension with the gate blocks of ``W`` (its stored forms) in ``order``;
    low-rank blocks as two skinny products."""
    parts = []
    for index in order:
        kind, tensors = forms[GATE_ORDER[index]]
        if kind == "rank":
            parts.append(F.linear(F.linear(x, tensors[1]), tensors[0]))
        else:
            parts.append(F.linear(x, dense_block(kind, tensors)))
    return torch.cat(parts, -1)


class RecurrentWeight(NamedTuple):
    """A hidden-to-hidden weight as the exported loop multiplies by it, gates in ``low_rank_first`` order:
    ``(h @ v_t) @ u_t`` for the ``low_rank`` low-rank gates (``v_t`` their ``v^T`` side by side, ``u_t``
    their ``u^T`` stacked: one batched product), ``h @ dense_t`` for the others; ``positions``: where the
    input, forget, cell and output gates are in that order. A part with no gates holds a placeholder, never
    read."""

    v_t: Tensor
    u_t: Tensor
    dense_t: Tensor
    low_rank: int
    positions: List[int]

    @property
    def order(self) -> List[int]:
        """The gates in the loop's order (the inverse of ``positions``)."""
        return sorted(GATE_POSITIONS, key=self.positions.__getitem__)

    @classmethod
    def dense(cls, weight: Tensor) -> "RecurrentWeight":
        """A plain ``(4H, H)`` matrix, gates in the module's order."""
        weight_t = weight.t()
        return cls(weight_t, weight_t, weight_t, 0, list(GATE_POSITIONS))

    @classmethod
    def of(cls, forms: StoredForms) -> "RecurrentWeight":
        """A weight given by its stored forms (integer codes made dense)."""
        order = low_rank_first(forms)
        blocks = [forms[GATE_ORDER[index]] for index in order]
        ranked = [tensors for kind, tensors in blocks if kind == "rank"]
        others = blocks[len(ranked):]
        dense_t = torch.cat([dense_block(*block).t() for block in others], 1) if others else ranked[0][1].t()
        if not ranked:
            return cls(dense_t, dense_t, dense_t, 0, list(GATE_POSITIONS))
        v_t = torch.cat([v.t() for _, v in ranked], 1)
        u_t = torch.stack([u.t() for u, _ in ranked])
        return cls(v_t, u_t, dense_t, len(ranked), [order.index(index) for index in GATE_POSITIONS])


def _recurrent_product(h: Tensor, v_t: Tensor, u_t: Tensor, dense_t: Tensor, low_rank: int) -> Tensor:
    if low_rank == 0:
        return torch.matmul(h, dense_t)
    rank = u_t.shape[1]
    reduced = torch.matmul(h, v_t).view(-1, low_rank, rank).transpose(0, 1)  # (gates, B, k)
    factored = torch.matmul(reduced, u_t).transpose(0, 1).reshape(h.shape[0], -1)
    if low_rank == 4:
        return factored
    return torch.cat([factored, torch.matmul(h, dense_t)], 1)


def eval_step(
    pre: Tensor, c: Tensor, weight_hr: Optional[Tensor], scale: float, hard: bool, positions: List[int]
) -> tuple[Tensor, Tensor]:
    """One step from the full pre-activations ``(B, 4H)``, the input, forget, cell and output gates at
    ``positions`` (in blocks of H): input and forget gates ``1[a >= 0]`` if ``hard`` else
    ``sigmoid(scale * a)``, σ output gate."""
    hidden = c.shape[1]
    i = pre.narrow(1, positions[0] * hidden, hidden)  # four calls, not a comprehension: no ONNX loop
    f = pre.narrow(1, positions[1] * hidden, hidden)
    g = pre.narrow(1, positions[2] * hidden, hidden)
    o = pre.narrow(1, positions[3] * hidden, hidden)
    if hard:
        i, f = (i >= 0.0).to(pre.dtype), (f >= 0.0).to(pre.dtype)  # a float 0: ONNX needs one type
    else:
        i, f = torch.sigmoid(i * scale), torch.sigmoid(f * scale)
    c = f * c + i * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if weight_hr is not None:
        h = torch.mm(h, weight_hr.t())
    return h, c


@torch.jit.script
def _scripted_layer(
    gate_inputs: Tensor,
    h: Tensor,
    c: Tensor,
    v_t: Tensor,
    u_t: Tensor,
    dense_t: Tensor,
    low_rank: int,
    positions: List[int],
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    steps = gate_inputs.shape[0]
    outputs: list[Tensor] = []
    for k in range(steps):
        t = steps - 1 - k if reverse else k
        pre = gate_inputs[t] + _recurrent_product(h, v_t, u_t, dense_t, low_rank)
        h, c = eval_step(pre, c, weight_hr, scale, hard, positions)
        outputs.append(h)
    output = torch.stack(outputs)
    return (output.flip(0) if reverse else output), h, c


def _while_loop_layer(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: RecurrentWeight,
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    steps_in = gate_inputs.flip(0) if reverse else gate_inputs
    v_t, u_t, dense_t = (tensor.contiguous() for tensor in weight_hh[:3])
    projection = None if weight_hr is None else weight_hr.clone()

    def condition(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> Tensor:
        return index < steps_in.shape[0]

    def body(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = cast(int, index.item())  # an unbacked symbolic int under export, not specialised
        torch._check_is_size(t, max=steps_in.shape[0] - 1)
        pre = steps_in[t] + _recurrent_product(h, v_t, u_t, dense_t, weight_hh.low_rank)
        h, c = eval_step(pre, c, projection, scale, hard, weight_hh.positions)
        output = output.clone()
        output[t] = h
        return index + 1, output, h, c

    empty = h0.new_empty(steps_in.shape[0], *h0.shape)
    _, output, h, c = while_loop(condition, body, (torch.tensor(0, dtype=torch.int64), empty, h0, c0))
    return (output.flip(0) if reverse else output), h, c


def eval_layer(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: RecurrentWeight,
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer direction in evaluation over ``gate_inputs`` ``(T, B, 4H)`` (the input part of the
    pre-activations, gates in ``weight_hh``'s order), from ``h0 (B, P)`` and ``c0 (B, H)``, with input and
    forget gates ``1[a >= 0]`` if ``hard`` else ``sigmoid(scale * a)``; returns
    ``(output (T, B, P), h_n, c_n)``. Traced (legacy ONNX export): a scripted loop; else a ``while_loop``."""
    if torch.jit.is_tracing():
        return _scripted_layer(gate_inputs, h0, c0, *weight_hh, weight_hr, reverse, scale, hard)
    return _while_loop_layer(gate_inputs, h0, c0, weight_hh, weight_hr, reverse, scale, hard)
