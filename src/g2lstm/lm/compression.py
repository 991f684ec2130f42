"""The paper's Table 3 for trained language models: perplexity after each compression setting, and curves.

Compressing one checkpoint is :func:`g2lstm.train.compression.compress_checkpoint` with this recipe's
loader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from g2lstm import G2LSTM
from g2lstm.compress import compressed_copy, count_parameters_and_bytes, table_settings
from g2lstm.lm.evaluate import cache_pointer, evaluate_language_model, load_corpus, load_model
from g2lstm.train import load_checkpoint, make_output_folder, run_names, write_file

__all__ = ["compression_sweep"]

ROUND_STEPS = (0.05, 0.1, 0.2, 0.3, 0.4)  # the perplexity-against-step curve


def compression_sweep(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    round_step: float = 0.2,
    clip: float = 0.4,
    ranks: Sequence[int] | None = None,
    cache_pointer_options: dict[str, Any] | None = None,
    batch_size: int | None = None,
    curves: bool = True,
    splits: Sequence[str] = ("valid", "test"),
) -> dict[str, Any]:
    """Evaluate each checkpoint as trained, after Round, Round & clip, two low ranks (default: hidden/9 and
    hidden/18, the paper's 1150 -> 128 and 64) and with hard 0/1 gates; write ``sweep.md``, ``sweep.json``
    and, with ``curves``, ``sweep.png`` (validation perplexity against rank and against the rounding step).

    ``cache_pointer_options``: evaluate the table with each checkpoint's cache pointer, these of
    :func:`~g2lstm.lm.evaluate.cache_pointer`'s options replaced (``{}``: none); None: without it."""
    from g2lstm.plots import plot_compression_curves

    out = Path(out)
    make_output_folder(out)
    names = list(names) if names is not None else run_names(checkpoints)
    with_cache = cache_pointer_options is not None
    results: dict[str, Any] = {
        "settings": {"round": round_step, "clip": clip, "cache": with_cache},
        "runs": {},
    }
    for name, checkpoint in zip(names, checkpoints):
        model, config, vocab = load_model(load_checkpoint(checkpoint), source=checkpoint)
        corpus = load_corpus(data, config.unit, vocab)
        cache = cache_pointer(config, **cache_pointer_options) if cache_pointer_options is not None else None
        layers = cast(list[G2LSTM], list(model.layers))
        largest = min(min(layer.input_size, layer.hidden_size) for layer in layers)  # the highest usable rank
        chosen = (
            list(ranks)
            if ranks
            else [max(1, round(config.hidden_size / 9)), max(1, round(config.hidden_size / 18))]
        )
        columns = table_settings(round_step, clip, chosen)
        run: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "table": {},
            "rank_curve": [],
            "round_curve": [],
        }
        for column, settings in columns.items():
            variant = compressed_copy(model, settings)
            metrics = evaluate_language_model(variant, config, corpus, cache=cache, batch_size=batch_size,
                                              splits=splits)
            metrics["parameters"], metrics["bytes"] = count_parameters_and_bytes(variant)
            run["table"][column] = metrics
        if curves:
            rank_points = {config.hidden_size // d for d in (2, 4, 9, 18, 36)} | set(chosen)
            curve_points: list[tuple[str, str, float]] = [
                ("rank_curve", "rank", k) for k in sorted(rank_points) if 1 <= k <= largest
            ]
            curve_points += [
                ("round_curve", "round", step) for step in sorted(set(ROUND_STEPS) | {round_step})
            ]
            for key, option, value in curve_points:
                variant = compressed_copy(model, {option: value})
                metrics = evaluate_language_model(
                    variant, config, corpus, batch_size=batch_size, splits=("valid",)
                )
                run[key].append((value, metrics["valid_ppl"]))
        results["runs"][name] = run
    headers = list(next(iter(results["runs"].values()))["table"]) if results["runs"] else []
    lines = [
        "| model | " + " | ".join(headers) + " |",
        "|---|" + "---|" * len(headers),
    ]
    for name, run in results["runs"].items():
        cells = [" / ".join(f"{m[f'{split}_ppl']:.1f}" for split in splits) for m in run["table"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sizes = ["| model | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for name, run in results["runs"].items():
        sizes.append(
            f"| {name} | " + " | ".join(f"{m['bytes'] / 2**20:.2f} MiB" for m in run["table"].values()) + " |"
        )
    results["table_markdown"] = "\n".join(lines)
    results["sizes_markdown"] = "\n".join(sizes)
    write_file(
        out / "sweep.md",
        f"Perplexity ({' / '.join(splits)})" + (" with the cache pointer" if with_cache else "") + "\n\n"
        + results["table_markdown"]
        + "\n\nModel size (state dict)\n\n" + results["sizes_markdown"] + "\n"
    )
    write_file(out / "sweep.json", json.dumps(results, indent=2))
    if curves:
        results["figure"] = str(plot_compression_curves(
            {name: run for name, run in results["runs"].items()}, out / "sweep.png",
            "Validation perplexity after compressing the input and forget gates",
        ))
    return results
