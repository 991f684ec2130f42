"""The fused sequence kernel's Python loop: one direction of one layer, forward and hand-written backward.

Each step is one matrix product (see :mod:`g2lstm.kernels.backends`) and a few element-wise operations into
preallocated buffers; states are carried as views, never copied; everything that does not depend on the
recurrence (local derivatives, the gradient of the hidden-to-hidden weights) is computed for all steps at
once, the latter as a single product. It runs on every device and dtype and is the only loop with a
projection (``proj_size``); the compiled CPU loop (:mod:`g2lstm.kernels.compiled`) and the Triton CUDA loop
(:mod:`g2lstm.kernels.triton_loop`) compute the same function. All three take and return the same tensors
(forward: ``output, h_n, c_n`` and the ``gates, cells, tanh_cells`` the backward pass needs), so any backward
can follow any forward. They are called by the registered operators of :mod:`g2lstm.kernels.ops`, which
choose the loop, never directly by a module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from g2lstm.kernels.backends import step_product
from g2lstm.kernels.reference import row_offsets

__all__ = ["sequence_backward", "sequence_forward"]


def _steps(batch_sizes: Sequence[int], reverse: bool) -> list[slice]:
    """Row slice of each step in processing order."""
    steps = [slice(start, start + size) for start, size in zip(row_offsets(batch_sizes), batch_sizes)]
    return steps[::-1] if reverse else steps


def _resize(state: Tensor, size: int, source: Tensor, finished: list[Tensor]) -> Tensor:
    """Fit a carried state to the next step's ``size`` active sequences (packed input).

    New sequences take their rows from ``source``; sequences that stop hand their rows to ``finished``
    (highest rows first). Without packing the size never changes and this returns ``state`` itself.
    """
    rows = state.shape[0]
    if size > rows:
        return torch.cat([state, source[rows:size]])
    if size < rows:
        finished.append(state[size:])
        return state[:size]
    return state


def _assemble(state: Tensor, finished: list[Tensor]) -> Tensor:
    """The full ``(B, H)`` state (a new tensor) from the last carried rows and the rows that stopped
    earlier."""
    return torch.cat([state, *finished[::-1]])


def previous_rows(values: Tensor, initial: Tensor, batch_sizes: Sequence[int], reverse: bool) -> Tensor:
    """The state each row's step started from, rows in packed order: the previous processed step's row of
    ``values`` (outputs or cells), or ``initial``'s row for a sequence that starts at this step."""
    parts: dict[int, list[Tensor]] = {}  # by the step's first packed row
    previous = slice(0, 0)  # before the first step: no rows
    for step in _steps(batch_sizes, reverse):
        size = step.stop - step.start
        continuing = min(size, previous.stop - previous.start)
        parts[step.start] = [values[previous.start : previous.start + continuing]] if continuing else []
        if continuing < size:
            parts[step.start].append(initial[continuing:size])
        previous = step
    return torch.cat([part for start in sorted(parts) for part in parts[start]])


