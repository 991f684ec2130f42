"""User mistakes end in clear errors that name the argument, what was expected and what was given.

TypeError for a wrong type, ValueError for a wrong value or shape.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, G2LSTMCell
from g2lstm.functional import gumbel_sigmoid, logistic_noise
from g2lstm.kernels.backends import step_product

INPUT_SIZE, HIDDEN, STEPS, BATCH = 3, 4, 5, 2


@pytest.fixture
def module() -> G2LSTM:
    return G2LSTM(INPUT_SIZE, HIDDEN, 2)


@pytest.fixture
def cell() -> G2LSTMCell:
    return G2LSTMCell(INPUT_SIZE, HIDDEN)


def state(*shape, dtype=torch.float32, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------- forward inputs


@pytest.mark.parametrize("shape", [(INPUT_SIZE,), (1, STEPS, BATCH, INPUT_SIZE)], ids=["1-D", "4-D"])
def test_wrong_input_rank(module, shape):
    with pytest.raises(ValueError, match=rf"input must be 2-D .* or 3-D.*got {len(shape)}-D"):
        module(torch.randn(shape))


@pytest.mark.parametrize(
    "shape", [(STEPS, BATCH, INPUT_SIZE + 1), (STEPS, INPUT_SIZE - 1)], ids=["batched", "unbatched"]
)
def test_wrong_feature_size(module, shape):
    with pytest.raises(ValueError, match=rf"input has {shape[-1]} features.*input_size is {INPUT_SIZE}"):
        module(torch.randn(shape))


def test_wrong_feature_size_of_packed_input(module):
    packed = pack_padded_sequence(torch.randn(STEPS, BATCH, INPUT_SIZE + 2), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match=rf"{INPUT_SIZE + 2} features.*input_size is {INPUT_SIZE}"):
        module(packed)


def test_empty_sequence(module):
    with pytest.raises(ValueError, match=r"empty.*\(0, 2, 3\)"):
        module(torch.randn(0, BATCH, INPUT_SIZE))


@pytest.mark.parametrize(
    "which, shapes",
    [
        ("h_0", ((2, BATCH + 1, HIDDEN), (2, BATCH, HIDDEN))),
        ("c_0", ((2, BATCH, HIDDEN), (2, BATCH, HIDDEN + 1))),
        ("h_0", ((1, BATCH, HIDDEN), (1, BATCH, HIDDEN))),
        ("h_0", ((2, HIDDEN), (2, HIDDEN))),  # unbatched state for batched input
    ],
    ids=["h_0-batch", "c_0-hidden", "layers", "rank"],
)
def test_wrong_state_shapes(module, which, shapes):
    hx = tuple(state(*s) for s in shapes)
    with pytest.raises(ValueError, match=rf"{which} must have shape \(2, {BATCH}, {HIDDEN}\)"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE), hx)


def test_batched_state_for_unbatched_input(module):
    hx = (state(2, 1, HIDDEN), state(2, 1, HIDDEN))
    with pytest.raises(ValueError, match=rf"h_0 must have shape \(2, {HIDDEN}\).*got \(2, 1, {HIDDEN}\)"):
        module(torch.randn(STEPS, INPUT_SIZE), hx)


@pytest.mark.parametrize(
    "hx",
    [state(2, BATCH, HIDDEN), (state(2, BATCH, HIDDEN),), [state(2, BATCH, HIDDEN)] * 3],
    ids=["tensor", "1-tuple", "3-list"],
)
def test_state_that_is_not_a_pair(module, hx):
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE), hx)


def test_state_that_is_not_a_tensor(module):
    with pytest.raises(TypeError, match="c_0 must be a Tensor, got list"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE), (state(2, BATCH, HIDDEN), [[0.0]]))


def test_input_that_is_not_a_tensor(module):
    with pytest.raises(TypeError, match="input must be a Tensor, got list"):
        module([[0.0] * INPUT_SIZE])


def test_integer_input(module):
    with pytest.raises(TypeError, match="input must have a floating-point dtype, got torch.int64"):
        module(torch.zeros(STEPS, BATCH, INPUT_SIZE, dtype=torch.long))


def test_input_dtype_differs_from_parameters(module):
    with pytest.raises(TypeError, match=r"input has dtype torch.float64.*parameters are torch.float32"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64))


def test_state_dtype_differs_from_parameters(module):
    hx = (state(2, BATCH, HIDDEN), state(2, BATCH, HIDDEN, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"c_0 has dtype torch.float64.*torch.float32"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE), hx)


def test_input_on_another_device(module):
    with pytest.raises(ValueError, match=r"input is on meta.*parameters are on cpu"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE, device="meta"))


def test_state_on_another_device(module):
    hx = (state(2, BATCH, HIDDEN, device="meta"), state(2, BATCH, HIDDEN))
    with pytest.raises(ValueError, match=r"h_0 is on meta.*parameters are on cpu"):
        module(torch.randn(STEPS, BATCH, INPUT_SIZE), hx)


def test_parameters_on_another_device():
    on_meta = G2LSTM(INPUT_SIZE, HIDDEN, device="meta")
    with pytest.raises(ValueError, match=r"input is on cpu.*parameters are on meta"):
        on_meta(torch.randn(STEPS, BATCH, INPUT_SIZE))


# ---------------------------------------------------------------------------------------- the cell


def test_cell_wrong_input_rank(cell):
    with pytest.raises(ValueError, match=r"input must be 1-D .* or 2-D.*got 3-D"):
        cell(torch.randn(1, BATCH, INPUT_SIZE))


def test_cell_wrong_feature_size(cell):
    with pytest.raises(ValueError, match=rf"input has {INPUT_SIZE + 1} features.*input_size is {INPUT_SIZE}"):
        cell(torch.randn(BATCH, INPUT_SIZE + 1))


def test_cell_wrong_state_shape(cell):
    pattern = rf"c_0 must have shape \({BATCH}, {HIDDEN}\), got \({BATCH}, {HIDDEN + 1}\)"
    with pytest.raises(ValueError, match=pattern):
        cell(torch.randn(BATCH, INPUT_SIZE), (state(BATCH, HIDDEN), state(BATCH, HIDDEN + 1)))


def test_cell_state_not_a_pair(cell):
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        cell(torch.randn(BATCH, INPUT_SIZE), state(BATCH, HIDDEN))


def test_cell_dtype_and_device_mismatch(cell):
    with pytest.raises(TypeError, match="input has dtype torch.float64"):
        cell(torch.randn(BATCH, INPUT_SIZE, dtype=torch.float64))
    with pytest.raises(ValueError, match="h_0 is on meta"):
        cell(torch.randn(BATCH, INPUT_SIZE), (state(BATCH, HIDDEN, device="meta"), state(BATCH, HIDDEN)))


# ---------------------------------------------------------------------------------------- constructor options

BOTH = [G2LSTM, G2LSTMCell]


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_temperature_must_be_finite_and_positive(cls, value):
    with pytest.raises(ValueError, match=rf"temperature must be a finite number > 0, got {value!r}"):
        cls(INPUT_SIZE, HIDDEN, temperature=value)


@pytest.mark.parametrize("value", ["0.9", True, [0.9]])
def test_temperature_must_be_a_number(value):
    with pytest.raises(TypeError, match=r"temperature must be a float, got"):
        G2LSTM(INPUT_SIZE, HIDDEN, temperature=value)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_noise_p_must_be_a_probability(cls, value):
    with pytest.raises(ValueError, match=rf"noise_p must lie in \[0, 1\], got {value!r}"):
        cls(INPUT_SIZE, HIDDEN, noise_p=value)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("value", [0.0, 0.5, -1e-3, 0.7])
def test_noise_eps_must_lie_between_0_and_one_half(cls, value):
    with pytest.raises(ValueError, match=rf"noise_eps must lie in \(0, 0.5\), got {value!r}"):
        cls(INPUT_SIZE, HIDDEN, noise_eps=value)


def test_noise_options_must_be_numbers():
    with pytest.raises(TypeError, match="noise_p must be a float, got str"):
        G2LSTM(INPUT_SIZE, HIDDEN, noise_p="0.2")
    with pytest.raises(TypeError, match="noise_eps must be a float, got NoneType"):
        G2LSTM(INPUT_SIZE, HIDDEN, noise_eps=None)


@pytest.mark.parametrize("cls", BOTH)
def test_unknown_gate_and_eval_gate(cls):
    with pytest.raises(ValueError, match=r"gate must be one of \('g2', 'sharpened', 'lstm'\), got 'gumbel'"):
        cls(INPUT_SIZE, HIDDEN, gate="gumbel")
    pattern = r"eval_gate must be one of \('sigmoid', 'tempered', 'hard'\), got 'soft'"
    with pytest.raises(ValueError, match=pattern):
        cls(INPUT_SIZE, HIDDEN, eval_gate="soft")


@pytest.mark.parametrize(
    "name, value, kind",
    [
        ("input_size", 3.0, "float"),
        ("hidden_size", "4", "str"),
        ("num_layers", 2.0, "float"),
        ("num_layers", True, "bool"),
    ],
)
def test_sizes_must_be_ints(name, value, kind):
    arguments = dict(input_size=INPUT_SIZE, hidden_size=HIDDEN, num_layers=1)
    arguments[name] = value
    with pytest.raises(TypeError, match=rf"{name} must be an int, got {kind}"):
        G2LSTM(**arguments)


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
def test_sizes_must_be_positive(name):
    arguments = dict(input_size=INPUT_SIZE, hidden_size=HIDDEN, num_layers=1)
    arguments[name] = 0
    with pytest.raises(ValueError, match=rf"{name} must be >= 1, got 0"):
        G2LSTM(**arguments)


def test_cell_sizes_must_be_ints():
    with pytest.raises(TypeError, match="hidden_size must be an int, got float"):
        G2LSTMCell(INPUT_SIZE, 4.0)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_weight_dropout_must_lie_in_0_1(cls, value):
    with pytest.raises(ValueError, match=rf"weight_dropout must lie in \[0, 1\), got {value!r}"):
        cls(INPUT_SIZE, HIDDEN, weight_dropout=value)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_dropout_must_be_a_probability(value):
    with pytest.raises(ValueError, match=rf"dropout must lie in \[0, 1\], got {value!r}"):
        G2LSTM(INPUT_SIZE, HIDDEN, 2, dropout=value)


def test_dropout_must_be_a_number():
    with pytest.raises(TypeError, match="dropout must be a float, got str"):
        G2LSTM(INPUT_SIZE, HIDDEN, 2, dropout="0.1")


def test_gate_options_are_keyword_only():
    with pytest.raises(TypeError):
        G2LSTM(INPUT_SIZE, HIDDEN, 1, True, False, 0.0, False, "g2")  # type: ignore[misc]


# ------------------------------------------------------------------------------- setting options later


@pytest.mark.parametrize(
    "name, value, error, pattern",
    [
        ("eval_gate", "bogus", ValueError, r"eval_gate must be one of .*'bogus'"),
        ("gate", "bogus", ValueError, r"gate must be one of .*'bogus'"),
        ("temperature", 0.0, ValueError, r"temperature must be a finite number > 0, got 0.0"),
        ("temperature", "1", TypeError, r"temperature must be a float"),
        ("noise_p", 2.0, ValueError, r"noise_p must lie in \[0, 1\], got 2.0"),
        ("noise_eps", 0.5, ValueError, r"noise_eps must lie in \(0, 0.5\), got 0.5"),
    ],
)
@pytest.mark.parametrize("cls", BOTH)
def test_setting_a_bad_gate_option_raises_and_keeps_the_old_value(cls, name, value, error, pattern):
    rnn = cls(INPUT_SIZE, HIDDEN, gate="g2", temperature=0.8, noise_p=0.3, noise_eps=0.01, eval_gate="hard")
    before = getattr(rnn, name)
    with pytest.raises(error, match=pattern):
        setattr(rnn, name, value)
    assert getattr(rnn, name) == before
    options = (rnn.gate, rnn.temperature, rnn.noise_p, rnn.noise_eps, rnn.eval_gate)
    assert options == ("g2", 0.8, 0.3, 0.01, "hard")


def test_setting_a_good_gate_option_takes_effect():
    rnn = G2LSTM(INPUT_SIZE, HIDDEN)
    rnn.eval_gate = "hard"
    rnn.temperature = 0.5
    rnn.noise_p = 1
    assert (rnn.eval_gate, rnn.temperature, rnn.noise_p) == ("hard", 0.5, 1.0)
    assert isinstance(rnn.noise_p, float)


# ------------------------------------------------------------------------------- conversion, functional


def test_from_lstm_rejects_other_modules():
    with pytest.raises(TypeError, match="from_lstm expects a torch.nn.LSTM, got GRU"):
        G2LSTM.from_lstm(nn.GRU(INPUT_SIZE, HIDDEN))
    with pytest.raises(TypeError, match="from_lstm_cell expects a torch.nn.LSTMCell, got LSTM"):
        G2LSTMCell.from_lstm_cell(nn.LSTM(INPUT_SIZE, HIDDEN))


def test_from_lstm_validates_gate_options():
    with pytest.raises(ValueError, match="temperature"):
        G2LSTM.from_lstm(nn.LSTM(INPUT_SIZE, HIDDEN), temperature=-1.0)


def test_functional_errors():
    with pytest.raises(TypeError, match="logits must be a Tensor, got list"):
        gumbel_sigmoid([0.0])
    with pytest.raises(TypeError, match="logits must have a floating-point dtype, got torch.int64"):
        gumbel_sigmoid(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        gumbel_sigmoid(torch.zeros(3), 0)
    with pytest.raises(ValueError, match=r"noise_p must lie in \[0, 1\], got 1.2"):
        gumbel_sigmoid(torch.zeros(3), noise_p=1.2)
    with pytest.raises(ValueError, match=r"noise_eps must lie in \(0, 0.5\), got 0.0"):
        logistic_noise((3,), noise_eps=0.0)
    with pytest.raises(ValueError, match=r"noise_p must lie in \[0, 1\], got -0.5"):
        logistic_noise((3,), noise_p=-0.5)


def test_kernel_backend_errors():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'onednn'\), got 'cuda'"):
        step_product(torch.zeros(8, 2), 3, "cuda")
    with pytest.raises(ValueError, match=r"onednn backend needs float32 CPU tensors.*torch.float64"):
        step_product(torch.zeros(8, 2, dtype=torch.float64), 3, "onednn")


def test_changing_gate_mode_follows_the_new_modes_defaults():
    module = G2LSTM(2, 3)
    module.gate = "sharpened"
    assert (module.temperature, module.eval_gate) == (0.2, "tempered")
    module.temperature = 0.5
    module.gate = "g2"
    assert (module.temperature, module.eval_gate) == (0.5, "sigmoid")
    module.temperature = None
    assert module.temperature == 0.9
