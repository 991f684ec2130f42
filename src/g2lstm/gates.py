"""Gate modes of the input and forget gates, and what each computes in training and at inference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["GATE_MODES", "EVAL_GATES", "DEFAULT_TEMPERATURE", "MIN_TEMPERATURE", "GateConfig", "GatePlan",
           "check_temperature", "set_eval_gate"]

GATE_MODES = ("g2", "sharpened", "lstm")
EVAL_GATES = ("sigmoid", "tempered", "hard")
DEFAULT_TEMPERATURE = {"g2": 0.9, "sharpened": 0.2, "lstm": 1.0}
DEFAULT_EVAL_GATE = {"g2": "sigmoid", "sharpened": "tempered", "lstm": "sigmoid"}
# The gates scale their inputs by 1/temperature in the weights' precision; below this, 1/temperature
# overflows float32 (and bfloat16, whose range is the same) to infinity, and a·∞ turns 0 into NaN.
MIN_TEMPERATURE = 1.0 / float(torch.finfo(torch.float32).max)


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float, or TypeError / ValueError when it is no number, not finite, or so small
    that 1/temperature overflows float32."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature must be at least {MIN_TEMPERATURE:.3g} (1 / the largest float32), so that "
            f"1/temperature stays finite; got {temperature!r}. Gates that small are step functions: use "
            f"eval_gate='hard' for those"
        )
    return float(temperature)


class GatePlan(NamedTuple):
    """What the input and forget gates compute in one forward pass.

    ``gate = hard ? 1[a >= 0] : sigmoid((a + noise) * scale)``; ``noise`` says whether logistic noise is
    drawn. The output gate and the candidate are never changed.
    """

    scale: float
    noise: bool
    hard: bool


def set_eval_gate(module: nn.Module, eval_gate: str | None) -> None:
    """Give every G2LSTM and G2LSTMCell in ``module`` the evaluation-mode input/forget gate ``eval_gate``
    (``None``: each layer's mode's default), e.g. ``"hard"`` for 0/1 gates at inference."""
    from g2lstm.lstm import G2LSTM, G2LSTMCell  # here: g2lstm.lstm imports this module

    for layer in module.modules():
        if isinstance(layer, (G2LSTM, G2LSTMCell)):
            layer.eval_gate = eval_gate


@dataclass(frozen=True)
class GateConfig:
    """Validated gate options of a G2LSTM; see :class:`g2lstm.G2LSTM` for their meaning.

    ``temperature`` and ``eval_gate`` stay ``None`` when not given, so that they follow ``mode`` (also when
    the mode changes later); :attr:`tau` and :attr:`inference_gate` are the values in force.
    """

    mode: str = "g2"
    temperature: float | None = None
    noise_p: float = 0.2
    noise_eps: float = 1e-3
    eval_gate: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in GATE_MODES:
            raise ValueError(f"gate must be one of {GATE_MODES}, got {self.mode!r}")
        check_temperature(DEFAULT_TEMPERATURE[self.mode] if self.temperature is None else self.temperature)
        for name in ("noise_p", "noise_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
        if not 0.0 <= self.noise_p <= 1.0:
            raise ValueError(f"noise_p must lie in [0, 1], got {self.noise_p!r}")
        if not 0.0 < self.noise_eps < 0.5:
            raise ValueError(f"noise_eps must lie in (0, 0.5), got {self.noise_eps!r}")
        eval_gate = DEFAULT_EVAL_GATE[self.mode] if self.eval_gate is None else self.eval_gate
        if not isinstance(eval_gate, str) or eval_gate not in EVAL_GATES:
            raise ValueError(f"eval_gate must be one of {EVAL_GATES}, got {eval_gate!r}")
        object.__setattr__(self, "noise_p", float(self.noise_p))
        object.__setattr__(self, "noise_eps", float(self.noise_eps))

    @property
    def tau(self) -> float:
        """The temperature in force: the given one, else the mode's default."""
        return float(DEFAULT_TEMPERATURE[self.mode] if self.temperature is None else self.temperature)

    @property
    def inference_gate(self) -> str:
        """The evaluation-mode gate in force: the given one, else the mode's default."""
        return DEFAULT_EVAL_GATE[self.mode] if self.eval_gate is None else self.eval_gate

    def plan(self, training: bool) -> GatePlan:
        """The gate computation of a forward pass in training (``True``) or evaluation mode."""
        inverse_temperature = 1.0 / self.tau
        if training:
            if self.mode == "lstm":
                return GatePlan(1.0, False, False)
            return GatePlan(inverse_temperature, self.mode == "g2" and self.noise_p > 0, False)
        if self.inference_gate == "hard":
            return GatePlan(1.0, False, True)
        if self.inference_gate == "tempered":
            return GatePlan(inverse_temperature, False, False)
        return GatePlan(1.0, False, False)
