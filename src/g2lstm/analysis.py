"""Looking inside trained models: gate-value histograms, their Markdown table, and how many gates flip
across 0.5 when the weights or the inputs are perturbed (a binary-like gate should flip less).

Everything here works on any module holding G2LSTM / G2LSTMCell layers: the gates are read with
:func:`g2lstm.record_gates`, and ``forward(model, batch)`` says how to run the model on one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from g2lstm.lstm import G2LSTM, G2LSTMCell
from g2lstm.recording import GATE_NAMES, GateRecording, record_gates

__all__ = [
    "BINS",
    "PAPER_SHARES",
    "SENSITIVITY_TARGETS",
    "GateHistogram",
    "flip_share",
    "gate_histogram_table",
    "gate_histograms",
    "gate_sensitivities",
    "gate_sensitivity",
]

BINS = 10  # gate values are counted in bins of width 1/BINS = 0.1, as the paper's Figures 1 and 3

# SPEC §3.3: shares (%) in the first bin, the last bin and both, per gate mode and gate, measured by the
# paper on the first decoder layer of its translation model over 10,000 training sentence pairs.
PAPER_SHARES: dict[tuple[str, str], tuple[float, float, float]] = {
    ("lstm", "input"): (18.2, 3.9, 22.1),
    ("lstm", "forget"): (4.4, 8.6, 13.0),
    ("g2", "input"): (4.3, 70.4, 74.7),
    ("g2", "forget"): (35.5, 26.3, 61.9),
}

Target = Literal["weights", "embedding"]
SENSITIVITY_TARGETS: tuple[Target, ...] = ("weights", "embedding")

Forward = Callable[[Any, Any], Any]  # (model, batch) -> anything; the model's type is the caller's


@dataclass
class GateHistogram:
    """Shares (summing to 1) of gate values in the :data:`BINS` bins of width 0.1, for one layer and gate."""

    layer: int
    gate: str
    shares: list[float]
    count: int

    @property
    def outer_share(self) -> float:
        """Share of values in [0, 0.1) or [0.9, 1]: how binary the gate is."""
        return self.shares[0] + self.shares[-1]


def _bin_counts(values: Tensor) -> Tensor:
    # The last bin is closed, [0.9, 1], as in the paper's tables.
    index = torch.clamp((values.double() * BINS).floor().long(), 0, BINS - 1)
    return torch.bincount(index.flatten(), minlength=BINS)


def _recorded(recording: GateRecording) -> Iterator[tuple[tuple[int, str], Tensor]]:
    """Every gate tensor recorded since the last ``clear``, flattened, with its (layer, gate)."""
    for layer in range(recording.num_layers):
        for gate in GATE_NAMES:
            for values in recording.gates(layer, gate):
                data = values.data if isinstance(values, PackedSequence) else values
                yield (layer, gate), data.flatten()


@torch.no_grad()
def gate_histograms(model: nn.Module, batches: Sequence[Any], forward: Forward) -> list[GateHistogram]:
    """Histograms of the input and forget gates of every G2LSTM layer in ``model``.

    ``forward(model, batch)`` runs the model on one batch; the gates are recorded as the cell used them
    (deterministic in eval mode, the paper's setting for its figures).
    """
    counts: dict[tuple[int, str], Tensor] = {}
    with record_gates(model) as recording:
        for batch in batches:
            forward(model, batch)
            for key, values in _recorded(recording):
                counts[key] = counts.get(key, torch.zeros(10, dtype=torch.long)) + _bin_counts(values)
            recording.clear()
    histograms = []
    for (layer, gate), count in sorted(counts.items()):
        total = int(count.sum())
        histograms.append(GateHistogram(layer, gate, (count.double() / max(total, 1)).tolist(), total))
    return histograms


def gate_histogram_table(
    histograms: Mapping[str, Sequence[GateHistogram]],
    gate_modes: Mapping[str, str] | None = None,
    layer_names: Mapping[int, str] | None = None,
) -> str:
    """A Markdown table of the bin shares (%) and outer-bin share per model, layer and gate.

    ``gate_modes`` maps model names to their gate mode (``"lstm"``, ``"g2"``, ...); where the paper
    reports values for that mode (:data:`PAPER_SHARES`), they are shown beside each row. A note under the
    table says what the paper measured, so the two are not read as the same experiment. ``layer_names``
    shows a layer by name rather than by number.
    """
    if not isinstance(histograms, Mapping):
        raise TypeError(
            f"histograms must map model names to lists of GateHistogram, got {type(histograms).__name__}"
        )
    gate_modes = dict(gate_modes or {})
    unknown = sorted(set(gate_modes) - set(histograms))
    if unknown:
        raise ValueError(
            f"gate_modes names models that histograms lacks: {unknown}; models are {list(histograms)}"
        )
    bins = [f"[{k / BINS:.1f},{(k + 1) / BINS:.1f})" for k in range(BINS - 1)] + [f"[{1 - 1 / BINS:.1f},1.0]"]
    header = ["model", "layer", "gate", *bins, "outer bins", "values", "paper: first / last / outer bin"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for name, hists in histograms.items():
        for h in hists:
            if not isinstance(h, GateHistogram):
                raise TypeError(
                    f"histograms[{name!r}] must hold GateHistogram objects, got {type(h).__name__}"
                )
        for h in sorted(hists, key=lambda h: (h.layer, h.gate != "input")):
            paper = PAPER_SHARES.get((gate_modes.get(name, ""), h.gate))
            paper_cell = " / ".join(f"{v:.1f}" for v in paper) if paper else "–"
            layer = (layer_names or {}).get(h.layer, h.layer)
            cells = [name, str(layer), h.gate, *(f"{100 * s:.1f}" for s in h.shares),
                     f"**{100 * h.outer_share:.1f}**", f"{h.count:,}", paper_cell]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Shares of gate values in %, 10 bins of width 0.1 (the last bin closed); *outer bins* = [0,0.1) + "
        "[0.9,1.0], how binary a gate is. Layers count from 0 (the first layer). The paper's column gives "
        "its first bin, last bin and outer-bin share for the same gate mode (LSTM or G2-LSTM); the paper "
        "measured them on the first decoder layer of its translation model (10,000 training sentence "
        "pairs), not on this model, so they are a point of reference, not an expected value.",
    ]
    return "\n".join(lines) + "\n"


def _check_comparable(reference: Any, perturbed: Any) -> None:
    for name, value in (("reference", reference), ("perturbed", perturbed)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(value).__name__}")
    if reference.shape != perturbed.shape:
        raise ValueError(
            f"reference and perturbed must have the same shape, got {tuple(reference.shape)} and "
            f"{tuple(perturbed.shape)}"
        )


def _flips(reference: Tensor, perturbed: Tensor) -> int:
    # A value of exactly 0.5 counts as open, as the hard gate 1[a >= 0] does.
    return int(((reference >= 0.5) != (perturbed >= 0.5)).sum())


def flip_share(reference: Tensor, perturbed: Tensor) -> float:
    """Share of gate values that lie on opposite sides of 0.5 in ``reference`` and ``perturbed``.

    The two tensors hold the same gates (same shape) before and after a perturbation; a value of exactly
    0.5 counts as open (>= 0.5), as the hard gate ``1[a >= 0]`` does.
    """
    _check_comparable(reference, perturbed)
    if reference.numel() == 0:
        raise ValueError("reference and perturbed must hold at least one gate value, got empty tensors")
    return _flips(reference, perturbed) / reference.numel()


def _recurrent(model: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, (G2LSTM, G2LSTMCell))]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} contains no G2LSTM or G2LSTMCell whose gates could be analysed"
        )
    return layers


@contextmanager
def _weight_noise(model: nn.Module, sigma: float, generator: torch.Generator) -> Iterator[None]:
    """Add N(0, sigma^2) to every weight_ih* / weight_hh* of the recurrent layers; copy the originals back."""
    weights = list(dict.fromkeys(
        parameter
        for module in _recurrent(model)
        for name, parameter in module.named_parameters(recurse=False)
        if name.startswith(("weight_ih", "weight_hh"))
    ))
    saved = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w in weights:
                w.add_(torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device), alpha=sigma)
        yield
    finally:
        with torch.no_grad():
            for w, original in zip(weights, saved):
                w.copy_(original)


@contextmanager
def _input_noise(model: nn.Module, sigma: float, generator: torch.Generator) -> Iterator[None]:
    """Add fresh N(0, sigma^2) noise to the input of the first recurrent layer on every call.

    In an embedding -> LSTM stack (AWDLSTM in eval mode) that input is the embedding output. The hook sits
    on the recurrent layer rather than on the ``nn.Embedding``, because models may look words up with
    ``F.embedding`` on the embedding's weight (as AWDLSTM's embedding dropout does), which bypasses the
    Embedding module's hooks.
    """

    def noisy(x: Any) -> Any:
        if isinstance(x, PackedSequence):
            return x._replace(data=noisy(x.data))
        return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        if args:
            return (noisy(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "input": noisy(kwargs["input"])}

    handle = _recurrent(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return float(sigma)


def _check_target(target: Any) -> Target:
    if target not in SENSITIVITY_TARGETS:
        raise ValueError(f"target must be one of {SENSITIVITY_TARGETS}, got {target!r}")
    return target


@torch.no_grad()
def gate_sensitivities(
    model: nn.Module,
    forward: Forward,
    batches: Sequence[Any],
    *,
    sigmas: Sequence[float],
    targets: Sequence[Target] = SENSITIVITY_TARGETS,
    seed: int = 0,
) -> dict[tuple[str, float], dict[tuple[int, str], float]]:
    """:func:`gate_sensitivity` for every ``(target, sigma)``, sharing one unperturbed pass.

    Returns ``{(target, sigma): {(layer, gate): share flipped}}``; each entry equals what
    :func:`gate_sensitivity` returns for that target and sigma with the same ``seed``.
    """
    sigmas = [_check_sigma(s) for s in sigmas]
    targets = [_check_target(t) for t in targets]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not batches:
        raise ValueError("batches must hold at least one batch, got none")
    _recurrent(model)
    was_training = model.training
    model.eval()
    try:
        reference: dict[tuple[int, str], list[Tensor]] = {}
        with record_gates(model) as recording:
            for batch in batches:
                forward(model, batch)
                for key, values in _recorded(recording):
                    reference.setdefault(key, []).append(values >= 0.5)
                recording.clear()
        results: dict[tuple[str, float], dict[tuple[int, str], float]] = {}
        for target in targets:
            for sigma in sigmas:
                perturb = _weight_noise if target == "weights" else _input_noise
                with perturb(model, sigma, torch.Generator().manual_seed(seed)):
                    results[target, sigma] = _flip_shares(model, forward, batches, reference)
        return results
    finally:
        model.train(was_training)


def _flip_shares(
    model: nn.Module, forward: Forward, batches: Sequence[Any], reference: dict[tuple[int, str], list[Tensor]]
) -> dict[tuple[int, str], float]:
    """Run ``batches`` again and compare each recorded gate tensor with the reference's open/closed sides."""
    flips = dict.fromkeys(reference, 0)
    seen = dict.fromkeys(reference, 0)
    with record_gates(model) as recording:
        for batch in batches:
            forward(model, batch)
            for key, values in _recorded(recording):
                index = seen.get(key, 0)
                expected = reference.get(key, [])
                if index >= len(expected) or expected[index].shape != values.shape:
                    raise RuntimeError(
                        f"forward recorded different gates on the perturbed pass (layer {key[0]}, {key[1]} "
                        f"gate, call {index}); forward(model, batch) must run the same computation each time "
                        "it is given the same batches (reset any carried state on the first batch)"
                    )
                flips[key] += int(((values >= 0.5) != expected[index]).sum())
                seen[key] = index + 1
            recording.clear()
    missing = [key for key in reference if seen[key] != len(reference[key])]
    if missing:
        raise RuntimeError(
            f"forward recorded fewer gates on the perturbed pass (layer {missing[0][0]}, {missing[0][1]} "
            "gate); forward(model, batch) must run the same computation each time it is given the same "
            "batches"
        )
    totals = {key: sum(t.numel() for t in tensors) for key, tensors in reference.items()}
    return {key: flips[key] / max(totals[key], 1) for key in sorted(reference)}


