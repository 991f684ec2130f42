"""Gate blocks reduced below int8 for hard-gate inference: int4, ternary and sign weights (beyond the paper).

With ``eval_gate="hard"`` an input or forget gate is ``1[a >= 0]`` for its pre-activation
``a = W x + U h + b``: only the sign of each row's sum matters, so those rows tolerate far coarser weights
than a sigmoid gate does. Each row of a gate block keeps one float scale and integer codes:

- ``"int4"``: codes in ``[-7, 7]``, scale ``max|w| / 7`` (symmetric, 4 bits a weight);
- ``"ternary"``: codes in ``{-1, 0, 1}``, zero where ``|w| <= 0.7 mean|w|``, scale the mean ``|w|`` of the
  rest (ternary weight networks' rule; 2 bits a weight);
- ``"sign"``: codes ``±1``, scale ``mean|w|`` (1 bit a weight);
- ``"float32"``: the weights as they are (with ``rank``, plain low rank), for comparison.

Combined with ``rank=k`` the block is first factored as by :func:`g2lstm.compress.compress` (``u v``, the
best rank-``k`` approximation) and both factors are reduced row by row. :func:`lowbit_copy` returns a copy
of a model whose gate blocks hold the reduced values (simulated: they are stored dequantized, as floats), so
that perplexity can be measured with any evaluation path; :func:`lowbit_bits` gives the size the blocks
would take packed at their bit widths, with 32-bit scales.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from g2lstm.compress import GATES, PAPER_GATES
from g2lstm.errors import ConfigError
from g2lstm.lstm import G2LSTM

__all__ = ["LEVELS", "LowBitReport", "lowbit_copy", "quantize_rows"]

LEVELS = {"float32": 32, "int4": 4, "ternary": 2, "sign": 1}  # bits a weight, packed
SCALE_BITS = 32


def quantize_rows(weight: Tensor, levels: str) -> Tensor:
    """``weight`` (rows × columns) with each row reduced to ``levels`` (see the module docstring),
    dequantized: ``scale_r * codes_r``."""
    if levels not in LEVELS:
        raise ConfigError(f"levels must be one of {tuple(LEVELS)}, got {levels!r}")
    if levels == "float32":
        return weight.clone()
    magnitude = weight.abs()
    if levels == "int4":
        scale = magnitude.amax(dim=1, keepdim=True) / 7
        codes = torch.round(weight / torch.where(scale > 0, scale, 1.0)).clamp(-7, 7)
    elif levels == "ternary":
        kept = magnitude > 0.7 * magnitude.mean(dim=1, keepdim=True)
        codes = torch.sign(weight) * kept
        scale = (magnitude * kept).sum(dim=1, keepdim=True) / kept.sum(dim=1, keepdim=True).clamp(min=1)
    else:
        codes = torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)
        scale = magnitude.mean(dim=1, keepdim=True)
    return scale * codes


@dataclass(frozen=True)
class LowBitReport:
    """What :func:`lowbit_copy` did: the setting, the packed size of the reduced gate blocks and of the
    same blocks in float32, and the relative error of each reduced block (``‖W − Ŵ‖ / ‖W‖``)."""

    levels: str
    rank: int | None
    bits: int
    float_bits: int
    errors: dict[str, float]

    @property
    def ratio(self) -> float:
        """The reduced blocks' size as a share of their float32 size."""
        return self.bits / self.float_bits


def lowbit_copy(
    module: nn.Module, levels: str, *, rank: int | None = None, gates: Sequence[str] = PAPER_GATES
) -> tuple[nn.Module, LowBitReport]:
    """A deep copy of ``module`` whose G2LSTM layers have the ``gates`` blocks of every weight matrix reduced
    to ``levels`` (after a rank-``rank`` factorisation when given), and its report. ``module`` is unchanged;
    compressed (parametrized) layers are refused, as their blocks are not plain matrices."""
    unknown = [gate for gate in gates if gate not in GATES]
    if unknown or not gates:
        raise ConfigError(f"gates must name some of {GATES}, got {list(gates)}")
    if levels not in LEVELS:
        raise ConfigError(f"levels must be one of {tuple(LEVELS)}, got {levels!r}")
    variant = copy.deepcopy(module)
    layers = [(path, layer) for path, layer in variant.named_modules() if isinstance(layer, G2LSTM)]
    if not layers:
        raise ConfigError(f"{type(module).__name__} holds no G2LSTM layer to reduce")
    bits = float_bits = 0
    errors: dict[str, float] = {}
    with torch.no_grad():
        for path, layer in layers:
            if hasattr(layer, "parametrizations"):
                raise ConfigError(f"layer {path or '<module>'} is compressed; reduce an uncompressed model")
            hidden = layer.hidden_size
            for name in layer._flat_weights_names:
                if not name.startswith(("weight_ih", "weight_hh")):  # the gate matrices
                    continue
                weight = getattr(layer, name)
                for index, gate in enumerate(GATES):
                    if gate not in gates:
                        continue
                    rows = weight[index * hidden : (index + 1) * hidden]
                    reduced, block_bits = _reduce(rows, levels, rank, f"{path}.{name}")
                    error = (rows - reduced).norm() / rows.norm().clamp_min(1e-12)
                    errors[f"{path}.{name}.{gate}"] = float(error)
                    rows.copy_(reduced)
                    bits += block_bits
                    float_bits += 32 * rows.numel()
    return variant, LowBitReport(levels, rank, bits, float_bits, errors)


def _reduce(block: Tensor, levels: str, rank: int | None, where: str) -> tuple[Tensor, int]:
    """The reduced block and its packed size in bits (codes at their width, one scale a row)."""
    scale_bits = 0 if levels == "float32" else SCALE_BITS
    if rank is None:
        rows, columns = block.shape
        return quantize_rows(block, levels), rows * columns * LEVELS[levels] + rows * scale_bits
    if not 1 <= rank <= min(block.shape):
        raise ConfigError(f"rank={rank} does not fit the {tuple(block.shape)} gate blocks of {where}")
    left, singular, right = torch.linalg.svd(block.double(), full_matrices=False)
    root = singular[:rank].sqrt()
    u = (left[:, :rank] * root).to(block.dtype)
    v = (root[:, None] * right[:rank]).to(block.dtype)
    size = (u.numel() + v.numel()) * LEVELS[levels] + (u.shape[0] + v.shape[0]) * scale_bits
    return quantize_rows(u, levels) @ quantize_rows(v, levels), size
