"""The fused kernel as registered operators, and :func:`lstm_sequence`, the kernel layer's entry point.

``g2lstm::lstm_sequence`` (forward) and ``g2lstm::lstm_sequence_backward`` are ``torch.library`` custom
operators with fake (meta) implementations, so that ``torch.compile`` traces them without a graph break and
with symbolic sequence length and batch size, ``torch.export`` keeps them as single nodes, and
``torch.func`` transforms see ordinary operators. Each operator runs one of three loops, chosen per call
by device and dtype (:func:`sequence_loop`): the compiled CPU loop (:mod:`g2lstm.kernels.compiled`), the
Triton CUDA loop (:mod:`g2lstm.kernels.triton_loop`) or the Python loop on any device
(:mod:`g2lstm.kernels.fused`, the only one with a projection). Their autograd formula is registered with
``register_autograd``: the backward operator runs the hand-written backward through time of the same loop.
When the backward pass itself must be differentiable (``create_graph=True``, as in ``torch.func.grad`` or
gradient penalties), or when a gradient reaches the auxiliary outputs (which only a second-order pass does),
the same backward is computed with differentiable tensor operations instead, on the auxiliary outputs (gates,
cells, their tanh), which are differentiable outputs of the forward operator: so gradients of any order
exist.

The gate noise is keyed by its seed as a 0-dim int64 tensor (:func:`g2lstm.functional.noise_seeds`, itself
an operator that draws from torch's generator), an input of the forward operator: eager and compiled runs
draw the same seed and make the same noise.
"""

from collections.abc import Sequence
from typing import Any, Optional, cast

import torch
from torch import Tensor

from g2lstm.functional import gate_bits, noise_from_bits
from g2lstm.kernels.compiled import compiled_module, use_compiled
from g2lstm.kernels.fused import (
    _assemble,
    _resize,
    _steps,
    previous_rows,
    sequence_backward,
    sequence_forward,
)
from g2lstm.kernels.reference import step_sizes
from g2lstm.kernels.triton_loop import triton_backward, triton_forward, use_triton

__all__ = ["LOOPS", "lstm_sequence", "sequence_loop"]

LOOPS = ("auto", "compiled", "triton", "python")

_Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
_Gradients = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def sequence_loop(device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> str:
    """The loop that runs a sequence on ``device`` in ``dtype``: ``"compiled"`` (CPU), ``"triton"`` (CUDA)
    or ``"python"`` (any device); see ``kernel`` in :func:`lstm_sequence`."""
    if kernel is not None and kernel not in LOOPS:
        raise ValueError(f"kernel must be one of {LOOPS}, got {kernel!r}")
    if kernel == "triton" or (device.type == "cuda" and kernel in (None, "auto")):
        return "triton" if use_triton(device, dtype, kernel) else "python"
    return "compiled" if use_compiled(device, dtype, kernel) else "python"


def _loop(tensor: Tensor, weight_hr: Optional[Tensor], kernel: Optional[str]) -> str:
    """The loop of one operator call: :func:`sequence_loop`, except that a projection (``proj_size``), which
    only the Python loop has, runs there."""
    loop = sequence_loop(tensor.device, tensor.dtype, kernel)
    return "python" if weight_hr is not None else loop


@torch.library.custom_op("g2lstm::lstm_sequence", mutates_args=())
def _forward_op(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    batch_sizes: Optional[Tensor],
    noise_seed: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
    noise_p: float,
    noise_eps: float,
    kernel: Optional[str],
    backend: str,
) -> _Outputs:
    """``(output, h_n, c_n, gates, cells, tanh_cells)`` of one direction of one layer."""
    sizes = step_sizes(batch_sizes, gate_inputs.shape[0], h0.shape[0])
    seed = None if noise_seed is None else int(noise_seed)
    loop = _loop(gate_inputs, weight_hr, kernel)
    if loop == "compiled":
        settings = (sizes, reverse, scale, hard, seed, noise_p, noise_eps)
        outputs = compiled_module(required=True).forward(gate_inputs, h0, c0, weight_hh, *settings)
        return cast(_Outputs, tuple(outputs))
    if loop == "triton":
        output, h_n, c_n, gates, cells, _ = triton_forward(
            gate_inputs, h0, c0, weight_hh, sizes, reverse, scale, hard, seed, noise_p, noise_eps
        )
        return output, h_n, c_n, gates, cells, cells.tanh()
    noise = None
    if seed is not None:
        bits = gate_bits(seed, gate_inputs.shape[0], c0.shape[1], gate_inputs.dtype, gate_inputs.device)
        noise = noise_from_bits(bits, gate_inputs.dtype, noise_p, noise_eps)
    return sequence_forward(
        gate_inputs, h0, c0, weight_hh, weight_hr, sizes, reverse, scale, hard, backend, noise
    )


@_forward_op.register_fake
def _forward_fake(gate_inputs: Tensor, h0: Tensor, c0: Tensor, *_: Any) -> _Outputs:
    rows, hidden = gate_inputs.shape[0], c0.shape[1]
    return (
        gate_inputs.new_empty(rows, h0.shape[1]),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
        gate_inputs.new_empty(rows, 4 * hidden),
        gate_inputs.new_empty(rows, hidden),
        gate_inputs.new_empty(rows, hidden),
    )


@torch.library.custom_op("g2lstm::lstm_sequence_backward", mutates_args=())
def _backward_op(
    grad_output: Optional[Tensor],
    grad_h_n: Optional[Tensor],
    grad_c_n: Optional[Tensor],
    gates: Tensor,
    cells: Tensor,
    tanh_cells: Tensor,
    output: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    batch_sizes: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
    weight_grads: list[bool],
    kernel: Optional[str],
    backend: str,
) -> _Gradients:
    """Gradients of ``gate_inputs``, ``h0``, ``c0``, ``weight_hh`` (made transposed: ``(h^T dG)^T``) and
    ``weight_hr`` (the last two empty where ``weight_grads`` does not ask for them)."""
    sizes = step_sizes(batch_sizes, gates.shape[0], h0.shape[0])
    loop = _loop(gates, weight_hr, kernel)
    if loop == "triton":
        grad_gates, grad_h0, grad_c0 = triton_backward(
            grad_output, grad_h_n, grad_c_n, gates, cells, c0, weight_hh, sizes, reverse, scale, hard
        )
        grad_weight_hh = None
        if weight_grads[0]:  # made transposed, as the other loops make it
            grad_weight_hh = previous_rows(output, h0, sizes, reverse).t().mm(grad_gates).t()
        grads: list[Optional[Tensor]] = [grad_gates, grad_h0, grad_c0, grad_weight_hh, None]
    elif loop == "compiled":
        grads = compiled_module(required=True).backward(
            grad_output,
            grad_h_n,
            grad_c_n,
            gates,
            cells,
            tanh_cells,
            output,
            h0,
            c0,
            weight_hh,
            sizes,
            reverse,
            scale,
            hard,
            weight_grads[0],
        )
        grads.append(None)
    else:
        grads = list(sequence_backward(
            grad_output,
            grad_h_n,
            grad_c_n,
            gates,
            cells,
            tanh_cells,
            output,
            h0,
            c0,
            weight_hh,
            weight_hr,
            sizes,
            reverse,
            scale,
            hard,
            backend,
            (weight_grads[0], weight_grads[1]),
        ))
    empty = gates.new_empty(0)
    return cast(_Gradients, tuple(empty if grad is None else grad for grad in grads))


@_backward_op.register_fake
def _backward_fake(
    grad_output: Optional[Tensor],
    grad_h_n: Optional[Tensor],
    grad_c_n: Optional[Tensor],
    gates: Tensor,
    cells: Tensor,
    tanh_cells: Tensor,
    output: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    batch_sizes: Optional[Tensor],
    reverse: bool,
    scale: float,
    hard: bool,
    weight_grads: list[bool],
    *_: Any,
) -> _Gradients:
    empty = gates.new_empty(0)
    return (
        gates.new_empty(gates.shape),
        h0.new_empty(h0.shape),
        c0.new_empty(c0.shape),
        weight_hh.new_empty(weight_hh.shape[1], weight_hh.shape[0]).t()
        if weight_grads[0]
        else empty,  # as made
        weight_hr.new_empty(weight_hr.shape) if weight_hr is not None and weight_grads[1] else empty,
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: _Outputs) -> None:
    _, h0, c0, weight_hh, weight_hr, batch_sizes, _, reverse, scale, hard, _, _, kernel, backend = inputs
    out, _, _, gates, cells, tanh_cells = output
    ctx.save_for_backward(gates, cells, tanh_cells, out, h0, c0, weight_hh, weight_hr, batch_sizes)
    ctx.settings = (reverse, scale, hard)
    ctx.loop = (kernel, backend)
    ctx.set_materialize_grads(False)  # unused outputs arrive as None and cost nothing


def _backward(
    ctx: Any,
    grad_output: Optional[Tensor],
    grad_h_n: Optional[Tensor],
    grad_c_n: Optional[Tensor],
    *grad_auxiliary: Optional[Tensor],
) -> tuple[Optional[Tensor], ...]:
    gates, cells, tanh_cells, output, h0, c0, weight_hh, weight_hr, batch_sizes = ctx.saved_tensors
    weight_grads = [ctx.needs_input_grad[3], weight_hr is not None and ctx.needs_input_grad[4]]
    if torch.is_grad_enabled() or any(grad is not None for grad in grad_auxiliary):
        grads = differentiable_backward(
            (grad_output, grad_h_n, grad_c_n, *grad_auxiliary),
            gates,
            cells,
            tanh_cells,
            output,
            h0,
            c0,
            weight_hh,
            weight_hr,
            step_sizes(batch_sizes, gates.shape[0], h0.shape[0]),
            *ctx.settings,
        )
    else:
        grads = torch.ops.g2lstm.lstm_sequence_backward(
            grad_output,
            grad_h_n,
            grad_c_n,
            gates,
            cells,
            tanh_cells,
            output,
            h0,
            c0,
            weight_hh,
            weight_hr,
            batch_sizes,
            *ctx.settings,
            weight_grads,
            *ctx.loop,
        )
    grad_gate_inputs, grad_h0, grad_c0, grad_weight_hh, grad_weight_hr = grads
    return (
        grad_gate_inputs,
        grad_h0,
        grad_c0,
        grad_weight_hh if weight_grads[0] else None,
        grad_weight_hr if weight_grads[1] else None,
        *([None] * 9),
    )


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _FunctorchSequence(torch.autograd.Function):
    """The forward operator with the same autograd formula, for ``torch.func`` transforms: the formula that
    ``register_autograd`` installs is refused under them (torch 2.13 wraps it in a Function without a
    ``setup_context``)."""

    @staticmethod
    def forward(*inputs: Any) -> _Outputs:  # type: ignore[override]
        return torch.ops.g2lstm.lstm_sequence(*inputs)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


def differentiable_backward(
    grads: tuple[Optional[Tensor], ...],
    gates: Tensor,
    cells: Tensor,
    tanh_cells: Tensor,
    output: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    weight_hr: Optional[Tensor],
    batch_sizes: Sequence[int],
    reverse: bool,
    scale: float,
    hard: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Backward through time of the forward operator in differentiable tensor operations, from the gradients
    of all six of its outputs (``None``: zero); returns those of ``gate_inputs``, ``h0``, ``c0``,
    ``weight_hh`` and ``weight_hr`` (``None`` without a projection)."""
    grad_output, grad_h_n, grad_c_n, grad_gates, grad_cells, grad_tanh = grads
    hidden = cells.shape[1]
    i_all, f_all, g_all, o_all = gates.chunk(4, dim=1)
    gate_slope = (
        torch.zeros_like(gates[:, : 2 * hidden])
        if hard
        else gates[:, : 2 * hidden] * (1 - gates[:, : 2 * hidden]) * scale
    )
    slopes = torch.cat([gate_slope, 1 - g_all * g_all, o_all * (1 - o_all)], dim=1)
    c_prev_all = previous_rows(cells, c0, batch_sizes, reverse)
    batch = h0.shape[0]
    dh_state = output.new_zeros(batch, output.shape[1]) if grad_h_n is None else grad_h_n
    dc_state = cells.new_zeros(batch, hidden) if grad_c_n is None else grad_c_n
    dh, dc = dh_state[:0], dc_state[:0]
    dh_finished: list[Tensor] = []
    dc_finished: list[Tensor] = []
    d_pre_rows: dict[int, Tensor] = {}
    grad_weight_hr = None
    for step in reversed(_steps(batch_sizes, reverse)):
        size = step.stop - step.start
        dh = _resize(dh, size, dh_state, dh_finished)
        dc = _resize(dc, size, dc_state, dc_finished)
        if grad_output is not None:
            dh = dh + grad_output[step]
        i, f, g, o = i_all[step], f_all[step], g_all[step], o_all[step]
        tanh_c = tanh_cells[step]
        if weight_hr is None:
            dm = dh
        else:
            dm = dh.mm(weight_hr)
            term = dh.t().mm(o * tanh_c)
            grad_weight_hr = term if grad_weight_hr is None else grad_weight_hr + term
        d_tanh = dm * o if grad_tanh is None else dm * o + grad_tanh[step]
        dc = dc + d_tanh * (1 - tanh_c * tanh_c)
        if grad_cells is not None:
            dc = dc + grad_cells[step]
        d_act = torch.cat([dc * g, dc * c_prev_all[step], dc * i, dm * tanh_c], dim=1)
        if grad_gates is not None:
            d_act = d_act + grad_gates[step]
        d_pre = d_act * slopes[step]
        d_pre_rows[step.start] = d_pre
        dh = d_pre.mm(weight_hh)
        dc = dc * f
    grad_gate_inputs = torch.cat([d_pre_rows[start] for start in sorted(d_pre_rows)])
    grad_weight_hh = grad_gate_inputs.t().mm(previous_rows(output, h0, batch_sizes, reverse))
    return (
        grad_gate_inputs,
        _assemble(dh, dh_finished),
        _assemble(dc, dc_finished),
        grad_weight_hh,
        grad_weight_hr,
    )


def _batch_sizes_argument(
    batch_sizes: Sequence[int] | Tensor | None, rows: int, batch: int
) -> Optional[Tensor]:
    """``batch_sizes`` as the operators take it: ``None`` for a plain batch, else an int64 CPU tensor."""
    if batch_sizes is None or isinstance(batch_sizes, Tensor):
        return batch_sizes
    sizes = list(batch_sizes)
    if all(size == batch for size in sizes) and len(sizes) * batch == rows:
        return None
    return torch.tensor(sizes, dtype=torch.int64)


def lstm_sequence(
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
    kernel: str | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run one direction of one LSTM layer over a packed, time-major sequence.

    Args:
        gate_inputs: ``(N, 4H)`` input part of the pre-activations of every step, rows in packed order
            (step 0's ``batch_sizes[0]`` rows, then step 1's, ...); gate order i, f, g, o.
        h0, c0: ``(B, P)`` and ``(B, H)`` initial states, ``B = batch_sizes[0]``, ``P`` the projection
            size (``H`` without one).
        weight_hh: ``(4H, P)`` hidden-to-hidden weights.
        batch_sizes: active sequences per step, non-increasing (a list, or an int64 tensor as in a
            ``PackedSequence``); ``None`` is a plain batch, ``N / B`` steps of ``B``.
        reverse: run from the last step to the first (the backward direction of a bidirectional layer).
        scale: the input and forget gates are ``sigmoid(scale * a)`` (``scale = 1 / temperature``).
        hard: input and forget gates are ``1[a >= 0]`` (no gradient through them) instead of sigmoids.
        weight_hr: ``(P, H)`` projection (``proj_size``): ``h = W_hr (o * tanh(c))``; ``None``: none.
        noise_seed: seed (Philox key) of the input- and forget-gate noise (a 62-bit integer such as
            :func:`~g2lstm.functional.noise_seed` draws, or a 0-dim int64 tensor, one of
            :func:`~g2lstm.functional.noise_seeds`), or ``None`` for no noise; those gates'
            pre-activations get :func:`~g2lstm.functional.noise_from_bits` of
            :func:`~g2lstm.functional.gate_bits` ``(seed, N, H)`` added (noise distributed as
            :func:`g2lstm.functional.logistic_noise`).
        noise_p, noise_eps: the noise's settings (see :func:`g2lstm.functional.logistic_noise`).
        kernel: the sequence loop: ``"auto"`` (the compiled loop on CPU where it builds, the Triton loop for
            float32 and float64 on CUDA where Triton imports, else the Python loop), ``"compiled"`` (CPU),
            ``"triton"`` (CUDA, or CPU under ``TRITON_INTERPRET=1``) or ``"python"``; ``None`` reads
            ``$G2LSTM_CPU_KERNEL`` for CPU tensors (:mod:`g2lstm.kernels.compiled`) and
            ``$G2LSTM_CUDA_KERNEL`` for CUDA tensors (:mod:`g2lstm.kernels.triton_loop`). Projections
            always run the Python loop.
        backend: how the Python loop computes its per-step products
            (:func:`g2lstm.kernels.backends.step_product`); the compiled loop has its own.

    Returns:
        ``(output (N, P), h_n (B, P), c_n (B, H), gates (N, 4H))``; ``gates`` holds the activations
        i, f, g, o as the cell used them and carries no gradient.
    """
    if isinstance(noise_seed, Tensor):
        seed: Optional[Tensor] = noise_seed
    elif noise_seed is None:
        seed = None
    elif isinstance(noise_seed, int) and not isinstance(noise_seed, bool) and 0 <= noise_seed < 2**63:
        seed = torch.tensor(noise_seed, dtype=torch.int64)
    else:
        raise ValueError(f"noise_seed must be an int in [0, 2**63), got {noise_seed!r}")
    sizes = _batch_sizes_argument(batch_sizes, gate_inputs.shape[0], h0.shape[0])
    sequence = _FunctorchSequence.apply if torch._C._are_functorch_transforms_active() else _forward_op
    output, h_n, c_n, gates, _, _ = sequence(
        gate_inputs,
        h0,
        c0,
        weight_hh,
        weight_hr,
        sizes,
        seed,
        bool(reverse),
        float(scale),
        bool(hard),
        float(noise_p),
        float(noise_eps),
        kernel,
        backend,
    )
    return output, h_n, c_n, gates.detach()
