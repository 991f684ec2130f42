"""Compressed G2LSTMs (gate blocks as torch parametrizations, g2lstm.compress) under torch's program tools:
torch.compile with ``fullgraph=True`` in training and evaluation, torch.export, ONNX export run in
onnxruntime, and dynamic quantization. Eager evaluation under ``no_grad`` runs from the stored forms
(:mod:`g2lstm.kernels.stored`); traced programs compute the dense weights from the same factors and codes
inside the graph, so what they store is the compact tensors."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import LayerOutput, TinyLM, export_with_dynamic_length, train_steps
from torch import nn

from g2lstm import G2LSTM, QuantizedG2LSTM
from g2lstm.compress import compress
from g2lstm.kernels import stored
from g2lstm.kernels.compiled import KERNEL_ENV

SETTINGS = {"rank": dict(rank=2, gates=("input", "forget", "cell")), "round-clip": dict(round=0.1, clip=0.4)}


def compressed_model(settings: dict, eval_gate: str = "sigmoid") -> TinyLM:
    torch.manual_seed(0)
    model = TinyLM(eval_gate)
    compress(model, **settings)
    return model


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_compiled_training_of_a_compressed_model_matches_eager(settings):
    """Finetuning a compressed model (low-rank factors train, integer codes stay) compiles into one graph
    and gives eager's losses and parameters through changing shapes."""
    eager = compressed_model(settings)
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    shapes = [(7, 3), (9, 3), (5, 4)]
    expected = train_steps(eager, shapes)
    actual = train_steps(torch.compile(compiled, fullgraph=True), shapes)
    assert actual == pytest.approx(expected, abs=1e-5)
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eval_gate", ["sigmoid", "hard"])
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_compiled_evaluation_of_a_compressed_model_matches_the_stored_path(settings, eval_gate, monkeypatch):
    """Eager evaluation runs from the stored forms; the compiled graph, which cannot call that loop,
    computes the dense weights from them and gives the same logits."""
    monkeypatch.setenv(KERNEL_ENV, "compiled")  # the stored path runs on the compiled loop
    model = compressed_model(settings, eval_gate).eval()
    calls = []
    sequence_stored = stored.lstm_sequence_stored
    monkeypatch.setattr(
        "g2lstm.lstm.lstm_sequence_stored", lambda *a, **k: calls.append(1) or sequence_stored(*a, **k)
    )
    tokens = torch.randint(0, 30, (9, 3))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected = model(tokens)
        assert len(calls) == 2  # eager: both layers from their stored forms
        actual = compiled(tokens)
        actual_other = compiled(torch.randint(0, 30, (5, 2)))
    assert len(calls) == 2  # not from the compiled graph
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert actual_other.shape == (5, 2, 30)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_export_of_a_compressed_layer_keeps_the_compact_tensors(settings, training):
    torch.manual_seed(0)
    module = G2LSTM(5, 8, 2, noise_p=0.5)
    compress(module, **settings)
    module.train(training)
    program = export_with_dynamic_length(module, 5)
    kept = set(program.state_dict) | set(program.constants)
    assert kept == set(module.state_dict())  # factors and codes, no dense weight_ih / weight_hh


# ---------------------------------------------------------------------------------------------- ONNX


def onnx_export(module: nn.Module, x: torch.Tensor, path: Path, dynamo: bool) -> None:
    """Both exporters; the dynamo one without onnxscript's optimizer, whose constant folding would multiply
    small factors back into dense weights (products of up to 512 * 512 elements)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("time"), 1: torch.export.Dim("batch")},)
            torch.onnx.export(
                module, (x,), path, dynamo=True, input_names=["input"], dynamic_shapes=shapes, optimize=False
            )
        else:
            axes = {"input": {0: "time", 1: "batch"}}
            torch.onnx.export(module, (x,), path, dynamo=False, input_names=["input"], dynamic_axes=axes)


def initializer_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Each stored tensor of an ONNX file (initializers and constants): its shape and element type."""
    import onnx

    model = onnx.load(str(path))
    tensors = list(model.graph.initializer)
    constants = [node for node in model.graph.node if node.op_type == "Constant"]
    tensors += [a.t for node in constants for a in node.attribute if a.t.dims]
    names = [tensor.name or f"constant{i}" for i, tensor in enumerate(tensors)]
    return {name: (tuple(tensor.dims), tensor.data_type) for name, tensor in zip(names, tensors)}


