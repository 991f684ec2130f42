"""Stateless gate functions: the logistic noise and the Gumbel-sigmoid (binary concrete) gate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["logistic_noise", "gumbel_sigmoid"]


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
    # One uniform draw V serves both: keep = V < p, and given keep, U = V / p is again Uniform(0, 1).
    # The logistic transform is computed for the kept elements only.
    uniform = torch.rand(shape, dtype=dtype, device=device)
    if noise_p == 1.0:
        return _logistic(uniform, noise_eps)
    keep = uniform < noise_p
    kept = _logistic(uniform[keep].div_(noise_p), noise_eps)
    return torch.zeros_like(uniform).masked_scatter_(keep, kept)


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
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    noise = logistic_noise(
        logits.shape, noise_p=noise_p, noise_eps=noise_eps, dtype=logits.dtype, device=logits.device
    )
    return torch.sigmoid((logits + noise) / temperature)
