"""`g2lstm bench`, benchmarks/speed.py and benchmarks/compress_speed.py on a tiny shape: they run, print the
table and write ratios measured in the same run; and the stage runner of the results drivers
(benchmarks/stages.py)."""

from __future__ import annotations

import json
import math
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark

from g2lstm.benchmark import PairedDifference, machine_description, mean_sd, paired_verdict
from g2lstm.cli import main
from g2lstm.kernels.compiled import KERNEL_ENV, VARIANT_ENV, variant_in_use

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
stages = runpy.run_path(str(BENCHMARKS / "stages.py"), run_name="stages")
run_stages, stage_table, epoch_pace = stages["run_stages"], stages["stage_table"], stages["epoch_pace"]


def test_bench_measures_a_tiny_shape_against_nn_lstm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


@pytest.mark.parametrize(
    "cpu_kernel, cpu_isa, expected",
    [
        ("python", None, "Python loop"),
        ("compiled", None, f"compiled loop, {variant_in_use()} build"),
        ("compiled", "default", "compiled loop, default build"),
    ],
)
def test_speed_script_records_which_loop_and_build_ran(cpu_kernel, cpu_isa, expected, tmp_path, monkeypatch):
    """benchmarks/speed.py: `g2lstm bench` plus --cpu-kernel and --cpu-isa; the JSON names the loop and build
    that ran and the CPU capability torch reports."""
    monkeypatch.setattr(sys, "argv", ["speed.py"])
    for name in (KERNEL_ENV, VARIANT_ENV):  # the script sets them: setenv first, so that teardown restores
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    speed = runpy.run_path(str(BENCHMARKS / "speed.py"), run_name="speed")
    out = tmp_path / "speed.json"
    isa = ["--cpu-isa", cpu_isa] if cpu_isa else []
    code = speed["run"](
        [
            "--cpu-kernel",
            cpu_kernel,
            *isa,
            "--shape",
            "4",
            "2",
            "3",
            "5",
            "--repeats",
            "1",
            "--reference-repeats",
            "0",
            "--json",
            str(out),
        ]
    )
    recorded = json.loads(out.read_text())
    assert code == 0 and recorded["kernel"] == expected
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in recorded["machine"]
    assert recorded["rows"][0]["shape"] == [4, 2, 3, 5]


@pytest.mark.slow
@pytest.mark.slow
def test_compile_speed_script_times_three_modules_alike(tmp_path: Path) -> None:
    """benchmarks/compile_speed.py: nn.LSTM, eager and compiled G2LSTM, each timed in every repeat."""
    script = runpy.run_path(str(BENCHMARKS / "compile_speed.py"), run_name="compile_speed")
    out = tmp_path / "compile.json"
    assert script["main"](["--shape", "4", "2", "3", "5", "--repeats", "2", "--json", str(out)]) == 0
    recorded = json.loads(out.read_text())
    assert list(recorded["median_ms"]) == ["nn.LSTM", "G2LSTM eager", "G2LSTM compiled"]
    assert all(len(times) == 2 and min(times) > 0 for times in recorded["seconds"].values())
    assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in recorded["header"]


def test_run_stages_records_each_stage_once_and_stops_at_a_failure(tmp_path: Path) -> None:
    """The results drivers' stage runner: a done stage is skipped on the next invocation, its minutes and
    threads are recorded, and a failing stage records its error and stops the rest."""
    record_path = tmp_path / "stages.json"
    commands = {
        "help": ["g2lstm", "--help"],
        "eval_missing": ["g2lstm", "lm", "eval", str(tmp_path / "none.pt")],
        "never": ["g2lstm", "--help"],
    }
    assert not run_stages("demo", commands, record_path, threads=1)
    record = json.loads(record_path.read_text())
    assert record["help"]["done"] and record["help"]["threads"] == [1] and record["help"]["seconds"] > 0
    assert record["help"]["cpu_capability"] == [torch.backends.cpu.get_cpu_capability()]
    assert not record["eval_missing"].get("done") and "none.pt" in record["eval_missing"]["error"]
    assert "never" not in record

    seconds = record["help"]["seconds"]
    assert not run_stages("demo", commands, record_path, threads=2)
    record = json.loads(record_path.read_text())
    assert record["help"]["seconds"] == seconds and record["help"]["threads"] == [1]
    assert record["eval_missing"]["threads"] == [1, 2]

    table = "\n".join(stage_table({"demo": record}))
    assert "| demo | help | " in table and "| demo | eval_missing (unfinished) | " in table
    assert f"| 1, 2 | {torch.backends.cpu.get_cpu_capability()} |" in table
    del record["help"]["cpu_capability"]  # a record written before the capability was
    assert "| 1 | not recorded |" in "\n".join(stage_table({"demo": record}))


