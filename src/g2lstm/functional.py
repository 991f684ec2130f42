"""Stateless gate functions: the logistic noise and the Gumbel-sigmoid (binary concrete) gate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from g2lstm.gates import check_temperature

__all__ = [
    "bits_dtype",
    "gumbel_sigmoid",
    "logistic_noise",
    "noise_from_bits",
    "noise_from_uniform",
    "random_bits",
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
    """The integer type of :func:`random_bits` for uniforms of ``dtype``: int64 for float64, else int32."""
    return torch.int64 if dtype == torch.float64 else torch.int32


def random_bits(
    shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device | str | None = None
) -> Tensor:
    """Random integers from torch's default generator, one per uniform of ``dtype`` to be made.

    For float32 and narrower types each 64-bit draw yields two int32 values (of which
    :func:`uniform_from_bits` uses as many bits as ``torch.rand`` would), which halves the generator
    calls; for float64 one int64 (53 bits used) per value. :func:`noise_from_bits` (or the fused kernel)
    turns them into gate noise.
    """
    count = math.prod(shape)
    if bits_dtype(dtype) == torch.int64:
        return torch.empty(count, dtype=torch.int64, device=device).random_().view(shape)
    words = torch.empty((count + 1) // 2, dtype=torch.int64, device=device).random_()
    return words.view(torch.int32)[:count].view(shape)


def uniform_from_bits(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """``Uniform[0, 1)`` values of ``dtype`` from :func:`random_bits`.

    As ``torch.rand``, as many low bits are used as ``dtype`` has significand bits (24 for float32, 53 for
    float64, 11 for float16), so that every value is exact and below 1.
    """
    used = round(-math.log2(torch.finfo(dtype).eps)) + 1  # significand bits
    return (bits & ((1 << used) - 1)).to(dtype).mul_(2.0**-used)


def noise_from_bits(bits: Tensor, dtype: torch.dtype, noise_p: float, noise_eps: float) -> Tensor:
    """The gate noise of ``dtype`` made of :func:`random_bits`, distributed as :func:`logistic_noise`'s."""
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
