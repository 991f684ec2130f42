"""benchmarks/hard_gates.py on a tiny trained language model: every setting measured, the choice made on
validation perplexity, and a report without machine paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from g2lstm.lm import train as lm_train
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.train import load_config

script = load_benchmark("hard_gates")
WORDS = "the cat sat on a mat and a dog ran to the park".split()


def tiny_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for split, lines in (("train", 120), ("valid", 20), ("test", 20)):
        sentences = (" ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3 + i % 5))
                     for i in range(lines))
        (folder / f"ptb.{split}.txt").write_text("\n".join(sentences) + "\n")
    return folder


def test_settings_cover_every_level_at_full_and_two_low_ranks() -> None:
    table = script.settings(256)
    assert list(table)[:3] == ["hard", "hard, rank 28", "hard, rank 14"]  # H/9 and H/18
    assert table["hard, sign, rank 14"] == {"levels": "sign", "rank": 14} and len(table) == 12


def test_the_script_measures_chooses_on_validation_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, run = tiny_corpus(tmp_path / "corpus"), tmp_path / "runs" / "g2"
    sizes = {"emb_size": 16, "hidden_size": 36, "batch_size": 4, "bptt": 12, "epochs": 1,
             "finetune_epochs": 1}
    config = load_config(LMConfig, "tiny", sizes, preset_dir=PRESET_DIR)
    lm_train.train_language_model(config, run, corpus, show_progress=False)
    out = tmp_path / "results" / "hard-gates"
    argv = ["hard_gates.py", str(run / "best.pt"), "--names", "g2", "--data", str(corpus), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    results = json.loads((out / "hard_gates.json").read_text())
    g2 = results["runs"]["g2"]
    assert g2["checkpoint"] == "g2/best.pt" and len(g2["settings"]) == 12
    own = g2["own"]["valid_ppl"]
    chosen = g2["smallest_within_2_percent"]
    within = [row for row in g2["settings"].values() if row["valid_ppl"] <= 1.02 * own]
    if chosen is None:
        assert not within
    else:
        assert g2["settings"][chosen]["size_share"] == min(row["size_share"] for row in within)
    hard = g2["settings"]["hard"]
    assert hard["size_share"] == 1.0
    of_hard = g2["smallest_within_2_percent_of_hard"]  # never None: "hard" itself qualifies
    assert g2["settings"][of_hard]["size_share"] == min(
        row["size_share"] for row in g2["settings"].values() if row["valid_ppl"] <= 1.02 * hard["valid_ppl"]
    )
    assert g2["settings"]["hard, sign"]["size_share"] < g2["settings"]["hard, int4"]["size_share"] < 0.2
    text = (out / "REPORT.md").read_text()
    assert "| hard, ternary |" in text and str(tmp_path) not in text
