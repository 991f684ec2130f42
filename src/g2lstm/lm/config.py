"""The language-model recipe's configuration: one typed dataclass, filled from TOML presets."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from g2lstm.gates import check_temperature
from g2lstm.lm.model import LanguageModelSpec

__all__ = ["LMConfig", "PRESET_DIR", "ARCHITECTURE_KEYS", "RESUMABLE_KEYS"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "lm"

# Keys that define the model's shape: on resume and at evaluation they come from the checkpoint.
ARCHITECTURE_KEYS = ("unit", "emb_size", "hidden_size", "num_layers", "tie_weights")
# Keys a resumed run may change: how long it goes on, how often it logs and saves, and where it computes.
# Any other difference from the run's config stops the resume (g2lstm.train.check_resume).
RESUMABLE_KEYS = ("epochs", "finetune_epochs", "max_steps", "log_interval", "checkpoint_minutes", "device")


@dataclass
class LMConfig:
    """Everything one language-model run depends on (defaults: the paper's AWD-LSTM on PTB)."""

    # gates
    gate: Literal["g2", "sharpened", "lstm"] = "g2"
    temperature: float | None = None
    noise_p: float = 0.2
    eval_gate: Literal["sigmoid", "tempered", "hard"] | None = None
    # model
    unit: Literal["word", "char"] = "word"
    emb_size: int = 400
    hidden_size: int = 1150
    num_layers: int = 3
    tie_weights: bool = True
    dropout: float = 0.4
    dropout_hidden: float = 0.25
    dropout_input: float = 0.4
    dropout_embedding: float = 0.1
    weight_dropout: float = 0.5
    # optimisation
    batch_size: int = 20
    bptt: int = 70
    lr: float = 30.0
    clip: float = 0.25
    weight_decay: float = 1.2e-6
    alpha: float = 2.0
    beta: float = 1.0
    epochs: int = 500
    nonmono: int = 5
    asgd_epoch: int | None = None  # averaged SGD from this epoch on; None: AWD's non-monotone trigger
    stop_on_plateau: bool = False  # end training once averaged SGD stops improving too (the authors run on)
    finetune_epochs: int = 500
    max_steps: int | None = None
    max_bad_steps: int = 10
    # evaluation
    eval_batch_size: int = 10
    test_batch_size: int = 1
    cache_window: int = 500
    cache_theta: float = 1.0
    cache_lambda: float = 0.1
    # run
    seed: int = 141
    device: str = "cpu"
    log_interval: int = 100
    checkpoint_minutes: float = 5.0

    def validate(self) -> None:
        positive = ("emb_size", "hidden_size", "num_layers", "batch_size", "bptt", "epochs", "nonmono",
                    "eval_batch_size", "test_batch_size", "cache_window", "log_interval", "max_bad_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "dropout_hidden", "dropout_input", "dropout_embedding", "weight_dropout",
                     "cache_lambda"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.noise_p <= 1.0:
            raise ValueError(f"noise_p must lie in [0, 1], got {self.noise_p}")
        for name in ("lr", "clip", "checkpoint_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.temperature is not None:
            check_temperature(self.temperature)
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if self.asgd_epoch is not None and self.asgd_epoch < 1:
            raise ValueError(f"asgd_epoch must be >= 1 when given, got {self.asgd_epoch}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 when given, got {self.max_steps}")

    def model_spec(self, vocab_size: int) -> LanguageModelSpec:
        names = {f.name for f in fields(LanguageModelSpec)} - {"vocab_size"}
        return LanguageModelSpec(vocab_size=vocab_size, **{name: getattr(self, name) for name in names})
