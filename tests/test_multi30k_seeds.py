"""benchmarks/multi30k_seeds.py: its runs and stages, the report's statistics and verdicts on made-up runs,
portable results, and its commands end to end on a toy corpus."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark
from test_mt_cli import write_corpus

SETTINGS = ("round 0.5", "round 0.5 & clip 1", "rank 16", "rank 8", "hard gates")
LAYERS = ("0 input update", "0 context update", "1")


def load_driver():
    return load_benchmark("multi30k_seeds")


def test_runs_come_in_pairs_and_the_sharpened_run_last_with_30_epochs() -> None:
    driver = load_driver()
    assert [run.name for run in driver.RUNS] == ["lstm-s141", "g2-s141", "lstm-s142", "g2-s142", "lstm-s143",
                                                 "g2-s143", "sharpened-s141"]
    commands = driver.stages(driver.RUNS[-1], Path("RUNS/sharpened-s141"), driver.Settings())
    assert list(commands) == ["train", "eval", "sweep", "analyze"]
    assert commands["train"][:5] == ["g2lstm", "mt", "train", "--preset", "multi30k-cpu"]
    train = " ".join(commands["train"])
    assert "--gate sharpened --seed 141 --epochs 30" in train
    assert "--max-pairs 10000" in " ".join(commands["analyze"])
    smoke = driver.stages(driver.RUNS[0], Path("RUNS/lstm-s141"), driver.Settings("tiny", ("max_steps=5",)))
    assert "--preset tiny --gate lstm --seed 141 --set max_steps=5" in " ".join(smoke["train"])


def test_portable_replaces_every_machine_path() -> None:
    driver = load_driver()
    value = {"checkpoint": "/home/me/runs/g2-s141/best.pt", "argv": ["/opt/x/__main__.py", "analyze"],
             "data": "/srv/data/multi30k", "note": "sacreBLEU nrefs:1|case:lc", "n": 3}
    made = driver.portable(value, {"/home/me/runs": "RUNS_DIR"})
    assert made == {"checkpoint": "RUNS_DIR/g2-s141/best.pt", "argv": [".../__main__.py", "analyze"],
                    "data": ".../multi30k", "note": "sacreBLEU nrefs:1|case:lc", "n": 3}


def fake_run(folder: Path, name: str, bleu: float, lost: float, shares: float, epochs: int = 12,
             cap: int = 20) -> None:
    """A finished run folder holding what the driver's stages write: BLEU ``bleu``, every compression losing
    ``lost`` (the input blocks twice as much), and every first-layer outer-bin share ``shares``."""
    folder.mkdir(parents=True)
    metrics = [{"time": 60.0 * epoch, "step": 100 * epoch, "epoch": epoch, "valid_bleu": 30.0 + epoch / 100}
               for epoch in range(1, epochs + 1)] + [{"time": 1e4, "final": True, "test_bleu": bleu}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "config.json").write_text(json.dumps({"epochs": cap}))
    signature = "g2lstm:0.1.0|gate:g2|tau:0.9|p:0.2|eval:sigmoid|comp:none|data:multi30k|split:test|seed:141"
    stages = {stage: {"command": f"g2lstm {stage} {folder}/best.pt", "seconds": 60.0, "threads": [1],
                      "done": True} for stage in ("train", "eval", "sweep", "analyze")}
    stages["eval"]["metrics"] = {"bleu": bleu, "sacrebleu": bleu - 0.1, "loss": 1.8, "signature": signature,
                                 "decoding": {"beam": 5, "length_penalty": 1.0, "sentences": 1000}}
    (folder / "stages.json").write_text(json.dumps(stages))
    table = {"original": {"bleu": bleu, "sacrebleu": bleu - 0.1}}
    table.update({s: {"bleu": bleu - lost, "sacrebleu": bleu - lost} for s in SETTINGS})
    table.update({f"input blocks: {s}": {"bleu": bleu - 2 * lost, "sacrebleu": 0.0} for s in SETTINGS[:4]})
    (folder / "sweep").mkdir()
    (folder / "sweep" / "sweep.json").write_text(json.dumps(
        {"runs": {name: {"checkpoint": str(folder / "best.pt"), "table": table}}}))
    (folder / "analysis").mkdir()
    bins = [shares / 2, *[(1 - shares) / 8] * 8, shares / 2]
    histograms = [{"layer": k, "name": layer, "gate": gate, "outer_share": shares, "shares": bins,
                   "count": 1000} for k, layer in enumerate(LAYERS) for gate in ("input", "forget")]
    tokens = ["<s>", "a", "man", "runs"]
    words = [{"sentence": "a man runs", "tokens": tokens,
              **{f"layer{k}_{gate}": [shares] * len(tokens) for k in range(len(LAYERS))
                 for gate in ("input", "forget")}}]
    where = {"data": "multi30k", "split": "train", "pairs": 10000, "mode": "eval", "layers": "decoder",
             "layer_names": {str(k): layer for k, layer in enumerate(LAYERS)}}
    analysis = {"signature": {**where, "torch_version": "2.13.0", "argv": ["/srv/x/__main__.py"]},
                "models": {name: {"checkpoint": f"{folder}/best.pt", "gate": name.split("-")[0],
                                  "signature": signature}},
                "histograms": {name: histograms}, "gate_words": {name: words}}
    (folder / "analysis" / "gate_histograms.json").write_text(json.dumps(analysis))


def test_report_applies_the_decision_rules_to_made_up_runs(tmp_path: Path) -> None:
    driver = load_driver()
    runs, results = tmp_path / "runs", tmp_path / "results"
    made_up = {  # gate, seed: BLEU, BLEU lost by each compression, outer-bin share
        ("lstm", 141): (35.0, 2.0, 0.30), ("g2", 141): (35.5, 0.5, 0.80),
        ("lstm", 142): (34.0, 3.0, 0.25), ("g2", 142): (34.6, 0.4, 0.75),
        ("lstm", 143): (36.0, 2.5, 0.35), ("g2", 143): (36.4, 0.6, 0.85),
        ("sharpened", 141): (31.0, 1.0, 0.95),
    }
    for (gate, seed), values in made_up.items():
        name = f"{gate}-s{seed}"
        fake_run(runs / name, name, *values, epochs=20 if name == "g2-s143" else 12,
                 cap=30 if gate == "sharpened" else 20)
    report = driver.write_report(runs, results, {str(runs): "RUNS_DIR"}).read_text()

    recorded = json.loads((results / "results.json").read_text())
    g2 = next(entry for entry in recorded["runs"] if entry["name"] == "g2-s142")
    assert (g2["gate"], g2["seed"], g2["bleu"], g2["sacrebleu"]) == ("g2", 142, 34.6, pytest.approx(34.5))
    assert g2["compression"]["rank 8"]["bleu"] == pytest.approx(34.2)
    assert g2["outer_share"]["0 context update"] == {"input": 0.75, "forget": 0.75}
    assert g2["metrics"] == "runs/g2-s142/metrics.jsonl"  # results outside the repository: relative to them
    assert driver.RESULTS.relative_to(driver.REPOSITORY) == Path("results/multi30k-seeds")
    capped = next(entry for entry in recorded["runs"] if entry["name"] == "g2-s143")
    assert capped["stopped"] == "capped" and g2["stopped"] == "early stopping"

    stats = recorded["comparisons"]
    assert stats["bleu"]["differences"] == pytest.approx([0.5, 0.6, 0.4])
    assert stats["bleu"]["mean"] == pytest.approx(0.5) and stats["bleu"]["verdict"] == "G2 better"
    assert stats["lost: rank 8"]["differences"] == pytest.approx([-1.5, -2.6, -1.9])
    assert stats["lost: rank 8"]["verdict"] == "G2 more robust"
    assert stats["lost: input blocks: rank 8"]["verdict"] == "G2 more robust"
    assert stats["outer: 0 context update: forget"]["verdict"] == "G2 more binary"
    assert "outer: 1: input" not in stats  # rule 3 reads the first decoder layer only

    assert "(PARTIAL)" not in report.splitlines()[0]  # every run done
    assert "### Seed 141: histograms and a per-word gate map" in report
    assert "| sharpened-s141 | 0 context update | forget |" in report
    for picture in ("gate_histograms.png", "gate_words.png"):
        assert (results / "figures" / picture).stat().st_size > 10_000
    assert "- Rule 1 (quality, test BLEU): **G2 better**. At the preset's 20-epoch budget: g2-s143" in report
    assert "- Rule 2 (compression, hard gates): **G2 more robust**." in report
    assert "G2 more binary in every pair): reproduced." in report
    assert "test BLEU 31.00, below (LSTM seeds 34.00–36.00); trained to its plateau" in report
    for path in results.rglob("*"):
        if path.suffix in (".md", ".json", ".jsonl"):
            text = path.read_text()
            assert str(tmp_path) not in text and "/srv/" not in text, path


def test_runs_made_on_an_earlier_machine_keep_their_committed_numbers(tmp_path: Path) -> None:
    """The seed-141 runs made on one machine, the rest on another: the report is whole, its figures drawn
    from the committed analyses."""
    driver = load_driver()
    results = tmp_path / "results"
    values = {"lstm": (35.0, 2.0, 0.30), "g2": (35.5, 0.5, 0.80), "sharpened": (31.0, 1.0, 0.95)}
    for gate, made_up in values.items():
        fake_run(tmp_path / "first" / f"{gate}-s141", f"{gate}-s141", *made_up)
    roots = {str(tmp_path / "first"): "RUNS_DIR", str(tmp_path / "second"): "RUNS_DIR"}
    first = driver.write_report(tmp_path / "first", results, roots).read_text()
    assert "### Seed 141" in first and "(PARTIAL)" in first.splitlines()[0]
    for seed, (lstm, g2) in ((142, (34.0, 34.6)), (143, (36.0, 36.4))):
        fake_run(tmp_path / "second" / f"lstm-s{seed}", f"lstm-s{seed}", lstm, 3.0, 0.25)
        fake_run(tmp_path / "second" / f"g2-s{seed}", f"g2-s{seed}", g2, 0.4, 0.75)
    shutil.rmtree(results / "figures")
    report = driver.write_report(tmp_path / "second", results, roots).read_text()
    assert "(PARTIAL)" not in report.splitlines()[0]
    stats = json.loads((results / "results.json").read_text())["comparisons"]
    assert stats["bleu"]["differences"] == pytest.approx([0.5, 0.6, 0.4])
    assert "| lstm-s141 | 12 | 1.0 / 1.0 |" in report and "| lstm-s141 | train | 1.0 | 1 |" in report
    assert (results / "figures" / "gate_words.png").exists()


def test_a_missing_pair_makes_the_report_partial(tmp_path: Path) -> None:
    driver = load_driver()
    runs = tmp_path / "runs"
    fake_run(runs / "lstm-s141", "lstm-s141", 35.0, 2.0, 0.3)
    fake_run(runs / "g2-s141", "g2-s141", 35.5, 0.5, 0.8)
    report = driver.write_report(runs, tmp_path / "results", {str(runs): "RUNS_DIR"}).read_text()
    assert "**not run yet (fewer than two pairs)**" in report
    assert "| lstm-s143 | – | – | – | 0 | – | not started |" in report


def test_the_driver_runs_its_commands_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of the toy corpus through train, eval, sweep and analyze, then the report."""
    driver = load_driver()
    corpus = write_corpus(tmp_path / "corpus")
    results = tmp_path / "results"
    small = {"max_steps": 4, "emb_size": 16, "hidden_size": 16, "batch_size": 16, "eval_batch_size": 16,
             "beam_size": 2, "log_interval": 2}
    settings = [item for key, value in small.items() for item in ("--set", f"{key}={value}")]
    argv = ["--runs", str(tmp_path / "runs"), "--data", str(corpus), "--preset", "tiny", "--threads", "1",
            "--max-pairs", "20", "--only", "lstm-s141", "g2-s141", "--results", str(results), *settings]
    monkeypatch.setattr(sys, "argv", ["multi30k_seeds.py", *argv])
    driver.main()
    recorded = json.loads((results / "results.json").read_text())
    done = {entry["name"]: entry for entry in recorded["runs"] if entry["bleu"] is not None}
    assert set(done) == {"lstm-s141", "g2-s141"}
    assert set(done["g2-s141"]["compression"]) >= {"original", "hard gates", "input blocks: rank 1"}
    assert set(done["g2-s141"]["outer_share"]) == set(LAYERS)
    assert recorded["comparisons"]["bleu"]["seeds"] == [141]
    for name in done:
        for file in ("metrics.jsonl", "sweep.json", "gate_histograms.json"):
            assert str(tmp_path) not in (results / "runs" / name / file).read_text()
        assert "RUNS_DIR/" in (results / "runs" / name / "sweep.json").read_text()  # the checkpoint, portable
    assert str(tmp_path) not in (results / "REPORT.md").read_text()
