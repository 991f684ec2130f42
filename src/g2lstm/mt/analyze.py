"""Looking inside trained translation models' gates, as the paper did (SPEC §3.3).

:func:`analyze_translation_models` writes

* ``gate_histograms.png`` / ``.md`` / ``.json``: input- and forget-gate histograms of every decoder layer
  (layer 0 is the first decoder layer, the paper's figure) over the first 10,000 training pairs, or all of
  them when there are fewer, each read with its reference translation in eval mode; the share in the two
  outer bins stands beside the paper's;
* ``gate_words.png``: the per-word average gate value of the first decoder layer while it reads the
  reference translation of given test pairs (the paper's case study).

Models analyzed apart (each run its own, perhaps on different machines) are drawn together from their JSON
files: :func:`merge_translation_analyses`, then :func:`write_translation_analysis`.

The conditional decoder's first layer makes two gated updates per word, and each has its gates: layer
``"0 input update"`` (gates of ``x·W + h·U``) and ``"0 context update"`` (gates of ``ctx·W_c + h'·U_nl``,
the ones that see the attention context); the layers above are ``"1"``, ``"2"``, ... For the
attention-on-top decoder the layers are ``"0"``, ``"1"``, ... In the JSON file each histogram carries its
layer's number (as :func:`g2lstm.record_gates` counts them) and its ``name``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from g2lstm.analysis import GateHistogram, gate_histogram_table, gate_histograms
from g2lstm.errors import ConfigError
from g2lstm.gates import EVAL_GATES, set_eval_gate
from g2lstm.mt.data import Batch, ParallelSplit, collate, find_corpus_folder, load_split
from g2lstm.mt.evaluate import load_model
from g2lstm.mt.model import AttentionSeq2Seq
from g2lstm.recording import GATE_NAMES, record_gates
from g2lstm.signature import model_signature
from g2lstm.train import describe_environment, load_checkpoint, make_output_folder, run_names, write_file

__all__ = ["analyze_translation_models", "merge_translation_analyses", "write_translation_analysis"]

BATCH = 64


def _same_length_batches(split: ParallelSplit, count: int) -> list[Batch]:
    """Batches of the first ``count`` pairs, each of one target length, so that no decoder gate value
    comes from padding."""
    by_length: dict[int, list[int]] = {}
    for index in range(min(count, len(split))):
        by_length.setdefault(len(split.target_ids[index]), []).append(index)
    return [collate(split.source_ids, split.target_ids, group[start : start + BATCH])
            for _, group in sorted(by_length.items()) for start in range(0, len(group), BATCH)]


def _teacher_forced(model: AttentionSeq2Seq) -> Callable[[nn.Module, Batch], None]:
    """``forward(decoder, batch)`` for :func:`gate_histograms`, which records ``decoder``'s gates only."""

    def forward(decoder: nn.Module, batch: Batch) -> None:
        model(batch.source, batch.source_lengths, batch.target_input)

    return forward


@torch.no_grad()
def _word_gates(model: AttentionSeq2Seq, batch: Batch) -> dict[tuple[int, str], list[float]]:
    """Per-position average over hidden units of each decoder layer's input and forget gates (a layer that
    steps through time records one call per position: they are joined along time)."""
    with record_gates(model.decoder) as recording:
        model(batch.source, batch.source_lengths, batch.target_input)
        return {(layer, gate): torch.cat(recording.gates(layer, gate)).mean(dim=(1, 2)).tolist()
                for layer in range(recording.num_layers) for gate in GATE_NAMES}


