"""The translation recipe end to end on tiny parallel files: train, resume, translate, eval, compress,
analyze, and the user mistakes that must end in one line and exit code 2."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from g2lstm.cli import main
from g2lstm.errors import ConfigError
from g2lstm.mt import train as mt_train
from g2lstm.mt.config import PRESET_DIR, MTConfig
from g2lstm.mt.evaluate import load_model
from g2lstm.train import (
    CheckpointPaths,
    StopRequest,
    TrainingInterrupted,
    load_checkpoint,
    load_config,
    read_metrics,
    save_checkpoint,
)

from killing import assert_killed_runs_resume_bit_identical

WORDS = {"ein": "a", "mann": "man", "hund": "dog", "kind": "child", "läuft": "runs", "schläft": "sleeps",
         "spielt": "plays", "im": "in the", "park": "park", "haus": "house", "garten": "garden", "und": "and"}
SMALL = {"emb_size": 16, "hidden_size": 16, "batch_size": 16, "eval_batch_size": 16, "beam_size": 2,
         "log_interval": 2}


def write_corpus(folder: Path, sizes: tuple[int, int, int] = (160, 12, 12)) -> Path:
    """A toy German-English corpus in the fairseq layout: word-by-word translations of short sentences."""
    generator = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "valid", "test"), sizes):
        german = []
        for _ in range(count):
            subject, verb = (
                generator.choice(["mann", "hund", "kind"]),
                generator.choice(["läuft", "schläft", "spielt"]),
            )
            place = generator.choice(["", " im park", " im haus", " im garten"])  # sentences of two lengths
            german.append(f"ein {subject} {verb}{place} .")
        english = [" ".join(WORDS.get(word, word) for word in line.split()) for line in german]
        (folder / f"{split}.de").write_text("\n".join(german) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(english) + "\n", encoding="utf-8")
    return folder


def tiny_config(**overrides: object) -> MTConfig:
    return load_config(MTConfig, "tiny", {**SMALL, **overrides}, preset_dir=PRESET_DIR)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The toy corpus and three models trained on it for a few steps: LSTM and G2 with the conditional
    decoder, and "old", a G2 attention-on-top model whose checkpoints lack the decoder key, as those saved
    before it."""
    root = tmp_path_factory.mktemp("mt")
    corpus = write_corpus(root / "corpus")
    checkpoints = {}
    for name, options in {"lstm": {"gate": "lstm"}, "g2": {"gate": "g2"},
                          "old": {"gate": "g2", "decoder": "attention-on-top"}}.items():
        mt_train.train_translation_model(tiny_config(max_steps=6, **options), root / name, corpus,
                                         show_progress=False)
        checkpoints[name] = CheckpointPaths(root / name).best
    for path in (CheckpointPaths(root / "old").best, CheckpointPaths(root / "old").last):
        state = load_checkpoint(path)
        del state["config"]["decoder"]
        save_checkpoint(path, state)
    return corpus, checkpoints


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cli_train_then_eval_prints_bleu_as_json(trained: tuple[Path, dict[str, Path]], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    small = [f"--set={key}={value}" for key, value in SMALL.items()]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "g2lstm",
            "mt",
            "train",
            "--data",
            str(corpus),
            "--src",
            "de",
            "--tgt",
            "en",
            "--preset",
            "tiny",
            "--gate",
            "g2",
            "--max-steps",
            "3",
            "--seed",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            *small,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    written = {path.name for path in (tmp_path / "run").iterdir()}
    assert {"best.pt", "last.pt", "bpe.model", "config.json", "metrics.jsonl"} <= written
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 2
    code, stdout, err = run_main(
        capsys,
        "mt",
        "eval",
        str(tmp_path / "run" / "best.pt"),
        "--data",
        str(corpus),
        "--split",
        "test",
        "--json",
    )
    assert code == 0, err
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["sacrebleu"] <= 100
    assert "tok:13a" in metrics["sacrebleu_signature"] and metrics["decoding"]["sentences"] == 12
    expected = "g2lstm:0.1.0|gate:g2|tau:0.9|p:0.2|eval:sigmoid|comp:none|data:corpus"
    assert metrics["signature"].startswith(expected)
    assert "|split:test|seed:2|commit:" in metrics["signature"]


def test_translate_reads_standard_input(
    trained: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO("ein hund läuft im park .\nein kind schläft .\n".encode()))
    )
    code, out, err = run_main(capsys, "mt", "translate", str(trained[1]["g2"]), "--beam", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("Ein Hund läuft im Park.\n".encode())))
    code, out, err = run_main(capsys, "mt", "translate", str(trained[1]["g2"]), "--raw")
    assert code == 0 and len(out.splitlines()) == 1


