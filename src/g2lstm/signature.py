"""The signature printed beside every reported number, as sacreBLEU's: what the number depends on.

``str(signature)`` is one line, e.g.
``g2lstm:0.1.0|gate:g2|tau:0.9|p:0.2|eval:sigmoid|comp:none|data:ptb|split:test|seed:141|commit:1a2b3c4d5e6f``;
``signature.as_dict()`` the same as plain values for JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["Signature", "describe_compression", "model_signature"]


@dataclass(frozen=True)
class Signature:
    """Package version, gate mode, temperature, noise share, inference gate, compression, data set and split,
    seed and the code's commit of one reported number."""

    version: str
    gate: str
    temperature: float
    noise_p: float
    eval_gate: str
    compression: str
    data: str
    split: str
    seed: int
    commit: str | None

    def __str__(self) -> str:
        fields = [("g2lstm", self.version), ("gate", self.gate), ("tau", f"{self.temperature:g}"),
                  ("p", f"{self.noise_p:g}"), ("eval", self.eval_gate), ("comp", self.compression),
                  ("data", self.data), ("split", self.split), ("seed", self.seed),
                  ("commit", (self.commit or "unknown")[:12])]
        return "|".join(f"{name}:{value}" for name, value in fields)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": str(self)}


def model_signature(
    model: nn.Module,
    *,
    noise_p: float,
    seed: int,
    data: str | Path,
    split: str,
    compression: Mapping[str, Mapping[str, Any]] | None = None,
) -> Signature:
    """The signature of a number measured with ``model`` (its first G2LSTM's gate, temperature and inference
    gate, as set now) on ``split`` of ``data`` (a data set name or folder; only its name is kept, so that
    no machine's path is printed); ``compression`` is the checkpoint's compression config."""
    from g2lstm import __version__
    from g2lstm.lstm import G2LSTM
    from g2lstm.train.run_dir import git_commit

    layer = next((module for module in model.modules() if isinstance(module, G2LSTM)), None)
    if layer is None:
        raise ValueError(f"{type(model).__name__} holds no G2LSTM, so it has no gate settings to sign")
    return Signature(
        version=__version__,
        gate=layer.gate,
        temperature=float(layer.temperature),
        noise_p=float(noise_p),
        eval_gate=layer.eval_gate,
        compression=describe_compression(compression),
        data=Path(data).name,
        split=split,
        seed=seed,
        commit=git_commit()[0],
    )


def describe_compression(config: Mapping[str, Mapping[str, Any]] | None) -> str:
    """A checkpoint's compression config in the paper's words: ``none``, ``rank 64(input,forget)``,
    ``round 0.2&clip 0.4(input,forget)``."""
    if not config:
        return "none"
    settings = next(iter(config.values()))
    if settings.get("rank") is not None:
        text = f"rank {settings['rank']}"
    else:
        text = f"round {settings['round']:g}" + (
            f"&clip {settings['clip']:g}" if settings.get("clip") else ""
        )
    return f"{text}({','.join(settings.get('gates', ()))})"
