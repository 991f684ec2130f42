"""The language-model recipe's configuration: one typed dataclass, filled from TOML presets."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from g2lstm.gates import DEFAULT_TEMPERATURE, check_temperature
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
    # gate schedule (beyond the paper): noise_p and temperature go linearly from the values above to these
    # over the first schedule_epochs epochs of schedule_phase, then hold (None: constant). The best model
    # is chosen among the epochs at the final values only (see gates_at and ramping).
    noise_p_final: float | None = None
    temperature_final: float | None = None
    schedule_phase: Literal["train", "finetune"] = "finetune"
    schedule_epochs: int = 1
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
        if self.noise_p_final is not None and not 0.0 <= self.noise_p_final <= 1.0:
            raise ValueError(f"noise_p_final must lie in [0, 1], got {self.noise_p_final}")
        if self.temperature_final is not None:
            check_temperature(self.temperature_final)
        phase_epochs = self.epochs if self.schedule_phase == "train" else self.finetune_epochs
        if self.scheduled and not 1 <= self.schedule_epochs <= phase_epochs:
            raise ValueError(
                f"schedule_epochs must lie in [1, {phase_epochs}] (the {self.schedule_phase} phase's "
                f"epochs), got {self.schedule_epochs}; lower it or raise the phase's epoch count"
            )
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if self.asgd_epoch is not None and self.asgd_epoch < 1:
            raise ValueError(f"asgd_epoch must be >= 1 when given, got {self.asgd_epoch}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 when given, got {self.max_steps}")

    @property
    def scheduled(self) -> bool:
        """Whether noise_p or temperature follow a schedule."""
        return self.noise_p_final is not None or self.temperature_final is not None

    def gates_at(self, phase: str, epoch: int) -> tuple[float, float | None]:
        """``noise_p`` and ``temperature`` in force in ``epoch`` (from 1) of ``phase``: the start values
        before the schedule's phase, then a linear ramp reaching the final values at its
        ``schedule_epochs``-th epoch, the final values from there on (training comes before finetuning)."""
        if not self.scheduled:
            return self.noise_p, self.temperature
        if phase == self.schedule_phase:
            share = min(1.0, epoch / self.schedule_epochs)
        else:
            share = 0.0 if phase == "train" else 1.0
        noise_p = self.noise_p
        if self.noise_p_final is not None:
            noise_p += (self.noise_p_final - self.noise_p) * share
        temperature = self.temperature
        if self.temperature_final is not None:
            start = DEFAULT_TEMPERATURE[self.gate] if temperature is None else temperature
            temperature = start + (self.temperature_final - start) * share
        return noise_p, temperature

    def ramping(self, phase: str, epoch: int) -> bool:
        """Whether ``epoch`` of ``phase`` runs with gates short of the schedule's final values."""
        return self.scheduled and phase == self.schedule_phase and epoch < self.schedule_epochs

    def model_spec(self, vocab_size: int) -> LanguageModelSpec:
        """The model's architecture, with the gates a finished run ends with (the schedule's final values):
        the model a checkpoint holds for evaluation; training sets each epoch's gates itself."""
        names = {f.name for f in fields(LanguageModelSpec)} - {"vocab_size", "noise_p", "temperature"}
        noise_p, temperature = self.gates_at("finetune", self.finetune_epochs or 1)
        return LanguageModelSpec(vocab_size=vocab_size, noise_p=noise_p, temperature=temperature,
                                 **{name: getattr(self, name) for name in names})
