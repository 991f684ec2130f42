"""Property-based tests: over random shapes, lengths, layouts and states, G2LSTM either equals nn.LSTM or
raises the documented error."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, record_gates

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def lstm_cases(draw: st.DrawFn) -> dict:
    return {
        "input_size": draw(st.integers(1, 5)),
        "hidden_size": draw(st.integers(1, 6)),
        "num_layers": draw(st.integers(1, 3)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bidirectional": draw(st.booleans()),
        "steps": draw(st.integers(1, 6)),
        "batch": draw(st.integers(1, 4)),
        "layout": draw(st.sampled_from(["batched", "unbatched", "packed", "packed_sorted"])),
        "with_state": draw(st.booleans()),
        "fused": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@FAST
@given(lstm_cases())
def test_g2lstm_equals_nn_lstm_for_any_shape_and_layout(case: dict) -> None:
    torch.manual_seed(case["seed"])
    args = (case["input_size"], case["hidden_size"], case["num_layers"], case["bias"], case["batch_first"])
    lstm = nn.LSTM(*args, bidirectional=case["bidirectional"]).double()
    g2 = G2LSTM.from_lstm(lstm, gate="g2", temperature=1.0, noise_p=0.0).eval()
    lstm.eval()
    steps, batch = case["steps"], case["batch"]
    layout = case["layout"]
    batch = 1 if layout == "unbatched" else batch
    shape = (batch, steps, case["input_size"]) if case["batch_first"] else (steps, batch, case["input_size"])
    x = torch.randn(shape, dtype=torch.double)
    lengths = torch.randint(1, steps + 1, (batch,))
    if layout == "packed_sorted":
        lengths = lengths.sort(descending=True).values
    states = case["num_layers"] * (2 if case["bidirectional"] else 1)
    hx = None
    if case["with_state"]:
        state_shape = (
            (states, case["hidden_size"]) if layout == "unbatched" else (states, batch, case["hidden_size"])
        )
        hx = (torch.randn(state_shape, dtype=torch.double), torch.randn(state_shape, dtype=torch.double))

    def run(module: nn.Module):
        inputs = x.squeeze(0 if case["batch_first"] else 1) if layout == "unbatched" else x
        if layout.startswith("packed"):
            inputs = pack_padded_sequence(x, lengths, batch_first=case["batch_first"],
                                          enforce_sorted=layout == "packed_sorted")
        output, (h, c) = module(inputs, hx)
        return (output.data if layout.startswith("packed") else output), h, c

    expected = run(lstm)
    if case["fused"]:
        with record_gates(g2):  # recording forces the fused kernel
            actual = run(g2)
    else:
        actual = run(g2)
    for a, b in zip(expected, actual):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@FAST
@given(
    rank=st.integers(0, 5),
    features=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16]),
)
def test_bad_inputs_raise_the_documented_errors(rank: int, features: int, dtype: torch.dtype) -> None:
    module = G2LSTM(3, 4)
    x = torch.zeros((2,) * max(rank - 1, 0) + (features,) if rank else (), dtype=dtype)
    valid_rank = rank in (2, 3)
    if dtype != torch.float32:
        with pytest.raises(TypeError):
            module(x)
    elif not valid_rank:
        with pytest.raises(ValueError, match="2-D|3-D"):
            module(x)
    elif features != 3:
        with pytest.raises(ValueError, match="input_size"):
            module(x)
    else:
        output, _ = module(x)
        assert output.shape[-1] == 4


@FAST
@given(
    batch=st.integers(1, 3),
    wrong=st.sampled_from(["layers", "batch", "hidden", "rank"]),
)
def test_wrong_state_shapes_are_refused(batch: int, wrong: str) -> None:
    module = G2LSTM(2, 3, num_layers=2)
    shape = {"layers": (3, batch, 3), "batch": (2, batch + 1, 3), "hidden": (2, batch, 4), "rank": (2, 3)}[
        wrong
    ]
    state = torch.zeros(shape)
    with pytest.raises(ValueError, match="h_0 must have shape"):
        module(torch.zeros(4, batch, 2), (state, state))
