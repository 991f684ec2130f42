"""The per-step matrix products of the fused kernel, one implementation per backend.

The recurrent product ``h @ W_hh^T`` (and ``dG @ W_hh`` going back) is the only work of a step that is not
element-wise, and at LSTM sizes it is a skinny product (a batch of rows against a large weight) whose
speed is set by how the weight is laid out in memory. On CPU float32, oneDNN's prepacked weights (the
layout its own LSTM uses) make it about 1.5x faster than a plain ``torch.mm``; everywhere else, and when
this torch build lacks the oneDNN operators, the plain product is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["BACKENDS", "StepProduct", "onednn_available", "step_product", "use_onednn"]

BACKENDS = ("auto", "torch", "onednn")

# step(rows, add) = add + rows @ matrix^T (add may be None), as a new tensor.
StepProduct = Callable[[Tensor, Tensor | None], Tensor]


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN prepacked linear operators (CPU builds usually do)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(
            torch.ops.mkldnn._reorder_linear_weight and torch.ops.mkldnn._linear_pointwise
        )
    except (AttributeError, RuntimeError):
        return False


def _torch_product(matrix: Tensor) -> StepProduct:
    matrix_t = matrix.t()

    def step(rows: Tensor, add: Tensor | None) -> Tensor:
        return torch.mm(rows, matrix_t) if add is None else torch.addmm(add, rows, matrix_t)

    return step


def _onednn_product(matrix: Tensor, batch: int) -> StepProduct:
    packed = torch.ops.mkldnn._reorder_linear_weight(matrix.detach(), batch)

    def step(rows: Tensor, add: Tensor | None) -> Tensor:
        if add is None:
            return torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(rows, add, packed, None, "add")

    return step


def use_onednn(matrix: Tensor, backend: str = "auto") -> bool:
    """Whether products with ``matrix`` run on oneDNN for ``backend`` (see :func:`step_product`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fits_onednn = matrix.device.type == "cpu" and matrix.dtype == torch.float32
    if backend == "onednn" and not (fits_onednn and onednn_available()):
        raise ValueError(
            f"the onednn backend needs float32 CPU tensors and a torch build with oneDNN; got "
            f"{matrix.dtype} on {matrix.device}"
        )
    return backend == "onednn" or (backend == "auto" and fits_onednn and onednn_available())


def step_product(matrix: Tensor, batch: int, backend: str = "auto") -> StepProduct:
    """A function computing ``add + rows @ matrix^T`` for many row blocks of at most ``batch`` rows.

    ``backend``: ``"torch"`` (plain products, any device and dtype), ``"onednn"`` (prepacked weights,
    CPU float32 only) or ``"auto"`` (oneDNN where it applies and is available, else torch).
    """
    return _onednn_product(matrix, batch) if use_onednn(matrix, backend) else _torch_product(matrix)
