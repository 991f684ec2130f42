"""G2LSTM under torch's program tools: torch.compile, torch.export, torch.func, double backward, the whole
nn.LSTM surface (proj_size, helpers, warnings, exception types) and dynamic quantization."""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_models import TinyLM, export_with_dynamic_length, train_steps
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import EVAL_GATES, G2LSTM, GATE_MODES, QuantizedG2LSTM, record_gates
from g2lstm.kernels import lstm_sequence, lstm_sequence_reference

KERNELS = ("python", "compiled")


@pytest.mark.parametrize("dynamic", [None, True], ids=["default", "dynamic"])
def test_compiled_training_matches_eager_through_changing_shapes(dynamic):
    eager = TinyLM()
    compiled = TinyLM()
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    shapes = [(7, 3), (9, 3), (5, 4), (12, 2), (7, 3)]
    expected = train_steps(eager, shapes)
    actual = train_steps(
        torch.compile(compiled, fullgraph=True, dynamic=dynamic), shapes
    )  # a break would raise
    assert actual == pytest.approx(expected, abs=1e-5)
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("eval_gate", EVAL_GATES)
@pytest.mark.parametrize("gate", GATE_MODES)
def test_export_with_dynamic_length_for_every_gate(gate, eval_gate, training):
    module = G2LSTM(5, 8, gate=gate, eval_gate=eval_gate).train(training)
    export_with_dynamic_length(module, 5)


def test_func_grad_of_functional_call_matches_backward():
    module = G2LSTM(5, 8, 2).double()
    params = dict(module.named_parameters())
    x = torch.randn(6, 3, 5, dtype=torch.float64)

    def loss(parameters):
        return torch.func.functional_call(module, parameters, (x,))[0].pow(2).sum()

    torch.manual_seed(1)
    grads = torch.func.grad(loss)(params)
    torch.manual_seed(1)
    loss(params).backward()
    for name, param in params.items():
        torch.testing.assert_close(grads[name], param.grad)