def test_epoch_pace_reads_fewest_and_median_minutes_between_validations(tmp_path: Path) -> None:
    """Only records with the key and an epoch count (not step logs, not the final evaluation)."""
    assert epoch_pace(tmp_path, "valid_ppl") == (0, "–")
    records = [
        {"time": 0, "epoch": 1, "valid_ppl": 9.0},
        {"time": 30, "step": 5, "train_loss": 2.0},
        {"time": 120, "epoch": 2, "valid_ppl": 8.0},
        {"time": 420, "epoch": 3, "valid_ppl": 7.0},
        {"time": 600, "epoch": 4, "valid_ppl": 6.5},
        {"time": 9000, "final": True, "valid_ppl": 6.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert epoch_pace(tmp_path, "valid_ppl") == (4, "2.0 / 3.0")
    assert epoch_pace(tmp_path, "valid_bleu") == (0, "–")


@pytest.mark.parametrize(
    "first, second, margin, verdict",
    [
        ([35.0, 34.0, 36.0], [35.5, 34.6, 36.4], None, "better"),  # all > 0, mean 0.5 > se 0.06
        ([35.0, 34.0, 36.0], [34.5, 33.4, 35.6], None, "worse"),
        ([35.0, 34.0, 36.0], [35.1, 33.9, 36.1], 0.5, "no worse"),  # mixed signs, mean - 2 se = -0.10
        ([35.0, 34.0, 36.0], [35.1, 33.9, 36.1], None, "not resolved"),
        ([35.0, 34.0, 36.0], [36.0, 33.0, 36.5], 0.5, "not resolved"),  # mean 0.17, se 0.60: too wide
        ([35.0, 34.0, 36.0], [35.0, 34.2, 36.3], None, "not resolved"),  # one tie: not every difference > 0
    ],
)
def test_paired_verdict_applies_the_decision_rule(first, second, margin, verdict) -> None:
    paired = PairedDifference.of(first, second)
    assert paired_verdict(paired, margin) == verdict


def test_paired_difference_statistics() -> None:
    paired = PairedDifference.of([1.0, 2.0, 3.0], [2.0, 4.0, 3.0])
    assert paired.differences == (1.0, 2.0, 0.0)
    assert paired.mean == pytest.approx(1.0) and paired.sd == pytest.approx(1.0)
    assert paired.se == pytest.approx(1.0 / 3**0.5)
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert math.isnan(mean_sd([4.0])[1])
    with pytest.raises(ValueError, match="same seeds"):
        PairedDifference.of([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one value"):
        mean_sd([])


def test_stage_tables_show_paths_relative_to_the_runs_data_and_repository_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("G2LSTM_DATA", str(tmp_path / "data"))
    repository = BENCHMARKS.parent
    command = (
        f"g2lstm lm train --data {tmp_path / 'data' / 'ptb'} --out {tmp_path / 'runs' / 'g2'} "
        f"--preset {repository / 'presets.toml'}"
    )
    record = {"train": {"command": command, "seconds": 60.0, "threads": [1], "done": True}}
    (row,) = [line for line in stage_table({"g2": record}, tmp_path / "runs") if line.startswith("| g2 |")]
    assert "`g2lstm lm train --data $G2LSTM_DATA/ptb --out $RUNS/g2 --preset ./presets.toml`" in row


def test_a_machine_described_for_runs_of_other_processes_names_no_thread_count() -> None:
    """A report of runs made by other processes must not give its own process's threads as theirs."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert ", 1 thread, " in machine_description()
        described = machine_description(threads=False)
        assert "thread" not in described and described.endswith(torch.backends.cpu.get_cpu_capability())
    finally:
        torch.set_num_threads(threads)


def test_no_machines_absolute_path_in_the_results_or_the_readme() -> None:
    import re

    repository = BENCHMARKS.parent
    absolute = re.compile(r"(?<![\w.$~-])/(?:work|tmp|home|root|mnt|Users|usr|opt|var|scratch|data)/")
    files = [
        repository / "README.md",
        *(path for path in (repository / "results").rglob("*") if path.suffix in (".md", ".json", ".jsonl")),
    ]
    found = [
        f"{path.relative_to(repository)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if absolute.search(line)
    ]
    assert len(files) > 20 and found == []


def test_every_file_a_results_json_names_is_in_the_checkout() -> None:
    """Each ``results/...`` path inside a committed results.json (metrics, sweeps, histograms) exists, so a
    fresh clone can trace every reported number (an ignore rule once kept results/ptb-seeds/runs out)."""
    repository = BENCHMARKS.parent

    def paths(value: object) -> list[str]:
        if isinstance(value, dict):
            return [path for item in value.values() for path in paths(item)]
        if isinstance(value, list):
            return [path for item in value for path in paths(item)]
        return [value] if isinstance(value, str) and value.startswith("results/") else []

    named = [path for file in (repository / "results").glob("*/results.json")
             for path in paths(json.loads(file.read_text()))]
    missing = [path for path in named if not (repository / path).is_file()]
    assert len(named) > 10 and missing == []


@pytest.mark.slow
def test_compress_speed_measures_every_model_on_disk_in_memory_and_in_both_runtimes(tmp_path: Path) -> None:
    """benchmarks/compress_speed.py on a tiny shape: every model has its file sizes, its resident memory
    measured in fresh processes and its times in PyTorch and onnxruntime, whose outputs matched the module's;
    the compressed state dicts are smaller on disk than the dense one."""
    pytest.importorskip("onnxruntime")
    compress_speed = load_benchmark("compress_speed")
    out, markdown = tmp_path / "compress.json", tmp_path / "compress.md"
    threads = torch.get_num_threads()
    code = compress_speed.main(["--shape", "5", "2", "32", "64", "--repeats", "2", "--threads", "1",
                                "--json", str(out), "--markdown", str(markdown)])
    assert code == 0 and torch.get_num_threads() == threads
    record = json.loads(out.read_text())
    assert record["shape"] == [5, 2, 32, 64] and record["threads"] == 1
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    models = record["models"]
    compressed = ["G2LSTM rank 7", "G2LSTM rank 3", "G2LSTM round 0.2", "G2LSTM round 0.2 & clip 0.4"]
    hard = ["G2LSTM hard gates", "G2LSTM hard gates, rank 7", "G2LSTM hard gates, round 0.2 & clip 0.4"]
    assert list(models) == ["nn.LSTM", "G2LSTM", *compressed, compress_speed.FOLDED, *hard]
    for name, row in models.items():
        assert row["onnxruntime_config"] == compress_speed.ONNXRUNTIME_CONFIG.get(name, {})
        assert row["state_dict_file_bytes"] > 0 and row["onnx_file_bytes"] > 0
        assert 0 <= row["onnx_max_error"] <= compress_speed.TOLERANCE
        for runtime in compress_speed.RUNTIMES:
            assert len(row[f"{runtime}_seconds"]) == 2 and row[f"{runtime}_median_seconds"] > 0
            memory = row[f"{runtime}_memory_kb"]
            assert memory["baseline"] > 0 and memory["max_error"] <= compress_speed.TOLERANCE
            assert all(value >= 0 for value in compress_speed.memory_mb(memory)), (name, runtime, memory)
    dense = models["G2LSTM"]["state_dict_file_bytes"]
    assert all(models[name]["state_dict_file_bytes"] < dense for name in compressed + hard[1:])
    assert not any(word.startswith("/") for word in shlex.split(record["command"]))
    table = markdown.read_text()
    assert record["command"] in table and "CPU capability" in table
    assert all(f"| {name} | " in table for name in models)
