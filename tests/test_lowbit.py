"""g2lstm.lowbit: int4, ternary and sign gate blocks with per-row scales, alone and after low rank."""

from __future__ import annotations

import pytest
import torch

from g2lstm import G2LSTM
from g2lstm.compress import compress
from g2lstm.errors import ConfigError
from g2lstm.lowbit import lowbit_copy, quantize_rows


def test_int4_rows_take_at_most_15_levels_and_keep_their_largest_weight() -> None:
    weight = torch.randn(6, 40, dtype=torch.float64)
    reduced = quantize_rows(weight, "int4")
    for row, original in zip(reduced, weight):
        step = original.abs().max() / 7
        codes = row / step
        assert torch.allclose(codes, codes.round(), atol=1e-9) and codes.abs().max() <= 7 + 1e-9
        assert row.abs().max() == pytest.approx(original.abs().max().item())
    assert (reduced - weight).abs().max() <= weight.abs().amax(dim=1).max() / 14 + 1e-12  # half a step


def test_ternary_rows_drop_small_weights_and_scale_the_rest_by_their_mean() -> None:
    weight = torch.tensor([[0.1, -0.2, 1.0, -2.0, 0.05, 3.0]], dtype=torch.float64)
    # mean |w| = 1.058..., threshold 0.74: keeps 1.0, -2.0, 3.0 with scale 2.0
    assert quantize_rows(weight, "ternary").tolist() == [[0.0, 0.0, 2.0, -2.0, 0.0, 2.0]]


def test_sign_rows_are_plus_or_minus_their_mean_magnitude() -> None:
    weight = torch.tensor([[0.5, -1.5, 0.0, 2.0]])
    assert quantize_rows(weight, "sign").tolist() == [[1.0, -1.0, 1.0, 1.0]]


def test_lowbit_copy_reduces_only_the_chosen_gate_blocks_and_counts_their_bits() -> None:
    torch.manual_seed(0)
    model = G2LSTM(5, 4, num_layers=2, bidirectional=True)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    variant, report = lowbit_copy(model, "int4")
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    for name, value in variant.state_dict().items():
        input_forget, cell_output = value[:8], value[8:]
        assert torch.equal(cell_output, before[name][8:])  # g and o rows, and the biases' g, o
        assert torch.equal(input_forget, before[name][:8]) == name.startswith("bias")
        if name.startswith("weight"):
            assert len(set(input_forget[0].tolist())) <= 15
    # per matrix: 2 directions x 2 gates, each block 4 rows: 4-bit codes and a 32-bit scale per row
    columns = {"weight_ih_l0": 5, "weight_hh_l0": 4, "weight_ih_l1": 8, "weight_hh_l1": 4}
    expected = sum(2 * 2 * (4 * c * 4 + 4 * 32) for c in columns.values())
    assert report.bits == expected and report.float_bits == sum(2 * 2 * 32 * 4 * c for c in columns.values())
    assert len(report.errors) == 16 and all(0 < error < 0.2 for error in report.errors.values())


def test_low_rank_then_sign_gives_blocks_of_that_rank() -> None:
    torch.manual_seed(0)
    model = G2LSTM(12, 10)
    variant, report = lowbit_copy(model, "sign", rank=2, gates=("forget",))
    block = variant.weight_hh_l0[10:20]
    assert torch.linalg.matrix_rank(block.double()) <= 2
    assert report.bits == (10 * 2 + 2 * 12) * 1 + (10 + 2) * 32 + (10 * 2 + 2 * 10) * 1 + (10 + 2) * 32


def test_bad_settings_are_refused() -> None:
    model = G2LSTM(3, 4)
    with pytest.raises(ConfigError, match="levels must be one of"):
        lowbit_copy(model, "int2")
    with pytest.raises(ConfigError, match="gates must name"):
        lowbit_copy(model, "sign", gates=("update",))
    with pytest.raises(ConfigError, match="rank=5 does not fit"):
        lowbit_copy(model, "sign", rank=5)
    compress(model, rank=1)
    with pytest.raises(ConfigError, match="is compressed"):
        lowbit_copy(model, "sign")
