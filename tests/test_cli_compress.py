"""`g2lstm compress`, `g2lstm compress sweep`, `g2lstm analyze` and compressed checkpoints in `lm eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from g2lstm.cli import main
from g2lstm.lm import train as lm_train
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.train import CheckpointPaths, load_checkpoint, load_config

WORDS = "the cat sat on a mat and a dog ran to the park while it rained".split()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A tiny corpus and two tiny trained models (LSTM and G2), a few steps each."""
    root = tmp_path_factory.mktemp("compress")
    corpus = root / "corpus"
    corpus.mkdir()
    for split, lines in (("train", 200), ("valid", 30), ("test", 30)):
        text = "\n".join(
            " ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3 + i % 5)) for i in range(lines)
        )
        (corpus / f"ptb.{split}.txt").write_text(text + "\n")
    checkpoints = {}
    for gate in ("lstm", "g2"):
        config = load_config(
            LMConfig,
            "tiny",
            {
                "gate": gate,
                "emb_size": 16,
                "hidden_size": 36,
                "batch_size": 4,
                "bptt": 10,
                "epochs": 1,
                "max_steps": 4,
                "eval_batch_size": 2,
                "test_batch_size": 2,
            },
            preset_dir=PRESET_DIR,
        )
        lm_train.train_language_model(config, root / gate, corpus, show_progress=False)
        checkpoints[gate] = CheckpointPaths(root / gate).best
    return corpus, checkpoints


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "g2lstm", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--round", "0.05", "--clip", "0.1"], ["--rank", "3"]])
def test_compress_writes_a_smaller_checkpoint_that_lm_eval_accepts(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path, options: list[str]
) -> None:
    corpus, checkpoints = trained
    out = tmp_path / "small.pt"
    done = run_cli("compress", str(checkpoints["g2"]), *options, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "bytes" in done.stdout and out.exists()
    assert out.stat().st_size < checkpoints["g2"].stat().st_size
    assert load_checkpoint(out)["compression"]
    evaluated = run_cli("lm", "eval", str(out), "--data", str(corpus), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["test_ppl"] > 1


@pytest.mark.slow
def test_compress_sweep_prints_the_table_and_draws_the_curves(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    corpus, checkpoints = trained
    done = run_cli(
        "compress",
        "sweep",
        str(checkpoints["lstm"]),
        str(checkpoints["g2"]),
        "--data",
        str(corpus),
        "--out",
        str(tmp_path),
        "--ranks",
        "4",
        "2",
    )
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    for column in ("original", "round 0.2", "round 0.2 & clip 0.4", "rank 4", "rank 2", "hard gates"):
        assert column in header
    results = json.loads((tmp_path / "sweep.json").read_text())
    assert set(results["runs"]) == {"lstm", "g2"}
    table = results["runs"]["g2"]["table"]
    assert table["rank 2"]["bytes"] < table["rank 4"]["bytes"] < table["original"]["bytes"]
    assert (tmp_path / "sweep.png").stat().st_size > 10_000 and (tmp_path / "sweep.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--round", "0.2"], "--out"),
        (["--round", "0.2", "--rank", "4", "--out", "x.pt"], "round"),
        (["--clip", "0.4", "--out", "x.pt"], "round"),
        (["--rank", "0", "--out", "x.pt"], "rank"),
    ],
)
def test_compress_mistakes_exit_2_with_a_message(
    trained: tuple[Path, dict[str, Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    try:
        code = main(
            ["compress", str(trained[1]["g2"]), *[a.replace("x.pt", str(tmp_path / "x.pt")) for a in args]]
        )
    except SystemExit as usage_error:  # argparse refuses what its types refuse
        code = usage_error.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_compress_refuses_a_damaged_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint at all")
    code = main(["compress", str(damaged), "--rank", "2", "--out", str(tmp_path / "out.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "damaged.pt" in err and "Traceback" not in err


def test_analyze_writes_histograms_word_maps_and_sensitivity(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    corpus, checkpoints = trained
    assert main(["analyze", str(checkpoints["lstm"]), str(checkpoints["g2"]), "--data", str(corpus), "--out",
                 str(tmp_path), "--max-tokens", "400", "--sentence", "the cat sat on a mat"]) == 0
    for name in ("gate_histograms.png", "gate_histograms.md", "gate_histograms.json", "gate_words.png",
                 "sensitivity.md", "sensitivity.json"):
        assert (tmp_path / name).exists(), name


@pytest.mark.slow
def test_demo_prints_both_models_side_by_side(trained: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    corpus, _ = trained
    small = ["--set", "emb_size=16", "--set", "hidden_size=36", "--set", "batch_size=4", "--set", "bptt=10",
             "--set", "eval_batch_size=2", "--set", "test_batch_size=2"]
    done = run_cli(
        "demo", "--data", str(corpus), "--out", str(tmp_path), "--max-steps", "3", "--quiet", *small
    )
    assert done.returncode == 0, done.stderr
    for label in (
        "LSTM",
        "G2-LSTM",
        "valid perplexity",
        "test perplexity, round 0.2 & clip 0.4",
        "test perplexity, rank 4",
        "test perplexity, hard gates",
        "layer0_forget gates in outer bins",
    ):
        assert label in done.stdout, label
    assert (tmp_path / "gate_histograms.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["g2"]["compressed_test_ppl"]) >= {"original", "rank 4", "hard gates"}
