"""The paper's Table 4 for trained translation models: BLEU after each compression setting.

Compressing one checkpoint is :func:`g2lstm.train.compression.compress_checkpoint` with this recipe's
loader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from g2lstm.compress import compressed_copy, count_parameters_and_bytes, table_settings
from g2lstm.mt.data import find_corpus_folder, load_split
from g2lstm.mt.evaluate import evaluate_split, load_model
from g2lstm.train import load_checkpoint, make_output_folder, run_names, write_file

__all__ = ["translation_compression_sweep"]


def translation_compression_sweep(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    round_step: float = 0.5,
    clip: float = 1.0,
    ranks: Sequence[int] | None = None,
    split: str = "test",
    beam_size: int | None = None,
) -> dict[str, Any]:
    """BLEU of each checkpoint as trained, after Round, Round & clip, two low ranks (default hidden/8 and
    hidden/16: the paper's 256 -> 32 and 16) and with hard 0/1 gates, on ``split`` with beam search; writes
    ``sweep.md`` (the paper's Table 4 layout, tokenized BLEU and sacreBLEU) and ``sweep.json``."""
    out = Path(out)
    make_output_folder(out)
    names = list(names) if names is not None else run_names(checkpoints)
    results: dict[str, Any] = {"settings": {"round": round_step, "clip": clip, "split": split}, "runs": {}}
    for name, checkpoint in zip(names, checkpoints):
        model, config, vocab = load_model(load_checkpoint(checkpoint), source=checkpoint)
        corpus = load_split(find_corpus_folder(data, config.dataset), split, config.src, config.tgt, vocab)
        chosen = list(ranks) if ranks else [max(1, config.hidden_size // 8), max(1, config.hidden_size // 16)]
        columns = table_settings(round_step, clip, chosen)
        run: dict[str, Any] = {"checkpoint": str(checkpoint), "gate": config.gate, "table": {}}
        for column, settings in columns.items():
            variant = compressed_copy(model, settings)
            metrics, _ = evaluate_split(variant, config, vocab, corpus, beam_size=beam_size)
            metrics["parameters"], metrics["bytes"] = count_parameters_and_bytes(variant)
            run["table"][column] = metrics
        results["runs"][name] = run
    headers = list(next(iter(results["runs"].values()))["table"]) if results["runs"] else []
    header = ["| model | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    tables = {}
    for key in ("bleu", "sacrebleu"):
        rows = [f"| {name} | " + " | ".join(f"{m[key]:.2f}" for m in run["table"].values()) + " |"
                for name, run in results["runs"].items()]
        tables[key] = "\n".join(header + rows)
    sizes = [
        f"| {name} | " + " | ".join(f"{m['bytes'] / 2**20:.2f} MiB" for m in run["table"].values()) + " |"
        for name, run in results["runs"].items()
    ]
    results["table_markdown"] = tables["bleu"]
    results["sacrebleu_markdown"] = tables["sacrebleu"]
    results["sizes_markdown"] = "\n".join(header + sizes)
    signature = next(iter(results["runs"].values()))["table"]["original"] if results["runs"] else {}
    write_file(
        out / "sweep.md",
        f"Tokenized case-insensitive BLEU on the {split} split ({signature.get('bleu_signature', '')})\n\n"
        + tables["bleu"]
        + f"\n\nsacreBLEU on detokenized output ({signature.get('sacrebleu_signature', '')})\n\n"
        + tables["sacrebleu"]
        + "\n\nModel size (state dict)\n\n"
        + results["sizes_markdown"]
        + "\n",
    )
    write_file(out / "sweep.json", json.dumps(results, indent=2))
    return results
