"""Gate analysis: histograms of known gates, the Markdown table, gate flips under noise, and the
language-model analysis end to end on tiny checkpoints."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from g2lstm import G2LSTM
from g2lstm.analysis import (
    GateHistogram,
    flip_share,
    gate_histogram_table,
    gate_histograms,
    gate_sensitivities,
    gate_sensitivity,
)
from g2lstm.lm.analyze import analyze_language_models
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.lm.model import AWDLSTM, LanguageModelSpec
from g2lstm.lm.train import train_language_model
from g2lstm.plots import plot_gate_words
from g2lstm.train import CheckpointPaths, load_config, run_names

TinyRuns = tuple[Path, list[Path]]  # corpus folder, checkpoints (LSTM, G2-LSTM)
WORDS = "the cat sat on a mat and a dog ran to the park while it rained <unk>".split()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not wait for busy cores); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def known_gate_lstm(hidden: int = 3) -> G2LSTM:
    """Zero weights; input-gate bias 2.2 (every input gate is sigmoid(2.2) = 0.9002), forget-gate bias 0
    (every forget gate is 0.5)."""
    module = G2LSTM(1, hidden, gate="lstm", dtype=torch.float64).eval()
    with torch.no_grad():
        module.weight_ih_l0.zero_()
        module.weight_hh_l0.zero_()
        module.bias_hh_l0.zero_()
        module.bias_ih_l0.copy_(torch.cat([torch.full((hidden,), 2.2), torch.zeros(3 * hidden)]))
    return module


def run_first(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> None:
    model(batch[0])


def test_histograms_of_known_gates() -> None:
    batches = [(torch.randn(5, 2, 1, dtype=torch.float64),), (torch.randn(4, 2, 1, dtype=torch.float64),)]
    histograms = {(h.layer, h.gate): h for h in gate_histograms(known_gate_lstm(), batches, run_first)}
    assert set(histograms) == {(0, "input"), (0, "forget")}
    assert histograms[0, "input"].shares == [0.0] * 9 + [1.0]  # 0.9002 lies in the closed last bin
    assert histograms[0, "forget"].shares == [0.0] * 5 + [1.0] + [0.0] * 4  # 0.5 lies in [0.5, 0.6)
    assert histograms[0, "input"].count == histograms[0, "forget"].count == (5 + 4) * 2 * 3
    assert histograms[0, "input"].outer_share == 1.0 and histograms[0, "forget"].outer_share == 0.0


def test_outer_share_adds_the_first_and_last_bins() -> None:
    shares = [0.25, 0.1, 0.05, 0.0, 0.0, 0.0, 0.0, 0.05, 0.15, 0.4]
    assert GateHistogram(0, "input", shares, 100).outer_share == pytest.approx(0.65)


def test_table_shows_bins_outer_share_and_the_papers_values_beside_them() -> None:
    g2 = [GateHistogram(0, "forget", [0.5] + [0.0] * 8 + [0.5], 10),
          GateHistogram(0, "input", [0.0] * 9 + [1.0], 10)]
    other = [GateHistogram(1, "input", [0.1] * 10, 20)]
    table = gate_histogram_table({"G2": g2, "mine": other}, {"G2": "g2"})
    lines = table.splitlines()
    assert lines[0].startswith("| model | layer | gate | [0.0,0.1) |")
    assert "| [0.9,1.0] | outer bins |" in lines[0]
    rows = [line for line in lines if line.startswith("| G2 ") or line.startswith("| mine ")]
    zeros = " | ".join(["0.0"] * 9)
    assert rows[0] == f"| G2 | 0 | input | {zeros} | 100.0 | **100.0** | 10 | 4.3 / 70.4 / 74.7 |"
    assert rows[1].startswith("| G2 | 0 | forget | 50.0 |")
    assert rows[1].endswith("| **100.0** | 10 | 35.5 / 26.3 / 61.9 |")
    assert rows[2].endswith("| **20.0** | 20 | – |")  # no gate mode given: no paper value
    assert "first decoder layer" in table and "translation" in table
    with pytest.raises(ValueError, match="gate_modes"):
        gate_histogram_table({"G2": g2}, {"LSTM": "lstm"})


def test_flip_share_counts_values_on_opposite_sides_of_one_half() -> None:
    reference = torch.tensor([[0.1, 0.6], [0.5, 0.9]])
    perturbed = torch.tensor([[0.6, 0.4], [0.49, 0.95]])  # flips, flips, flips (0.5 counts as open), stays
    assert flip_share(reference, perturbed) == 0.75
    assert flip_share(reference, reference) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        flip_share(reference, perturbed.flatten())
    with pytest.raises(TypeError, match="perturbed must be a Tensor"):
        flip_share(reference, [[0.6, 0.4], [0.49, 0.95]])
    with pytest.raises(ValueError, match="at least one"):
        flip_share(torch.empty(0), torch.empty(0))


def small_language_model() -> tuple[AWDLSTM, list[tuple[torch.Tensor, bool]], object]:
    model = AWDLSTM(LanguageModelSpec(vocab_size=20, emb_size=8, hidden_size=12, num_layers=2))
    stream = torch.randint(0, 20, (12, 3))
    batches = [(stream[:6], True), (stream[6:], False)]
    hidden = None

    def forward(m: AWDLSTM, batch: tuple[torch.Tensor, bool]) -> torch.Tensor:
        nonlocal hidden
        words, first = batch
        result = m(words, m.init_hidden(3) if first else hidden)
        hidden = result.hidden
        return result.output

    return model, batches, forward


@pytest.mark.parametrize("target", ["weights", "embedding"])
def test_sensitivity_is_zero_without_noise_and_leaves_the_model_as_it_was(target: str) -> None:
    model, batches, forward = small_language_model()
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.eval()
    output = torch.cat([forward(model, batch) for batch in batches])
    model.train()
    zero = gate_sensitivity(model, forward, batches, sigma=0.0, target=target)
    assert zero == {(0, "input"): 0.0, (0, "forget"): 0.0, (1, "input"): 0.0, (1, "forget"): 0.0}
    noisy = gate_sensitivity(model, forward, batches, sigma=0.5, target=target, seed=3)
    assert any(share > 0 for share in noisy.values()) and all(0 <= share <= 1 for share in noisy.values())
    assert model.training  # mode restored
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # weights and embedding bit-exact
    model.eval()
    assert torch.equal(torch.cat([forward(model, batch) for batch in batches]), output)  # no hook left
    together = gate_sensitivities(model, forward, batches, sigmas=[0.0, 0.5], targets=[target], seed=3)
    assert together[target, 0.5] == noisy and together[target, 0.0] == zero


def test_sensitivity_rejects_bad_arguments() -> None:
    model, batches, forward = small_language_model()
    with pytest.raises(ValueError, match="target must be one of"):
        gate_sensitivity(model, forward, batches, sigma=0.1, target="bias")
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        gate_sensitivity(model, forward, batches, sigma=-1.0, target="weights")
    with pytest.raises(ValueError, match="contains no G2LSTM"):
        gate_sensitivity(torch.nn.Linear(2, 2), forward, batches, sigma=0.1, target="weights")


def test_gate_words_plot_checks_one_value_per_word(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one value per word"):
        plot_gate_words([["a", "b"]], {"m": [{(0, "input"): [0.5]}]}, tmp_path / "x.png", "t")


def test_run_names_are_the_run_folders_and_unambiguous() -> None:
    assert run_names([Path("runs/g2/finetune/best.pt"), Path("runs/lstm/best.pt")]) == ["g2", "lstm"]
    assert run_names([Path("a/g2/best.pt"), Path("b/g2/best.pt")]) == ["a/g2", "b/g2"]
    assert run_names([Path("runs/g2/best.pt"), Path("runs/g2/finetune/best.pt")]) == [
        "runs/g2/best.pt", "runs/g2/finetune/best.pt"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """A tiny PTB-layout corpus (with <unk>) and an LSTM and a G2-LSTM trained on it for 3 steps."""
    root = tmp_path_factory.mktemp("analysis")
    generator = torch.Generator().manual_seed(0)
    corpus = root / "corpus"
    corpus.mkdir()
    for split, lines in (("train", 120), ("valid", 40), ("test", 10)):
        sentences = []
        for _ in range(lines):
            length = int(torch.randint(3, 12, (1,), generator=generator))
            ids = torch.randint(0, len(WORDS), (length,), generator=generator)
            sentences.append(" ".join(WORDS[i] for i in ids.tolist()))
        (corpus / f"ptb.{split}.txt").write_text("\n".join(sentences) + "\n")
    checkpoints = []
    for gate in ("lstm", "g2"):
        overrides = {"gate": gate, "emb_size": 8, "hidden_size": 12, "batch_size": 4, "bptt": 8, "epochs": 1,
                     "max_steps": 3, "log_interval": 5, "eval_batch_size": 2, "test_batch_size": 2}
        config = load_config(LMConfig, "tiny", overrides, preset_dir=PRESET_DIR)
        train_language_model(config, root / gate, corpus, show_progress=False)
        checkpoints.append(CheckpointPaths(root / gate).best)
    return corpus, checkpoints


def test_analyze_language_models_writes_every_file(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    corpus, checkpoints = tiny_runs
    results = analyze_language_models(checkpoints, tmp_path, corpus, max_tokens=200, sigmas=(0.0, 0.5))
    names = ["lstm", "g2"]
    files = ["gate_histograms.png", "gate_histograms.md", "gate_histograms.json", "gate_words.png",
             "sensitivity.md", "sensitivity.json"]
    assert sorted(results["files"]) == sorted(files)
    assert all((tmp_path / name).stat().st_size > 0 for name in files)
    assert set(results) == {"signature", "models", "histograms", "gate_words", "sensitivity", "files"}
    assert results["signature"]["tokens"] == 200 and results["signature"]["split"] == "valid"

    histograms = json.loads((tmp_path / "gate_histograms.json").read_text())
    assert set(histograms) == {"signature", "models", "histograms"}
    assert list(histograms["histograms"]) == names
    for name in names:
        assert histograms["models"][name]["gate"] == name
        assert set(histograms["histograms"][name]) == {"layer0", "layer1"}
        entry = histograms["histograms"][name]["layer0"]["input"]
        assert set(entry) == {"shares", "outer_share", "count"} and len(entry["shares"]) == 10
        assert math.isclose(sum(entry["shares"]), 1.0) and entry["count"] == 200 * 12
    assert "35.5 / 26.3 / 61.9" in (tmp_path / "gate_histograms.md").read_text()  # G2 forget gate, paper

    sensitivity = json.loads((tmp_path / "sensitivity.json").read_text())
    assert set(sensitivity) == {"signature", "models", "sensitivity"}
    for name in names:
        assert set(sensitivity["sensitivity"][name]) == {"weights", "embedding"}
        assert set(sensitivity["sensitivity"][name]["weights"]) == {"0", "0.5"}
        assert sensitivity["sensitivity"][name]["embedding"]["0"]["layer1"] == {"input": 0.0, "forget": 0.0}
    assert "| g2 | weights | 0.5 | 1 |" in (tmp_path / "sensitivity.md").read_text()

    words = results["gate_words"]["g2"]
    assert len(words) == 2 and words[0]["tokens"][:2] == ["the", "<unk>"]  # "company" is not in the corpus
    assert len(words[0]["layer1"]["forget"]) == len(words[0]["sentence"].split())
    assert all(0 < value < 1 for value in words[1]["layer0"]["input"])


def test_analyze_language_models_names_bad_arguments(tiny_runs: TinyRuns, tmp_path: Path) -> None:
    corpus, checkpoints = tiny_runs
    with pytest.raises(ValueError, match="names must hold 2"):
        analyze_language_models(checkpoints, tmp_path, corpus, names=["only one"])
    with pytest.raises(ValueError, match="split must be one of"):
        analyze_language_models(checkpoints, tmp_path, corpus, split="dev")
    with pytest.raises(ValueError, match="eval_gate must be one of"):
        analyze_language_models(checkpoints, tmp_path, corpus, eval_gate="soft")
    with pytest.raises(ValueError, match="twice"):
        analyze_language_models([checkpoints[0], checkpoints[0]], tmp_path, corpus)


def test_long_figure_titles_wrap_to_the_figure_width() -> None:
    """A title longer than the figure is wide is broken into lines instead of being cut off at the edges."""
    from g2lstm.plots import _pyplot, _suptitle

    plt = _pyplot()
    figure = plt.figure(figsize=(8, 4))
    _suptitle(figure, "gate values " * 20 + "\nsecond line")
    lines = figure._suptitle.get_text().splitlines()
    plt.close(figure)
    assert len(lines) >= 4 and lines[-1] == "second line"
    assert max(map(len, lines)) <= 80
