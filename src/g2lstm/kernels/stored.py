"""Inference from weights stored in another form than a dense matrix (low-rank factors, integer codes).

A parametrization of a G2LSTM weight (:mod:`torch.nn.utils.parametrize`) may say how it stores the matrix,
gate block by gate block, by a method ``factors(*originals)`` returning ``{gate: (kind, tensors)}`` for the
gates ``input``, ``forget``, ``cell``, ``output`` with ``kind`` one of

- ``"dense"``: ``(block,)``, the ``(H, in)`` rows;
- ``"rank"``: ``(u, v)``, the block is ``u @ v`` with ``u`` ``(H, k)`` and ``v`` ``(k, in)``;
- ``"round"``: ``(codes, step)``, the block is ``codes * step`` with integer ``codes`` ``(H, in)`` (best
  stored as the transpose of a contiguous ``(in, H)`` tensor, which the kernel reads without a copy).

:class:`g2lstm.compress.CompressedGates` does. At inference (no gradient wanted, no gate noise) the module
then computes its products from those forms: the input projection as two skinny products per low-rank
block, and the recurrence in the compiled CPU loop (``sequence_inference`` of ``cpu_step.cpp``), which
multiplies by the factors or by the int8 codes directly. Nothing here knows where the forms come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from g2lstm.kernels.compiled import compiled_module, use_compiled

__all__ = [
    "GATE_ORDER", "StoredForms", "dense_block", "dense_forms", "gate_projection", "lstm_sequence_stored",
    "stored_forms", "use_stored_inference",
]

GATE_ORDER = ("input", "forget", "cell", "output")
_KINDS = {"dense": 0, "rank": 1, "round": 2}
_CODE_ROWS = 128  # rows of integer codes converted at a time in the input projection

# {gate: (kind, tensors)} of one weight matrix.
StoredForms = dict[str, tuple[str, tuple[Tensor, ...]]]


def stored_forms(module: nn.Module, name: str) -> StoredForms | None:
    """The stored forms of ``module``'s weight ``name`` when a parametrization of it provides ``factors``;
    ``None`` for a plain Parameter or any other parametrization."""
    if not parametrize.is_parametrized(module, name):
        return None
    stored = cast(Any, module.parametrizations)[name]
    provider = next((p for p in stored if hasattr(p, "factors")), None)
    if provider is None or len(stored) != 1:
        return None
    originals = [stored.original] if stored.is_tensor else [getattr(stored, f"original{i}")
                                                             for i in range(stored.ntensors)]
    return provider.factors(*originals)


def dense_forms(weight: Tensor) -> StoredForms:
    """A dense ``(4H, in)`` weight as stored forms: its four gate blocks (views, no copy)."""
    return {gate: ("dense", (block,)) for gate, block in zip(GATE_ORDER, weight.chunk(4))}


def dense_block(kind: str, tensors: tuple[Tensor, ...]) -> Tensor:
    """One gate's stored form rebuilt as its dense ``(H, in)`` block."""
    if kind == "dense":
        return tensors[0]
    if kind == "rank":
        return tensors[0] @ tensors[1]
    codes, step = tensors
    if _Dequantize.exportable(codes, step):
        return _Dequantize.apply(codes, step)
    return codes.to(step.dtype) * step


class _Dequantize(torch.autograd.Function):
    """``codes · step``, which the TorchScript ONNX exporter writes as one ``DequantizeLinear``.

    onnxruntime's constant folding leaves ``DequantizeLinear`` alone, so a session keeps int8 codes as
    integers, where it multiplies a ``Cast`` and a ``Mul`` of constants out into a float matrix.
    """

    @staticmethod
    def exportable(codes: Tensor, step: Tensor) -> bool:
        """Under the TorchScript exporter, for int8 codes of a float32 step (``DequantizeLinear``'s types
        before opset 21)."""
        return (torch.onnx.is_in_onnx_export() and torch.jit.is_tracing() and codes.dtype == torch.int8
                and step.dtype == torch.float32)

    @staticmethod
    def forward(ctx: Any, codes: Tensor, step: Tensor) -> Tensor:
        return codes.to(step.dtype) * step

    @staticmethod
    def symbolic(graph: Any, codes: Any, step: Any) -> Any:
        return graph.op("DequantizeLinear", codes, step)


