"""PNG figures (matplotlib, imported only here): gate histograms, per-word gate values, learning curves."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from g2lstm.analysis import GateHistogram
from g2lstm.train.storage import make_output_folder, storage_error

__all__ = ["plot_compression_curves", "plot_gate_histograms", "plot_gate_words", "plot_learning_curves"]


def _save(figure: Any, path: str | Path, tight: bool = True) -> Path:
    """Write ``figure`` as a PNG (creating the folder) and release it."""
    import matplotlib.pyplot as plt

    if tight:
        figure.tight_layout()
    path = Path(path)
    make_output_folder(path.parent)
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise storage_error(f"cannot write {path}", path, error) from error
    finally:
        plt.close(figure)
    return path


def _suptitle(figure: Any, title: str) -> None:
    """A figure title wrapped to the figure's width (about ten characters an inch at the default size), so
    that a long title is not cut off at the edges."""
    width = max(20, int(figure.get_size_inches()[0] * 10))
    figure.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gate_histograms(
    histograms: Mapping[str, Sequence[GateHistogram]],
    path: str | Path,
    title: str,
    layer_names: Mapping[int, str] | None = None,
) -> Path:
    """Grouped bars of gate-value shares, one panel per (gate, layer), one colour per model; ``layer_names``
    titles a layer by name rather than by number."""
    names = layer_names or {}
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
            axis.set_title(f"layer {names.get(layer, layer)}, {gate} gate")
            axis.set_xlim(0, 1)
            axis.set_xlabel("gate value")
            axis.set_ylabel("share of values (%)")
            axis.legend(fontsize=8)
    _suptitle(figure, title)
    return _save(figure, path)


def plot_gate_words(
    words: Sequence[Sequence[str]],
    averages: Mapping[str, Sequence[Mapping[tuple[int, str], Sequence[float]]]],
    path: str | Path,
    title: str,
    layer_names: Mapping[int, str] | None = None,
) -> Path:
    """The paper's Figure 4: heat maps of the per-word average gate value (mean over hidden units).

    ``words[s]`` labels the x axis of sentence ``s``; ``averages[model][s][(layer, gate)]`` holds one value
    per word. One panel per sentence and layer, one row per model and gate, one colour scale (0 to 1) for
    all panels, each cell also printed as a number; ``layer_names`` titles a layer by name.
    """
    names = layer_names or {}
    if not averages:
        raise ValueError("averages must hold at least one model, got none")
    for name, per_sentence in averages.items():
        if len(per_sentence) != len(words):
            raise ValueError(
                f"averages[{name!r}] must hold {len(words)} sentences (one per words), "
                f"got {len(per_sentence)}"
            )
        for s, gates in enumerate(per_sentence):
            for key, values in gates.items():
                if len(values) != len(words[s]):
                    raise ValueError(
                        f"averages[{name!r}][{s}][{key}] must hold one value per word ({len(words[s])}), "
                        f"got {len(values)}"
                    )
    plt = _pyplot()
    panels = []  # (sentence, layer, [(row label, values)])
    for s in range(len(words)):
        layers = sorted({layer for per in averages.values() for layer, _ in per[s]})
        for layer in layers:
            rows = [(f"{name}, {gate} gate", per[s][layer, gate])
                    for name, per in averages.items()
                    for gate in ("input", "forget")
                    if (layer, gate) in per[s]]
            panels.append((s, layer, rows))
    if not panels:
        raise ValueError("averages must hold gate values of at least one layer, got none")
    longest = max((len(w) for w in words), default=1)
    heights = [0.32 * len(rows) + 0.9 for _, _, rows in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(7.0, 0.62 * longest + 3.5), sum(heights) + 0.8),
                                height_ratios=heights, squeeze=False, layout="constrained")
    for axis, (s, layer, rows) in zip(axes[:, 0], panels):
        grid = [list(values) for _, values in rows]
        image = axis.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        for r, values in enumerate(grid):
            for c, value in enumerate(values):
                axis.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                          color="black" if value > 0.6 else "white")
        axis.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        axis.set_xticks(range(len(words[s])), list(words[s]), rotation=35, ha="right", fontsize=8)
        axis.set_title(f"sentence {s + 1}, layer {names.get(layer, layer)}", fontsize=9, loc="left")
        axis.set_xlabel("word (as read, left to right)", fontsize=8)
    colour_bar = figure.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, pad=0.02)
    colour_bar.set_label("gate value averaged over hidden units")
    _suptitle(figure, title)
    return _save(figure, path, tight=False)


def plot_learning_curves(curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str,
                         ylabel: str = "validation perplexity", log_y: bool = True) -> Path:
    """One line per run of (epoch, value) points; ``log_y`` for perplexities, whose early epochs are far above
    the rest. Tick labels are plain numbers, epochs whole ones."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)))
        axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axis.yaxis.set_minor_locator(LogLocator(subs="auto"))
        axis.yaxis.set_minor_formatter(FormatStrFormatter(""))
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    if any(curves.values()):
        axis.legend()
    return _save(figure, path)


def plot_compression_curves(runs: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], path: str | Path,
                            title: str) -> Path:
    """Two panels, one line per model: validation perplexity against the rank of the gate blocks, and
    against the rounding step (``runs[name]["rank_curve"]`` / ``["round_curve"]`` as (x, perplexity))."""
    plt = _pyplot()
    figure, (by_rank, by_step) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, run in runs.items():
        for axis, key in ((by_rank, "rank_curve"), (by_step, "round_curve")):
            if run.get(key):
                xs, ys = zip(*run[key])
                axis.plot(xs, ys, marker="o", markersize=4, label=name)
    by_rank.set_xscale("log", base=2)
    by_rank.invert_xaxis()
    by_rank.set_xlabel("rank of each input/forget gate block (log scale, smaller to the right)")
    by_step.set_xlabel("rounding step r of the input/forget gate weights")
    for axis in (by_rank, by_step):
        axis.set_ylabel("validation perplexity")
        axis.grid(True, alpha=0.3)
        axis.legend()
    _suptitle(figure, title)
    return _save(figure, path)
