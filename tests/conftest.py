"""Shared fixtures: a fixed seed for every test, dtypes with their tolerances, and a few builders."""

from __future__ import annotations

import os

import pytest
import torch

# Triton kernels run in Triton's CPU interpreter in the tests (there is no GPU here); Triton reads this when
# it decorates a kernel, so it is set before anything imports one.
os.environ["TRITON_INTERPRET"] = "1"

# Under pytest-xdist (`make test` runs one worker a core) each worker, and the CLI processes it starts, gets
# its share of the cores: OpenMP threads of side-by-side workers spinning against each other on the same
# cores are slower than one thread each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORE_SHARE = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_CORE_SHARE))
    torch.set_num_threads(_CORE_SHARE)

# Absolute tolerance of an exact-in-theory comparison, per dtype.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def _fixed_seed() -> None:
    """Every test starts from the same random state, so a failure repeats."""
    torch.manual_seed(0)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture
def atol(dtype: torch.dtype) -> float:
    return TOLERANCE[dtype]


@pytest.fixture
def upstream():
    """``upstream(tensors)``: random gradients shaped like ``tensors``, the same on every call.

    Weighting outputs by random tensors (rather than summing them) makes a gradient that lands on the wrong
    element, time step or direction visible.
    """

    def make(tensors):
        generator = torch.Generator().manual_seed(1234)
        return [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in tensors]

    return make


@pytest.fixture
def constant_gate_lstm():
    """``constant_gate_lstm(alpha, hidden=..., **options)``: a one-layer G2LSTM (input_size 1) whose every
    pre-activation equals ``alpha`` (zero weights, ``bias_ih = alpha``, ``bias_hh = 0``), in float64.

    ``alpha`` may be a number or a ``(hidden,)`` tensor (one value per hidden unit, the same in all four
    gate blocks).
    """
    from g2lstm import G2LSTM

    def make(alpha, hidden: int = 4, **options) -> G2LSTM:
        module = G2LSTM(1, hidden, dtype=torch.float64, **options)
        alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(hidden)
        with torch.no_grad():
            module.weight_ih_l0.zero_()
            module.weight_hh_l0.zero_()
            module.bias_ih_l0.copy_(alpha.repeat(4))
            module.bias_hh_l0.zero_()
        return module

    return make
