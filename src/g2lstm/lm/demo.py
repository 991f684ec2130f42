"""The main job: a short LSTM vs G2-LSTM run on Penn Treebank, their perplexities and gate histograms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from g2lstm.analysis import GateHistogram, gate_histograms
from g2lstm.data import batchify
from g2lstm.lm.compression import compression_sweep
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.lm.evaluate import load_corpus, load_model
from g2lstm.lm.model import AWDLSTM
from g2lstm.lm.train import train_language_model
from g2lstm.train import CheckpointPaths, load_checkpoint, load_config, write_file

__all__ = ["QUICK_STEPS", "format_demo_table", "run_demo", "lm_gate_histograms"]

# Training steps per model of the quick demo (`g2lstm demo`, `make run`): a few minutes in all on two CPU
# cores, enough for the G2 gates to move towards 0 and 1; `g2lstm demo --full` trains the preset's epochs.
QUICK_STEPS = 300


def lm_gate_histograms(
    model: AWDLSTM, stream: torch.Tensor, bptt: int, max_tokens: int
) -> list[GateHistogram]:
    """Gate histograms of a language model over the first ``max_tokens`` of a (T, B) stream, in eval mode."""
    model.eval()
    rows = max(2, min(stream.shape[0], max_tokens // max(stream.shape[1], 1)))
    chunks = [(stream[start : min(start + bptt, rows)],) for start in range(0, rows - 1, bptt)]
    hidden = [model.init_hidden(stream.shape[1])]

    def forward(m: AWDLSTM, batch: tuple[torch.Tensor, ...]) -> None:
        result = m(batch[0], hidden[0])
        hidden[0] = result.hidden

    return gate_histograms(model, chunks, forward)


def run_demo(out: str | Path, data: str | Path | None = None, preset: str = "tiny",
             overrides: dict[str, object] | None = None, show_progress: bool = True) -> dict:
    """Train ``preset`` as LSTM and as G2-LSTM (same seed); compare their perplexities, gate histograms and
    test perplexities after compressing the gates (the paper's Round, Round & clip, a rank of hidden/9) and
    with hard 0/1 gates."""
    from g2lstm.plots import plot_gate_histograms

    out = Path(out)
    results: dict[str, Any] = {}
    histograms: dict[str, list[GateHistogram]] = {}
    for gate in ("lstm", "g2"):
        config = load_config(LMConfig, preset, {**(overrides or {}), "gate": gate}, preset_dir=PRESET_DIR)
        metrics = train_language_model(config, out / gate, data, show_progress=show_progress)
        best = CheckpointPaths(out / gate).best
        model, config, vocab = load_model(load_checkpoint(best), source=best)
        corpus = load_corpus(data, config.unit, vocab)
        histograms[gate] = lm_gate_histograms(
            model, batchify(corpus.valid, config.eval_batch_size), config.bptt, 20_000
        )
        results[gate] = {
            **metrics,
            "outer_share": {f"layer{h.layer}_{h.gate}": h.outer_share for h in histograms[gate]},
        }
    hidden = config.hidden_size  # the same for both models
    sweep = compression_sweep(
        [CheckpointPaths(out / gate).best for gate in ("lstm", "g2")],
        out / "compression",
        data,
        names=["lstm", "g2"],
        ranks=[max(1, round(hidden / 9))],
        curves=False,
        splits=("test",),
    )
    for gate in ("lstm", "g2"):
        results[gate]["compressed_test_ppl"] = {
            column: metrics["test_ppl"] for column, metrics in sweep["runs"][gate]["table"].items()
        }
    figure = plot_gate_histograms(
        {"LSTM": histograms["lstm"], "G2-LSTM": histograms["g2"]}, out / "gate_histograms.png",
        f"Gate values on PTB validation ({preset} preset, eval mode)",
    )
    results["figure"] = str(figure)
    write_file(out / "summary.json", json.dumps(results, indent=2))
    return results


def format_demo_table(results: dict) -> str:
    """The demo's numbers side by side: perplexities, perplexities after compression, outer-bin shares."""
    lstm, g2 = results["lstm"], results["g2"]
    lines = [f"\n{'':40}{'LSTM':>10}{'G2-LSTM':>10}"]
    for key, label in (("valid_ppl", "valid perplexity"), ("test_ppl", "test perplexity")):
        lines.append(f"{label:40}{lstm[key]:>10.2f}{g2[key]:>10.2f}")
    for column in g2["compressed_test_ppl"]:
        if column != "original":
            lines.append(f"{'test perplexity, ' + column:40}{lstm['compressed_test_ppl'][column]:>10.2f}"
                         f"{g2['compressed_test_ppl'][column]:>10.2f}")
    for key in g2["outer_share"]:
        lines.append(f"{key + ' gates in outer bins':40}{100 * lstm['outer_share'][key]:>9.1f}%"
                     f"{100 * g2['outer_share'][key]:>9.1f}%")
    return "\n".join(lines)
