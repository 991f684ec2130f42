"""`g2lstm bench` on a tiny shape: it runs, prints the table and writes ratios measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from g2lstm.cli import main


def test_bench_measures_a_tiny_shape_against_nn_lstm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.json"
    code = main(["bench", "--shape", "4", "2", "3", "5", "--repeats", "1", "--reference-repeats", "1",
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "(4, 2, 3, 5)" in printed and "×" in printed
    (row,) = json.loads(out.read_text())["rows"]
    assert row["shape"] == [4, 2, 3, 5]
    for mode in ("train", "eval"):
        assert row[f"{mode}_g2"] > 0 and row[f"{mode}_lstm"] > 0
        assert row[f"{mode}_ratio"] == pytest.approx(row[f"{mode}_g2"] / row[f"{mode}_lstm"])
