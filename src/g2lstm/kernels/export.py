"""Hard-gate evaluation as loops that the ONNX exporters keep whole, for any sequence length.

Evaluation with σ or tempered gates runs torch's own LSTM, which both ONNX exporters turn into an ONNX
``LSTM`` node; hard gates ``1[a >= 0]`` beside a σ output gate are no ONNX ``LSTM`` (one activation serves
the input, forget and output gates there), and unrolling the fused kernel's loop would fix the sequence
length. So under export one layer direction is a loop over time: a TorchScript function for the legacy
exporter (which traces and keeps a scripted loop as an ONNX ``Loop``), a ``while_loop`` for the dynamo
exporter (exported as an ONNX ``Loop`` as well). Both compute what the fused kernel computes with
``hard=True``.
"""

from typing import Optional

import torch
from torch import Tensor
from torch._higher_order_ops.while_loop import while_loop

__all__ = ["hard_gate_layer"]


def _hard_step(pre: Tensor, c: Tensor, weight_hr: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """One step from the full pre-activations ``(B, 4H)``: hard input and forget gates, σ output gate."""
    i, f, g, o = pre.chunk(4, 1)
    c = (f >= 0).to(pre.dtype) * c + (i >= 0).to(pre.dtype) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if weight_hr is not None:
        h = torch.mm(h, weight_hr.t())
    return h, c


@torch.jit.script
def _scripted_layer(
    gate_inputs: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, weight_hr: Optional[Tensor], reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    steps = gate_inputs.shape[0]
    outputs: list[Tensor] = []
    for k in range(steps):
        t = steps - 1 - k if reverse else k
        h, c = _hard_step(gate_inputs[t] + torch.mm(h, weight_hh.t()), c, weight_hr)
        outputs.append(h)
    output = torch.stack(outputs)
    return (output.flip(0) if reverse else output), h, c


def _while_loop_layer(
    gate_inputs: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, weight_hr: Optional[Tensor], reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    steps_in = gate_inputs.flip(0) if reverse else gate_inputs
    weight_hh_t = weight_hh.t().contiguous()
    projection = None if weight_hr is None else weight_hr.clone()

    def condition(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> Tensor:
        return index < steps_in.shape[0]

    def body(index: Tensor, output: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = index.item()
        torch._check_is_size(t, max=steps_in.shape[0] - 1)
        h, c = _hard_step(steps_in[t] + torch.mm(h, weight_hh_t), c, projection)
        output = output.clone()
        output[t] = h
        return index + 1, output, h, c

    empty = h0.new_empty(steps_in.shape[0], *h0.shape)
    _, output, h, c = while_loop(condition, body, (torch.tensor(0, dtype=torch.int64), empty, h0, c0))
    return (output.flip(0) if reverse else output), h, c


def hard_gate_layer(
    gate_inputs: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, weight_hr: Optional[Tensor], reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer direction with hard input and forget gates over ``gate_inputs`` ``(T, B, 4H)`` (the input
    part of the pre-activations), from ``h0 (B, P)`` and ``c0 (B, H)``; returns ``(output (T, B, P), h_n,
    c_n)``. Traced (legacy ONNX export): a scripted loop; else a ``while_loop``."""
    if torch.jit.is_tracing():
        return _scripted_layer(gate_inputs, h0, c0, weight_hh, weight_hr, reverse)
    return _while_loop_layer(gate_inputs, h0, c0, weight_hh, weight_hr, reverse)
