"""The fused sequence kernel: one direction of one layer, forward and hand-written backward through time.

Three loops compute it, chosen per call by device and dtype (:func:`sequence_loop`). The Python loop (any
device): each step is one matrix product (see :mod:`g2lstm.kernels.backends`) and a few element-wise
operations into preallocated buffers; states are carried as views, never copied; everything that does not
depend on the recurrence (local derivatives, the gradient of the hidden-to-hidden weights) is computed for
all steps at once, the latter as a single product. The compiled loop (CPU, :mod:`g2lstm.kernels.compiled`):
the whole sequence in one C++ call, with its own packed recurrent products and each step's element-wise work
fused behind them; it saves the cell states (not the previous hidden and cell states, which it reads back
from the output and cell rows). The Triton loop (CUDA, :mod:`g2lstm.kernels.triton_loop`): one fused
launch per step each way. The gate noise comes in as a key (drawn by the caller from torch's generator): its
bits are Philox4x32-10 of each element's position (:func:`g2lstm.functional.gate_bits`), which the Python
loop makes up front and the compiled and Triton loops inside their passes, so that the kernel itself is
deterministic and can be checked exactly against :mod:`g2lstm.kernels.reference` given the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from g2lstm.functional import gate_bits, noise_from_bits
from g2lstm.kernels.backends import step_product
from g2lstm.kernels.compiled import compiled_module, use_compiled
from g2lstm.kernels.reference import row_offsets
from g2lstm.kernels.triton_loop import triton_sequence, use_triton

__all__ = ["LOOPS", "lstm_sequence", "sequence_loop"]

LOOPS = ("auto", "compiled", "triton", "python")


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
    """The full ``(B, H)`` state from the last carried rows and the rows that stopped earlier."""
    return torch.cat([state, *finished[::-1]]) if finished else state


class _FusedLSTMSequence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gate_inputs: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        batch_sizes: Sequence[int],
        reverse: bool,
        scale: float,
        hard: bool,
        backend: str,
        noise: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        hidden = weight_hh.shape[1]
        rows = gate_inputs.shape[0]
        gates = torch.empty_like(gate_inputs)
        output, cells, tanh_cells = (gate_inputs.new_empty(rows, hidden) for _ in range(3))
        recurrent = step_product(weight_hh, batch_sizes[0], backend)
        gate_inputs = gate_inputs.contiguous()
        h, c = h0[:0], c0[:0]
        h_prevs: list[Tensor] = []
        c_prevs: list[Tensor] = []
        h_finished: list[Tensor] = []
        c_finished: list[Tensor] = []
        for step in _steps(batch_sizes, reverse):
            size = step.stop - step.start
            h = _resize(h, size, h0, h_finished)
            c = _resize(c, size, c0, c_finished)
            h_prevs.append(h)
            c_prevs.append(c)
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
            h = torch.mul(o, torch.tanh(c, out=tanh_cells[step]), out=output[step])
        if reverse:  # undo the processing order so rows line up with gate_inputs
            h_prevs.reverse()
            c_prevs.reverse()
        h_prev_all, c_prev_all = torch.cat(h_prevs), torch.cat(c_prevs)
        ctx.save_for_backward(gates, tanh_cells, h_prev_all, c_prev_all, weight_hh)
        ctx.settings = (batch_sizes, reverse, scale, hard, backend)
        ctx.mark_non_differentiable(gates)
        return output, _assemble(h, h_finished), _assemble(c, c_finished), gates

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None, _: Any
    ) -> tuple[Tensor | None, ...]:
        gates, tanh_cells, h_prev_all, c_prev_all, weight_hh = ctx.saved_tensors
        batch_sizes, reverse, scale, hard, backend = ctx.settings
        hidden = weight_hh.shape[1]
        i_all, f_all, g_all, o_all = gates.chunk(4, dim=1)
        # d(pre-activation) = upstream * factor; the factors depend on no gradient, so they are
        # computed for all steps at once: [dc*g*i', dc*c_prev*f', dc*i*g', dh*tanh(c)*o'].
        factors = gates * (1 - gates)
        factors[:, 2 * hidden : 3 * hidden] = 1 - g_all * g_all
        if hard:
            factors[:, : 2 * hidden] = 0
        elif scale != 1.0:
            factors[:, : 2 * hidden] *= scale
        factors[:, :hidden] *= g_all
        factors[:, hidden : 2 * hidden] *= c_prev_all
        factors[:, 2 * hidden : 3 * hidden] *= i_all
        factors[:, 3 * hidden :] *= tanh_cells
        dc_per_dh = o_all * (1 - tanh_cells * tanh_cells)

        batch = batch_sizes[0]
        grad_h_n = gates.new_zeros(batch, hidden) if grad_h_n is None else grad_h_n
        grad_c_n = gates.new_zeros(batch, hidden) if grad_c_n is None else grad_c_n
        grad_gates = torch.empty_like(gates)
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
            dc = torch.addcmul(dc, dh, dc_per_dh[step])
            d_pre = grad_gates[step]
            torch.mul(
                factors[step, : 3 * hidden].view(size, 3, hidden),
                dc.unsqueeze(1),
                out=d_pre[:, : 3 * hidden].view(size, 3, hidden),
            )
            torch.mul(factors[step, 3 * hidden :], dh, out=d_pre[:, 3 * hidden :])
            dh = recurrent_t(d_pre, None)
            dc = dc * f_all[step]
        # (h^T dG)^T rather than dG^T h: the same product, markedly faster with MKL on skinny inputs.
        grad_weight_hh = h_prev_all.t().mm(grad_gates).t() if ctx.needs_input_grad[3] else None
        grad_h0, grad_c0 = _assemble(dh, dh_finished), _assemble(dc, dc_finished)
        return grad_gates, grad_h0, grad_c0, grad_weight_hh, None, None, None, None, None, None


class _CompiledLSTMSequence(torch.autograd.Function):
    """The same function as ``_FusedLSTMSequence``, with both sequence loops in ``cpu_step.cpp``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        gate_inputs: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        batch_sizes: Sequence[int],
        reverse: bool,
        scale: float,
        hard: bool,
        noise_seed: int | None,
        noise_p: float,
        noise_eps: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        settings = (list(batch_sizes), reverse, scale, hard)
        output, h_n, c_n, gates, cells, tanh_cells = compiled_module(required=True).forward(
            gate_inputs, h0, c0, weight_hh, *settings, noise_seed, noise_p, noise_eps
        )
        ctx.save_for_backward(gates, cells, tanh_cells, output, h0, c0, weight_hh)
        ctx.settings = settings
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # unused outputs arrive as None and cost nothing
        return output, h_n, c_n, gates

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None, _: Any
    ) -> tuple[Tensor | None, ...]:
        grad_gates, grad_h0, grad_c0, grad_weight_hh = compiled_module(required=True).backward(
            grad_output, grad_h_n, grad_c_n, *ctx.saved_tensors, *ctx.settings, ctx.needs_input_grad[3]
        )
        return grad_gates, grad_h0, grad_c0, grad_weight_hh, None, None, None, None, None, None, None