def test_training_lowers_the_validation_loss_and_keeps_the_best_model(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    # hidden 32: at 16 the conditional decoder of this toy stays on its no-source plateau for a dozen epochs
    config = tiny_config(gate="g2", epochs=4, patience=4, lr=0.02, dropout=0.0, emb_size=32, hidden_size=32)
    metrics = mt_train.train_translation_model(config, tmp_path / "run", corpus, show_progress=False)
    epochs = [m for m in read_metrics(tmp_path / "run") if "valid_loss" in m and "final" not in m]
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["valid_loss"] < 0.7 * epochs[0]["valid_loss"]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["metrics"]["bleu"] == max(m["valid_bleu"] for m in epochs)
    assert {"valid_bleu", "valid_sacrebleu", "test_bleu", "test_sacrebleu", "test_loss"} <= set(metrics)


@contextmanager
def stop_after(checks: int) -> Iterator[StopRequest]:
    """Stands in for stop_on_signals: as if SIGTERM arrived before the ``checks``-th check (one after each
    training step and one after each epoch's validation)."""

    class Request(StopRequest):
        count = 0

        @property
        def requested(self) -> bool:
            self.count += 1
            return self.count >= checks

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    request = Request()
    request.signal_name = "SIGTERM"
    yield request


def test_resume_after_a_stop_continues_bit_identically(trained: tuple[Path, dict[str, Path]], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, _ = trained
    config = {"gate": "g2", "epochs": 2, "max_steps": 14}  # an epoch is 10 batches: the stop is mid-epoch 2
    mt_train.train_translation_model(
        tiny_config(**config), tmp_path / "straight", corpus, show_progress=False
    )
    with monkeypatch.context() as patch:
        patch.setattr(mt_train, "stop_on_signals", lambda: stop_after(13))  # step 12: 10 + validation + 2
        with pytest.raises(TrainingInterrupted, match="run the same command again"):
            mt_train.train_translation_model(
                tiny_config(**config), tmp_path / "stopped", corpus, show_progress=False
            )
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["progress"]["step"] == 12
    mt_train.train_translation_model(tiny_config(**config), tmp_path / "stopped", corpus, show_progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert straight["progress"] == resumed["progress"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    logged = [
        [
            {k: v for k, v in m.items() if k not in ("time", "ms_per_step")}
            for m in read_metrics(tmp_path / run)
        ]
        for run in ("straight", "stopped")
    ]
    assert logged[0] == logged[1]  # the same lines, none twice


def test_long_pairs_are_dropped_from_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus", sizes=(40, 4, 4))
    with open(corpus / "train.de", "a") as source, open(corpus / "train.en", "a") as target:
        source.write(" ".join(["hund"] * 80) + "\n")
        target.write("dog\n")
    mt_train.train_translation_model(tiny_config(max_steps=1, max_len=64), tmp_path / "run", corpus,
                                     show_progress=False)
    assert "40 of 41 training pairs kept" in (tmp_path / "run" / "log.txt").read_text()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: (c / "train.en").write_text("a man runs .\n"), "train.de has 160 lines but"),
        (lambda c: (c / "valid.de").write_text(""), "valid.de is empty"),
        (lambda c: (c / "test.en").unlink(), "test.en is missing"),
    ],
    ids=["line-counts", "empty", "missing"],
)
def test_bad_files_end_in_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage,
                                                   message: str) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    damage(corpus)
    code, _, err = run_main(
        capsys,
        "mt",
        "train",
        "--data",
        str(corpus),
        "--preset",
        "tiny",
        "--max-steps",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        *[f"--set={k}={v}" for k, v in SMALL.items()],
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["mt", "train", "--preset", "nope", "--out", "OUT"],
            "available presets: iwslt14, multi30k-cpu, tiny",
        ),
        (
            ["mt", "train", "--preset", "tiny", "--set", "bpe_sise=10", "--out", "OUT"],
            "did you mean 'bpe_size'",
        ),
        (["mt", "train", "--data", "MISSING", "--preset", "tiny", "--out", "OUT"], "does not exist"),
        (["mt", "eval", "MISSING.pt"], "does not exist"),
    ],
)
def test_user_mistakes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    args = [
        a.replace("OUT", str(tmp_path / "run")).replace("MISSING", str(tmp_path / "missing")) for a in args
    ]
    code, _, err = run_main(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_compress_and_eval_a_compressed_translation_model(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, checkpoints = trained
    out = tmp_path / "small.pt"
    code, stdout, err = run_main(
        capsys, "compress", str(checkpoints["g2"]), "--round", "0.5", "--clip", "1.0", "--out", str(out)
    )
    assert code == 0, err
    assert "round 0.5 & clip 1" in stdout and out.stat().st_size < checkpoints["g2"].stat().st_size
    code, stdout, err = run_main(capsys, "mt", "eval", str(out), "--data", str(corpus), "--json")
    assert code == 0, err
    assert "|comp:round 0.5&clip 1(input,forget)|" in json.loads(stdout.strip().splitlines()[-1])["signature"]


def test_compress_sweep_reports_bleu_in_the_paper_layout(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, checkpoints = trained
    code, stdout, err = run_main(
        capsys,
        "compress",
        "sweep",
        str(checkpoints["lstm"]),
        str(checkpoints["g2"]),
        "--data",
        str(corpus),
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    header = stdout.splitlines()[0]
    settings = ("round 0.5", "round 0.5 & clip 1", "rank 2", "rank 1")  # hidden 16: ranks 16/8 and 16/16
    assert [cell.strip(" |") for cell in header.split(" | ")][1:] == ["original", *settings, "hard gates"]
    results = json.loads((tmp_path / "sweep.json").read_text())
    table = results["runs"]["g2"]["table"]
    assert list(table) == ["original", *settings, "hard gates", *(f"input blocks: {s}" for s in settings)]
    assert table["rank 1"]["bytes"] < table["rank 2"]["bytes"] < table["original"]["bytes"]
    assert table["input blocks: rank 1"]["bytes"] < table["original"]["bytes"]
    assert {"bleu", "sacrebleu"} <= set(table["original"])
    blocks = results["runs"]["g2"]["blocks"]
    assert "decoder.context_update.weight_ih_l0" in blocks["recurrent"]
    assert "decoder.input_update.weight_ih_l0" in blocks["input"]
    text = (tmp_path / "sweep.md").read_text()
    assert "sacreBLEU" in text and "input blocks: round 0.5 & clip 1" in text


def test_analyze_writes_decoder_histograms_and_word_maps(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, checkpoints = trained
    code, _, err = run_main(capsys, "analyze", str(checkpoints["lstm"]), str(checkpoints["g2"]), "--data",
                            str(corpus), "--out", str(tmp_path), "--max-pairs", "50", "--pair", "3")
    assert code == 0, err
    results = json.loads((tmp_path / "gate_histograms.json").read_text())
    names = {(h["layer"], h["name"]) for h in results["histograms"]["g2"]}
    assert names == {(0, "0 input update"), (1, "0 context update"), (2, "1")}
    first = {h["gate"]: h for h in results["histograms"]["g2"] if h["layer"] == 0}
    assert set(first) == {"input", "forget"} and sum(first["input"]["shares"]) == pytest.approx(1.0)
    _, _, vocab = load_model(load_checkpoint(checkpoints["g2"]))
    targets = vocab.encode((corpus / "train.en").read_text().splitlines()[:50])
    assert first["input"]["count"] == 16 * sum(len(t) + 1 for t in targets)  # each position read, no padding
    words = results["gate_words"]["g2"][0]
    assert words["tokens"][0] == "<s>"
    assert len(words["layer0_input"]) == len(words["layer1_forget"]) == len(words["tokens"])
    assert (tmp_path / "gate_words.png").stat().st_size > 10_000
    table = (tmp_path / "gate_histograms.md").read_text()
    assert "paper" in table and "| g2 | 0 context update | forget |" in table


def test_models_analyzed_apart_merge_into_the_joint_analysis(
    trained: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """Each run analyzed on its own (on its own machine), then drawn together: the same histograms, maps and
    table as one analysis of both; analyses of other pairs are refused."""
    from g2lstm.mt.analyze import (
        analyze_translation_models,
        merge_translation_analyses,
        write_translation_analysis,
    )

    corpus, checkpoints = trained
    options = {"data": corpus, "max_pairs": 30, "pairs": (2,)}
    joint = analyze_translation_models([checkpoints["lstm"], checkpoints["g2"]], tmp_path / "joint",
                                       **options)
    for name in ("lstm", "g2"):
        analyze_translation_models([checkpoints[name]], tmp_path / name, **options)
    apart = [json.loads((tmp_path / name / "gate_histograms.json").read_text()) for name in ("lstm", "g2")]
    merged = merge_translation_analyses(apart)
    files = write_translation_analysis(merged, tmp_path / "merged")
    assert merged["histograms"] == json.loads(json.dumps(joint["histograms"]))
    assert merged["gate_words"] == json.loads(json.dumps(joint["gate_words"]))
    assert merged["models"]["g2"]["environment"]["torch_version"] == torch.__version__
    tables = [(folder / "gate_histograms.md").read_text().split("\n\n", 2)[2] for folder in
              (tmp_path / "joint", tmp_path / "merged")]
    assert tables[0] == tables[1] and "| g2 | 0 context update | forget |" in tables[1]
    assert Path(files[3]).stat().st_size > 10_000  # gate_words.png

    other = analyze_translation_models([checkpoints["g2"]], tmp_path / "other", corpus, max_pairs=20,
                                       pairs=(2,), names=["g2 again"])
    with pytest.raises(ConfigError, match="differ in pairs"):
        merge_translation_analyses([apart[0], json.loads(json.dumps(other))])
    with pytest.raises(ConfigError, match="name a model 'g2'"):
        merge_translation_analyses([apart[1], apart[1]])


def test_presets_load_and_iwslt14_is_the_papers_setting() -> None:
    from g2lstm.train import list_presets

    assert list_presets(PRESET_DIR) == ["iwslt14", "multi30k-cpu", "tiny"]
    configs = {name: load_config(MTConfig, name, preset_dir=PRESET_DIR) for name in list_presets(PRESET_DIR)}
    paper = configs["iwslt14"]
    assert (
        paper.bpe_size,
        paper.encoder_layers,
        paper.decoder_layers,
        paper.emb_size,
        paper.hidden_size,
    ) == (25000, 2, 2, 256, 256)
    assert (paper.batch_size, paper.optimizer, paper.clip, paper.max_len, paper.beam_size) == (
        32,
        "adadelta",
        2.0,
        64,
        5,
    )
    assert configs["multi30k-cpu"].dataset == "multi30k" and configs["multi30k-cpu"].clip == 2.0
    assert paper.decoder == configs["multi30k-cpu"].decoder == "conditional"


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    """A real `g2lstm mt train` process killed without warning, twice, resumes to an unbroken run's end."""
    corpus = write_corpus(tmp_path / "corpus", sizes=(80, 6, 6))

    def argv(run: Path) -> list[str]:
        settings = {**SMALL, "checkpoint_minutes": 1e-9, "log_interval": 1, "beam_size": 1}
        return [sys.executable, "-m", "g2lstm", "mt", "train", "--data", str(corpus), "--preset", "tiny",
                "--epochs", "3", "--out", str(run), "--quiet",
                *[item for key, value in settings.items() for item in ("--set", f"{key}={value}")]]

    assert_killed_runs_resume_bit_identical(argv, tmp_path)


def test_compress_targets_the_authors_blocks_by_default(trained: tuple[Path, dict[str, Path]], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The hidden-to-hidden matrices and the context-to-gate W_c, as the authors' load_params_v2."""
    _, checkpoints = trained
    out = tmp_path / "c.pt"
    code, _, err = run_main(capsys, "compress", str(checkpoints["g2"]), "--rank", "1", "--out", str(out))
    assert code == 0, err
    compressed = {path: entry["matrices"] for path, entry in load_checkpoint(out)["compression"].items()}
    assert compressed == {"bidirectional": ["weight_hh_l0", "weight_hh_l0_reverse"],
                          "encoder": ["weight_hh_l0"], "decoder.input_update": ["weight_hh_l0"],
                          "decoder.context_update": ["weight_ih_l0", "weight_hh_l0"],
                          "decoder.upper": ["weight_hh_l0"]}


def test_a_checkpoint_from_before_the_decoder_key_is_the_attention_on_top_model(
        trained: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus, checkpoints = trained
    old, data = str(checkpoints["old"]), ["--data", str(corpus)]
    model, config, _ = load_model(load_checkpoint(old))
    assert config.decoder == "attention-on-top" and model.decoder_gate_layers() == ["0", "1"]
    code, stdout, err = run_main(capsys, "mt", "eval", old, *data, "--json")
    assert code == 0, err
    code, _, err = run_main(capsys, "compress", "sweep", old, *data, "--out", str(tmp_path / "sweep"))
    assert code == 0, err
    blocks = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]["old"]["blocks"]
    assert all(".weight_hh" in name for name in blocks["recurrent"])
    code, _, err = run_main(capsys, "analyze", old, str(checkpoints["g2"]), *data, "--out",
                            str(tmp_path / "a"), "--max-pairs", "20")
    assert code == 2 and "different decoders" in err
    # an old run resumes with the decoder it was trained with; the preset's new default is refused by name
    run = tmp_path / "run"
    shutil.copytree(checkpoints["old"].parent, run)
    (run / "config.json").unlink()
    with pytest.raises(ConfigError, match="decoder 'attention-on-top' -> 'conditional'"):
        new_default = tiny_config(gate="g2", max_steps=6)
        mt_train.train_translation_model(new_default, run, corpus, show_progress=False)
    config = tiny_config(gate="g2", max_steps=6, decoder="attention-on-top")
    mt_train.train_translation_model(config, run, corpus, show_progress=False)
    assert json.loads((run / "config.json").read_text())["decoder"] == "attention-on-top"
