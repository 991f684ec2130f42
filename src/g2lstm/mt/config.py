"""The translation recipe's configuration: one typed dataclass, filled from TOML presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from g2lstm.gates import check_temperature
from g2lstm.mt.model import TranslationModelSpec
from g2lstm.train import checkpoint_config

__all__ = ["MTConfig", "PRESET_DIR", "ARCHITECTURE_KEYS", "MAX_BEAM_SIZE", "RESUMABLE_KEYS", "saved_config"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "mt"

# Keys that define the model and its vocabulary: on resume and at evaluation they come from the checkpoint.
ARCHITECTURE_KEYS = ("src", "tgt", "bpe_size", "emb_size", "hidden_size", "encoder_layers", "decoder_layers",
                     "tie_embeddings", "decoder")
# Keys a resumed run may change: how long it goes on, how often it logs and saves, and where it computes.
# Any other difference from the run's config stops the resume (g2lstm.train.check_resume).
RESUMABLE_KEYS = ("epochs", "max_steps", "log_interval", "checkpoint_minutes", "device")
# Beam search keeps batch x beam hypotheses and scores each over the whole vocabulary; wider beams than
# this need gigabytes and rarely translate better.
MAX_BEAM_SIZE = 256


@dataclass
class MTConfig:
    """Everything one translation run depends on (defaults: the paper's IWSLT'14 De->En setting)."""

    # data
    dataset: str = "iwslt14"  # looked up under $G2LSTM_DATA and the cache when --data is not given
    src: str = "de"
    tgt: str = "en"
    bpe_size: int = 25000  # joint source and target BPE vocabulary, learned on the training split
    max_len: int = 64  # training pairs with more sub-words on either side are dropped
    # gates
    gate: Literal["g2", "sharpened", "lstm"] = "g2"
    temperature: float | None = None
    noise_p: float = 0.2
    eval_gate: Literal["sigmoid", "tempered", "hard"] | None = None
    # model
    emb_size: int = 256
    hidden_size: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.2
    tie_embeddings: bool = False
    # "conditional": the attention context enters the first decoder layer's gates (the paper's, dl4mt's
    # conditional LSTM); "attention-on-top": attention over the decoder's outputs (see g2lstm.mt.model)
    decoder: Literal["conditional", "attention-on-top"] = "conditional"
    # optimisation
    optimizer: Literal["adadelta", "adam"] = "adadelta"
    lr: float = 1.0
    clip: float = 2.0
    batch_size: int = 32
    epochs: int = 30
    max_steps: int | None = None
    early_stop: Literal["bleu", "loss"] = "bleu"
    patience: int = 3  # epochs without a better validation score before training ends
    max_bad_steps: int = 10
    # decoding and evaluation
    beam_size: int = 5
    valid_beam_size: int = 5  # the beam of the validation BLEU computed every epoch
    length_penalty: float = 1.0
    max_output_ratio: float = 2.0  # output at most ratio * source length + 10 sub-words,
    max_output_tokens: int = 400  # and never more than this (a runaway source must not take hours)
    eval_batch_size: int = 64
    # run
    seed: int = 1
    device: str = "cpu"
    log_interval: int = 100
    checkpoint_minutes: float = 5.0

    def validate(self) -> None:
        positive = ("bpe_size", "max_len", "emb_size", "hidden_size", "encoder_layers", "decoder_layers",
                    "batch_size", "epochs", "patience", "max_bad_steps", "beam_size", "valid_beam_size",
                    "eval_batch_size", "log_interval", "max_output_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bpe_size < 8:
            raise ValueError(f"bpe_size must be >= 8 (4 reserved ids and some pieces), got {self.bpe_size}")
        if self.src == self.tgt:
            raise ValueError(f"src and tgt must differ, got {self.src!r} for both")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.noise_p <= 1.0:
            raise ValueError(f"noise_p must lie in [0, 1], got {self.noise_p}")
        for name in ("lr", "clip", "max_output_ratio", "checkpoint_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.temperature is not None:
            check_temperature(self.temperature)
        for name in ("beam_size", "valid_beam_size"):
            if getattr(self, name) > MAX_BEAM_SIZE:
                raise ValueError(f"{name} must be <= {MAX_BEAM_SIZE}, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 when given, got {self.max_steps}")
        if self.tie_embeddings and self.emb_size != self.hidden_size:
            raise ValueError(f"tie_embeddings needs emb_size == hidden_size, got {self.emb_size} and "
                             f"{self.hidden_size}")

    def model_spec(self, vocab_size: int) -> TranslationModelSpec:
        names = {f.name for f in fields(TranslationModelSpec)} - {"vocab_size"}
        return TranslationModelSpec(vocab_size=vocab_size, **{name: getattr(self, name) for name in names})

    def max_output_length(self, source_length: int) -> int:
        """The most sub-words (EOS included) a translation of a ``source_length``-long source may have."""
        return min(int(self.max_output_ratio * source_length) + 10, self.max_output_tokens)


def saved_config(state: Mapping[str, Any], source: str | Path) -> MTConfig:
    """The config saved in the translation checkpoint ``state``, checked as
    :func:`g2lstm.train.checkpoint_config` does; one saved before the ``decoder`` key existed (issue 18) holds
    the attention-on-top decoder, the only one there was."""
    stored = state.get("config")
    if isinstance(stored, Mapping) and "decoder" not in stored:
        state = {**state, "config": {"decoder": "attention-on-top", **stored}}
    return checkpoint_config(MTConfig, state, source)