def analyze_translation_models(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    max_pairs: int = 10_000,
    pairs: Sequence[int] = (0, 1),
    eval_gate: str | None = None,
) -> dict[str, Any]:
    """Decoder gate histograms over training pairs and per-word gate maps of test pairs.

    Args:
        checkpoints: translation checkpoints (``best.pt`` of ``g2lstm mt train`` runs).
        out: folder the figures, tables and JSON files are written to (created if needed).
        data: the corpus, as for training (None: each checkpoint's data set, looked up as for training).
        names: one label per checkpoint; default: the run folder's name.
        max_pairs: the first ``max_pairs`` training pairs (the paper: 10,000) are read.
        pairs: the test pairs (0-based line numbers) of the case study; the checkpoints must share one
            BPE vocabulary so that the maps line up (runs of one preset on one corpus do).
        eval_gate: the gate every layer uses in eval mode; None: each checkpoint's own.
    """
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise ConfigError("checkpoints must name at least one checkpoint file, got none")
    names = list(names) if names is not None else run_names(paths)
    if max_pairs < 1:
        raise ConfigError(f"max_pairs must be >= 1, got {max_pairs}")
    if eval_gate is not None and eval_gate not in EVAL_GATES:
        raise ConfigError(f"eval_gate must be one of {EVAL_GATES} or None, got {eval_gate!r}")
    loaded = [load_model(load_checkpoint(path), source=path) for path in paths]
    pieces = {vocab.model_proto for _, _, vocab in loaded}
    if len(pieces) > 1:
        raise ConfigError(
            "the checkpoints have different BPE vocabularies, so their per-word gate maps would not "
            "line up; analyze runs of one preset on one corpus together"
        )
    layouts = {tuple(model.decoder_gate_layers()) for model, _, _ in loaded}
    if len(layouts) > 1:
        raise ConfigError(
            f"the checkpoints have different decoders (gate layers {sorted(layouts)}), so their "
            "layers would not line up; analyze models of one decoder together"
        )
    layer_names = dict(enumerate(loaded[0][0].decoder_gate_layers()))

    histograms: dict[str, list[GateHistogram]] = {}
    words: dict[str, list[dict[tuple[int, str], list[float]]]] = {}
    models: dict[str, Any] = {}
    labels: list[list[str]] = []
    for name, path, (model, config, vocab) in zip(names, paths, loaded):
        if eval_gate is not None:
            set_eval_gate(model, eval_gate)
        folder = find_corpus_folder(data, config.dataset)
        train = load_split(folder, "train", config.src, config.tgt, vocab)
        test = load_split(folder, "test", config.src, config.tgt, vocab)
        for index in pairs:
            if not 0 <= index < len(test):
                raise ConfigError(f"pairs: {index} is not a line of the test split ({len(test)} pairs)")
        batches = _same_length_batches(train, max_pairs)
        histograms[name] = gate_histograms(model.decoder, batches, _teacher_forced(model))
        words[name] = [
            _word_gates(model, collate(test.source_ids, test.target_ids, [index])) for index in pairs
        ]
        labels = [["<s>", *vocab.pieces(test.target_ids[index])] for index in pairs]
        state_compression = load_checkpoint(path).get("compression")
        encoder = model.bidirectional  # every layer has the same gate options
        models[name] = {
            "checkpoint": str(path),
            "signature": str(
                model_signature(
                    model,
                    noise_p=config.noise_p,
                    seed=config.seed,
                    data=folder,
                    split="train",
                    compression=state_compression,
                )
            ),
            "gate": config.gate,
            "decoder": config.decoder,
            "eval_gate": encoder.eval_gate,
            "temperature": encoder.temperature,
            "hidden_size": config.hidden_size,
            "pairs_read": min(max_pairs, len(train)),
        }
    sentences = [" ".join(label[1:]) for label in labels]
    signature = {
        "data": folder.name,
        "split": "train",
        "pairs": min(max_pairs, len(train)),
        "mode": "eval",
        "layers": "decoder (a name starting with 0: the first decoder layer)",
        "layer_names": layer_names,
        **describe_environment(),
    }
    results: dict[str, Any] = {
        "signature": signature,
        "models": models,
        "histograms": {
            name: [
                {
                    "layer": h.layer,
                    "name": layer_names[h.layer],
                    "gate": h.gate,
                    "shares": h.shares,
                    "outer_share": h.outer_share,
                    "count": h.count,
                }
                for h in hists
            ]
            for name, hists in histograms.items()
        },
        "gate_words": {
            name: [
                {
                    "sentence": sentence,
                    "tokens": label,
                    **{f"layer{layer}_{gate}": values for (layer, gate), values in per_word.items()},
                }
                for sentence, label, per_word in zip(sentences, labels, per_sentence)
            ]
            for name, per_sentence in words.items()
        },
    }
    results["files"] = write_translation_analysis(results, out)
    return results


# The signature entries that must agree for analyses to be drawn together; the rest (versions, command line,
# time) describe where each was made and move to its models' entries when they are merged.
_SHARED = ("data", "split", "pairs", "mode", "layers", "layer_names")


