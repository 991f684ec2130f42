"""Evaluation-mode layers as loops that the ONNX exporters keep whole, for any sequence length.

The legacy exporter turns torch's own LSTM (σ and tempered gates) into an ONNX ``LSTM`` node, but hard
gates ``1[a >= 0]`` beside a σ output gate are no ONNX ``LSTM`` (one activation serves the input, forget and
output gates there), and the dynamo exporter fixes the sequence length of torch's LSTM at the example's
(measured with torch 2.13). So under export one layer direction is a loop over time: a TorchScript function
for the legacy exporter (which traces, and keeps a scripted loop as an ONNX ``Loop``) and a ``while_loop``
for the dynamo exporter (an ONNX ``Loop`` as well). Both compute what the module computes in evaluation.
"""

from typing import Optional, cast

import torch
from torch import Tensor
from torch._higher_order_ops.while_loop import while_loop

__all__ = ["eval_layer", "eval_step"]


def eval_step(
    pre: Tensor, c: Tensor, weight_hr: Optional[Tensor], scale: float, hard: bool
) -> tuple[Tensor, Tensor]:
    """One step from the full pre-activations ``(B, 4H)``: input and forget gates ``1[a >= 0]`` if ``hard``
    else ``sigmoid(scale * a)``, σ output gate."""
    i, f, g, o = pre.chunk(4, 1)
    if hard:
        i, f = (i >= 0).to(pre.dtype), (f >= 0).to(pre.dtype)
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
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    steps = gate_inputs.shape[0]
    outputs: list[Tensor] = []
    for k in range(steps):
        t = steps - 1 - k if reverse else k
        h, c = eval_step(gate_inputs[t] + torch.mm(h, weight_hh.t()), c, weight_hr, scale, hard)
        outputs.append(h)
    output = torch.stack(outputs)
    return (output.flip(0) if reverse else output), h, c


def _while_loop_layer(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    steps_in = gate_inputs.flip(0) if reverse else gate_inputs
    weight_hh_t = weight_hh.t().contiguous()
    projection = None if weight_hr is None else weight_hr.clone()

    def condition(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> Tensor:
        return index < steps_in.shape[0]

    def body(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = cast(int, index.item())  # an unbacked symbolic int under export, not specialised
        torch._check_is_size(t, max=steps_in.shape[0] - 1)
        h, c = eval_step(steps_in[t] + torch.mm(h, weight_hh_t), c, projection, scale, hard)
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
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer direction in evaluation over ``gate_inputs`` ``(T, B, 4H)`` (the input part of the
    pre-activations), from ``h0 (B, P)`` and ``c0 (B, H)``, with input and forget gates ``1[a >= 0]`` if
    ``hard`` else ``sigmoid(scale * a)``; returns ``(output (T, B, P), h_n, c_n)``. Traced (legacy ONNX
    export): a scripted loop; else a ``while_loop``."""
    if torch.jit.is_tracing():
        return _scripted_layer(gate_inputs, h0, c0, weight_hh, weight_hr, reverse, scale, hard)
    return _while_loop_layer(gate_inputs, h0, c0, weight_hh, weight_hr, reverse, scale, hard)
