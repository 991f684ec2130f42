"""A few cases of every class of bad input from benchmarks/robustness.py, on every test run: none may crash."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from g2lstm.train import CheckpointError, load_checkpoint


def load_harness():
    """benchmarks/robustness.py as a module."""
    return load_benchmark("robustness")


@pytest.mark.parametrize("seed", [11, 12])
def test_random_bad_input_of_every_class_ends_in_a_run_or_a_clear_error(
    seed: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("G2LSTM_CACHE", str(tmp_path))
    harness = load_harness()
    tallies = harness.fuzz(cases=6, seed=seed)
    assert set(tallies) == set(harness.CLASSES)
    for name, tally in tallies.items():
        assert tally.cases == 6, name
        assert tally.crashes == [], f"{name}: {tally.crashes}"
    assert sum(tally.clear for tally in tallies.values()) > 0


def test_the_harness_counts_a_crash_as_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = load_harness()

    def explode(argv):
        raise RuntimeError("boom")

    monkeypatch.setattr(harness, "cli_main", explode)
    assert harness.run_cli(["lm", "train"]).kind == "crash"
    monkeypatch.setattr(harness, "cli_main", lambda argv: print("Traceback (most recent call last):") or 2)
    assert harness.run_cli(["lm", "train"]).kind == "crash"


def test_a_zip_that_torch_cannot_read_is_a_damaged_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", "not a pickle")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is damaged"):
        load_checkpoint(path)


def test_a_split_too_short_for_its_streams_is_refused_by_name(tmp_path: Path) -> None:
    harness = load_harness()
    folder = tmp_path / "corpus"
    harness.write_corpus(folder, random.Random(0))
    (folder / "ptb.valid.txt").write_text("word\n")
    outcome = harness.run_cli(["lm", "train", "--preset", "tiny", "--data", str(folder), "--max-steps", "1",
                                    "--out", str(tmp_path / "run"), *harness.SMALL])
    assert outcome.kind == "clear" and "the valid split" in outcome.detail and "too few" in outcome.detail


def test_sizes_beyond_the_machines_memory_end_in_a_clear_error(tmp_path: Path) -> None:
    harness = load_harness()
    folder = tmp_path / "corpus"
    harness.write_corpus(folder, random.Random(0))
    outcome = harness.run_cli(["lm", "train", "--preset", "tiny", "--data", str(folder), "--max-steps", "1",
                               "--out", str(tmp_path / "run"), *harness.SMALL, "--set", "hidden_size=1000000000000"])
    assert outcome.kind == "clear" and "out of memory" in outcome.detail
