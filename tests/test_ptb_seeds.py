"""benchmarks/ptb_seeds.py: its report applies results/ptb-seeds/DECISION.md to made-up run folders whose
numbers are known, copies each run's small files without machine paths, and marks what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

driver = load_benchmark("ptb_seeds")


def fake_run(
    runs: Path, name: str, test_ppl: float, rank_gain: float, outer: float, asgd: int, cap: int = 5
) -> None:
    """A finished run folder with the files the report reads: 5 training epochs under an epoch cap ``cap``."""
    folder = runs / name
    (folder / "sweep").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"epochs": cap}))
    (folder / "analysis").mkdir()
    (folder / "finetune").mkdir()
    names = ("train", "finetune", "eval", "eval_cache", "eval_tempered", "sweep", "analyze")
    stages = {stage: {"command": f"g2lstm {stage} {folder}", "seconds": 60.0, "threads": [1], "done": True}
              for stage in names if not (stage == "eval_tempered" and "-lstm-" in name)}
    stages["eval"]["metrics"] = {"valid_ppl": test_ppl + 3, "test_ppl": test_ppl}
    stages["eval_cache"]["metrics"] = {"valid_ppl": test_ppl - 10, "test_ppl": test_ppl - 12}
    if "eval_tempered" in stages:
        stages["eval_tempered"]["metrics"] = {"valid_ppl": test_ppl + 5, "test_ppl": test_ppl + 4}
    (folder / "stages.json").write_text(json.dumps(stages))
    lines = [{"time": float(epoch), "phase": "train", "epoch": epoch, "valid_ppl": 200.0 - epoch,
              "averaging": epoch >= asgd} for epoch in range(1, 6)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "finetune" / "metrics.jsonl").write_text(json.dumps(
        {"time": 9.0, "phase": "finetune", "epoch": 1, "valid_ppl": 150.0, "averaging": True}) + "\n")
    original = {"test_ppl": test_ppl, "valid_ppl": test_ppl + 3}
    table = {"original": original, "round 0.2": {"test_ppl": test_ppl + 1}, "round 0.2 & clip 0.4":
             {"test_ppl": test_ppl + 2}, "rank 28": {"test_ppl": test_ppl + rank_gain / 2},
             "rank 14": {"test_ppl": test_ppl + rank_gain}, "hard gates": {"test_ppl": test_ppl + 20}}
    (folder / "sweep" / "sweep.json").write_text(json.dumps(
        {"runs": {name: {"checkpoint": f"{folder}/finetune/best.pt", "table": table}}}))
    shares = {layer: {gate: {"outer_share": outer, "shares": [0.1] * 10} for gate in ("input", "forget")}
              for layer in ("layer0", "layer1")}
    (folder / "analysis" / "gate_histograms.json").write_text(json.dumps(
        {"signature": {"argv": ["analyze", f"{folder}/finetune/best.pt"]}, "histograms": {name: shares}}))


def test_report_applies_the_decision_rules_to_known_numbers(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    for seed, (lstm, g2) in zip((141, 142, 143), ((100.0, 97.0), (102.0, 100.5), (99.0, 98.0))):
        fake_run(runs, f"cpu-reg-lstm-s{seed}", lstm, rank_gain=20.0, outer=0.5, asgd=4)
        fake_run(runs, f"cpu-reg-g2-s{seed}", g2, rank_gain=8.0, outer=0.6, asgd=5)
    fake_run(runs, "cpu-lstm-s142", 110.0, rank_gain=20.0, outer=0.5, asgd=3, cap=8)  # stopped on plateau
    report = driver.write_report(runs, results, {str(runs): "RUNS_DIR"}).read_text()
    entries = {e["name"]: e for e in json.loads((results / "results.json").read_text())["runs"]}
    g2 = entries["cpu-reg-g2-s141"]
    assert (g2["noise_p"], g2["asgd_epoch"], g2["test_ppl"], g2["test_ppl_cache"]) == (0.2, 5, 97.0, 85.0)
    assert g2["compression"]["rank_h18"]["gain"] == 8.0 and g2["compression"]["rank_h9"]["gain"] == 4.0
    assert g2["outer_share"] == {"layer0_input": 0.6, "layer0_forget": 0.6, "layer1_input": 0.6,
                                 "layer1_forget": 0.6}
    stats = driver.comparisons(list(entries.values()), "cpu-reg")
    # d = G2 - LSTM test perplexity: -3, -1.5, -1; every one < 0 and the mean below -se: G2 better
    assert stats["test_ppl"]["verdict"] == "G2 better" and stats["test_ppl"]["complete"]
    assert stats["gain: rank_h18"]["verdict"] == "G2 more robust"
    assert stats["outer: layer0_forget"]["verdict"] == "G2 more binary"
    assert "| test perplexity (rule 1) | -3.00 / -1.50 / -1.00 | -1.83 |" in report
    assert "**G2 better**" in report and "(PARTIAL)" in report  # the other presets' runs are missing
    # training validation 199 ... 195, the finetune's 150: ended at its cap but for the run capped at 8
    assert "| cpu-reg-g2-s141 | 5 / 5 | 5 | 197.00 → 196.00 → 195.00 | 150.00 | 45.00 |" in report
    assert "at the epoch cap in 6 of 7 finished runs and by the preset's plateau stop in 1" in report
    assert "Rule 4" in report and "does not hold" not in report  # only seed 142 has both LSTMs: 101.05 < 113
    copied = results / "runs" / "cpu-reg-g2-s141"
    assert {path.name for path in copied.iterdir()} == {
        "metrics.jsonl",
        "finetune_metrics.jsonl",
        "sweep.json",
        "gate_histograms.json",
        "stages.json",
    }
    for path in [*copied.iterdir(), results / "REPORT.md", results / "results.json"]:
        assert str(tmp_path) not in path.read_text(), path


def test_runs_made_on_an_earlier_machine_keep_their_committed_numbers(tmp_path: Path) -> None:
    """A new machine has none of the earlier run folders: the report keeps their results.json entries, copies,
    pace and stage rows, and adds the runs whose folders are here."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    for seed, (lstm, g2) in zip((141, 142, 143), ((100.0, 97.0), (102.0, 100.5), (99.0, 98.0))):
        fake_run(runs, f"cpu-reg-lstm-s{seed}", lstm, rank_gain=20.0, outer=0.5, asgd=4)
        fake_run(runs, f"cpu-reg-g2-s{seed}", g2, rank_gain=8.0, outer=0.6, asgd=5)
    first = driver.write_report(runs, results, {str(runs): "RUNS_DIR"}).read_text()
    before = json.loads((results / "results.json").read_text())["runs"]

    new_machine = tmp_path / "new-runs"
    fake_run(new_machine, "cpu-lstm-s142", 110.0, rank_gain=20.0, outer=0.5, asgd=3)
    report = driver.write_report(new_machine, results, {str(new_machine): "RUNS_DIR"}).read_text()
    after = json.loads((results / "results.json").read_text())["runs"]
    assert after[:6] == before and after[6]["name"] == "cpu-lstm-s142" and after[6]["test_ppl"] == 110.0
    assert "| test perplexity (rule 1) | -3.00 / -1.50 / -1.00 | -1.83 |" in report
    for row in ("| cpu-reg-g2-s141 | 5 | 0.0 / 0.0 |", "| cpu-reg-g2-s141 | train | 1.0 | 1 | not recorded |",
                "| cpu-reg-g2-s141 | 5 / 5 | 5 | 197.00 → 196.00 → 195.00 | 150.00 | 45.00 |"):
        assert row in first and row in report, row
    assert "| cpu-lstm-s142 | train | 1.0 |" in report and "Runs done: 7 of 17" in report


