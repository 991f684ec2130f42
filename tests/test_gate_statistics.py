"""The gate values follow the distributions the paper and the release define.

Training: G = sigmoid((alpha + m * L) / tau) with L = log(U + eps) - log(1 + eps - U), U ~ Uniform(0, 1), and
m ~ Bernoulli(noise_p). L's CDF is exact and finite-eps aware:

    L <= l  <=>  U <= ((1 + eps) e^l - eps) / (1 + e^l) = (1 + eps) sigmoid(l) - eps sigmoid(-l)

clipped to [0, 1], and G <= g  <=>  L <= tau * logit(g) - alpha. Evaluation is deterministic.

A fixed pre-activation alpha comes from a one-layer G2LSTM with zero weights and bias alpha (see the
``constant_gate_lstm`` fixture); the gates it used are read with ``record_gates``. The module runs the
fused kernel's default loop (on CPU the compiled one, with the noise drawn from torch's generator outside
it, as in the Python loop).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, logit

import g2lstm
from g2lstm import G2LSTM
from g2lstm.functional import (
    gate_bits,
    gumbel_sigmoid,
    logistic_noise,
    noise_from_uniform,
    noise_seed,
    philox4x32,
    uniform_from_bits,
)

EPS = 1e-3
KS_LEVEL = 1e-3  # a fixed seed makes each p-value fixed; this only guards against an unlucky seed


def noise_cdf(x, eps: float = EPS):
    """Exact CDF of L = log(U + eps) - log(1 + eps - U), at ``x``."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip((1 + eps) * expit(x) - eps * expit(-x), 0.0, 1.0)


