"""Compressing a saved model, for any recipe: load it with the recipe's loader, compress its gate blocks,
save the smaller model with the entries that describe it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from g2lstm.compress import PAPER_GATES, CompressionReport, compress, compression_config
from g2lstm.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["compress_checkpoint"]


def compress_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    load_model: Callable[..., tuple[nn.Module, Any, Any]],
    entries: Sequence[str],
    *,
    round: float | None = None,
    clip: float | None = None,
    rank: int | None = None,
    gates: Sequence[str] = PAPER_GATES,
    matrices: Callable[[Any], Sequence[str]] | None = None,
) -> CompressionReport:
    """Compress the gate blocks of the model saved in ``checkpoint`` and save the smaller model to ``out``.

    ``load_model(state, source=path)`` is the recipe's loader (``g2lstm.lm.evaluate.load_model``,
    ``g2lstm.mt.evaluate.load_model``); ``entries`` the checkpoint entries its model needs (its
    ``MODEL_ENTRIES``), copied to ``out`` with the compressed weights and the compression config. The
    other arguments are :func:`g2lstm.compress.compress`'s, but for ``matrices``: a function of the loaded
    model naming the weight matrices to compress (``g2lstm.mt.compression.authors_blocks``; default: all).
    """
    state = load_checkpoint(checkpoint)
    model = load_model(state, source=checkpoint)[0]
    chosen = None if matrices is None else list(matrices(model))
    report = compress(model, round=round, clip=clip, rank=rank, gates=tuple(gates), matrices=chosen)
    save_checkpoint(out, {
        **{key: state[key] for key in entries if key != "model"},
        "model": model.state_dict(),
        "compression": compression_config(model),
        "compressed_from": str(checkpoint),
    })
    return report
