"""G2LSTM equals torch.nn.LSTM exactly wherever its gates are plain sigmoids.

Both code paths are covered: torch's native LSTM kernel (``gate="lstm"``, and evaluation mode with the
default ``eval_gate="sigmoid"``) and the fused G2 kernel (taken while ``record_gates`` is active; with
``temperature=1`` and ``noise_p=0`` it must compute the plain LSTM too). Outputs, final states and every
gradient (input, h_0, c_0, each parameter) are compared. The fused kernel is also checked directly against
the step-by-step reference kernel, in both its loops (Python, and the compiled CPU loop that the module
runs by default on CPU; see also ``test_cpu_kernel.py``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import g2lstm
from g2lstm import G2LSTM, G2LSTMCell
from g2lstm.kernels import lstm_sequence, lstm_sequence_reference
from g2lstm.kernels.backends import onednn_available

INPUT_SIZE, HIDDEN, STEPS, BATCH = 3, 4, 5, 3
LENGTHS = {"packed-unsorted": [3, 5, 2], "packed-sorted": [5, 3, 2]}

ARCHITECTURES = {
    "1-layer": dict(num_layers=1),
    "2-layer": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "2-layer-bidirectional": dict(num_layers=2, bidirectional=True),
    "batch_first": dict(num_layers=2, batch_first=True),
    "no-bias": dict(num_layers=2, bias=False),
}
INPUT_KINDS = ["padded", "packed-unsorted", "packed-sorted", "unbatched"]
# name: (gate options, training mode, run inside record_gates -> fused kernel)
PATHS = {
    "native-lstm-train": (dict(gate="lstm"), True, False),
    "native-g2-eval": (dict(gate="g2"), False, False),
    "fused-g2-train-noiseless": (dict(gate="g2", temperature=1.0, noise_p=0.0), True, True),
    "fused-g2-eval": (dict(gate="g2"), False, True),
}


def make_input(kind: str, batch_first: bool, dtype: torch.dtype):
    """(leaf tensor to differentiate, a function making what the module receives from it, batch size or
    None when unbatched); packing is redone for every run so each has its own graph."""
    if kind == "unbatched":
        x = torch.randn(STEPS, INPUT_SIZE, dtype=dtype, requires_grad=True)
        return x, lambda: x, None
    shape = (BATCH, STEPS, INPUT_SIZE) if batch_first else (STEPS, BATCH, INPUT_SIZE)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if kind == "padded":
        return x, lambda: x, BATCH
    lengths = torch.tensor(LENGTHS[kind])
    sorted_ = kind == "packed-sorted"
    return x, lambda: pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=sorted_), BATCH


def make_state(module: nn.Module, batch: int | None, dtype: torch.dtype):
    directions = 2 if module.bidirectional else 1
    shape = (module.num_layers * directions, HIDDEN) if batch is None else (
        module.num_layers * directions, batch, HIDDEN
    )
    return tuple(torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(2))


def outputs_and_grads(module: nn.Module, x: torch.Tensor, make, hx, upstream):
    output, (h_n, c_n) = module(make(), hx)
    packed = isinstance(output, PackedSequence)
    data = output.data if packed else output
    params = dict(module.named_parameters())
    wrt = {"input": x, "h_0": hx[0], "c_0": hx[1], **params}
    grads = torch.autograd.grad([data, h_n, c_n], list(wrt.values()), upstream([data, h_n, c_n]))
    return output, h_n, c_n, dict(zip(wrt, grads))


def assert_same_run(expected, actual, atol):
    out_e, h_e, c_e, grads_e = expected
    out_a, h_a, c_a, grads_a = actual
    assert type(out_a) is type(out_e)
    if isinstance(out_e, PackedSequence):
        assert torch.equal(out_a.batch_sizes, out_e.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            a, e = getattr(out_a, name), getattr(out_e, name)
            assert (a is None and e is None) or torch.equal(a, e), name
        out_a, out_e = out_a.data, out_e.data
    torch.testing.assert_close(out_a, out_e, rtol=0, atol=atol, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(h_a, h_e, rtol=0, atol=atol, msg=lambda m: f"h_n: {m}")
    torch.testing.assert_close(c_a, c_e, rtol=0, atol=atol, msg=lambda m: f"c_n: {m}")
    assert grads_a.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(
            grads_a[name], grads_e[name], rtol=0, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}"
        )


def compare_with_lstm(architecture: dict, kind: str, path: str, dtype: torch.dtype, atol: float, upstream):
    options, training, fused = PATHS[path]
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, dtype=dtype, **architecture).train(training)
    module = G2LSTM.from_lstm(reference, **options).train(training)
    x, make, batch = make_input(kind, reference.batch_first, dtype)
    hx = make_state(reference, batch, dtype)
    expected = outputs_and_grads(reference, x, make, hx, upstream)
    recorder = g2lstm.record_gates(module) if fused else contextlib.nullcontext()
    with recorder as recording:
        actual = outputs_and_grads(module, x, make, hx, upstream)
    if fused:  # the fused kernel ran: it recorded one entry per layer
        assert all(len(recording.gates(k, "forget")) == 1 for k in range(module.num_layers))
    assert_same_run(expected, actual, atol)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_matches_nn_lstm_outputs_states_and_gradients(architecture, kind, path, dtype, atol, upstream):
    compare_with_lstm(ARCHITECTURES[architecture], kind, path, dtype, atol, upstream)


@pytest.mark.parametrize("path", ["native-lstm-train", "fused-g2-train-noiseless"])
def test_matches_nn_lstm_with_three_bidirectional_layers_on_packed_input(path, upstream):
    architecture = dict(num_layers=3, bidirectional=True)
    compare_with_lstm(architecture, "packed-unsorted", path, torch.float64, 1e-10, upstream)


@pytest.mark.parametrize("path", list(PATHS))
def test_default_zero_state_matches_nn_lstm(path):
    options, training, fused = PATHS[path]
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, 2, dtype=torch.float64).train(training)
    module = G2LSTM.from_lstm(reference, **options).train(training)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    expected_out, (expected_h, expected_c) = reference(x)
    with g2lstm.record_gates(module) if fused else contextlib.nullcontext():
        out, (h_n, c_n) = module(x)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(h_n, expected_h, rtol=0, atol=1e-10)
    torch.testing.assert_close(c_n, expected_c, rtol=0, atol=1e-10)


def test_eval_mode_ignores_temperature_and_noise_with_sigmoid_eval_gate():
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, dtype=torch.float64).eval()
    module = G2LSTM.from_lstm(reference, gate="g2", temperature=0.3, noise_p=1.0).eval()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0], reference(x)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "options, training",
    [
        (dict(gate="sharpened"), True),
        (dict(gate="sharpened"), False),
        (dict(gate="g2", temperature=0.7, eval_gate="tempered"), False),
    ],
    ids=["sharpened-train", "sharpened-eval", "g2-tempered-eval"],
)
def test_native_and_fused_paths_agree_for_scaled_gates(options, training, upstream):
    """sigmoid(a / tau) gates: the native kernel (scaled weight rows) and the fused kernel agree."""
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, dtype=torch.float64, **options).train(training)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    hx = make_state(module, BATCH, torch.float64)
    native = outputs_and_grads(module, x, lambda: x, hx, upstream)
    with g2lstm.record_gates(module):
        fused = outputs_and_grads(module, x, lambda: x, hx, upstream)
    assert_same_run(native, fused, 1e-10)
    # and the scaling is not a no-op: a plain LSTM with the same weights differs
    plain = module.to_lstm().train(training)
    assert not torch.allclose(plain(x, hx)[0], native[0], atol=1e-3)


# ---------------------------------------------------------------------------------------- conversions


def test_from_lstm_copies_weights_exactly_into_independent_parameters():
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, batch_first=True, dtype=torch.float64)
    module = G2LSTM.from_lstm(reference, gate="g2", temperature=0.5, noise_p=1.0)
    expected = reference.state_dict()
    assert list(module.state_dict()) == list(expected)
    for name, value in module.state_dict().items():
        assert torch.equal(value, expected[name]), name
        assert value.dtype == torch.float64
        assert value.data_ptr() != expected[name].data_ptr(), f"{name} shares storage with the nn.LSTM"
    for attribute in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"):
        assert getattr(module, attribute) == getattr(reference, attribute), attribute
    assert module.bidirectional and module.batch_first
    assert (module.gate, module.temperature, module.noise_p) == ("g2", 0.5, 1.0)
    with torch.no_grad():
        reference.weight_hh_l1_reverse.add_(1.0)
    assert not torch.equal(module.weight_hh_l1_reverse, reference.weight_hh_l1_reverse)


@pytest.mark.parametrize("training", [True, False])
def test_from_lstm_and_to_lstm_keep_training_mode(training):
    reference = nn.LSTM(INPUT_SIZE, HIDDEN).train(training)
    module = G2LSTM.from_lstm(reference)
    assert module.training is training
    assert module.to_lstm().training is training


@pytest.mark.parametrize("bias", [True, False])
def test_to_lstm_and_back_round_trips_exactly(bias):
    module = G2LSTM(
        INPUT_SIZE, HIDDEN, 2, bias=bias, bidirectional=True, dropout=0.25, dtype=torch.float64,
        gate="sharpened",
    )
    lstm = module.to_lstm()
    assert isinstance(lstm, nn.LSTM)
    assert (lstm.num_layers, lstm.bias, lstm.bidirectional, lstm.dropout) == (2, bias, True, 0.25)
    back = G2LSTM.from_lstm(lstm, gate="sharpened")
    for name, value in module.state_dict().items():
        assert torch.equal(lstm.state_dict()[name], value), name
        assert torch.equal(back.state_dict()[name], value), name
    assert lstm.state_dict().keys() == module.state_dict().keys() == back.state_dict().keys()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    module.eval()
    lstm.eval()
    module.eval_gate = "sigmoid"
    torch.testing.assert_close(module(x)[0], lstm(x)[0], rtol=0, atol=1e-12)


def test_nn_lstm_state_dict_loads_into_g2lstm_and_back():
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, dtype=torch.float64).eval()
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, dtype=torch.float64).eval()
    before = {name: id(p) for name, p in module.named_parameters()}
    module.load_state_dict(reference.state_dict())  # strict
    # copied into the existing Parameters (an optimizer made earlier keeps working)
    assert {name: id(p) for name, p in module.named_parameters()} == before
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    torch.testing.assert_close(module(x)[0], reference(x)[0], rtol=0, atol=1e-12)

    other = G2LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, dtype=torch.float64)
    fresh = nn.LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True, dtype=torch.float64).eval()
    fresh.load_state_dict(other.state_dict())  # strict
    for name, value in other.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_parameter_names_shapes_and_all_weights_match_nn_lstm():
    reference = nn.LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True)
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=True)
    assert [(n, p.shape) for n, p in module.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()
    ]
    assert [[w.shape for w in group] for group in module.all_weights] == [
        [w.shape for w in group] for group in reference.all_weights
    ]


# ---------------------------------------------------------------------------------------- the cell

CELL_PATHS = {
    "lstm-train": (dict(gate="lstm"), True),
    "g2-eval": (dict(gate="g2"), False),
    "g2-train-noiseless": (dict(gate="g2", temperature=1.0, noise_p=0.0), True),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("path", list(CELL_PATHS))
def test_cell_matches_nn_lstm_cell(path, batched, bias, dtype, atol, upstream):
    options, training = CELL_PATHS[path]
    reference = nn.LSTMCell(INPUT_SIZE, HIDDEN, bias=bias, dtype=dtype).train(training)
    cell = G2LSTMCell.from_lstm_cell(reference, **options).train(training)
    x = torch.randn((BATCH, INPUT_SIZE) if batched else (INPUT_SIZE,), dtype=dtype, requires_grad=True)
    state_shape = (BATCH, HIDDEN) if batched else (HIDDEN,)
    hx = tuple(torch.randn(state_shape, dtype=dtype, requires_grad=True) for _ in "hc")

    def run(module):
        h, c = module(x, hx)
        params = dict(module.named_parameters())
        wrt = {"input": x, "h_0": hx[0], "c_0": hx[1], **params}
        return h, c, dict(zip(wrt, torch.autograd.grad([h, c], list(wrt.values()), upstream([h, c]))))

    h_e, c_e, grads_e = run(reference)
    h_a, c_a, grads_a = run(cell)
    torch.testing.assert_close(h_a, h_e, rtol=0, atol=atol)
    torch.testing.assert_close(c_a, c_e, rtol=0, atol=atol)
    assert grads_a.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(
            grads_a[name], grads_e[name], rtol=0, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}"
        )
    # the default state is zeros, as for nn.LSTMCell
    torch.testing.assert_close(cell(x)[0], reference(x)[0], rtol=0, atol=atol)


def test_from_lstm_cell_copies_weights_exactly():
    reference = nn.LSTMCell(INPUT_SIZE, HIDDEN, dtype=torch.float64)
    cell = G2LSTMCell.from_lstm_cell(reference, gate="sharpened", temperature=0.25)
    assert (cell.input_size, cell.hidden_size, cell.bias) == (INPUT_SIZE, HIDDEN, True)
    assert (cell.gate, cell.temperature) == ("sharpened", 0.25)
    assert cell.state_dict().keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        assert torch.equal(cell.state_dict()[name], value), name
        assert cell.state_dict()[name].data_ptr() != value.data_ptr(), name
    # and an nn.LSTMCell state dict loads back from the cell
    fresh = nn.LSTMCell(INPUT_SIZE, HIDDEN, dtype=torch.float64)
    fresh.load_state_dict(cell.state_dict())
    assert all(torch.equal(fresh.state_dict()[n], v) for n, v in cell.state_dict().items())


def test_cell_stepped_over_a_sequence_matches_g2lstm_layer():
    module = G2LSTM(INPUT_SIZE, HIDDEN, dtype=torch.float64, gate="sharpened").eval()
    cell = G2LSTMCell(INPUT_SIZE, HIDDEN, dtype=torch.float64, gate="sharpened").eval()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in module.state_dict().items()})
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    out, (h_n, c_n) = module(x)
    h = c = torch.zeros(BATCH, HIDDEN, dtype=torch.float64)
    for t in range(STEPS):
        h, c = cell(x[t], (h, c))
        torch.testing.assert_close(h, out[t], rtol=0, atol=1e-12)
    torch.testing.assert_close(c, c_n[0], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------- the kernels

KERNEL_BACKENDS = [("torch", torch.float64), ("torch", torch.float32)]
if onednn_available():
    KERNEL_BACKENDS.append(("onednn", torch.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, kernel_dtype", KERNEL_BACKENDS, ids=[f"{b}-{str(d)[6:]}" for b, d in KERNEL_BACKENDS]
)
@pytest.mark.parametrize("hard", [False, True], ids=["sigmoid", "hard"])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.9], ids=["scale1", "scale1/0.9"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_sizes", [[4, 4, 3, 1], [3, 3, 3]], ids=["packed", "full"])
@pytest.mark.parametrize("kernel", ["python", "compiled"])
def test_fused_kernel_matches_reference(
    kernel, batch_sizes, reverse, scale, hard, backend, kernel_dtype, upstream
):
    atol = 1e-10 if kernel_dtype == torch.float64 else 1e-5
    hidden, batch, rows = 3, batch_sizes[0], sum(batch_sizes)
    leaves = [
        torch.randn(rows, 4 * hidden, dtype=kernel_dtype),
        torch.randn(batch, hidden, dtype=kernel_dtype),
        torch.randn(batch, hidden, dtype=kernel_dtype),
        torch.randn(4 * hidden, hidden, dtype=kernel_dtype) * 0.5,
    ]
    names = ["gate_inputs", "h0", "c0", "weight_hh"]

    def run(function, **extra):
        inputs = [t.clone().requires_grad_() for t in leaves]
        flags = {"reverse": reverse, "scale": scale, "hard": hard}
        output, h_n, c_n, gates = function(*inputs, batch_sizes, **flags, **extra)
        assert not gates.requires_grad
        grads = torch.autograd.grad([output, h_n, c_n], inputs, upstream([output, h_n, c_n]))
        return [output, h_n, c_n, gates, *grads]

    expected = run(lstm_sequence_reference)
    actual = run(lstm_sequence, backend=backend, kernel=kernel)
    shapes = [(rows, hidden), (batch, hidden), (batch, hidden), (rows, 4 * hidden)]
    assert [tuple(t.shape) for t in actual[:4]] == shapes
    labels = ["output", "h_n", "c_n", "gates"] + [f"grad of {n}" for n in names]
    for label, a, e in zip(labels, actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=atol, msg=lambda m, n=label: f"{n}: {m}")
    if hard:  # exactly binary input and forget gates, and no gradient through them
        assert set(actual[3][:, : 2 * hidden].unique().tolist()) <= {0.0, 1.0}


def test_fused_kernel_auto_backend_equals_torch_backend():
    hidden, batch_sizes = 3, [4, 4, 3, 1]
    args = (
        torch.randn(sum(batch_sizes), 4 * hidden),
        torch.randn(4, hidden),
        torch.randn(4, hidden),
        torch.randn(4 * hidden, hidden),
        batch_sizes,
    )
    auto = lstm_sequence(*args, backend="auto")
    plain = lstm_sequence(*args, backend="torch")
    for a, p in zip(auto, plain):
        torch.testing.assert_close(a, p, rtol=0, atol=1e-5)