def gate_cdf(alpha: float, tau: float, eps: float = EPS):
    """Exact CDF of G = sigmoid((alpha + L) / tau)."""

    def cdf(g):
        g = np.asarray(g, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return noise_cdf(tau * logit(g) - alpha, eps)

    return cdf


def binomial_tolerance(n: int, p: float, sds: float = 5.0) -> float:
    return sds * math.sqrt(p * (1 - p) / n) + 1.0 / n


def recorded_training_gates(module: G2LSTM, steps: int = 100, batch: int = 20):
    """Input- and forget-gate values of one training forward pass over zeros, flattened per unit."""
    module.train()
    with g2lstm.record_gates(module) as recording:
        module(torch.zeros(steps, batch, 1, dtype=torch.float64))
    return [recording.gates(0, name)[0].reshape(-1, module.hidden_size) for name in ("input", "forget")]


# ---------------------------------------------------------------------------------------- training, module


@pytest.mark.parametrize("alpha", [-1.5, 0.0, 0.8])
def test_training_gates_follow_the_noised_sigmoid_distribution(alpha, constant_gate_lstm):
    tau = 0.9
    module = constant_gate_lstm(alpha, hidden=8, temperature=tau, noise_p=1.0, noise_eps=EPS)
    for name, gates in zip(("input", "forget"), recorded_training_gates(module)):
        samples = gates.flatten().numpy()
        assert np.isfinite(samples).all(), name
        assert samples.size == 16000
        # no sample sits at sigma(alpha / tau): every element is perturbed
        assert np.sum(np.abs(samples - expit(alpha / tau)) < 1e-12) == 0, name
        result = stats.kstest(samples, gate_cdf(alpha, tau))
        assert result.pvalue > KS_LEVEL, (name, result)
        # power: the same samples reject the distribution with tau = 1 (temperature ignored)
        assert stats.kstest(samples, gate_cdf(alpha, 1.0)).pvalue < 1e-6, name


@pytest.mark.parametrize("alpha", [-0.7, 1.2])
def test_training_gates_with_noise_p_perturb_a_share_p_of_elements(alpha, constant_gate_lstm):
    tau, noise_p = 0.9, 0.2
    module = constant_gate_lstm(alpha, hidden=8, temperature=tau, noise_p=noise_p, noise_eps=EPS)
    samples = torch.cat(recorded_training_gates(module)).flatten().numpy()
    assert np.isfinite(samples).all(), "non-finite gate values with noise_p < 1"
    # an element that is not perturbed is still divided by tau
    unperturbed = np.abs(samples - expit(alpha / tau)) < 1e-12
    share = unperturbed.mean()
    assert abs(share - (1 - noise_p)) < binomial_tolerance(samples.size, noise_p), share
    result = stats.kstest(samples[~unperturbed], gate_cdf(alpha, tau))
    assert result.pvalue > KS_LEVEL, result


def test_training_gates_are_redrawn_every_step_and_call(constant_gate_lstm):
    module = constant_gate_lstm(0.3, hidden=4, noise_p=1.0)
    first, _ = recorded_training_gates(module, steps=6, batch=3)
    second, _ = recorded_training_gates(module, steps=6, batch=3)
    assert first.unique().numel() == first.numel()  # every element, step and sequence its own draw
    assert not torch.equal(first, second)


def test_output_and_candidate_gates_get_no_noise(constant_gate_lstm):
    """Only i and f are noised: with i, f read back, h_t follows from the noise-free g and o."""
    alpha = 0.4
    module = constant_gate_lstm(alpha, hidden=3, noise_p=1.0)
    module.train()
    with g2lstm.record_gates(module) as recording:
        output, _ = module(torch.zeros(7, 2, 1, dtype=torch.float64))
    i, f = recording.gates(0, "input")[0], recording.gates(0, "forget")[0]
    g, o = math.tanh(alpha), expit(alpha)
    c = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(7):
        c = f[t] * c + i[t] * g
        torch.testing.assert_close(output[t], o * torch.tanh(c), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------- functional


@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_logistic_noise_follows_the_truncated_logistic_distribution(eps):
    noise = logistic_noise((20000,), noise_p=1.0, noise_eps=eps, dtype=torch.float64)
    assert noise.dtype == torch.float64 and noise.shape == (20000,)
    samples = noise.numpy()
    bound = math.log((1 + eps) / eps)
    assert np.abs(samples).max() <= bound + 1e-12
    assert stats.kstest(samples, lambda x: noise_cdf(x, eps)).pvalue > KS_LEVEL
    if eps == 0.1:  # power: the truncation is visible against the plain logistic
        assert stats.kstest(samples, stats.logistic.cdf).pvalue < 1e-6


@pytest.mark.parametrize("noise_p", [0.3, 1.0])
def test_noise_from_uniform_perturbs_draws_below_p_by_the_logistic_of_v_over_p(noise_p):
    uniform = torch.tensor([0.0, 0.05, 0.1, 0.2999, 0.3, 0.6, 0.9999], dtype=torch.float64)
    eps = 1e-3
    u = uniform / noise_p
    logistic = torch.log(u + eps) - torch.log(1 + eps - u)
    expected = torch.where(uniform < noise_p, logistic, torch.zeros_like(uniform))
    before = uniform.clone()
    torch.testing.assert_close(noise_from_uniform(uniform, noise_p, eps), expected, rtol=0, atol=1e-12)
    assert torch.equal(uniform, before)  # the draws are left as they were


@pytest.mark.parametrize(
    "counter, key, expected",
    [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
     ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
     ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
      (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))],
    ids=["zeros", "ones", "pi"],
)
def test_philox_matches_the_random123_known_answers(counter, key, expected):
    """Random123's published known-answer vectors of Philox4x32-10 (its tests/kat_vectors)."""
    words = philox4x32(tuple(torch.tensor([word], dtype=torch.int64) for word in counter), key)
    assert tuple(int(word) for word in words) == expected


@pytest.mark.parametrize(
    "dtype, bits_type",
    [(torch.float32, torch.int32), (torch.float64, torch.int64), (torch.float16, torch.int32),
     (torch.bfloat16, torch.int32)],
)
def test_uniforms_from_gate_bits_are_uniform_and_independent_across_positions(dtype, bits_type):
    bits = gate_bits(noise_seed(), 300, 67, dtype)
    assert bits.dtype == bits_type and bits.shape == (300, 134)
    uniform = uniform_from_bits(bits, dtype)
    assert uniform.dtype == dtype and 0 <= uniform.min() and uniform.max() < 1
    assert stats.kstest(uniform.flatten().double().numpy(), "uniform").pvalue > 1e-3
    # every word of a counter, both gates and neighbouring rows: uniform alone, uncorrelated with each other
    values = uniform.double()
    columns = [values[:, unit] for unit in (0, 1, 2, 3, 4, 67, 68)] + [values[1:, 0]]
    for column in columns:
        assert stats.kstest(column.numpy(), "uniform").pvalue > 1e-3
    pairs = [(values[:, 0], values[:, 1]), (values[:, 0], values[:, 67]), (values[:-1, 0], values[1:, 0])]
    for first, second in pairs:
        assert abs(stats.pearsonr(first.numpy(), second.numpy())[0]) < 4 / 300**0.5


def test_gate_bits_repeat_with_the_seed_and_differ_between_seeds():
    torch.manual_seed(0)
    seed = noise_seed()
    torch.manual_seed(0)
    assert noise_seed() == seed and 0 <= seed < 2**62  # torch.manual_seed repeats the key
    first = gate_bits(seed, 20, 33, torch.float32)
    assert torch.equal(gate_bits(seed, 20, 33, torch.float32), first)
    assert (gate_bits(seed + 1, 20, 33, torch.float32) != first).float().mean() > 0.99
    # a row's bits depend on its own position only: the first rows of a longer call are the same
    assert torch.equal(gate_bits(seed, 50, 33, torch.float32)[:20], first)


def test_logistic_noise_with_noise_p_leaves_a_share_unperturbed():
    noise_p = 0.2
    samples = logistic_noise((50000,), noise_p=noise_p, dtype=torch.float64).numpy()
    assert np.isfinite(samples).all(), "non-finite noise with noise_p < 1"
    zero = samples == 0.0
    assert abs(zero.mean() - (1 - noise_p)) < binomial_tolerance(samples.size, noise_p), zero.mean()
    assert stats.kstest(samples[~zero], noise_cdf).pvalue > KS_LEVEL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_noise_with_noise_p_zero_is_zero(dtype):
    noise = logistic_noise((3, 4), noise_p=0.0, dtype=dtype)
    assert noise.dtype == dtype and noise.shape == (3, 4)
    assert torch.equal(noise, torch.zeros(3, 4, dtype=dtype))


def test_logistic_noise_float32_is_finite_and_bounded():
    noise = logistic_noise((100000,), noise_p=1.0, dtype=torch.float32)
    assert noise.dtype == torch.float32
    assert torch.isfinite(noise).all()
    assert noise.abs().max() <= math.log((1 + EPS) / EPS) + 1e-4


@pytest.mark.parametrize("alpha, tau", [(0.5, 0.9), (-1.0, 0.3)])
def test_gumbel_sigmoid_follows_the_noised_sigmoid_distribution(alpha, tau):
    logits = torch.full((20000,), alpha, dtype=torch.float64)
    gates = gumbel_sigmoid(logits, tau, noise_p=1.0, noise_eps=EPS)
    assert gates.shape == logits.shape and gates.dtype == torch.float64
    assert stats.kstest(gates.numpy(), gate_cdf(alpha, tau)).pvalue > KS_LEVEL


def test_gumbel_sigmoid_with_noise_p_zero_is_the_tempered_sigmoid():
    logits = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(
        gumbel_sigmoid(logits, 0.9, noise_p=0.0), torch.sigmoid(logits / 0.9), rtol=0, atol=1e-15
    )


def test_gumbel_sigmoid_repeats_under_a_seed_and_differs_across_seeds():
    logits = torch.zeros(50, dtype=torch.float64)
    torch.manual_seed(3)
    first = gumbel_sigmoid(logits)
    torch.manual_seed(3)
    assert torch.equal(first, gumbel_sigmoid(logits))
    torch.manual_seed(4)
    assert not torch.equal(first, gumbel_sigmoid(logits))


@pytest.mark.parametrize("alpha", [-1.0, 0.0, 1.5])
@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_proposition_3_1_mass_near_zero_and_one(alpha, tau):
    """P(D=1) - (tau/4) log(1/e) <= P(G >= 1-e) <= P(D=1), likewise at 0; D ~ Bernoulli(sigmoid(alpha))."""
    n = 100000
    gates = gumbel_sigmoid(torch.full((n,), alpha, dtype=torch.float64), tau, noise_p=1.0).numpy()
    p_one = expit(alpha)
    cdf = gate_cdf(alpha, tau)
    for eps in (0.01, 0.1):
        slack = tau / 4 * math.log(1 / eps)
        near_one, near_zero = np.mean(gates >= 1 - eps), np.mean(gates <= eps)
        # the empirical shares match the exact probabilities...
        exact_one, exact_zero = 1 - cdf(1 - eps), cdf(eps)
        assert abs(near_one - exact_one) < binomial_tolerance(n, max(exact_one, 1e-3)), (eps, near_one)
        assert abs(near_zero - exact_zero) < binomial_tolerance(n, max(exact_zero, 1e-3)), (eps, near_zero)
        # ...which lie within the proposition's bounds (up to the eps = 1e-3 truncation of the noise)
        assert p_one - slack <= exact_one <= p_one + 2 * EPS, (eps, exact_one)
        assert (1 - p_one) - slack <= exact_zero <= (1 - p_one) + 2 * EPS, (eps, exact_zero)
        mc = binomial_tolerance(n, 0.25)
        assert p_one - slack - mc <= near_one <= p_one + mc, (eps, near_one)
        assert (1 - p_one) - slack - mc <= near_zero <= (1 - p_one) + mc, (eps, near_zero)


def test_smaller_temperature_puts_more_mass_near_zero_and_one():
    logits = torch.full((50000,), 0.3, dtype=torch.float64)
    shares = []
    for tau in (0.9, 0.3, 0.1):
        gates = gumbel_sigmoid(logits, tau, noise_p=1.0)
        shares.append(((gates <= 0.1) | (gates >= 0.9)).double().mean().item())
    assert shares[0] < shares[1] < shares[2]
    assert shares[2] > 0.85


# ---------------------------------------------------------------------------------------- evaluation

ALPHAS = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], dtype=torch.float64)