def gate_sensitivity(
    model: nn.Module,
    forward: Forward,
    batches: Sequence[Any],
    *,
    sigma: float,
    target: Target,
    seed: int = 0,
) -> dict[tuple[int, str], float]:
    """Share of input- and forget-gate values that flip across 0.5 under noise, per (layer, gate).

    The model runs over ``batches`` in eval mode twice, its gates recorded: as it is, then with
    N(0, sigma^2) noise (drawn from a generator seeded with ``seed``) added to

    * ``target="weights"``: every ``weight_ih*`` / ``weight_hh*`` of its G2LSTM / G2LSTMCell layers, the
      originals copied back afterwards (bit-exact);
    * ``target="embedding"``: the input of its first recurrent layer (in ``model.modules()`` order), fresh
      noise on every call; in an embedding -> LSTM stack such as AWDLSTM this is the embedding output.
      The hook is removed afterwards.

    A gate whose values sit near 0 or 1 needs a larger push to cross 0.5, so a binary-like gate should flip
    less. ``forward(model, batch)`` runs one batch; it is called on all batches in order for each pass, so
    a forward that carries state between batches must reset it on the first batch. The model's
    training/eval mode is restored afterwards.
    """
    results = gate_sensitivities(model, forward, batches, sigmas=[sigma], targets=[target], seed=seed)
    return results[target, float(sigma)]
