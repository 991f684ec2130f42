"""Looking inside trained language models' gates: the paper's histograms and per-word case study, and a
robustness check.

:func:`analyze_language_models` loads checkpoints, runs each over the first tokens of a split and writes

* ``gate_histograms.png`` / ``.md`` / ``.json``: input- and forget-gate histograms of every layer (SPEC
  §3.3, the paper's Figures 1 and 3) and the share in the two outer bins, beside the paper's values;
* ``gate_words.png``: the paper's Figure 4, the per-word average gate value over given sentences;
* ``sensitivity.md`` / ``.json``: the share of gate values that flip across 0.5 when Gaussian noise is added
  to the LSTM weights or to the embedding output (a binary-like gate should flip less).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from g2lstm.analysis import (
    SENSITIVITY_TARGETS,
    GateHistogram,
    gate_histogram_table,
    gate_histograms,
    gate_sensitivities,
)
from g2lstm.data import UNK, Corpus, Vocabulary, batchify
from g2lstm.data.corpus import SPLITS
from g2lstm.errors import ConfigError, MissingFileError
from g2lstm.gates import EVAL_GATES, set_eval_gate
from g2lstm.lm.evaluate import load_corpus, load_model
from g2lstm.lm.model import AWDLSTM
from g2lstm.recording import GATE_NAMES, record_gates
from g2lstm.signature import model_signature
from g2lstm.train import describe_environment, load_checkpoint, make_output_folder, run_names, write_file

__all__ = ["DEFAULT_SENTENCES", "analyze_language_models"]

DEFAULT_SENTENCES = (
    "the company said it expects to report a loss for the third quarter",
    "but the market was n't ready and prices fell sharply",
)
STREAMS = 10  # side-by-side streams of the split, as AWD-LSTM evaluates (eval_batch_size)
SEED = 0  # of the sensitivity noise


def analyze_language_models(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    *,
    names: Sequence[str] | None = None,
    split: str = "valid",
    max_tokens: int = 20_000,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    sigmas: Sequence[float] = (0.01, 0.05),
    eval_gate: str | None = None,
) -> dict[str, Any]:
    """Gate histograms, per-word gate values and gate flips under noise of language-model checkpoints.

    Args:
        checkpoints: checkpoint files (``best.pt`` of a run, of its ``finetune/`` folder, ...).
        out: folder the figures, tables and JSON files are written to (created if needed).
        data: the corpus, as for training (None: Penn Treebank); read with each checkpoint's vocabulary.
        names: one label per checkpoint; default: the run folder's name (``runs/g2/finetune/best.pt`` ->
            ``g2``), with more of the path where two would be the same.
        split: ``"train"``, ``"valid"`` or ``"test"``: the tokens the histograms and flips are measured on.
        max_tokens: the first ``max_tokens`` tokens of the split, read as 10 side-by-side streams in eval
            mode with the hidden state carried across BPTT windows.
        sentences: the case-study sentences, each run from a zero state (batch 1, eval mode); words
            outside a checkpoint's vocabulary are read as ``<unk>``.
        sigmas: standard deviations of the noise for the flip counts; empty: no sensitivity files.
        eval_gate: the gate every layer uses in eval mode (``"sigmoid"``, ``"tempered"``, ``"hard"``);
            None: each checkpoint's own.

    Returns:
        ``{"signature", "models", "histograms", "gate_words", "sensitivity", "files"}``: every number
        written, as plain JSON-ready values.
    """
    paths = _check_checkpoints(checkpoints)
    names = run_names(paths) if names is None else _check_names(names, len(paths))
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be an int, got {type(max_tokens).__name__}")
    if max_tokens < STREAMS:
        raise ConfigError(f"max_tokens must be >= {STREAMS} (one token per stream), got {max_tokens}")
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"sentences must be a list of str, got {type(sentences).__name__}")
    if not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
        raise ConfigError(f"sentences must hold at least one non-empty str, got {list(sentences)!r}")
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Sequence):
        raise TypeError(f"sigmas must be a list of floats, got {type(sigmas).__name__}")
    for sigma in sigmas:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(f"sigmas must hold floats, got {type(sigma).__name__}: {sigma!r}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(f"sigmas must hold finite numbers >= 0, got {sigma!r}")
    if eval_gate is not None and eval_gate not in EVAL_GATES:
        raise ConfigError(f"eval_gate must be one of {EVAL_GATES} or None, got {eval_gate!r}")
    out = Path(out)

    # ---- models, then the sentences each reads (a sentence it cannot read stops before any long pass)
    loaded = []
    for path in paths:
        state = load_checkpoint(path)
        model, config, vocab = load_model(state, source=path)
        if eval_gate is not None:
            set_eval_gate(model, eval_gate)
        loaded.append((state, model.eval(), config, vocab))
    units = {name: config.unit for name, (_, _, config, _) in zip(names, loaded)}
    if len(set(units.values())) > 1:
        raise ConfigError(
            f"checkpoints must share one unit (gate_words compares them token by token), got {units}"
        )
    unit = next(iter(units.values()))
    tokens = [_tokenize(sentence, unit) for sentence in sentences]
    vocabularies = {name: Vocabulary.from_list(vocab) for name, (_, _, _, vocab) in zip(names, loaded)}
    encoded = {name: [_encode(vocabulary, t, name) for t in tokens]
               for name, vocabulary in vocabularies.items()}

    # ---- measure
    corpora: dict[tuple[str, ...], Corpus] = {}
    models: dict[str, Any] = {}
    histograms: dict[str, list[GateHistogram]] = {}
    words: dict[str, list[dict[tuple[int, str], list[float]]]] = {}
    sensitivity: dict[str, dict[tuple[str, float], dict[tuple[int, str], float]]] = {}
    for name, path, (state, model, config, vocab) in zip(names, paths, loaded):
        corpus = corpora.get(tuple(vocab))
        if corpus is None:
            corpus = corpora[tuple(vocab)] = load_corpus(data, config.unit, vocab)
        stream = batchify(getattr(corpus, split), STREAMS)
        stream = stream[: min(len(stream), max_tokens // STREAMS)]
        starts = range(0, len(stream), config.bptt)
        batches = [(stream[start : start + config.bptt], start == 0) for start in starts]
        forward = _carried_state_forward()
        histograms[name] = gate_histograms(model, batches, forward)
        words[name] = [_word_gates(model, ids) for ids in encoded[name]]
        if sigmas:
            sensitivity[name] = gate_sensitivities(model, forward, batches, sigmas=sigmas,
                                                   targets=SENSITIVITY_TARGETS, seed=SEED)
        valid_loss = state.get("metrics", {}).get("valid_loss")
        models[name] = {
            "checkpoint": str(path),
            "signature": str(
                model_signature(
                    model,
                    noise_p=config.noise_p,
                    seed=config.seed,
                    data=corpus.source,
                    split=split,
                    compression=state.get("compression"),
                )
            ),
            "gate": config.gate,
            "temperature": model.layers[0].temperature,
            "eval_gate": model.layers[0].eval_gate,
            "unit": config.unit,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "valid_ppl_at_save": math.exp(valid_loss) if valid_loss is not None else None,
        }
    source = corpora[tuple(loaded[0][3])].source  # one data set for all, read with each one's vocabulary
    signature = {
        "data": Path(source).name,
        "split": split,
        "tokens": stream.numel(),
        "streams": STREAMS,
        "mode": "eval",
        **describe_environment(SEED),
    }

    # ---- write
    make_output_folder(out)
    from g2lstm.plots import plot_gate_histograms, plot_gate_words

    tokens_read = signature["tokens"]
    results: dict[str, Any] = {
        "signature": signature,
        "models": models,
        "histograms": {name: _histograms_json(h) for name, h in histograms.items()},
        "gate_words": {
            name: [{"sentence": sentence, "tokens": vocabularies[name].decode(ids), **_layers_json(per_word)}
                   for sentence, ids, per_word in zip(sentences, encoded[name], words[name])]
            for name in names
        },
        "sensitivity": {name: {target: {f"{sigma:g}": _layers_json(shares)
                                        for (t, sigma), shares in result.items() if t == target}
                               for target in SENSITIVITY_TARGETS}
                        for name, result in sensitivity.items()},
        "files": {},
    }
    files = results["files"]
    modes = {name: info["eval_gate"] for name, info in models.items()}
    files["gate_histograms.png"] = str(plot_gate_histograms(
        histograms, out / "gate_histograms.png",
        f"Gate values on the {split} split, first {tokens_read:,} tokens, eval mode "
        f"(eval gate: {_describe_modes(modes)})\nlegend: share in the outer bins [0, 0.1) and [0.9, 1]",
    ))
    table = gate_histogram_table(histograms, {name: info["gate"] for name, info in models.items()})
    write_file(
        out / "gate_histograms.md",
        f"# Gate-value histograms\n\n{_signature_line(signature, models)}\n\n{table}"
    )
    files["gate_histograms.md"] = str(out / "gate_histograms.md")
    _write_json(out / "gate_histograms.json", _pick(results, "signature", "models", "histograms"))
    files["gate_histograms.json"] = str(out / "gate_histograms.json")
    labels = [_labels(t, list(vocabularies.values())) for t in tokens]
    marked = any(label.endswith("*") for row in labels for label in row)
    unknown_note = " (* = read as <unk>)" if marked else ""
    files["gate_words.png"] = str(plot_gate_words(
        labels, words, out / "gate_words.png",
        f"Per-word average gate value, each sentence read from a zero state in eval mode{unknown_note}",
    ))
    if sigmas:
        write_file(out / "sensitivity.md", _sensitivity_markdown(results["sensitivity"], signature, models))
        files["sensitivity.md"] = str(out / "sensitivity.md")
        _write_json(out / "sensitivity.json", _pick(results, "signature", "models", "sensitivity"))
        files["sensitivity.json"] = str(out / "sensitivity.json")
    return results


def _check_checkpoints(checkpoints: Any) -> list[Path]:
    if isinstance(checkpoints, (str, Path)) or not isinstance(checkpoints, Sequence):
        raise TypeError(f"checkpoints must be a list of paths, got {type(checkpoints).__name__}")
    if not checkpoints:
        raise ConfigError("checkpoints must name at least one checkpoint file, got none")
    paths = [Path(c) for c in checkpoints]
    seen: dict[Path, Path] = {}
    for path in paths:
        if not path.is_file():
            raise MissingFileError(f"checkpoint {path} does not exist")
        if path.resolve() in seen:
            raise ConfigError(f"checkpoints lists {path} twice (also as {seen[path.resolve()]})")
        seen[path.resolve()] = path
    return paths


def _check_names(names: Any, count: int) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"names must be a list of str, got {type(names).__name__}")
    names = list(names)
    if len(names) != count or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"names must hold {count} non-empty str (one per checkpoint), got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be distinct, got {names!r}")
    return names


def _tokenize(sentence: str, unit: str) -> list[str]:
    # As the corpus does (g2lstm.data.corpus), without the line's <eos>.
    return sentence.split() if unit == "word" else list(sentence)


def _encode(vocab: Vocabulary, tokens: list[str], name: str) -> Tensor:
    try:
        return vocab.encode(tokens)
    except ValueError:
        unknown = next(t for t in tokens if t not in vocab)
        raise ConfigError(
            f"sentences: {unknown!r} is not in the vocabulary of {name}, which has no {UNK} to stand in; "
            f"pass sentences made of its words"
        ) from None


def _labels(tokens: list[str], vocabularies: list[Vocabulary]) -> list[str]:
    """x-axis labels: the tokens, a space shown as ␣, marked * when some model reads it as <unk>."""
    return [("␣" if t == " " else t) + ("*" if any(t not in v for v in vocabularies) else "")
            for t in tokens]


def _carried_state_forward() -> Callable[[AWDLSTM, tuple[Tensor, bool]], None]:
    """``forward(model, (words, first))`` carrying the hidden state across windows, zeroed on the first."""
    hidden = None

    def forward(model: AWDLSTM, batch: tuple[Tensor, bool]) -> None:
        nonlocal hidden
        words, first = batch
        if first or hidden is None:
            hidden = model.init_hidden(words.shape[1])
        hidden = model(words, hidden).hidden

    return forward


@torch.no_grad()
def _word_gates(model: AWDLSTM, ids: Tensor) -> dict[tuple[int, str], list[float]]:
    """Per-word average over hidden units of each layer's input and forget gates, from a zero state."""
    with record_gates(model) as recording:
        model(ids.view(-1, 1), model.init_hidden(1))
        return {(layer, gate): recording.gates(layer, gate)[0].mean(dim=(1, 2)).tolist()
                for layer in range(recording.num_layers) for gate in GATE_NAMES}


