"""The CUDA loop of the fused kernel: Triton step kernels launched from a host loop, and when it runs.

Each time step of a layer direction is one launch of :func:`g2lstm.kernels.triton_steps.forward_step`
(recurrent product, gate noise, nonlinearities and cell update fused) and, going back, one launch of
``backward_step`` (recurrent product of the gradients with the step's local derivatives fused); the weight
gradient is one library product over all steps, and the input projection stays in ``F.linear`` outside the
kernel. The earlier CUDA path ran the Python loop of :mod:`g2lstm.kernels.fused`, about ten small launches
per step, which left the GPU waiting on the host (``results/gpu/REPORT.md``).

Why this design (issue 20):

- Triton rather than a CUDA extension: the same kernel source runs on the CPU under ``TRITON_INTERPRET=1``,
  so its numerics (against the reference loop, float64 to 1e-10) are tested on machines without a GPU, and
  nothing is compiled at install time; torch's CUDA wheels for Linux bring Triton with them.
- One launch per step rather than a persistent kernel: the steps of a persistent kernel need a grid-wide
  barrier, which deadlocks under the interpreter (it runs programs one after another) and so could only be
  tested on a GPU; and at the AWD-LSTM size (H = 1150, 21 MB of float32 ``W_hh``) the weights fit no single
  SM's registers or shared memory, so they are read from L2 on every step either way.
- Not FlashRNN: its CUDA kernels are compiled by nvcc on first use per configuration (minutes), built with
  ``--use_fast_math`` and without float64, and its Triton kernels need head dimensions of at most 64, while a
  G2LSTM layer is one head of ``hidden_size`` units.
- No CUDA graphs: the noise key is a launch argument drawn per call, which a captured graph would freeze,
  and graphs need static input and output buffers. ``benchmarks/gpu_check.py`` measures what capturing a
  whole training step would save, to decide on measured numbers.

Float32 recurrent products follow torch's matmul precision (``torch.get_float32_matmul_precision()``):
``"highest"`` (torch's default) computes them in full float32, anything else allows TF32, as for the
library products around them. ``$G2LSTM_CUDA_KERNEL`` picks the loop for CUDA tensors: ``auto`` (default:
this loop for float32 and float64 when Triton imports, else the Python loop with one warning), ``triton``
(an error when it cannot run) or ``python``.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Literal, NamedTuple, overload

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from g2lstm.functional import _check_noise_args
from g2lstm.kernels.reference import row_offsets

__all__ = [
    "CUDA_KERNELS",
    "CUDA_KERNEL_ENV",
    "TRITON_DTYPES",
    "Blocks",
    "cuda_kernel_choice",
    "default_blocks",
    "interpreting",
    "steps_module",
    "triton_backward",
    "triton_forward",
    "triton_sequence",
    "use_triton",
]

CUDA_KERNEL_ENV = "G2LSTM_CUDA_KERNEL"
CUDA_KERNELS = ("auto", "triton", "python")
TRITON_DTYPES = (torch.float32, torch.float64)
_STEPS_MODULE = "g2lstm.kernels.triton_steps"

# The step kernels' module once imported, or the error that stopped it (imported at most once).
_loaded: dict[str, ModuleType | Exception] = {}


def cuda_kernel_choice(kernel: str | None = None) -> str:
    """The loop asked for CUDA tensors: ``kernel`` if given, else ``$G2LSTM_CUDA_KERNEL``, else ``"auto"``."""
    source = "kernel" if kernel is not None else CUDA_KERNEL_ENV
    value = (
        kernel if kernel is not None else os.environ.get(CUDA_KERNEL_ENV, "auto").strip().lower() or "auto"
    )
    if value not in CUDA_KERNELS:
        raise ValueError(f"{source} must be one of {CUDA_KERNELS}, got {value!r}")
    return value


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), where the loop also
    takes CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


@overload
def steps_module(required: Literal[True]) -> ModuleType: ...


@overload
def steps_module(required: bool = False) -> ModuleType | None: ...


def steps_module(required: bool = False) -> ModuleType | None:
    """The step kernels (:mod:`g2lstm.kernels.triton_steps`, which imports Triton), imported on first use;
    ``None`` with one warning when Triton is missing or fails to import, an error with ``required``."""
    if _STEPS_MODULE not in _loaded:
        try:
            _loaded[_STEPS_MODULE] = importlib.import_module(_STEPS_MODULE)
        except Exception as error:  # ImportError, or whatever a broken Triton install raises on import
            _loaded[_STEPS_MODULE] = error
            if not required:
                warnings.warn(
                    f"g2lstm could not import Triton ({type(error).__name__}: {error}); CUDA training uses "
                    f"the slower Python loop. Install it with `pip install 'g2lstm[cuda]'`, or set "
                    f"{CUDA_KERNEL_ENV}=python to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    loaded = _loaded[_STEPS_MODULE]
    if isinstance(loaded, Exception):
        if required:
            raise RuntimeError(
                f"the Triton loop was asked for, but Triton could not be imported: {loaded}"
            ) from loaded
        return None
    return loaded


def use_triton(device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> bool:
    """Whether a sequence on ``device`` in ``dtype`` runs the Triton loop: float32 and float64 CUDA tensors
    (and CPU tensors under ``TRITON_INTERPRET=1`` when asked for by name); see :func:`cuda_kernel_choice`."""
    choice = cuda_kernel_choice(kernel)
    if choice == "python":
        return False
    runs_here = device.type == "cuda" or (device.type == "cpu" and interpreting())
    if choice == "triton":
        if not (runs_here and dtype in TRITON_DTYPES):
            raise ValueError(
                f"the Triton loop runs on float32 and float64 CUDA tensors (or CPU tensors under "
                f"TRITON_INTERPRET=1), got {dtype} on {device}"
            )
        steps_module(required=True)
        return True
    return device.type == "cuda" and dtype in TRITON_DTYPES and steps_module() is not None


class Blocks(NamedTuple):
    """Tile sizes of the step kernels: ``rows`` per program (at least 16, ``tl.dot``'s smallest tile),
    ``units`` hidden units per program (each with its four gates), ``inner`` the reduction chunk of the
    recurrent products, and ``warps`` per program."""

    rows: int
    units: int
    inner: int
    warps: int


def default_blocks(batch: int) -> Blocks:
    """Tiles for a batch of ``batch`` sequences: all rows in one program up to 64, 16 units per program (72
    programs at H = 1150, 13 at H = 200), reduction chunks of 32."""
    rows = min(64, max(16, 1 << (batch - 1).bit_length()))
    return Blocks(rows, 16, 32, 4)


@functools.lru_cache(maxsize=64)
def _settings(
    scale: float, noise_p: float, noise_eps: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """``(scale, noise_p, noise_eps, 1 + 2 noise_eps)`` as a tensor of the computation's dtype on ``device``,
    kept per setting, so that a steady run copies nothing to the device per call."""
    return torch.tensor([scale, noise_p, noise_eps, 1 + 2 * noise_eps], dtype=dtype, device=device)


def _precision() -> str:
    """``tl.dot``'s precision of float32 products under torch's matmul precision setting."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _processing_order(batch_sizes: Sequence[int], reverse: bool) -> list[tuple[int, int]]:
    """``(first row, rows)`` of each step in processing order."""
    steps = list(zip(row_offsets(batch_sizes), batch_sizes))
    return steps[::-1] if reverse else steps


def _grid(batch: int, hidden: int, blocks: Blocks) -> tuple[int, int]:
    return (-(-hidden // blocks.units), -(-batch // blocks.rows))


def triton_forward(
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
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward loop: one launch of ``forward_step`` per step. Arguments as
    :func:`g2lstm.kernels.lstm_sequence` (no projection); ``blocks`` overrides :func:`default_blocks`.

    Returns ``(output, h_n, c_n, gates, cells, h_prevs)``, the last the state each row's step started from.
    """
    kernels = steps_module(required=True)
    if noise_seed is not None:
        _check_noise_args(noise_p, noise_eps)
    blocks = blocks or default_blocks(batch_sizes[0])
    gate_inputs, h0, c0, weight_hh = (t.contiguous() for t in (gate_inputs, h0, c0, weight_hh))
    rows, hidden, batch = gate_inputs.shape[0], weight_hh.shape[1], batch_sizes[0]
    output, cells, h_prevs = (gate_inputs.new_empty(rows, hidden) for _ in range(3))
    gates = torch.empty_like(gate_inputs)
    h_n, c_n = h0.new_empty(batch, hidden), c0.new_empty(batch, hidden)
    settings = _settings(scale, noise_p, noise_eps, gate_inputs.dtype, gate_inputs.device)
    steps = _processing_order(batch_sizes, reverse)
    flags = (
        hard,
        noise_seed is not None,
        noise_p == 1.0,
        gate_inputs.dtype == torch.float64,
        _precision(),
        blocks.rows,
        blocks.units,
        blocks.inner,
    )
    launch = kernels.forward_step[_grid(batch, hidden, blocks)]
    with torch.cuda.device_of(gate_inputs):
        for p, (row, size) in enumerate(steps):
            prev_row, prev_size = steps[p - 1] if p > 0 else (0, 0)
            next_size = steps[p + 1][1] if p + 1 < len(steps) else 0
            launch(
                gate_inputs,
                weight_hh,
                h0,
                c0,
                output,
                cells,
                gates,
                h_prevs,
                h_n,
                c_n,
                settings,
                row,
                size,
                prev_row,
                prev_size,
                next_size,
                noise_seed or 0,
                hidden,
                *flags,
                num_warps=blocks.warps,
            )
    return output, h_n, c_n, gates, cells, h_prevs


def triton_backward(
    grad_output: Tensor | None,
    grad_h_n: Tensor | None,
    grad_c_n: Tensor | None,
    gates: Tensor,
    cells: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    batch_sizes: Sequence[int],
    reverse: bool,
    scale: float,
    hard: bool,
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward loop: one launch of ``backward_step`` per step, from the gradients of ``output``,
    ``h_n`` and ``c_n`` (``None``: zero) and the forward's ``gates`` and ``cells``. Returns the gradients of
    ``gate_inputs``, ``h0`` and ``c0``; that of ``weight_hh`` is one product the caller makes,
    ``grad_gates^T h_prevs``."""
    kernels = steps_module(required=True)
    blocks = blocks or default_blocks(batch_sizes[0])
    gates, cells, c0, weight_hh = (t.contiguous() for t in (gates, cells, c0, weight_hh))
    steps = _processing_order(batch_sizes, reverse)
    settings = _settings(scale, 1.0, 0.0, gates.dtype, gates.device)  # the backward reads the scale only
    batch, hidden = c0.shape
    grad_gates = torch.empty_like(gates)
    dc_carry, grad_h0, grad_c0 = (torch.empty_like(c0) for _ in range(3))
    zeros = c0.new_zeros(batch, hidden) if grad_h_n is None or grad_c_n is None else None
    grad_h_n = zeros if grad_h_n is None else grad_h_n.contiguous()
    grad_c_n = zeros if grad_c_n is None else grad_c_n.contiguous()
    has_grad_output = grad_output is not None
    grad_output = grad_output.contiguous() if grad_output is not None else gates  # not read without it
    flags = (hard, has_grad_output, _precision(), blocks.rows, blocks.units, blocks.inner)
    launch = kernels.backward_step[_grid(batch, hidden, blocks)]
    with torch.cuda.device_of(gates):
        # p = -1 is a last launch without rows of its own: it hands the first step's rows to grad_h0/c0.
        for p in range(len(steps) - 1, -2, -1):
            row, size = steps[p] if p >= 0 else (0, 0)
            prev_row, prev_size = steps[p - 1] if p >= 1 else (0, 0)
            next_row, next_size = steps[p + 1] if p + 1 < len(steps) else (0, 0)
            launch(
                grad_gates,
                weight_hh,
                gates,
                cells,
                c0,
                grad_output,
                grad_h_n,
                grad_c_n,
                dc_carry,
                grad_h0,
                grad_c0,
                settings,
                row,
                size,
                prev_row,
                prev_size,
                next_row,
                next_size,
                hidden,
                *flags,
                num_warps=blocks.warps,
            )
    return grad_gates, grad_h0, grad_c0


class _TritonLSTMSequence(torch.autograd.Function):
    """The function of :func:`g2lstm.kernels.lstm_sequence` on the Triton loop alone, with chosen tiles."""

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
        blocks: Blocks,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        output, h_n, c_n, gates, cells, h_prevs = triton_forward(
            gate_inputs, h0, c0, weight_hh, batch_sizes, reverse, scale, hard, noise_seed, noise_p, noise_eps,
            blocks,
        )
        ctx.save_for_backward(gates, cells, h_prevs, c0, weight_hh)
        ctx.settings = (batch_sizes, reverse, scale, hard, blocks)
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # unused outputs arrive as None and cost nothing
        return output, h_n, c_n, gates

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None, _: Any
    ) -> tuple[Tensor | None, ...]:
        gates, cells, h_prevs, c0, weight_hh = ctx.saved_tensors
        batch_sizes, reverse, scale, hard, blocks = ctx.settings
        grad_gates, grad_h0, grad_c0 = triton_backward(
            grad_output, grad_h_n, grad_c_n, gates, cells, c0, weight_hh, batch_sizes, reverse, scale, hard,
            blocks,
        )
        grad_weight_hh = grad_gates.t().mm(h_prevs) if ctx.needs_input_grad[3] else None
        return (grad_gates, grad_h0, grad_c0, grad_weight_hh) + (None,) * 8


def triton_sequence(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_hh: Tensor,
    batch_sizes: Sequence[int],
    *,
    reverse: bool = False,
    scale: float = 1.0,
    hard: bool = False,
    noise_seed: int | None = None,
    noise_p: float = 1.0,
    noise_eps: float = 1e-3,
    blocks: Blocks | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`g2lstm.kernels.lstm_sequence` on the Triton loop (same arguments and results), not as a
    registered operator; ``blocks`` overrides :func:`default_blocks` (for tests and tuning)."""
    if noise_seed is not None:
        _check_noise_args(noise_p, noise_eps)
    blocks = blocks or default_blocks(batch_sizes[0])
    return _TritonLSTMSequence.apply(
        gate_inputs,
        h0,
        c0,
        weight_hh,
        list(batch_sizes),
        reverse,
        scale,
        hard,
        noise_seed,
        noise_p,
        noise_eps,
        blocks,
    )