def sequence_forward(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Tensor | None,
    batch_sizes: Sequence[int],
    reverse: bool,
    scale: float,
    hard: bool,
    backend: str,
    noise: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward loop; see :func:`g2lstm.kernels.lstm_sequence` for the arguments (``noise``: the
    ``(N, 2H)`` input- and forget-gate noise, or ``None``).

    Returns ``(output (N, P), h_n (B, P), c_n (B, H), gates (N, 4H), cells (N, H), tanh_cells (N, H))`` with
    ``P`` the projection size (``H`` without one).
    """
    hidden = gate_inputs.shape[1] // 4
    rows = gate_inputs.shape[0]
    gates = gate_inputs.new_empty(gate_inputs.shape)
    cells, tanh_cells = (gate_inputs.new_empty(rows, hidden) for _ in range(2))
    output = gate_inputs.new_empty(rows, h0.shape[1])
    recurrent = step_product(weight_hh, batch_sizes[0], backend)
    gate_inputs = gate_inputs.contiguous()
    h, c = h0[:0], c0[:0]
    h_finished: list[Tensor] = []
    c_finished: list[Tensor] = []
    for step in _steps(batch_sizes, reverse):
        size = step.stop - step.start
        h = _resize(h, size, h0, h_finished)
        c = _resize(c, size, c0, c_finished)
        pre = recurrent(h, gate_inputs[step])
        if noise is not None:
            pre[:, : 2 * hidden] += noise[step]
        act = gates[step]
        if hard:
            act[:, : 2 * hidden] = pre[:, : 2 * hidden] >= 0
        elif scale != 1.0:
            torch.mul(pre[:, : 2 * hidden], scale, out=act[:, : 2 * hidden]).sigmoid_()
        else:
            torch.sigmoid(pre[:, : 2 * hidden], out=act[:, : 2 * hidden])
        torch.tanh(pre[:, 2 * hidden : 3 * hidden], out=act[:, 2 * hidden : 3 * hidden])
        torch.sigmoid(pre[:, 3 * hidden :], out=act[:, 3 * hidden :])
        i, f, g, o = act.chunk(4, dim=1)
        c = torch.mul(f, c, out=cells[step]).addcmul_(i, g)
        tanh_c = torch.tanh(c, out=tanh_cells[step])
        if weight_hr is None:
            h = torch.mul(o, tanh_c, out=output[step])
        else:
            h = torch.mm(o * tanh_c, weight_hr.t(), out=output[step])
    return output, _assemble(h, h_finished), _assemble(c, c_finished), gates, cells, tanh_cells


def sequence_backward(
    grad_output: Tensor | None,
    grad_h_n: Tensor | None,
    grad_c_n: Tensor | None,
    gates: Tensor,
    cells: Tensor,
    tanh_cells: Tensor,
    output: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Tensor | None,
    batch_sizes: Sequence[int],
    reverse: bool,
    scale: float,
    hard: bool,
    backend: str,
    weight_grads: tuple[bool, bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Backward through time of :func:`sequence_forward` from the gradients of its first three outputs
    (``None``: zero) and the tensors it returned.

    Returns the gradients of ``gate_inputs``, ``h0``, ``c0`` and, where ``weight_grads`` asks, of
    ``weight_hh`` and ``weight_hr`` (else ``None``).
    """
    hidden = gates.shape[1] // 4
    i_all, f_all, g_all, o_all = gates.chunk(4, dim=1)
    # d(pre-activation) = upstream * factor; the factors depend on no gradient, so they are
    # computed for all steps at once: [dc*g*i', dc*c_prev*f', dc*i*g', dm*tanh(c)*o'], m = o*tanh(c).
    factors = gates * (1 - gates)
    factors[:, 2 * hidden : 3 * hidden] = 1 - g_all * g_all
    if hard:
        factors[:, : 2 * hidden] = 0
    elif scale != 1.0:
        factors[:, : 2 * hidden] *= scale
    factors[:, :hidden] *= g_all
    factors[:, hidden : 2 * hidden] *= previous_rows(cells, c0, batch_sizes, reverse)
    factors[:, 2 * hidden : 3 * hidden] *= i_all
    factors[:, 3 * hidden :] *= tanh_cells
    dc_per_dm = o_all * (1 - tanh_cells * tanh_cells)

    batch = batch_sizes[0]
    grad_h_n = output.new_zeros(batch, output.shape[1]) if grad_h_n is None else grad_h_n
    grad_c_n = gates.new_zeros(batch, hidden) if grad_c_n is None else grad_c_n
    grad_gates = torch.empty_like(gates)
    grad_h_all = torch.empty_like(output) if weight_hr is not None and weight_grads[1] else None
    recurrent_t = step_product(weight_hh.t(), batch, backend)
    dh, dc = grad_h_n[:0], grad_c_n[:0]
    dh_finished: list[Tensor] = []
    dc_finished: list[Tensor] = []
    for step in reversed(_steps(batch_sizes, reverse)):
        size = step.stop - step.start
        dh = _resize(dh, size, grad_h_n, dh_finished)
        dc = _resize(dc, size, grad_c_n, dc_finished)
        if grad_output is not None:
            dh = dh + grad_output[step]
        if weight_hr is None:
            dm = dh
        else:
            if grad_h_all is not None:
                grad_h_all[step] = dh
            dm = dh.mm(weight_hr)
        dc = torch.addcmul(dc, dm, dc_per_dm[step])
        d_pre = grad_gates[step]
        torch.mul(
            factors[step, : 3 * hidden].view(size, 3, hidden),
            dc.unsqueeze(1),
            out=d_pre[:, : 3 * hidden].view(size, 3, hidden),
        )
        torch.mul(factors[step, 3 * hidden :], dm, out=d_pre[:, 3 * hidden :])
        dh = recurrent_t(d_pre, None)
        dc = dc * f_all[step]
    grad_weight_hh = grad_weight_hr = None
    if weight_grads[0]:
        # (h^T dG)^T rather than dG^T h: the same product, markedly faster with MKL on skinny inputs.
        grad_weight_hh = previous_rows(output, h0, batch_sizes, reverse).t().mm(grad_gates).t()
    if grad_h_all is not None:
        grad_weight_hr = grad_h_all.t().mm(o_all * tanh_cells)
    return grad_gates, _assemble(dh, dh_finished), _assemble(dc, dc_finished), grad_weight_hh, grad_weight_hr