def merge_translation_analyses(analyses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One analysis of several models from the JSON of analyses made apart (``gate_histograms.json`` of
    :func:`analyze_translation_models`, e.g. each run's own, on different machines), for
    :func:`write_translation_analysis` to draw them together as if analyzed at once.

    The analyses must have read the same pairs of the same corpus with the same decoder layers and the same
    case-study sentences (one BPE vocabulary), and name their models differently.
    """
    if not analyses:
        raise ConfigError("analyses must hold at least one analysis, got none")
    first = analyses[0]
    merged: dict[str, Any] = {
        "signature": {key: first["signature"][key] for key in _SHARED},
        "models": {},
        "histograms": {},
        "gate_words": {},
    }
    sentences = _case_study(first)
    for analysis in analyses:
        differing = [key for key in _SHARED if analysis["signature"].get(key) != merged["signature"][key]]
        if differing:
            raise ConfigError(
                f"the analyses differ in {', '.join(differing)}, so their histograms would not compare the "
                "same thing; analyze every model with the same data, --max-pairs and decoder"
            )
        if _case_study(analysis) != sentences:
            raise ConfigError(
                "the analyses' case-study sentences differ (other --pair lines or BPE vocabularies), so "
                "their per-word gate maps would not line up"
            )
        made_where = {key: value for key, value in analysis["signature"].items() if key not in _SHARED}
        for name, model in analysis["models"].items():
            if name in merged["models"]:
                raise ConfigError(f"two analyses name a model {name!r}; give the models distinct names")
            merged["models"][name] = {**model, "environment": made_where}
            merged["histograms"][name] = analysis["histograms"][name]
            merged["gate_words"][name] = analysis["gate_words"][name]
    return merged


def _case_study(analysis: Mapping[str, Any]) -> list[list[str]]:
    """The tokens of each case-study sentence (every model of one analysis reads the same ones)."""
    per_model: list[dict[str, Any]] = next(iter(analysis["gate_words"].values()), [])
    return [entry["tokens"] for entry in per_model]


def write_translation_analysis(results: Mapping[str, Any], out: str | Path) -> list[str]:
    """Write ``gate_histograms.png`` / ``.md`` / ``.json`` and ``gate_words.png`` into ``out`` from an
    analysis in its JSON form (:func:`analyze_translation_models`'s, or :func:`merge_translation_analyses`'s);
    returns the paths written."""
    from g2lstm.plots import plot_gate_histograms, plot_gate_words

    out = make_output_folder(out)
    signature = results["signature"]
    layer_names = {int(layer): name for layer, name in signature["layer_names"].items()}
    first_layer = [layer for layer, name in layer_names.items() if name.split()[0] == "0"]
    histograms = {
        name: [GateHistogram(h["layer"], h["gate"], h["shares"], h["count"]) for h in hists]
        for name, hists in results["histograms"].items()
    }
    plot_gate_histograms(
        histograms,
        out / "gate_histograms.png",
        f"Decoder gate values over {signature['pairs']:,} training pairs, eval mode\n"
        "legend: share in the outer bins [0, 0.1) and [0.9, 1]",
        layer_names,
    )
    gate_modes = {name: info["gate"] for name, info in results["models"].items()}
    table = gate_histogram_table(histograms, gate_modes, layer_names)
    write_file(
        out / "gate_histograms.md",
        f"# Decoder gate-value histograms\n\n{signature['pairs']:,} training pairs of {signature['data']}, "
        "read "
        f"with their reference translations in eval mode; layers named 0... are the first decoder layer. "
        "Models: "
        + "; ".join(f"{name}: `{info['signature']}`" for name, info in results["models"].items())
        + f"\n\n{table}",
    )
    write_file(out / "gate_histograms.json", json.dumps({k: v for k, v in results.items() if k != "files"},
                                                        indent=2))
    first = {
        name: [{key: values for key, values in _per_word(entry).items() if key[0] in first_layer}
               for entry in per_sentence]
        for name, per_sentence in results["gate_words"].items()
    }
    plot_gate_words(
        _case_study(results),
        first,
        out / "gate_words.png",
        "First decoder layer: per-word average gate value while reading the reference translation "
        "(<s> = start), eval mode",
        layer_names,
    )
    return [
        str(out / name)
        for name in ("gate_histograms.png", "gate_histograms.md", "gate_histograms.json", "gate_words.png")
    ]


def _per_word(entry: Mapping[str, Any]) -> dict[tuple[int, str], list[float]]:
    """A case-study sentence's ``layer{L}_{gate}`` values keyed ``(L, gate)``."""
    values = {}
    for key, value in entry.items():
        if key.startswith("layer"):
            layer, gate = key.removeprefix("layer").split("_", 1)
            values[int(layer), gate] = value
    return values
