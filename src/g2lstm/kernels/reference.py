"""The slow, obviously correct reference: one LSTM step at a time through autograd.

Same arguments and contract as :func:`g2lstm.kernels.lstm_sequence` (less its choice of loop); it is the
test oracle of the fused kernel, and its step function is that of :class:`g2lstm.G2LSTMCell`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from g2lstm.functional import gate_bits, noise_from_bits

__all__ = ["lstm_step", "lstm_sequence_reference", "row_offsets", "step_sizes"]


def step_sizes(batch_sizes: Sequence[int] | Tensor | None, rows: int, batch: int) -> list[int]:
    """Active sequences per step as a list: ``batch_sizes`` (a list, or an int64 tensor as in a
    ``PackedSequence``), or for ``None`` a plain batch, ``rows // batch`` steps of ``batch``."""
    if batch_sizes is None:
        return [batch] * (rows // batch)
    return batch_sizes.tolist() if isinstance(batch_sizes, Tensor) else list(batch_sizes)


def row_offsets(batch_sizes: Sequence[int]) -> list[int]:
    """Start row of each time step in the packed (time-major) layout."""
    offsets = [0]
    for size in batch_sizes[:-1]:
        offsets.append(offsets[-1] + size)
    return offsets


def lstm_step(
    preactivations: Tensor, c_prev: Tensor, scale: float = 1.0, hard: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM step from the full pre-activations ``(B, 4H)`` in torch's gate order i, f, g, o.

    The input and forget gates are ``sigmoid(scale * a)`` of their (already noised) pre-activation ``a``,
    or ``1[a >= 0]`` when ``hard``. Returns ``(h, c, gates)`` with the gate activations ``(B, 4H)``.
    """
    i, f, g, o = preactivations.chunk(4, dim=1)
    if hard:
        i, f = (i >= 0).to(i.dtype), (f >= 0).to(f.dtype)
    else:
        i, f = torch.sigmoid(scale * i), torch.sigmoid(scale * f)
    g, o = torch.tanh(g), torch.sigmoid(o)
    c = f * c_prev + i * g
    h = o * torch.tanh(c)
    return h, c, torch.cat([i, f, g, o], dim=1)


def lstm_sequence_reference(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    batch_sizes: Sequence[int] | Tensor | None = None,
    *,
    reverse: bool = False,
    scale: float = 1.0,
    hard: bool = False,
    weight_hr: Tensor | None = None,
    noise_seed: int | Tensor | None = None,
    noise_p: float = 1.0,
    noise_eps: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run one direction of one layer step by step through autograd.

    The arguments and results are those of :func:`g2lstm.kernels.lstm_sequence`, without its choice of loop
    (``kernel``, ``backend``): the gate noise of ``noise_seed`` is made by
    :func:`~g2lstm.functional.gate_bits` and added to the input- and forget-gate columns of ``gate_inputs``,
    which is where the fused loops add it too (the pre-activation is a sum).
    """
    rows, hidden = gate_inputs.shape[0], c0.shape[1]
    batch_sizes = step_sizes(batch_sizes, rows, h0.shape[0])
    if noise_seed is not None:
        bits = gate_bits(int(noise_seed), rows, hidden, gate_inputs.dtype, gate_inputs.device)
        noise = noise_from_bits(bits, gate_inputs.dtype, noise_p, noise_eps)
        gate_inputs = gate_inputs + F.pad(noise, (0, 2 * hidden))
    offsets = row_offsets(batch_sizes)
    steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    h_state = list(h0.unbind(0))
    c_state = list(c0.unbind(0))
    outputs: dict[int, Tensor] = {}
    gates: dict[int, Tensor] = {}
    for t in steps:
        size, start = batch_sizes[t], offsets[t]
        h_prev = torch.stack(h_state[:size])
        c_prev = torch.stack(c_state[:size])
        pre = gate_inputs[start : start + size] + h_prev @ weight_hh.t()
        h, c, gates[t] = lstm_step(pre, c_prev, scale, hard)
        if weight_hr is not None:
            h = h @ weight_hr.t()
        outputs[t] = h
        h_state[:size] = h.unbind(0)
        c_state[:size] = c.unbind(0)
    order = range(len(batch_sizes))
    output = torch.cat([outputs[t] for t in order])
    return output, torch.stack(h_state), torch.stack(c_state), torch.cat([gates[t] for t in order]).detach()