@pytest.mark.parametrize(
    "differences, verdict",
    [
        ((2.0, 1.0, 3.0), "G2 worse"),
        ((-1.0, 1.0, 0.5), "not resolved"),
        ((-0.1, 0.1, 0.05), "G2 no worse (equivalent)"),
    ],
)
def test_rule_1_verdicts(tmp_path: Path, differences, verdict) -> None:
    runs = tmp_path / "runs"
    for seed, difference in zip((141, 142, 143), differences):
        fake_run(runs, f"cpu-lstm-s{seed}", 100.0, rank_gain=10.0, outer=0.5, asgd=4)
        fake_run(runs, f"cpu-g2-s{seed}", 100.0 + difference, rank_gain=10.0, outer=0.5, asgd=4)
    driver.write_report(runs, tmp_path / "results", {})
    entries = json.loads((tmp_path / "results" / "results.json").read_text())["runs"]
    assert driver.comparisons(entries, "cpu")["test_ppl"]["verdict"] == verdict


def fake_scheduled_run(runs: Path, seed: int, test_ppl: float, hard_gain: float, outer: float) -> None:
    """A finished scheduled run: a finetune of cpu-reg-g2-s{seed} in its own folder, no training stage."""
    name = f"cpu-reg-g2-sched-s{seed}"
    fake_run(runs, name, test_ppl, rank_gain=4.0, outer=outer, asgd=5)
    folder = runs / name
    stages = json.loads((folder / "stages.json").read_text())
    del stages["train"]
    (folder / "stages.json").write_text(json.dumps(stages))
    (folder / "finetune" / "metrics.jsonl").rename(folder / "metrics.jsonl")
    (folder / "finetune").rmdir()
    sweep = json.loads((folder / "sweep" / "sweep.json").read_text())
    sweep["runs"][name]["table"]["hard gates"]["test_ppl"] = test_ppl + hard_gain
    (folder / "sweep" / "sweep.json").write_text(json.dumps(sweep))


