"""ONNX export of evaluation-mode G2LSTM (every eval gate, both exporters) and of a trained language model,
run in onnxruntime at another sequence length and batch size than exported with."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from g2lstm import EVAL_GATES, G2LSTM
from g2lstm.compress import compress

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    dynamo: bool,
    inputs: list[str],
    outputs: list[str],
    batch_first: bool = False,
):
    time_axis, batch_axis = (1, 0) if batch_first else (0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            time, batch = torch.export.Dim("time"), torch.export.Dim("batch")
            shapes = ({time_axis: time, batch_axis: batch}, *({1: batch} for _ in args[1:]))
            torch.onnx.export(
                module,
                args,
                path,
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=shapes,
            )
        else:
            axes = {name: {1: "batch"} for name in inputs + outputs}
            axes[inputs[0]] = axes[outputs[0]] = {time_axis: "time", batch_axis: "batch"}
            torch.onnx.export(
                module, args, path, dynamo=False, input_names=inputs, output_names=outputs, dynamic_axes=axes
            )


def assert_onnxruntime_matches(module: torch.nn.Module, path: Path, inputs: tuple) -> None:
    """The exported graph at ``path`` gives ``module``'s outputs on ``inputs`` (input, h0, c0)."""
    session = ort.InferenceSession(str(path))
    actual = session.run(None, dict(zip(["input", "h0", "c0"], (t.numpy() for t in inputs))))
    with torch.no_grad():
        expected = module(*inputs)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)


class WithState(torch.nn.Module):
    """``(input, h0, c0) -> (output, h_n, c_n)`` as flat tensors."""

    def __init__(self, rnn: G2LSTM) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, c0):
        output, (h_n, c_n) = self.rnn(x, (h0, c0))
        return output, h_n, c_n


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("eval_gate", EVAL_GATES)
def test_eval_gate_exports_with_dynamic_time_and_batch(eval_gate, dynamo, tmp_path):
    rnn = G2LSTM(5, 8, 2, bidirectional=eval_gate == "hard", temperature=0.5, eval_gate=eval_gate).eval()
    module = WithState(rnn).eval()
    layers = 4 if rnn.bidirectional else 2
    example = (torch.randn(6, 3, 5), torch.randn(layers, 3, 8), torch.randn(layers, 3, 8))
    path = tmp_path / "rnn.onnx"
    export(module, example, path, dynamo, ["input", "h0", "c0"], ["output", "h_n", "c_n"])
    other = (torch.randn(11, 4, 5), torch.randn(layers, 4, 8), torch.randn(layers, 4, 8))
    assert_onnxruntime_matches(module, path, other)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("eval_gate", ["sigmoid", "hard"])
@pytest.mark.parametrize("gates", [("forget", "output"), ("input", "forget", "cell", "output")],
                         ids=["two-gates-apart", "all-gates"])
def test_low_rank_layers_export_and_run_in_onnxruntime(gates, eval_gate, dynamo, tmp_path):
    """Low-rank blocks that are not the first gates (the legacy exporter's factored loop computes them
    first, then finds each gate by its position), or every gate, in a two-layer bidirectional layer with a
    projection and batch-first input: onnxruntime gives the module's outputs at another length and batch
    size."""
    torch.manual_seed(0)
    rnn = G2LSTM(6, 10, 2, bidirectional=True, proj_size=4, batch_first=True, eval_gate=eval_gate).eval()
    compress(rnn, rank=3, gates=gates)
    module = WithState(rnn).eval()
    example = (torch.randn(5, 6, 6), torch.randn(4, 5, 4), torch.randn(4, 5, 10))
    path = tmp_path / "rnn.onnx"
    export(module, example, path, dynamo, ["input", "h0", "c0"], ["output", "h_n", "c_n"], batch_first=True)
    other = (torch.randn(7, 9, 6), torch.randn(4, 7, 4), torch.randn(4, 7, 10))
    assert_onnxruntime_matches(module, path, other)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_cli_exports_a_language_model_that_onnxruntime_runs(tmp_path, dynamo):
    from g2lstm.cli import main
    from g2lstm.gates import set_eval_gate
    from g2lstm.lm.config import LMConfig
    from g2lstm.lm.model import AWDLSTM
    from g2lstm.train import config_to_dict
    from g2lstm.train.checkpoint import save_checkpoint

    vocab = ["<eos>", *(f"w{i}" for i in range(19))]
    config = LMConfig(emb_size=6, hidden_size=10, num_layers=2)
    model = AWDLSTM(config.model_spec(len(vocab)))
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(
        checkpoint, {"config": config_to_dict(config), "vocab": vocab, "model": model.state_dict()}
    )
    command = ["export", str(checkpoint), "--out", str(tmp_path / "lm.onnx"), "--eval-gate", "hard"]
    assert main(command + (["--dynamo"] if dynamo else [])) == 0

    session = ort.InferenceSession(str(tmp_path / "lm.onnx"))
    tokens = torch.randint(0, 20, (9, 3))
    hidden = model.init_hidden(3)
    feeds = {"tokens": tokens.numpy()}
    for layer, (h, c) in enumerate(hidden):
        feeds.update({f"h0_l{layer}": h.numpy(), f"c0_l{layer}": c.numpy()})
    logits, *states = session.run(None, feeds)
    set_eval_gate(model, "hard")
    model.eval()
    with torch.no_grad():
        result = model(tokens, hidden)
        np.testing.assert_allclose(logits, model.decode(result.output).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(states[-1], result.hidden[-1][1].numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_cli_exports_a_compressed_language_model_with_its_factors(tmp_path, dynamo):
    """A compressed checkpoint exports its low-rank factors, not dense weights rebuilt from them, and the
    exported model computes what the compressed model computes."""
    import onnx

    from g2lstm.cli import main
    from g2lstm.compress import compress, compression_config
    from g2lstm.lm.config import LMConfig
    from g2lstm.lm.model import AWDLSTM
    from g2lstm.train import config_to_dict
    from g2lstm.train.checkpoint import save_checkpoint

    vocab = ["<eos>", *(f"w{i}" for i in range(19))]
    config = LMConfig(emb_size=6, hidden_size=40, num_layers=2)
    model = AWDLSTM(config.model_spec(len(vocab)))
    compress(model, rank=3)
    checkpoint = tmp_path / "compressed.pt"
    state = {"config": config_to_dict(config), "vocab": vocab, "model": model.state_dict()}
    save_checkpoint(checkpoint, {**state, "compression": compression_config(model)})
    out = tmp_path / "lm.onnx"
    assert main(["export", str(checkpoint), "--out", str(out)] + (["--dynamo"] if dynamo else [])) == 0

    stored = {tuple(tensor.dims) for tensor in onnx.load(str(out)).graph.initializer}
    assert (40, 3) in stored and (3, 40) in stored  # u and v of the hidden-to-hidden gate blocks
    assert (160, 40) not in stored and (40, 160) not in stored  # no dense weight_hh_l0
    session = ort.InferenceSession(str(out))
    tokens = torch.randint(0, 20, (9, 3))
    hidden = model.init_hidden(3)
    feeds = {"tokens": tokens.numpy()}
    for layer, (h, c) in enumerate(hidden):
        feeds.update({f"h0_l{layer}": h.numpy(), f"c0_l{layer}": c.numpy()})
    logits, *_ = session.run(None, feeds)
    model.eval()
    with torch.no_grad():
        expected = model.decode(model(tokens, hidden).output)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5, rtol=0)
