"""A few cases of every class of bad input from benchmarks/robustness.py: none may crash."""

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


INPUT_CLASSES = 5  # the first classes of the harness: bad input files, options and module arguments


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_random_bad_input_of_every_class_ends_in_a_run_or_a_clear_error(
    seed: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("G2LSTM_CACHE", str(tmp_path))
    harness = load_harness()
    classes = list(harness.CLASSES)[:INPUT_CLASSES]
    tallies = harness.fuzz(cases=6, seed=seed, classes=classes)
    assert list(tallies) == classes
    for name, tally in tallies.items():
        assert tally.cases == 6, name
        assert tally.crashes == [], f"{name}: {tally.crashes}"
    assert sum(tally.clear for tally in tallies.values()) > 0


@pytest.mark.slow
def test_runs_resumes_writers_checkpoints_environment_and_stdin_end_in_a_run_or_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("G2LSTM_CACHE", str(tmp_path))
    harness = load_harness()
    classes = list(harness.CLASSES)[INPUT_CLASSES:]
    tallies = harness.fuzz(cases=4, seed=11, classes=classes)
    assert list(tallies) == classes and len(classes) == 5
    for name, tally in tallies.items():
        assert tally.cases == 4, name
        assert tally.crashes == [], f"{name}: {tally.crashes}"


def test_the_harness_counts_a_crash_as_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = load_harness()

    def explode(argv):
        raise RuntimeError("boom")

    monkeypatch.setattr(harness, "cli_main", explode)
    assert harness.run_cli(["lm", "train"]).kind == "crash"
    monkeypatch.setattr(harness, "cli_main", lambda argv: print("Traceback (most recent call last):") or 2)
    assert harness.run_cli(["lm", "train"]).kind == "crash"


def test_the_harness_counts_an_error_outside_g2lstms_hierarchy_as_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ValueError from inside the library is a bug, however user-like its message, not a clear error."""
    import g2lstm.cli as command_line

    harness = load_harness()

    def library_bug(args) -> None:
        raise ValueError("lr must be > 0")

    monkeypatch.setattr(command_line, "_lm_eval", library_bug)
    outcome = harness.run_cli(["lm", "eval", "x.pt"])
    assert (outcome.kind, outcome.crash) == ("crash", "traceback")


def test_the_harness_counts_a_case_that_runs_although_it_must_be_refused_as_a_silent_mix() -> None:
    harness = load_harness()
    outcome = harness.expect(harness.Outcome("ran"), "clear")
    assert (outcome.kind, outcome.crash) == ("crash", "silent mix")
    assert harness.expect(harness.Outcome("clear", "g2lstm: error: x"), "clear", ["y"]).kind == "crash"


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
    outcome = harness.run_cli(
        [
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(folder),
            "--max-steps",
            "1",
            "--out",
            str(tmp_path / "run"),
            *harness.SMALL,
            "--set",
            "hidden_size=1000000000000",
        ]
    )
    assert outcome.kind == "clear" and "out of memory" in outcome.detail