def closed_form_output(gate: torch.Tensor, steps: int) -> torch.Tensor:
    """h_t of the constant-gate LSTM with i = f = gate, g = tanh(alpha), o = sigmoid(alpha), zero state."""
    c, outputs = torch.zeros_like(ALPHAS), []
    for _ in range(steps):
        c = gate * c + gate * torch.tanh(ALPHAS)
        outputs.append(torch.sigmoid(ALPHAS) * torch.tanh(c))
    return torch.stack(outputs)


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(), torch.sigmoid(ALPHAS)),
        (dict(eval_gate="tempered", temperature=0.9), torch.sigmoid(ALPHAS / 0.9)),
        (dict(eval_gate="hard"), (ALPHAS >= 0).double()),
        (dict(gate="sharpened"), torch.sigmoid(ALPHAS / 0.2)),
        (dict(gate="lstm"), torch.sigmoid(ALPHAS)),
    ],
    ids=["sigmoid", "tempered", "hard", "sharpened", "lstm"],
)
def test_eval_gates_are_deterministic(options, expected, constant_gate_lstm):
    module = constant_gate_lstm(ALPHAS, hidden=5, noise_p=1.0, **options).eval()
    x = torch.zeros(4, 2, 1, dtype=torch.float64)
    torch.manual_seed(1)
    out_plain, _ = module(x)
    torch.manual_seed(2)
    with g2lstm.record_gates(module) as recording:
        out_a, _ = module(x)
        out_b, _ = module(x)
    for name in ("input", "forget"):
        first, second = recording.gates(0, name)
        assert torch.equal(first, second), name
        torch.testing.assert_close(first, expected.expand(4, 2, 5), rtol=0, atol=1e-12)
    assert torch.equal(out_a, out_b)
    if options.get("eval_gate") == "hard":
        assert set(first.unique().tolist()) == {0.0, 1.0}
    # the pass without recording (torch's kernel where it applies) computes the same gates
    expected_output = closed_form_output(expected, 4)[:, None, :].expand(4, 2, 5)
    torch.testing.assert_close(out_plain, expected_output, rtol=0, atol=1e-12)
    torch.testing.assert_close(out_a, expected_output, rtol=0, atol=1e-12)