@pytest.mark.parametrize("eval_gate", ["sigmoid", "hard"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_onnx_export_of_a_compressed_layer_runs_and_stores_the_compact_tensors(
    settings, dynamo, eval_gate, tmp_path
):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    torch.manual_seed(0)
    hidden, inputs = 64, 48
    dense = G2LSTM(inputs, hidden, eval_gate=eval_gate).eval()
    module = copy.deepcopy(dense)
    compress(module, **{**settings, "gates": ("input", "forget", "cell", "output")})
    x = torch.randn(6, 3, inputs)
    onnx_export(LayerOutput(dense).eval(), x, tmp_path / "dense.onnx", dynamo)
    onnx_export(LayerOutput(module).eval(), x, tmp_path / "compressed.onnx", dynamo)

    other = torch.randn(11, 4, inputs)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # the graph onnxruntime runs
    session = ort.InferenceSession(str(tmp_path / "compressed.onnx"), options)
    (actual,) = session.run(None, {"input": other.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(actual, module(other)[0].numpy(), atol=1e-5, rtol=0)

    shapes = initializer_shapes(tmp_path / "compressed.onnx")
    dense_shapes = [(4 * hidden, inputs), (4 * hidden, hidden), (inputs, 4 * hidden), (hidden, 4 * hidden)]
    assert not any(shape in dense_shapes for shape, _ in shapes.values())  # no dense weight folded in
    if "rank" in settings:
        assert any(2 in shape and hidden in shape for shape, _ in shapes.values())
        if not dynamo:  # the legacy exporter's factored loop: the graph onnxruntime optimises and runs
            # still holds the factors, its constant folding finding no u @ v to turn back into a dense matrix
            optimized = initializer_shapes(tmp_path / "optimized.onnx")
            sizes = [np.prod(shape) for shape, _ in optimized.values()]
            assert not any(hidden * hidden in (size, size / 4) for size in sizes)
    else:
        assert any(kind == onnx.TensorProto.INT8 for _, kind in shapes.values())
        if not dynamo:  # the legacy exporter's DequantizeLinear: the graph onnxruntime runs keeps the codes
            # as integers (its constant folding leaves DequantizeLinear alone) and holds no float gate block
            optimized = initializer_shapes(tmp_path / "optimized.onnx")
            integers = [np.prod(shape) for shape, kind in optimized.values() if kind == onnx.TensorProto.INT8]
            floats = [np.prod(shape) for shape, kind in optimized.values() if kind == onnx.TensorProto.FLOAT]
            assert sum(integers) >= 4 * hidden * (inputs + hidden) and max(floats) < hidden * inputs
    if not dynamo:  # (the unoptimized dynamo graph's node metadata outweighs these small tensors)
        sizes = {name: (tmp_path / f"{name}.onnx").stat().st_size for name in ("dense", "compressed")}
        assert sizes["compressed"] < 0.5 * sizes["dense"]


# -------------------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("eval_gate", ["sigmoid", "hard"])
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_dynamic_quantization_of_a_compressed_model(settings, eval_gate):
    """The parametrized layer is found (its class is torch's parametrized subclass of G2LSTM; torch.ao
    matches the class before parametrization) and quantized from its dense weights: the same int8 model as
    the uncompressed layer holding those weights gives."""
    model = compressed_model(settings, eval_gate).eval()
    dense = TinyLM(eval_gate).eval()
    with torch.no_grad():
        for name, value in model.named_parameters():
            if "parametrizations" not in name:
                dense.get_parameter(name).copy_(value)
        for name in model.rnn._flat_weights_names:
            getattr(dense.rnn, name).copy_(getattr(model.rnn, name))  # the dense weights, computed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized, expected = (
            torch.ao.quantization.quantize_dynamic(m, {G2LSTM, nn.Linear}, dtype=torch.qint8)
            for m in (model, dense)
        )
    assert isinstance(quantized.rnn, QuantizedG2LSTM)
    tokens = torch.randint(0, 30, (9, 3))
    with torch.no_grad():
        torch.testing.assert_close(quantized(tokens), expected(tokens), atol=1e-6, rtol=0)
        torch.testing.assert_close(quantized(tokens), model(tokens), atol=0.1, rtol=0)
