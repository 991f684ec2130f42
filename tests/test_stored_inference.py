"""Inference from stored gate forms (g2lstm.kernels.stored): a compressed G2LSTM under ``torch.no_grad``
multiplies by its low-rank factors and int8 codes directly; it must compute what the same layer computes
from its dense weights (the path taken whenever a gradient is wanted), for every form, eval gate, packed and
bidirectional input, and float32 / float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, record_gates
from g2lstm.compress import GATES, compress
from g2lstm.kernels import compiled, stored

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
SETTINGS = {
    "rank": dict(rank=3),
    "round-clip": dict(round=0.2, clip=0.4),
    "round-int16": dict(round=0.005),  # codes beyond int8: the kernel gets those blocks dense
    "rank-all-gates": dict(rank=2, gates=GATES),
    "round-cell-only": dict(round=0.2, gates=("cell",)),
    "dense": None,  # hard gates still run the inference loop, on the dense blocks
}


@pytest.fixture(autouse=True)
def _compiled_loop(monkeypatch) -> None:
    monkeypatch.setenv(compiled.KERNEL_ENV, "compiled")


def compressed_lstm(
    dtype: torch.dtype, settings: dict | None, eval_gate: str = "sigmoid", **architecture
) -> G2LSTM:
    lstm = G2LSTM(5, 23, dtype=dtype, eval_gate=eval_gate, **architecture)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.uniform_(-0.6, 0.6)
    if settings is not None:
        compress(lstm, **settings)
    return lstm.eval()


def run(lstm: G2LSTM, x, lengths, packed: bool, grad: bool):
    data = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
    with torch.set_grad_enabled(grad):
        output, (h, c) = lstm(data)
    return (output.data if packed else output), h, c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("eval_gate", ["sigmoid", "tempered", "hard"])
@pytest.mark.parametrize(
    "architecture", [dict(num_layers=2), dict(bidirectional=True)], ids=["2-layer", "bidir"]
)
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_stored_forms_compute_what_the_dense_weights_compute(settings, architecture, eval_gate, dtype):
    lstm = compressed_lstm(dtype, settings, eval_gate, **architecture)
    x = torch.randn(7, 4, 5, dtype=dtype)
    lengths = torch.tensor([7, 3, 5, 2])
    for packed in (False, True):
        fast = run(lstm, x, lengths, packed, grad=False)
        dense = run(lstm, x, lengths, packed, grad=True)
        for a, e in zip(fast, dense):
            torch.testing.assert_close(a, e.detach(), rtol=0, atol=TOLERANCE[dtype])


def test_the_stored_path_runs_only_without_gradients_or_noise(monkeypatch):
    calls = []
    original = stored.lstm_sequence_stored
    monkeypatch.setattr(
        "g2lstm.lstm.lstm_sequence_stored", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    lstm = compressed_lstm(torch.float32, dict(rank=3))
    x = torch.randn(4, 2, 5)
    with torch.no_grad():
        lstm(x)
    assert len(calls) == 1
    lstm(x)  # a gradient is wanted: the dense weights, autograd through the factors
    lstm.train()
    with torch.no_grad():
        lstm(x)  # training: gate noise
    assert len(calls) == 1
    dense = G2LSTM(5, 23).eval()
    with torch.no_grad():
        dense(x)  # nothing stored in another form: torch's own kernel
    assert len(calls) == 1
    dense.eval_gate = "hard"
    with torch.no_grad():
        dense(x)  # hard gates: the inference loop on the dense blocks, which keeps no activations
    assert len(calls) == 2


def test_recorded_gates_come_from_the_stored_path():
    lstm = compressed_lstm(torch.float64, dict(round=0.2, clip=0.4))
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    with torch.no_grad(), record_gates(lstm) as fast:
        lstm(x)
    with record_gates(lstm) as dense:
        lstm(x)
    torch.testing.assert_close(fast.gates(0, "forget")[0], dense.gates(0, "forget")[0], rtol=0, atol=1e-10)


def test_codes_are_stored_transposed_so_the_kernel_reads_them_without_a_copy():
    lstm = compressed_lstm(torch.float32, dict(round=0.2, clip=0.4))
    codes = lstm.parametrizations.weight_hh_l0[0].codes
    assert codes.dtype == torch.int8 and codes.shape == (2, 23, 23) and codes.is_contiguous()
    forms = stored.stored_forms(lstm, "weight_hh_l0")
    kind, (block, _) = forms["forget"]
    assert kind == "round" and block.shape == (23, 23) and block.t().is_contiguous()
    assert block.t().data_ptr() == codes[1].data_ptr()


def test_a_deep_copy_and_a_state_dict_round_trip_keep_the_stored_path_exact():
    lstm = compressed_lstm(torch.float32, dict(round=0.2, clip=0.4))
    copied = copy.deepcopy(lstm)
    restored = compressed_lstm(torch.float32, dict(round=0.2, clip=0.4))
    restored.load_state_dict(lstm.state_dict())
    x = torch.randn(5, 2, 5)
    with torch.no_grad():
        expected = lstm(x)[0]
        assert torch.equal(copied(x)[0], expected) and torch.equal(restored(x)[0], expected)
