"""The paper's Table 4 for trained translation models: BLEU after each compression setting.

As the authors (their ``load_params_v2``), the gate blocks compressed are those of the hidden-to-hidden
matrices and of the decoder's context-to-gate ``W_c`` (:meth:`AttentionSeq2Seq.gate_matrices`
``"recurrent"``); the input-to-hidden matrices are left as they are, and the sweep compresses them in extra
columns of their own. Compressing one checkpoint is :func:`g2lstm.train.compression.compress_checkpoint`
with this recipe's loader and :func:`authors_blocks`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from g2lstm.compress import compressed_copy, count_parameters_and_bytes, table_settings
from g2lstm.mt.data import find_corpus_folder, load_split
from g2lstm.mt.evaluate import evaluate_split, load_model
from g2lstm.mt.model import AttentionSeq2Seq
from g2lstm.train import load_checkpoint, make_output_folder, run_names, write_file

__all__ = ["INPUT_COLUMN", "authors_blocks", "translation_compression_sweep"]

INPUT_COLUMN = "input blocks: "  # prefix of the sweep's columns that compress the input-to-hidden blocks


def authors_blocks(model: AttentionSeq2Seq) -> list[str]:
    """The matrices whose gate blocks the authors compress: hidden-to-hidden and context-to-gate ``W_c``."""
    return model.gate_matrices("recurrent")


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
    input_blocks: bool = True,
) -> dict[str, Any]:
    """BLEU of each checkpoint as trained, after Round, Round & clip, two low ranks (default hidden/8 and
    hidden/16: the paper's 256 -> 32 and 16) of the authors' blocks (hidden-to-hidden and context-to-gate)
    and with hard 0/1 gates, on ``split`` with beam search; with ``input_blocks``, the four compressions
    again on the input-to-hidden blocks alone (columns ``"input blocks: ..."``). Writes ``sweep.md`` (the
    paper's Table 4 layout, tokenized BLEU and sacreBLEU) and ``sweep.json``."""
    out = Path(out)
    make_output_folder(out)
    names = list(names) if names is not None else run_names(checkpoints)
    results: dict[str, Any] = {"settings": {"round": round_step, "clip": clip, "split": split}, "runs": {}}
    for name, checkpoint in zip(names, checkpoints):
        model, config, vocab = load_model(load_checkpoint(checkpoint), source=checkpoint)
        corpus = load_split(find_corpus_folder(data, config.dataset), split, config.src, config.tgt, vocab)
        chosen = list(ranks) if ranks else [max(1, config.hidden_size // 8), max(1, config.hidden_size // 16)]
        columns = table_settings(round_step, clip, chosen)
        compressions = {
            label: setting for label, setting in columns.items() if "round" in setting or "rank" in setting
        }
        recurrent, inputs = model.gate_matrices("recurrent"), model.gate_matrices("input")
        plan = {
            label: {**setting, "matrices": recurrent} if label in compressions else setting
            for label, setting in columns.items()
        }
        if input_blocks:
            plan.update(
                {
                    INPUT_COLUMN + label: {**setting, "matrices": inputs}
                    for label, setting in compressions.items()
                }
            )
        run: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "gate": config.gate,
            "decoder": config.decoder,
            "blocks": {"recurrent": recurrent, "input": inputs},
            "table": {},
        }
        for column, setting in plan.items():
            variant = compressed_copy(model, setting)
            metrics, _ = evaluate_split(variant, config, vocab, corpus, beam_size=beam_size)
            metrics["parameters"], metrics["bytes"] = count_parameters_and_bytes(variant)
            run["table"][column] = metrics
        results["runs"][name] = run
    headers = list(next(iter(results["runs"].values()))["table"]) if results["runs"] else []
    authors = [column for column in headers if not column.startswith(INPUT_COLUMN)]
    extra = ["original", *(column for column in headers if column.startswith(INPUT_COLUMN))]
    results["table_markdown"] = _table(results["runs"], authors, "bleu")
    results["sacrebleu_markdown"] = _table(results["runs"], authors, "sacrebleu")
    results["input_blocks_markdown"] = _table(results["runs"], extra, "bleu") if input_blocks else ""
    results["sizes_markdown"] = _table(results["runs"], headers, "bytes")
    signature = next(iter(results["runs"].values()))["table"]["original"] if results["runs"] else {}
    extra_text = (
        f"\n\nTokenized BLEU with the input-to-hidden blocks compressed instead (every other "
        f"weight as trained)\n\n{results['input_blocks_markdown']}"
        if input_blocks
        else ""
    )
    write_file(
        out / "sweep.md",
        f"Tokenized case-insensitive BLEU on the {split} split ({signature.get('bleu_signature', '')}), the "
        f"hidden-to-hidden and context-to-gate blocks compressed (the authors' choice)\n\n"
        + results["table_markdown"]
        + f"\n\nsacreBLEU on detokenized output ({signature.get('sacrebleu_signature', '')})\n\n"
        + results["sacrebleu_markdown"]
        + extra_text
        + "\n\nModel size (state dict)\n\n"
        + results["sizes_markdown"]
        + "\n",
    )
    write_file(out / "sweep.json", json.dumps(results, indent=2))
    return results


def _table(runs: dict[str, Any], columns: list[str], key: str) -> str:
    """A Markdown table of ``key`` (a BLEU score, or bytes shown in MiB) per run and column."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, run in runs.items():
        values = [run["table"][column][key] for column in columns]
        cells = [f"{v / 2**20:.2f} MiB" if key == "bytes" else f"{v:.2f}" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
