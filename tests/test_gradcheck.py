"""Finite-difference checks (float64) of the hand-written backward pass, with the gate noise held fixed.

The noise, the noise mask and the DropConnect mask are drawn from torch's generator inside the forward
pass; re-seeding at the start of the checked function makes every evaluation draw the same values, so the
function is deterministic and its gradient is the reparameterised one (noise constant).
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, G2LSTMCell
from g2lstm.functional import gumbel_sigmoid
from g2lstm.kernels import lstm_sequence

INPUT_SIZE, HIDDEN, STEPS, BATCH = 3, 4, 5, 2
NOISE_SEED = 7
# Most checks compare random projections of the Jacobian (fast_mode, cheap on 2 cores); the tests named
# "full_jacobian" and the small kernel checks compare every entry.
FAST = True
# The kernel-level checks run both loops of the fused kernel; the module-level ones run the default
# (the compiled loop on CPU where it builds).
KERNELS = ["python", "compiled"]


def check(function, inputs, fast: bool = FAST) -> bool:
    return gradcheck(function, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast)


def seeded_module_function(module: torch.nn.Module, make_input=lambda x: x):
    """(function of (x, h0, c0, *parameters) re-seeding the noise on each call, the parameter leaves)."""
    names = [name for name, _ in module.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def function(x, h0, c0, *weights):
        torch.manual_seed(NOISE_SEED)
        output, (h_n, c_n) = functional_call(module, dict(zip(names, weights)), (make_input(x), (h0, c0)))
        return output, h_n, c_n

    return function, leaves


def random_inputs(module: G2LSTM):
    states = module.num_layers * (2 if module.bidirectional else 1)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(states, BATCH, HIDDEN, dtype=torch.float64, requires_grad=True) for _ in "hc")
    return x, h0, c0


@pytest.mark.parametrize(
    "architecture",
    [dict(num_layers=2), dict(num_layers=1, bidirectional=True)],
    ids=["2-layer", "bidirectional"],
)
@pytest.mark.parametrize("noise_p", [1.0, 0.2])
def test_g2_training_path_gradients_with_fixed_noise(noise_p, architecture):
    module = G2LSTM(
        INPUT_SIZE, HIDDEN, dtype=torch.float64, gate="g2", temperature=0.9, noise_p=noise_p, **architecture
    ).train()
    function, leaves = seeded_module_function(module)
    inputs = (*random_inputs(module), *leaves)
    first = function(*inputs)[0]
    assert torch.isfinite(first).all(), "the training forward pass produced non-finite outputs"
    assert torch.equal(first, function(*inputs)[0]), "re-seeding does not repeat the noise"
    # the function really is noisy (else this would only check the plain LSTM)
    module.eval()
    assert not torch.allclose(first, function(*inputs)[0], atol=1e-3)
    module.train()
    assert check(function, inputs)


def test_g2_training_path_full_jacobian():
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2, dtype=torch.float64, temperature=0.9, noise_p=0.2).train()
    function, leaves = seeded_module_function(module)
    inputs = (*random_inputs(module), *leaves)
    assert check(function, inputs, fast=False)


def test_g2_training_path_gradients_on_packed_input():
    module = G2LSTM(INPUT_SIZE, HIDDEN, bidirectional=True, dtype=torch.float64, noise_p=1.0).train()
    lengths = torch.tensor([5, 3])
    function, leaves = seeded_module_function(
        module, lambda x: pack_padded_sequence(x, lengths, enforce_sorted=False)
    )

    def data_only(*args):
        output, h_n, c_n = function(*args)
        return output.data, h_n, c_n

    assert check(data_only, (*random_inputs(module), *leaves))


@pytest.mark.parametrize("gate", ["g2", "lstm"], ids=["fused-path", "native-path"])
def test_weight_dropout_gradients_with_fixed_mask(gate):
    module = G2LSTM(
        INPUT_SIZE, HIDDEN, dtype=torch.float64, gate=gate, noise_p=1.0, weight_dropout=0.5
    ).train()
    function, leaves = seeded_module_function(module)
    inputs = (*random_inputs(module), *leaves)
    # DropConnect acts: without it the output differs
    first = function(*inputs)[0]
    module.weight_dropout = 0.0
    assert not torch.allclose(first, function(*inputs)[0])
    module.weight_dropout = 0.5
    assert check(function, inputs)


@pytest.mark.parametrize("eval_gate", ["sigmoid", "tempered", "hard"])
def test_eval_path_gradients(eval_gate):
    module = G2LSTM(INPUT_SIZE, HIDDEN, dtype=torch.float64, eval_gate=eval_gate).eval()
    function, leaves = seeded_module_function(module)
    assert check(function, (*random_inputs(module), *leaves))


@pytest.mark.parametrize("noise_p", [1.0, 0.2])
@pytest.mark.parametrize("weight_dropout", [0.0, 0.5])
def test_cell_gradients_with_fixed_noise(noise_p, weight_dropout):
    cell = G2LSTMCell(
        INPUT_SIZE, HIDDEN, dtype=torch.float64, noise_p=noise_p, weight_dropout=weight_dropout
    ).train()
    names = [name for name, _ in cell.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def function(x, h0, c0, *weights):
        torch.manual_seed(NOISE_SEED)
        return functional_call(cell, dict(zip(names, weights)), (x, (h0, c0)))

    x = torch.randn(BATCH, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(BATCH, HIDDEN, dtype=torch.float64, requires_grad=True) for _ in "hc")
    assert all(torch.isfinite(t).all() for t in function(x, h0, c0, *leaves))
    assert check(function, (x, h0, c0, *leaves))


@pytest.mark.parametrize("hard", [False, True], ids=["sigmoid", "hard"])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.9], ids=["scale1", "scale1/0.9"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batch_sizes", [[4, 4, 3, 1], [3, 3, 3]], ids=["packed", "full"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_kernel_gradients(kernel, batch_sizes, reverse, scale, hard):
    hidden, batch, rows = 3, batch_sizes[0], sum(batch_sizes)
    inputs = (
        torch.randn(rows, 4 * hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True),
        (0.5 * torch.randn(4 * hidden, hidden, dtype=torch.float64)).requires_grad_(),
    )

    def function(gate_inputs, h0, c0, weight_hh):
        output, h_n, c_n, _ = lstm_sequence(
            gate_inputs, h0, c0, weight_hh, batch_sizes,
            reverse=reverse, scale=scale, hard=hard, backend="torch", kernel=kernel,
        )
        return output, h_n, c_n

    assert check(function, inputs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_kernel_full_jacobian_packed_reverse_scaled(kernel):
    hidden, batch_sizes = 3, [4, 4, 3, 1]
    inputs = (
        torch.randn(sum(batch_sizes), 4 * hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(4, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(4, hidden, dtype=torch.float64, requires_grad=True),
        (0.5 * torch.randn(4 * hidden, hidden, dtype=torch.float64)).requires_grad_(),
    )
    for reverse in (False, True):
        def function(*args, reverse=reverse):
            return lstm_sequence(
                *args, batch_sizes, reverse=reverse, scale=1 / 0.9, backend="torch", kernel=kernel
            )[:3]

        assert check(function, inputs, fast=False), reverse


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_kernel_gradients_when_only_some_outputs_are_used(kernel):
    """Unused outputs reach the backward pass as None; h_n alone and output alone must still be right."""
    hidden, batch_sizes = 3, [3, 2, 2, 1]
    inputs = (
        torch.randn(sum(batch_sizes), 4 * hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(3, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(3, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(4 * hidden, hidden, dtype=torch.float64, requires_grad=True),
    )
    for pick in (0, 1, 2):
        def function(*args, pick=pick):
            return lstm_sequence(*args, batch_sizes, backend="torch", kernel=kernel)[pick]

        assert check(function, inputs, fast=False), pick


def test_gumbel_sigmoid_gradient_with_fixed_noise():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)

    def function(alpha):
        torch.manual_seed(NOISE_SEED)
        return gumbel_sigmoid(alpha, 0.9, noise_p=1.0)

    assert check(function, (logits,), fast=False)