def test_sharpened_gate_is_noiseless_in_training(constant_gate_lstm):
    module = constant_gate_lstm(ALPHAS, hidden=5, gate="sharpened").train()
    x = torch.zeros(4, 2, 1, dtype=torch.float64)
    expected = torch.sigmoid(ALPHAS / 0.2).expand(4, 2, 5)
    torch.manual_seed(1)
    with g2lstm.record_gates(module) as recording:
        module(x)
    torch.manual_seed(2)
    with g2lstm.record_gates(module) as again:
        module(x)
    for name in ("input", "forget"):
        torch.testing.assert_close(recording.gates(0, name)[0], expected, rtol=0, atol=1e-12)
        assert torch.equal(recording.gates(0, name)[0], again.gates(0, name)[0])
    torch.manual_seed(3)
    out, _ = module(x)  # not recorded: the native path
    expected_output = closed_form_output(torch.sigmoid(ALPHAS / 0.2), 4)[:, None].expand(4, 2, 5)
    torch.testing.assert_close(out, expected_output, rtol=0, atol=1e-12)


@pytest.mark.parametrize("noise_p", [1.0, 0.2])
def test_manual_seed_repeats_training_output_and_other_seeds_differ(noise_p):
    module = G2LSTM(3, 4, 2, bidirectional=True, noise_p=noise_p, dtype=torch.float64).train()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    outputs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        outputs.append(module(x))
    (out1, (h1, c1)), (out2, (h2, c2)), (out3, _) = outputs
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2) and torch.equal(h1, h2) and torch.equal(c1, c2)
    assert not torch.allclose(out1, out3, atol=1e-6)
