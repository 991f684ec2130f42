"""PNG figures (matplotlib, imported only here): gate histograms and learning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from g2lstm.analysis import GateHistogram

__all__ = ["plot_gate_histograms", "plot_learning_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gate_histograms(histograms: Mapping[str, Sequence[GateHistogram]], path: str | Path, title: str) -> Path:
    """Grouped bars of gate-value shares, one panel per (gate, layer), one colour per model."""
    plt = _pyplot()
    layers = sorted({h.layer for hs in histograms.values() for h in hs})
    gates = ("input", "forget")
    figure, axes = plt.subplots(len(gates), len(layers), figsize=(4.2 * len(layers), 6.5), squeeze=False)
    bar_width = 0.08 / max(len(histograms), 1)
    centres = [0.05 + 0.1 * k for k in range(10)]
    for row, gate in enumerate(gates):
        for column, layer in enumerate(layers):
            axis = axes[row][column]
            for index, (name, hists) in enumerate(histograms.items()):
                match = [h for h in hists if h.layer == layer and h.gate == gate]
                if not match:
                    continue
                h = match[0]
                offsets = [c + (index - (len(histograms) - 1) / 2) * bar_width for c in centres]
                axis.bar(offsets, [100 * s for s in h.shares], width=bar_width,
                         label=f"{name} (outer bins {100 * h.outer_share:.1f}%)")
            axis.set_title(f"layer {layer}, {gate} gate")
            axis.set_xlim(0, 1)
            axis.set_xlabel("gate value")
            axis.set_ylabel("share of values (%)")
            axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_learning_curves(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str,
                         ylabel: str = "validation perplexity") -> Path:
    """One line per run of (epoch, value) points."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.set_yscale("log")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