@pytest.mark.parametrize("projection", [False, True], ids=["plain", "proj"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_double_backward_of_the_fused_kernel(kernel, projection):
    hidden, out, batch_sizes = 3, 2 if projection else 3, [3, 3, 2, 1]
    inputs = [
        torch.randn(sum(batch_sizes), 4 * hidden, dtype=torch.float64),
        torch.randn(3, out, dtype=torch.float64),
        torch.randn(3, hidden, dtype=torch.float64),
        0.5 * torch.randn(4 * hidden, out, dtype=torch.float64),
    ] + ([0.5 * torch.randn(out, hidden, dtype=torch.float64)] if projection else [])
    inputs = [tensor.requires_grad_() for tensor in inputs]

    def function(gate_inputs, h0, c0, weight_hh, weight_hr=None):
        return lstm_sequence(
            gate_inputs,
            h0,
            c0,
            weight_hh,
            batch_sizes,
            reverse=True,
            scale=1.3,
            weight_hr=weight_hr,
            kernel=kernel,
            noise_seed=5,
            noise_p=0.5,
        )[:3]

    assert torch.autograd.gradgradcheck(function, inputs, fast_mode=True)


def test_gradient_penalty_matches_nn_lstm():
    lstm = nn.LSTM(4, 6, 2, dtype=torch.float64)
    module = G2LSTM.from_lstm(lstm, gate="lstm")
    x = torch.randn(5, 3, 4, dtype=torch.float64)

    def penalty(rnn):
        with (
            record_gates(rnn) if isinstance(rnn, G2LSTM) else warnings.catch_warnings()
        ):  # G2: the fused kernel
            out = rnn(x)[0].pow(2).sum()
        grads = torch.autograd.grad(out, list(rnn.parameters()), create_graph=True)
        return torch.autograd.grad(sum(g.pow(2).sum() for g in grads), list(rnn.parameters()))

    for expected, actual in zip(penalty(lstm), penalty(module)):
        torch.testing.assert_close(actual, expected)


# ------------------------------------------------------------------------------------- proj_size


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("path", ["native", "fused"])
def test_proj_size_matches_nn_lstm_outputs_and_gradients(path, packed):
    lstm = nn.LSTM(4, 6, 2, bidirectional=True, proj_size=3, dtype=torch.float64)
    module = G2LSTM.from_lstm(lstm, gate="lstm")
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    h0, c0 = torch.randn(4, 3, 3, dtype=torch.float64), torch.randn(4, 3, 6, dtype=torch.float64)
    inputs = pack_padded_sequence(x, torch.tensor([5, 4, 2])) if packed else x

    def run(rnn):
        rnn.zero_grad()
        output, (h_n, c_n) = rnn(inputs, (h0, c0))
        values = output.data if packed else output
        (values.sin().sum() + h_n.cos().sum() + c_n.sum()).backward()
        return [values, h_n, c_n] + [p.grad for p in rnn.parameters()]

    expected = run(lstm)
    with (
        record_gates(module) if path == "fused" else warnings.catch_warnings()
    ):  # recording runs the fused kernel
        actual = run(module)
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_proj_size_kernel_matches_the_reference(kernel):
    hidden, proj, batch_sizes = 5, 2, [4, 3, 3, 1]
    args = (
        torch.randn(11, 4 * hidden, dtype=torch.float64),
        torch.randn(4, proj, dtype=torch.float64),
        torch.randn(4, hidden, dtype=torch.float64),
        torch.randn(4 * hidden, proj, dtype=torch.float64),
    )
    weight_hr = torch.randn(proj, hidden, dtype=torch.float64)
    for reverse in (False, True):
        settings = {"reverse": reverse, "scale": 1.2, "weight_hr": weight_hr}
        actual = lstm_sequence(*args, batch_sizes, kernel=kernel, **settings)
        expected = lstm_sequence_reference(*args, batch_sizes, **settings)
        for got, want in zip(actual, expected):
            torch.testing.assert_close(got, want)


def test_proj_size_state_dicts_and_conversions_round_trip():
    lstm = nn.LSTM(4, 6, 2, proj_size=3)
    module = G2LSTM.from_lstm(lstm)
    assert module.weight_hr_l1.shape == (3, 6) and module.weight_hh_l0.shape == (24, 3)
    assert list(module.state_dict()) == list(lstm.state_dict())
    back = module.to_lstm()
    for name, value in lstm.state_dict().items():
        assert torch.equal(back.state_dict()[name], value)
    fresh = G2LSTM(4, 6, 2, proj_size=3)
    fresh.load_state_dict(lstm.state_dict())
    assert torch.equal(fresh.weight_hr_l0, lstm.weight_hr_l0)


# ------------------------------------------------------------------------------------- nn.LSTM surface


def test_attributes_and_helpers_match_nn_lstm():
    lstm = nn.LSTM(4, 6, 2, bidirectional=True, proj_size=2)
    module = G2LSTM.from_lstm(lstm)
    x = torch.randn(5, 3, 4)
    assert (module.mode, module.proj_size) == ("LSTM", 2)
    assert [w.shape for w in module._flat_weights] == [w.shape for w in lstm._flat_weights]
    assert module._flat_weights_names == lstm._flat_weights_names
    assert module.get_expected_hidden_size(x, None) == lstm.get_expected_hidden_size(x, None)
    assert module.get_expected_cell_size(x, None) == lstm.get_expected_cell_size(x, None)
    hx = (torch.randn(4, 3, 2), torch.randn(4, 3, 6))
    module.check_forward_args(x, hx, None)
    permutation = torch.tensor([2, 0, 1])
    for got, want in zip(module.permute_hidden(hx, permutation), lstm.permute_hidden(hx, permutation)):
        assert torch.equal(got, want)
    for bad in [(torch.randn(5, 3, 5), hx), (x, (hx[1], hx[1]))]:
        for rnn in (lstm, module):
            with pytest.raises(RuntimeError):
                rnn.check_forward_args(*bad, None)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda rnn: rnn(torch.randn(5, 3, 7)), RuntimeError),  # feature size
        (lambda rnn: rnn(torch.randn(5, 3, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 2, 6))), RuntimeError),
        (lambda rnn: rnn(torch.randn(5, 3, 4, dtype=torch.float64)), ValueError),  # dtype
        (lambda rnn: rnn(torch.randn(4)), ValueError),  # rank
    ],
    ids=["features", "state", "dtype", "rank"],
)
def test_mistakes_raise_what_nn_lstm_raises(call, error):
    for rnn in (nn.LSTM(4, 6, 2), G2LSTM(4, 6, 2)):
        with pytest.raises(error):
            call(rnn)


def test_constructor_warnings_and_errors_as_nn_lstm():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        G2LSTM(4, 6, dropout=0.5)
    for options in ({"proj_size": 6}, {"proj_size": -1}):
        with pytest.raises(ValueError):
            nn.LSTM(4, 6, **options)
        with pytest.raises(ValueError, match="proj_size"):
            G2LSTM(4, 6, **options)


# ------------------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("eval_gate", EVAL_GATES)
def test_quantize_dynamic_swaps_in_quantized_g2lstm_keeping_the_eval_gate(eval_gate, proj_size):
    model = nn.Sequential(G2LSTM(5, 8, 2, temperature=0.3, eval_gate=eval_gate, proj_size=proj_size)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {G2LSTM, nn.Linear}, dtype=torch.qint8)
    assert isinstance(quantized[0], QuantizedG2LSTM) and quantized[0].eval_gate == eval_gate
    x = torch.randn(7, 3, 5)
    expected, actual = model(x), quantized(x)
    assert actual[0].shape == expected[0].shape
    assert (actual[0] - expected[0]).abs().mean() < 0.01  # int8 weights: close, not equal
    other_gate = {"sigmoid": "hard", "tempered": "sigmoid", "hard": "sigmoid"}[eval_gate]
    model[0].eval_gate = other_gate
    assert (model(x)[0] - expected[0]).abs().mean() > 5 * (actual[0] - expected[0]).abs().mean()


def test_quantize_dynamic_that_leaves_g2lstm_float_warns():
    model = nn.Sequential(G2LSTM(5, 8), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match=r"leaves this G2LSTM in float.*\{G2LSTM, nn.Linear\}"):
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear})
    assert type(quantized[0]) is G2LSTM