def test_rule_5_reports_each_part_of_the_schedule_target_per_seed(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    for seed, (lstm, g2, scheduled) in zip((141, 142), ((100.0, 99.0, 99.5), (102.0, 101.0, 101.8))):
        fake_run(runs, f"cpu-reg-lstm-s{seed}", lstm, rank_gain=20.0, outer=0.5, asgd=4)
        fake_run(runs, f"cpu-reg-g2-s{seed}", g2, rank_gain=8.0, outer=0.6, asgd=5)
        # seed 141 reaches the paper's shares and a 1 % hard-gate cost; seed 142 neither
        fake_scheduled_run(runs, seed, scheduled, hard_gain=1.0 if seed == 141 else 5.0,
                           outer=0.8 if seed == 141 else 0.7)
    report = driver.write_report(runs, results, {str(runs): "RUNS_DIR"}).read_text()
    entries = {e["name"]: e for e in json.loads((results / "results.json").read_text())["runs"]}
    scheduled = entries["cpu-reg-g2-sched-s141"]
    assert scheduled["schedule"] == driver.SCHEDULE_TEXT and scheduled["asgd_epoch"] == 5  # its source's
    assert scheduled["epochs"] == "5 + 1" and scheduled["metrics"].endswith("cpu-reg-g2-s141/metrics.jsonl")
    # the plain G2 comparison is untouched by the scheduled runs: G2 - LSTM = -1, -1 (compared negated)
    assert driver.comparisons(list(entries.values()), "cpu-reg")["test_ppl"]["differences"] == [1.0, 1.0]
    assert "| 141 | 99.50 | 100.50 | +1.0 % | 80.0 % / 80.0 % |" in report
    assert "| test perplexity | -0.50 / -0.20 |" in report
    assert ("Rule 5 (PARTIAL: 2 of 3 seeds): outer-bin shares at least the paper's (74.7 % input, 61.9 % "
            "forget) in 1 of 2 seeds; hard-gate cost within 2 % in 1 of 2; test perplexity against the "
            "paired LSTM: **G2 better (PARTIAL: 2 pairs)**.") in report


def test_a_scheduled_run_waits_for_its_source_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = driver.Run("cpu-reg", "g2", 141, scheduled=True)
    (tmp_path / run.source).mkdir()
    (tmp_path / run.source / "stages.json").write_text(json.dumps({"train": {"done": False}}))
    assert not driver.run_all_stages(run, tmp_path, [], threads=1)
    assert "waits for cpu-reg-g2-s141's training" in capsys.readouterr().out
    assert not (tmp_path / run.name).exists()
    commands = driver.stages(run, tmp_path / run.name, [])
    assert list(commands) == ["finetune", "eval", "eval_cache", "eval_tempered", "sweep", "analyze"]
    assert commands["finetune"][3:6] == [str(tmp_path / run.source), "--out", str(tmp_path / run.name)]
    assert commands["eval"][3] == str(tmp_path / run.name / "best.pt")