def _layers_json(values: dict[tuple[int, str], Any]) -> dict[str, dict[str, Any]]:
    nested: dict[str, dict[str, Any]] = {}
    for (layer, gate), value in sorted(values.items()):
        nested.setdefault(f"layer{layer}", {})[gate] = value
    return nested


def _histograms_json(histograms: list[GateHistogram]) -> dict[str, dict[str, Any]]:
    return _layers_json({
        (h.layer, h.gate): {"shares": h.shares, "outer_share": h.outer_share, "count": h.count}
        for h in histograms
    })


def _pick(results: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: results[key] for key in keys}


def _write_json(path: Path, value: Any) -> None:
    write_file(path, json.dumps(value, indent=2) + "\n")


def _describe_modes(modes: dict[str, str]) -> str:
    if len(set(modes.values())) == 1:
        return next(iter(modes.values()))
    return ", ".join(f"{name} {mode}" for name, mode in modes.items())


def _signature_line(signature: dict[str, Any], models: dict[str, Any]) -> str:
    described = "; ".join(f"{name}: `{info['signature']}`" for name, info in models.items())
    return (
        f"{signature['data']}, {signature['split']} split, first {signature['tokens']:,} tokens as "
        f"{signature['streams']} streams, eval mode; g2lstm {signature['g2lstm_version']}, commit "
        f"{signature['git_commit']}. Models — {described}."
    )


def _sensitivity_markdown(
    sensitivity: dict[str, Any], signature: dict[str, Any], models: dict[str, Any]
) -> str:
    lines = [
        "# Gate flips under noise",
        "",
        _signature_line(signature, models),
        "",
        "Share (%) of input- and forget-gate values that land on the other side of 0.5 when N(0, σ²) noise "
        "is added to *weights* (every weight_ih / weight_hh of the LSTM layers) or to the *embedding* output "
        f"(the input of the first layer, fresh noise at every position); noise seed {signature['seed']}. "
        "A gate whose values sit near 0 or 1 needs a larger push to cross 0.5, so a binary-like gate should "
        "flip less. Layers count from 0.",
        "",
        "| model | target | σ | layer | input gates flipped (%) | forget gates flipped (%) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, targets in sensitivity.items():
        for target, by_sigma in targets.items():
            for sigma, layers in by_sigma.items():
                for layer, gates in layers.items():
                    lines.append(
                        f"| {name} | {target} | {sigma} | {layer.removeprefix('layer')} | "
                        f"{100 * gates['input']:.2f} | {100 * gates['forget']:.2f} |"
                    )
    return "\n".join(lines) + "\n"
