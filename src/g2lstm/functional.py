"""Stateless gate functions: the logistic noise and the Gumbel-sigmoid (binary concrete) gate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from g2lstm.gates import check_temperature

__all__ = [
    "bits_dtype",
    "gate_bits",
    "gumbel_sigmoid",
    "logistic_noise",
    "noise_from_bits",
    "noise_from_uniform",
    "noise_seed",
    "noise_seeds",
    "philox4x32",
    "uniform_from_bits",
]


def _check_noise_args(noise_p: float, noise_eps: float) -> None:
    if not 0.0 <= noise_p <= 1.0:
        raise ValueError(f"noise_p must lie in [0, 1], got {noise_p!r}")
    if not 0.0 < noise_eps < 0.5:
        raise ValueError(f"noise_eps must lie in (0, 0.5), got {noise_eps!r}")


def logistic_noise(
    shape: torch.Size | tuple[int, ...],
    *,
    noise_p: float = 1.0,
    noise_eps: float = 1e-3,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw the gate noise ``m * L`` of G2-LSTM from torch's default generator.

    ``L = log(U + eps) - log(1 + eps - U)`` with ``U ~ Uniform(0, 1)`` is standard logistic noise (the
    difference of two Gumbel variables), kept finite by ``eps`` as in the authors' release
    (``|L| <= log((1 + eps) / eps)``). ``m ~ Bernoulli(noise_p)``
    chooses which elements are perturbed at all; ``noise_p = 1`` perturbs every element (the paper's
    formula as written).
    """
    _check_noise_args(noise_p, noise_eps)
    if noise_p == 0.0:
        return torch.zeros(shape, dtype=dtype, device=device)
    return noise_from_uniform(torch.rand(shape, dtype=dtype, device=device), noise_p, noise_eps)


def noise_from_uniform(uniform: Tensor, noise_p: float, noise_eps: float) -> Tensor:
    """The noise :func:`logistic_noise` makes of its ``Uniform(0, 1)`` draws ``uniform`` (left unchanged).

    One draw V serves both parts: the element is perturbed when ``V < noise_p``, and then ``U = V / noise_p``
    is again ``Uniform(0, 1)``. The fused kernel takes such draws and applies this inside its loop.
    """
    _check_noise_args(noise_p, noise_eps)
    if noise_p == 1.0:
        return _logistic(uniform.clone(), noise_eps)
    keep = uniform < noise_p
    kept = _logistic(uniform[keep].div_(noise_p), noise_eps)  # the logarithm for kept elements only
    return torch.zeros_like(uniform).masked_scatter_(keep, kept)


def bits_dtype(dtype: torch.dtype) -> torch.dtype:
    """The integer type of :func:`gate_bits` for uniforms of ``dtype``: int64 for float64, else int32."""
    return torch.int64 if dtype == torch.float64 else torch.int32


# Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011): the
# counter-based generator torch uses on CUDA. Counter-based, so any element's bits can be made where they
# are needed (the compiled CPU loop makes them inside its pass) and every implementation agrees bit for bit.
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_LOW32 = 0xFFFFFFFF


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[int, int]) -> tuple[Tensor, ...]:
    """Philox4x32-10 of the 32-bit counter words (int64 tensors holding values in ``[0, 2**32)``, broadcast
    together) under a 64-bit key given as two 32-bit words; returns the four output words likewise.

    The 32 x 32-bit products are formed in int64 and wrap modulo 2**64, which keeps their low and (masked)
    high halves exact.
    """
    x0, x1, x2, x3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = x0 * _PHILOX_M0, x2 * _PHILOX_M1
        x0, x1, x2, x3 = (
            ((p1 >> 32) & _LOW32) ^ x1 ^ k0,
            p1 & _LOW32,
            ((p0 >> 32) & _LOW32) ^ x3 ^ k1,
            p0 & _LOW32,
        )
        k0, k1 = (k0 + _PHILOX_W0) & _LOW32, (k1 + _PHILOX_W1) & _LOW32
    return x0, x1, x2, x3


@torch.library.custom_op("g2lstm::noise_seeds", mutates_args=(), tags=torch.Tag.nondeterministic_seeded)
def _draw_seeds(count: int, after: list[Tensor]) -> Tensor:
    return torch.randint(0, 2**62, (count,), dtype=torch.int64)


@_draw_seeds.register_fake
def _draw_seeds_fake(count: int, after: list[Tensor]) -> Tensor:
    return torch.empty(count, dtype=torch.int64)


def noise_seeds(count: int = 1, after: Sequence[Tensor] = ()) -> Tensor:
    """``count`` seeds of :func:`noise_seed` at once, an int64 tensor ``(count,)``, for modules that may be
    compiled or exported.

    The draw is a registered operator, so that ``torch.compile`` keeps it on torch's generator (eager and
    compiled runs draw the same seeds, where a compiled ``torch.randint`` would use the compiler's own
    generator) and ``torch.export`` records it as one node. A compiled graph orders operators by their
    data only, and the draw takes none: ``after`` names tensors it must follow (e.g. the input of the layer
    that uses the seeds), so that the seeds of successive layers are drawn in the eager order.
    """
    return _draw_seeds(count, [tensor.detach() for tensor in after])


