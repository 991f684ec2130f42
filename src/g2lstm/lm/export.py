"""ONNX export of a trained language model: tokens in, logits and every layer's states out.

The exported graph is the model in evaluation mode with its checkpoint's evaluation gate (or the one given):
inputs ``tokens`` ``(T, B)`` int64 and, per layer ``k``, ``h0_l{k}`` and ``c0_l{k}`` ``(1, B, H_k)``;
outputs ``logits`` ``(T, B, vocab)`` and ``h_l{k}``, ``c_l{k}``, with the time and batch axes dynamic, so
that a caller carries the states from one chunk to the next as ``g2lstm lm eval`` does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from g2lstm.lm.model import AWDLSTM

__all__ = ["export_language_model", "state_names"]


class _TokensToLogits(nn.Module):
    """The model as one graph: ``(tokens, h0_l0, c0_l0, ...) -> (logits, h_l0, c_l0, ...)``."""

    def __init__(self, model: AWDLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        hidden = [(states[k], states[k + 1]) for k in range(0, len(states), 2)]
        result = self.model(tokens, hidden)
        return (self.model.decode(result.output), *(state for pair in result.hidden for state in pair))


def state_names(layers: int, prefix: str = "") -> list[str]:
    """``[h{prefix}_l0, c{prefix}_l0, h{prefix}_l1, ...]``: the state inputs (``prefix="0"``) or outputs."""
    return [f"{kind}{prefix}_l{layer}" for layer in range(layers) for kind in ("h", "c")]


def export_language_model(
    checkpoint: str | Path, out: str | Path, *, eval_gate: str | None = None, dynamo: bool = False
) -> dict[str, Any]:
    """Write the language model of ``checkpoint`` to ``out`` as ONNX; returns what was written.

    ``dynamo`` picks torch's dynamo-based exporter instead of the TorchScript-based one (both give graphs
    with dynamic time and batch axes; the TorchScript one is faster to run here).

    A compressed checkpoint (:mod:`g2lstm.compress`) exports its compact tensors (low-rank factors, integer
    codes), from which the graph computes the dense weights when it runs, so the file is as small as the
    checkpoint's weights. (The dynamo exporter's optimizer would fold small products of factors into dense
    constants; it is skipped for such models.)
    """
    from g2lstm.gates import set_eval_gate
    from g2lstm.lm.evaluate import load_model
    from g2lstm.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    model, _, vocab = load_model(state, source=checkpoint)
    if eval_gate is not None:
        set_eval_gate(model, eval_gate)
    model.eval()
    layers = len(model.layers)
    tokens = torch.zeros(5, 2, dtype=torch.int64)
    states = [state for pair in model.init_hidden(2) for state in pair]
    inputs, outputs = ["tokens", *state_names(layers, "0")], ["logits", *state_names(layers)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = _TokensToLogits(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' notes on traced loops and deprecations
        if dynamo:
            time, batch = torch.export.Dim("time"), torch.export.Dim("batch")
            torch.onnx.export(
                graph,
                (tokens, *states),
                out,
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=({0: time, 1: batch}, tuple({1: batch} for _ in states)),
                optimize=state.get("compression") is None,
            )
        else:
            axes = {"tokens": {0: "time", 1: "batch"}, "logits": {0: "time", 1: "batch"}}
            axes.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
            torch.onnx.export(
                graph,
                (tokens, *states),
                out,
                dynamo=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
            )
    external = out.with_name(out.name + ".data")  # the dynamo exporter's weights
    return {
        "onnx": str(out),
        "exporter": "dynamo" if dynamo else "torchscript",
        "eval_gate": model.layers[0].eval_gate,
        "compressed": state.get("compression") is not None,
        "bytes": sum(path.stat().st_size for path in (out, external) if path.exists()),
        "vocab_size": len(vocab),
        "layers": layers,
        "state_sizes": [layer.hidden_size for layer in model.layers],
    }