def use_stored_inference(
    module: nn.Module, reference: Tensor, names: Sequence[str], noise: bool, hard: bool
) -> bool:
    """Whether a pass runs on the inference loop: no gradient is wanted, no noise is drawn, the compiled CPU
    loop runs for this device and dtype, and some weight has stored forms or the gates are hard (the loop
    keeps no activations for a backward pass, which the fused kernel's forward operator must)."""
    if noise or torch.is_grad_enabled():
        return False
    if not hard and not any(stored_forms(module, name) is not None for name in names):
        return False
    return use_compiled(reference.device, reference.dtype)


def gate_projection(inputs: Tensor, forms: StoredForms, bias: Tensor | None) -> Tensor:
    """``inputs @ W^T + bias`` for a weight given by its stored forms, ``(N, 4H)``: low-rank blocks as two
    skinny products, integer codes converted to floats a few rows at a time. Every block is added in place
    into its columns of the one result (BLAS writes a column slice directly), so that the peak memory is the
    result and one block's temporaries, not four blocks, their concatenation and the biased copy."""
    hidden = forms[GATE_ORDER[0]][1][0].shape[0]
    if bias is None:
        projection = inputs.new_zeros(inputs.shape[0], 4 * hidden)
    else:
        projection = bias.expand(inputs.shape[0], 4 * hidden).clone()
    for index, gate in enumerate(GATE_ORDER):
        columns = projection[:, index * hidden : (index + 1) * hidden]
        kind, tensors = forms[gate]
        if kind == "dense":
            columns.addmm_(inputs, tensors[0].t())
        elif kind == "rank":
            u, v = tensors
            columns.addmm_(F.linear(inputs, v), u.t())
        else:  # a few rows of codes at a time, so that no float copy of the block is ever whole
            codes, step = tensors
            for start, rows in zip(range(0, hidden, _CODE_ROWS), codes.split(_CODE_ROWS)):
                part = columns[:, start : start + rows.shape[0]]
                part.addmm_(inputs, rows.to(inputs.dtype).t(), alpha=float(step))
    return projection


def _kernel_forms(forms: StoredForms) -> tuple[list[int], list[Tensor]]:
    """The gate forms as the compiled loop takes them; codes other than int8 are widened to dense blocks."""
    kinds: list[int] = []
    tensors: list[Tensor] = []
    for gate in GATE_ORDER:
        kind, values = forms[gate]
        if kind == "round" and values[0].dtype != torch.int8:
            kind, values = "dense", (dense_block(kind, values),)
        # the kernel reads codes as (in, H); a transposed view of such storage costs nothing
        if kind == "round":
            values = (values[0].t().contiguous(), values[1])
        kinds.append(_KINDS[kind])
        tensors.extend(value.detach() for value in values)
    return kinds, tensors


def lstm_sequence_stored(
    gate_inputs: Tensor,
    h0: Tensor,
    c0: Tensor,
    forms: StoredForms,
    batch_sizes: Sequence[int],
    *,
    reverse: bool = False,
    scale: float = 1.0,
    hard: bool = False,
    keep_gates: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Any]:
    """:func:`~g2lstm.kernels.lstm_sequence` at inference with the hidden-to-hidden weights in their stored
    forms; returns ``(output, h_n, c_n, gates or None)`` (``gates`` when ``keep_gates``)."""
    kinds, tensors = _kernel_forms(forms)
    output, h_n, c_n, gates = compiled_module(required=True).inference(
        gate_inputs, h0, c0, kinds, tensors, list(batch_sizes), reverse, scale, hard, keep_gates
    )
    return output, h_n, c_n, gates if keep_gates else None