def noise_seed() -> int:
    """One 62-bit draw from torch's default CPU generator: the seed (Philox key) of one call's gate noise,
    so that ``torch.manual_seed`` repeats the noise; the first of :func:`noise_seeds`."""
    return int(noise_seeds()[0])


def gate_bits(
    seed: int, rows: int, hidden: int, dtype: torch.dtype, device: torch.device | str | None = None
) -> Tensor:
    """The random bits behind the input- and forget-gate noise of ``rows`` rows: ``(rows, 2H)`` of
    :func:`bits_dtype`, columns ``[0, H)`` for the input gate and ``[H, 2H)`` for the forget gate.

    Element (row r, gate g, unit u) takes its bits from Philox4x32-10 under key ``seed`` at counter
    ``(u // 4, r, g, 0)``, word ``u % 4`` (24 bits used; float64: counter ``(u // 2, r, g, 0)``, words
    ``2 (u % 2)`` and ``2 (u % 2) + 1``, 53 bits). The compiled CPU loop makes the same bits inside its pass.
    :func:`noise_from_bits` turns them into noise.
    """
    if not 0 <= rows < 2**32:
        raise ValueError(f"gate noise is defined for fewer than 2**32 rows, got {rows}")
    wide = bits_dtype(dtype) == torch.int64
    per_counter = 2 if wide else 4
    counters = -(-hidden // per_counter)
    shape = (rows, 2, counters)
    x0 = torch.arange(counters, dtype=torch.int64, device=device).expand(shape)
    x1 = torch.arange(rows, dtype=torch.int64, device=device)[:, None, None].expand(shape)
    x2 = torch.arange(2, dtype=torch.int64, device=device)[None, :, None].expand(shape)
    x3 = torch.zeros(shape, dtype=torch.int64, device=device)
    words = torch.stack(philox4x32((x0, x1, x2, x3), (seed & _LOW32, seed >> 32 & _LOW32)), dim=-1)
    if wide:
        pairs = words.view(rows, 2, counters, 2, 2)
        bits = (pairs[..., 0] & (2**21 - 1)) << 32 | pairs[..., 1]
    else:
        bits = (words - (words >> 31 << 32)).to(torch.int32)  # the same 32 bits as a signed integer
    return bits.reshape(rows, 2, -1)[:, :, :hidden].reshape(rows, 2 * hidden)


def uniform_from_bits(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """``Uniform[0, 1)`` values of ``dtype`` from :func:`gate_bits`.

    As ``torch.rand``, as many low bits are used as ``dtype`` has significand bits (24 for float32, 53 for
    float64, 11 for float16), so that every value is exact and below 1.
    """
    used = round(-math.log2(torch.finfo(dtype).eps)) + 1  # significand bits
    return (bits & ((1 << used) - 1)).to(dtype).mul_(2.0**-used)


def noise_from_bits(bits: Tensor, dtype: torch.dtype, noise_p: float, noise_eps: float) -> Tensor:
    """The gate noise of ``dtype`` made of :func:`gate_bits`, distributed as :func:`logistic_noise`'s."""
    return noise_from_uniform(uniform_from_bits(bits, dtype), noise_p, noise_eps)


def _logistic(uniform: Tensor, eps: float) -> Tensor:
    """``log(U + eps) - log(1 + eps - U)``, computed in place as one logarithm."""
    shifted = uniform.add_(eps)  # U + eps, so (1 + 2 eps) - shifted = 1 + eps - U
    return shifted.div_((1 + 2 * eps) - shifted).log_()


def gumbel_sigmoid(
    logits: Tensor,
    temperature: float = 0.9,
    *,
    noise_p: float = 1.0,
    noise_eps: float = 1e-3,
) -> Tensor:
    """``G(alpha, tau) = sigmoid((alpha + m * L) / tau)``: a differentiable, nearly binary gate sample.

    Gradients flow to ``logits`` with the noise held constant (the reparameterisation trick); nothing is
    rounded. As ``temperature -> 0`` the sample tends to a Bernoulli(sigmoid(alpha)) draw.

    Example::

        >>> gate = gumbel_sigmoid(torch.zeros(3, 4), temperature=0.9)
        >>> gate.shape
        torch.Size([3, 4])
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must have a floating-point dtype, got {logits.dtype}")
    check_temperature(temperature)
    noise = logistic_noise(
        logits.shape, noise_p=noise_p, noise_eps=noise_eps, dtype=logits.dtype, device=logits.device
    )
    return torch.sigmoid((logits + noise) / temperature)