def sequence_loop(device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> str:
    """The loop that runs a sequence on ``device`` in ``dtype``: ``"compiled"`` (CPU), ``"triton"`` (CUDA)
    or ``"python"`` (any device); see ``kernel`` in :func:`lstm_sequence`."""
    if kernel is not None and kernel not in LOOPS:
        raise ValueError(f"kernel must be one of {LOOPS}, got {kernel!r}")
    if kernel == "triton" or (device.type == "cuda" and kernel in (None, "auto")):
        return "triton" if use_triton(device, dtype, kernel) else "python"
    return "compiled" if use_compiled(device, dtype, kernel) else "python"


def lstm_sequence(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    batch_sizes: Sequence[int],
    reverse: bool = False,
    scale: float = 1.0,
    hard: bool = False,
    backend: str = "auto",
    kernel: str | None = None,
    *,
    noise_seed: int | None = None,
    noise_p: float = 1.0,
    noise_eps: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run one direction of one LSTM layer over a packed, time-major sequence.

    Args:
        gate_inputs: ``(N, 4H)`` input part of the pre-activations of every step, rows in packed order
            (step 0's ``batch_sizes[0]`` rows, then step 1's, ...); gate order i, f, g, o.
        h0, c0: ``(B, H)`` initial states, ``B = batch_sizes[0]``.
        weight_hh: ``(4H, H)`` hidden-to-hidden weights.
        batch_sizes: active sequences per step, non-increasing (a plain batch is ``[B] * T``).
        reverse: run from the last step to the first (the backward direction of a bidirectional layer).
        scale: the input and forget gates are ``sigmoid(scale * a)`` (``scale = 1 / temperature``).
        hard: input and forget gates are ``1[a >= 0]`` (no gradient through them) instead of sigmoids.
        backend: how the Python loop computes its per-step products
            (:func:`g2lstm.kernels.backends.step_product`); the compiled loop has its own.
        kernel: the sequence loop: ``"auto"`` (the compiled loop on CPU where it builds, the Triton loop for
            float32 and float64 on CUDA where Triton imports, else the Python loop), ``"compiled"`` (CPU),
            ``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1``) or ``"python"``; ``None`` reads
            ``$G2LSTM_CPU_KERNEL`` for CPU tensors (:mod:`g2lstm.kernels.compiled`) and
            ``$G2LSTM_CUDA_KERNEL`` for CUDA tensors (:mod:`g2lstm.kernels.triton_loop`).
        noise_seed: key of the input- and forget-gate noise (a 62-bit integer, e.g.
            :func:`~g2lstm.functional.noise_seed`), or ``None`` for no noise; those gates' pre-activations
            get :func:`~g2lstm.functional.noise_from_bits` of :func:`~g2lstm.functional.gate_bits` ``(seed,
            N, H)`` added (noise distributed as :func:`g2lstm.functional.logistic_noise`).
        noise_p, noise_eps: the noise's settings (see :func:`g2lstm.functional.logistic_noise`).

    Returns:
        ``(output (N, H), h_n (B, H), c_n (B, H), gates (N, 4H))``; ``gates`` holds the activations
        i, f, g, o as the cell used them and carries no gradient.
    """
    if noise_seed is not None and not (isinstance(noise_seed, int) and 0 <= noise_seed < 2**63):
        raise ValueError(f"noise_seed must be an int in [0, 2**63), got {noise_seed!r}")
    loop = sequence_loop(gate_inputs.device, gate_inputs.dtype, kernel)
    if loop == "compiled":
        return _CompiledLSTMSequence.apply(
            gate_inputs, h0, c0, weight_hh, batch_sizes, reverse, scale, hard, noise_seed, noise_p, noise_eps
        )
    if loop == "triton":
        return triton_sequence(
            gate_inputs, h0, c0, weight_hh, batch_sizes, reverse, scale, hard, noise_seed, noise_p, noise_eps
        )
    noise = None
    if noise_seed is not None:
        hidden = weight_hh.shape[1]
        bits = gate_bits(noise_seed, gate_inputs.shape[0], hidden, gate_inputs.dtype, gate_inputs.device)
        noise = noise_from_bits(bits, gate_inputs.dtype, noise_p, noise_eps)
    return _FusedLSTMSequence.apply(
        gate_inputs, h0, c0, weight_hh, batch_sizes, reverse, scale, hard, backend, noise
    )
