"""The language-model recipe on a tiny corpus: model, training, averaged SGD, finetune, cache, resume, gate
schedules."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from g2lstm import G2LSTM
from g2lstm.cli import main
from g2lstm.errors import ConfigError, TrainingDiverged
from g2lstm.lm import train as lm_train
from g2lstm.lm.config import PRESET_DIR, LMConfig
from g2lstm.lm.evaluate import CachePointer, cache_pointer_probability, evaluate
from g2lstm.lm.model import AWDLSTM, LanguageModelSpec
from g2lstm.train import CheckpointPaths, TrainingInterrupted, load_checkpoint, load_config, read_metrics

from killing import assert_killed_runs_resume_bit_identical

WORDS = "the cat sat on a mat and a dog ran to the park while it rained".split()
# the tiny preset made smaller still, as command-line overrides
TINY_SIZES = ["--set", "emb_size=16", "--set", "hidden_size=24", "--set", "batch_size=4", "--set", "bptt=12"]
# `g2lstm` under torchrun with two processes on this machine
TORCHRUN_TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "g2lstm"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PTB-layout corpus: random sentences over a 16-word vocabulary."""
    folder = tmp_path_factory.mktemp("corpus")
    generator = torch.Generator().manual_seed(0)
    for split, lines in (("train", 300), ("valid", 40), ("test", 40)):
        sentences = []
        for _ in range(lines):
            length = int(torch.randint(3, 12, (1,), generator=generator))
            ids = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
            sentences.append(" ".join(WORDS[i] for i in ids))
        (folder / f"ptb.{split}.txt").write_text("\n".join(sentences) + "\n")
    return folder


def tiny_config(**overrides: object) -> LMConfig:
    base = {"emb_size": 16, "hidden_size": 24, "batch_size": 4, "bptt": 12, "epochs": 2, "log_interval": 5,
            "eval_batch_size": 2, "test_batch_size": 2}
    return load_config(LMConfig, "tiny", {**base, **overrides}, preset_dir=PRESET_DIR)


def parameters_of(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(getattr(CheckpointPaths(run_dir), name))["model"]


@pytest.mark.parametrize("gate", ["lstm", "sharpened", "g2"])
def test_one_training_step_of_each_gate_type_lowers_nothing_to_nan(gate: str) -> None:
    torch.manual_seed(0)
    model = AWDLSTM(LanguageModelSpec(vocab_size=30, emb_size=8, hidden_size=12, num_layers=2, gate=gate))
    words = torch.randint(0, 30, (7, 3))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = model(words, model.init_hidden(3))
    assert result.output.shape == (7, 3, 8) and len(result.hidden) == 2
    loss = torch.nn.functional.cross_entropy(model.decode(result.output).view(-1, 30), words.view(-1))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.decoder.weight is model.embedding.weight  # tied


def test_model_is_deterministic_in_eval_and_noisy_in_training() -> None:
    """With every dropout off, the only randomness in training is the gates' noise."""
    no_dropout = dict(
        dropout=0.0, dropout_hidden=0.0, dropout_input=0.0, dropout_embedding=0.0, weight_dropout=0.0
    )
    model = AWDLSTM(LanguageModelSpec(vocab_size=20, emb_size=8, hidden_size=8, num_layers=2, **no_dropout))
    words = torch.randint(0, 20, (5, 2))
    model.eval()
    first, second = (model(words, model.init_hidden(2)).output for _ in range(2))
    assert torch.equal(first, second)
    model.train()
    first, second = (model(words, model.init_hidden(2)).output for _ in range(2))
    assert not torch.equal(first, second)
    for layer in model.layers:
        layer.gate = "lstm"  # no gate noise left: training mode is deterministic too
    first, second = (model(words, model.init_hidden(2)).output for _ in range(2))
    assert torch.equal(first, second)


def test_training_writes_metrics_checkpoints_and_resolved_config(corpus_dir: Path, tmp_path: Path) -> None:
    metrics = lm_train.train_language_model(tiny_config(), tmp_path, corpus_dir, show_progress=False)
    assert set(metrics) == {"valid_ppl", "test_ppl", "signature"}
    assert all(math.isfinite(metrics[split]) for split in ("valid_ppl", "test_ppl"))
    assert metrics["signature"].startswith("g2lstm:0.1.0|gate:g2|tau:0.9|p:0.2|eval:sigmoid|comp:none|data:")
    assert metrics["valid_ppl"] < len(WORDS) + 1  # better than uniform over the vocabulary
    paths = CheckpointPaths(tmp_path)
    assert paths.best.exists() and paths.last.exists()
    lines = read_metrics(tmp_path)
    assert [line["epoch"] for line in lines if "valid_loss" in line] == [1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["emb_size"] == 16
    assert load_checkpoint(paths.best)["vocab"][0] in WORDS + ["<eos>"]


def test_switch_to_averaged_sgd_when_validation_stops_improving(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0] + [3.0] * 20)
    real = lm_train.evaluate

    def fake_evaluate(model, data, bptt, cache=None):
        result = real(model, data, bptt, cache)
        return type(result)(loss=next(losses), tokens=result.tokens)

    monkeypatch.setattr(lm_train, "evaluate", fake_evaluate)
    lm_train.train_language_model(tiny_config(epochs=6, nonmono=2), tmp_path, corpus_dir, show_progress=False)
    averaging = [line["averaging"] for line in read_metrics(tmp_path) if "valid_loss" in line]
    # epoch 4: 2.6 is not above min([3.0]); epoch 5: 2.7 > min([3.0, 2.0]) -> averaged SGD from epoch 6 on
    assert averaging == [False, False, False, False, False, True]
    state = load_checkpoint(CheckpointPaths(tmp_path).last)
    assert state["progress"]["averaging"] is True
    assert any("ax" in entry for entry in state["optimizer"]["state"].values())


@pytest.mark.parametrize("stop_on_plateau, epochs_run", [(True, 8), (False, 10)])
def test_stop_on_plateau_ends_training_when_averaged_sgd_stalls(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_on_plateau: bool, epochs_run: int
) -> None:
    # nonmono 1: epoch 4 (2.6 > 2.0) switches to averaged SGD; epoch 8 (1.6 > 1.4) stalls again
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.5, 1.4, 1.45, 1.6, 1.7, 1.8] + [1.9] * 10)
    real = lm_train.evaluate

    def fake_evaluate(model, data, bptt, cache=None):
        result = real(model, data, bptt, cache)
        return type(result)(loss=next(losses), tokens=result.tokens)

    monkeypatch.setattr(lm_train, "evaluate", fake_evaluate)
    config = tiny_config(epochs=10, nonmono=1, stop_on_plateau=stop_on_plateau)
    lm_train.train_language_model(config, tmp_path, corpus_dir, show_progress=False)
    epochs = [line["epoch"] for line in read_metrics(tmp_path) if "valid_loss" in line and "epoch" in line]
    assert epochs == list(range(1, epochs_run + 1))


def test_finetune_starts_from_the_best_model_and_never_makes_it_worse(
    corpus_dir: Path, tmp_path: Path
) -> None:
    lm_train.train_language_model(tiny_config(), tmp_path, corpus_dir, show_progress=False)
    start = load_checkpoint(CheckpointPaths(tmp_path).best)["metrics"]["valid_loss"]
    metrics = lm_train.finetune(tmp_path, corpus_dir, epochs=2, show_progress=False)
    finetuned = load_checkpoint(CheckpointPaths(tmp_path / "finetune").best)
    assert finetuned["metrics"]["valid_loss"] <= start
    assert math.log(metrics["valid_ppl"]) == pytest.approx(finetuned["metrics"]["valid_loss"], rel=1e-6)
    assert finetuned["progress"]["averaging"] is True


def test_cache_pointer_matches_a_hand_computation() -> None:
    cache = CachePointer(window=2, theta=0.5, lambdah=0.25)
    vocab_probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    targets = torch.tensor([1, 2])
    hidden = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    history_hidden = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    history_words = torch.tensor([1, 2])
    p = cache_pointer_probability(vocab_probs, targets, hidden, history_hidden, history_words, cache)
    # position 0: M + 0 = 2 is not > window 2 -> the plain softmax probability of its target, word 1
    assert p[0].item() == pytest.approx(0.3)
    # position 1 attends over the two positions before it: history row 1 (followed by word 2, its target)
    # and chunk row 0 (followed by word 1); the pointer's mass on word 2 is the first one's attention
    scores = torch.tensor([0.5 * (1 * 2 + 2 * 0), 0.5 * (1 * 1 + 2 * 0)])
    pointer = torch.softmax(scores, 0)[0].item()
    assert 0.5 < pointer < 1.0
    assert p[1].item() == pytest.approx(0.25 * pointer + 0.75 * 0.3)


def test_cache_pointer_helps_on_repetitive_text() -> None:
    torch.manual_seed(0)
    model = AWDLSTM(LanguageModelSpec(vocab_size=10, emb_size=8, hidden_size=8, num_layers=1)).eval()
    stream = torch.arange(10).repeat(30).view(-1, 1)
    plain = evaluate(model, stream, bptt=10)
    cached = evaluate(model, stream, bptt=10, cache=CachePointer(window=20, theta=5.0, lambdah=0.5))
    assert cached.tokens == plain.tokens == stream.shape[0] - 1
    assert cached.loss < plain.loss


class StopAfter:
    """Stands in for the StopRequest of stop_on_signals: as if SIGINT arrived after ``checks`` checks."""

    def __init__(self, checks: int) -> None:
        self.checks, self.signal_name = checks, "SIGINT"

    @property
    def requested(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_resume_after_a_stop_continues_bit_identically(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(epochs=2, checkpoint_minutes=1000.0)
    lm_train.train_language_model(config, tmp_path / "straight", corpus_dir, show_progress=False)

    @contextmanager
    def stop_after_seven():
        yield StopAfter(7)

    monkeypatch.setattr(lm_train, "stop_on_signals", stop_after_seven)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted, match="run the same command again"):
        lm_train.train_language_model(config, interrupted, corpus_dir, show_progress=False)
    assert load_checkpoint(CheckpointPaths(interrupted).last)["progress"]["step"] == 8
    monkeypatch.undo()
    lm_train.train_language_model(config, interrupted, corpus_dir, show_progress=False)
    straight, resumed = parameters_of(tmp_path / "straight"), parameters_of(interrupted)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    def drop_time(lines: list[dict]) -> list[dict]:
        return [{k: v for k, v in line.items() if k not in ("time", "ms_per_step")} for line in lines]

    assert drop_time(read_metrics(tmp_path / "straight")) == drop_time(read_metrics(interrupted))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "g2lstm", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.slow
def test_cli_train_eval_and_finetune_with_json(corpus_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    small = ["--set", "emb_size=16", "--set", "hidden_size=24", "--set", "batch_size=4", "--set", "bptt=12"]
    done = run_cli("lm", "train", "--data", str(corpus_dir), "--preset", "tiny", "--gate", "g2",
                   "--epochs", "1", "--seed", "3", "--out", str(run), "--quiet", "--json", *small)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) == {"valid_ppl", "test_ppl", "signature"}
    evaluated = run_cli("lm", "eval", str(run / "best.pt"), "--data", str(corpus_dir), "--cache-pointer",
                        "--window", "20", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert {"valid_ppl", "test_ppl"} <= set(json.loads(evaluated.stdout.strip().splitlines()[-1]))
    tuned = run_cli(
        "lm", "finetune", str(run), "--data", str(corpus_dir), "--epochs", "1", "--quiet", "--json"
    )
    assert tuned.returncode == 0, tuned.stderr
    assert (run / "finetune" / "best.pt").exists()


def test_cli_character_level_reports_bits_per_character(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "chars"
    small = ["--set", "emb_size=16", "--set", "hidden_size=24", "--set", "batch_size=4", "--set", "bptt=20"]
    assert main(["lm", "train", "--data", str(corpus_dir), "--preset", "tiny", "--unit", "char",
                 "--max-steps", "5", "--out", str(run), "--quiet", *small]) == 0
    capsys.readouterr()
    assert main(["lm", "eval", str(run / "best.pt"), "--data", str(corpus_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["valid_bpc"] == pytest.approx(math.log2(result["valid_ppl"]))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "colour=blue"], "colour"),
        (["--set", "lr=fast"], "lr"),
        (["--preset", "nonexistent"], "nonexistent"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
    ],
)
def test_cli_user_mistakes_end_in_one_line_and_exit_code_2(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # a later --data or --preset replaces the earlier one
    argv = ["lm", "train", "--out", str(tmp_path / "run"), "--quiet", "--data", str(corpus_dir),
            "--preset", "tiny", *args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_two_process_training_with_torchrun_writes_one_checkpoint(corpus_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN_TWO, "lm", "train", "--data", str(corpus_dir), "--preset", "tiny",
               "--max-steps", "6",
               "--out", str(run), "--quiet", "--json", "--set=emb_size=16", "--set=hidden_size=24",
               "--set=batch_size=4"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert load_checkpoint(CheckpointPaths(run).last)["progress"]["step"] == 6
    assert len(load_checkpoint(CheckpointPaths(run).last)["rng"]) == 2  # one random state per process


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(corpus_dir: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "signalled"
    argv = [sys.executable, "-m", "g2lstm", "lm", "train", "--data", str(corpus_dir), "--preset", "tiny",
            "--epochs", "40", "--out", str(run), "--quiet", "--set", "emb_size=16", "--set", "hidden_size=24",
            "--set", "batch_size=4", "--set", "bptt=12", "--set", "log_interval=1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().count("\n") >= 3:
        assert time.monotonic() < deadline and process.poll() is None, "training did not start"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr and "run the same command again" in stderr and "Traceback" not in stderr
    stopped_at = load_checkpoint(CheckpointPaths(run).last)["progress"]["step"]
    assert stopped_at >= 3
    argv[argv.index("40")] = "2"  # the same run, asked to end after its second epoch
    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    steps = [line["step"] for line in read_metrics(run) if "train_loss" in line]
    assert steps == list(range(1, steps[-1] + 1)), "a resumed run repeats no step and loses none"
    assert steps[-1] > stopped_at
    assert any(line.get("final") for line in read_metrics(run))


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_ends_bit_identical(corpus_dir: Path, tmp_path: Path) -> None:
    """A real `g2lstm lm train` process killed without warning, twice, resumes to an unbroken run's end."""

    def argv(run: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "g2lstm",
            "lm",
            "train",
            "--data",
            str(corpus_dir),
            "--preset",
            "tiny",
            "--epochs",
            "3",
            "--out",
            str(run),
            "--quiet",
            *TINY_SIZES,
            "--set",
            "log_interval=1",
            "--set",
            "checkpoint_minutes=1e-9",
        ]

    assert_killed_runs_resume_bit_identical(argv, tmp_path)


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip_with_nan_on_steps_3_and_4(parameters, max_norm):
        calls["n"] += 1
        norm = real_clip(parameters, max_norm)
        return torch.tensor(float("nan")) if calls["n"] in (3, 4) else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_with_nan_on_steps_3_and_4)
    lm_train.train_language_model(tiny_config(epochs=1, max_bad_steps=3), tmp_path / "two", corpus_dir,
                                  show_progress=False)
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "non-finite loss or gradient, skipped (1 in a row)" in log and "(2 in a row)" in log
    assert "(3 in a row)" not in log
    taken = load_checkpoint(CheckpointPaths(tmp_path / "two").last)["progress"]
    assert taken["bad_steps"] == 0 and taken["step"] == calls["n"] - 2  # two steps skipped, not counted

    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda parameters, max_norm: torch.tensor(float("inf"))
    )
    with pytest.raises(TrainingDiverged, match="3 consecutive steps .* no checkpoint was saved before"):
        lm_train.train_language_model(tiny_config(epochs=1, max_bad_steps=3), tmp_path / "all", corpus_dir,
                                      show_progress=False)


def test_validation_uses_the_averaged_weights_and_training_goes_on_from_the_raw_ones(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real = lm_train.evaluate

    def recording_evaluate(model, data, bptt, cache=None):
        seen.append({name: value.detach().clone() for name, value in model.named_parameters()})
        return real(model, data, bptt, cache)

    monkeypatch.setattr(lm_train, "evaluate", recording_evaluate)
    config = tiny_config(epochs=1, asgd_epoch=1)  # averaged SGD from the first step
    lm_train.train_language_model(config, tmp_path, corpus_dir, show_progress=False)
    last = load_checkpoint(CheckpointPaths(tmp_path).last)
    order = [name for name, _ in AWDLSTM(config.model_spec(len(last["vocab"]))).named_parameters()]
    averages = {order[index]: entry["ax"] for index, entry in last["optimizer"]["state"].items()}
    validated = seen[0]  # the end-of-epoch validation (the final test reloads best.pt)
    assert all(torch.equal(validated[name], averages[name]) for name in order)
    assert not all(torch.equal(last["model"][name], averages[name]) for name in order)  # raw weights restored


def test_the_learning_rate_of_each_step_is_scaled_to_its_length_and_logged_as_applied(
    corpus_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(epochs=1, log_interval=1)
    lm_train.train_language_model(config, tmp_path, corpus_dir, show_progress=False)
    ratios = [line["lr"] * config.bptt / config.lr for line in read_metrics(tmp_path) if "train_loss" in line]
    assert all(
        ratio == pytest.approx(round(ratio)) and round(ratio) >= 1 for ratio in ratios
    )  # whole lengths
    assert len({round(ratio) for ratio in ratios}) > 1  # random lengths, so several learning rates


def test_the_run_log_is_closed_however_the_run_ends(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from g2lstm.train import run_dir

    writers = []

    class Writer:
        closed = False

        def add_scalar(self, *args) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(run_dir, "_open_tensorboard", lambda *args: writers.append(Writer()) or writers[-1])
    lm_train.train_language_model(tiny_config(epochs=1), tmp_path / "ends", corpus_dir, show_progress=False)
    monkeypatch.setattr(lm_train, "stop_on_signals", lambda: contextmanager(lambda: (yield StopAfter(3)))())
    with pytest.raises(TrainingInterrupted):
        lm_train.train_language_model(tiny_config(epochs=1, log_interval=1), tmp_path / "stops", corpus_dir,
                                      show_progress=False)
    assert len(writers) == 2 and all(writer.closed for writer in writers)


def test_a_rank_the_checkpoint_did_not_have_draws_its_own_noise() -> None:
    from g2lstm.train import rng_state

    torch.manual_seed(5)
    saved = [rng_state()]
    draws = []
    for rank in (0, 1, 2, 1):
        lm_train._restore_rank_rng(saved, rank, seed=141, step=30)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(draws[1], draws[3])  # the same rank, seed and step: the same draws


@pytest.mark.slow
def test_two_ranks_of_half_the_batch_train_as_one_process_with_the_whole_batch(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """Without random gates and dropout, DDP's averaged gradient of two halves is the whole batch's."""
    options = [
        "--data",
        str(corpus_dir),
        "--preset",
        "tiny",
        "--gate",
        "lstm",
        "--max-steps",
        "6",
        "--quiet",
        *TINY_SIZES,
        *(
            f"--set={name}=0"
            for name in ("dropout", "dropout_hidden", "dropout_input", "dropout_embedding", "weight_dropout")
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "g2lstm", "lm", "train", *options, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    two = subprocess.run(
        [
            *TORCHRUN_TWO,
            "lm",
            "train",
            *options,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = parameters_of(tmp_path / "one"), parameters_of(tmp_path / "two")
    assert all(torch.allclose(one[name], both[name], atol=1e-5) for name in one)


# ------------------------------------------------------------------ gate schedules


def test_gates_ramp_linearly_over_the_schedules_phase_and_hold_after_it() -> None:
    config = tiny_config(noise_p=0.2, noise_p_final=1.0, temperature_final=0.5, schedule_phase="finetune",
                         schedule_epochs=4, finetune_epochs=6)
    assert config.gates_at("train", 3) == (0.2, pytest.approx(0.9))  # g2's default τ before the phase
    ramp = [config.gates_at("finetune", epoch) for epoch in range(1, 7)]
    assert [p for p, _ in ramp] == pytest.approx([0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert [t for _, t in ramp] == pytest.approx([0.8, 0.7, 0.6, 0.5, 0.5, 0.5])
    assert [config.ramping("finetune", epoch) for epoch in range(1, 6)] == [True] * 3 + [False] * 2
    assert not config.ramping("train", 1)
    spec = config.model_spec(10)  # a checkpoint's model carries the gates the run ends with
    assert (spec.noise_p, spec.temperature) == (pytest.approx(1.0), pytest.approx(0.5))
    constant = tiny_config(noise_p=0.3)
    assert constant.gates_at("finetune", 2) == (0.3, None) and not constant.ramping("finetune", 1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"noise_p_final": 1.5}, "noise_p_final must lie in"),
        ({"temperature_final": 0.0}, "temperature"),
        ({"noise_p_final": 1.0, "schedule_epochs": 3, "finetune_epochs": 2}, r"must lie in \[1, 2\]"),
        ({"noise_p_final": 1.0, "schedule_phase": "train", "schedule_epochs": 0}, "schedule_epochs"),
    ],
)
def test_bad_schedules_are_refused_naming_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides)


def test_the_best_model_and_the_plateau_rules_count_only_epochs_at_the_final_gates(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validation gets worse while p rises (as it does with more noise): the ramp's epoch 1 would be the best
    # model and epoch 3 would start averaged SGD (nonmono 1) if the ramp counted
    losses = iter([1.0, 2.0, 3.0, 2.5] + [2.5] * 4)  # then the final evaluation's
    seen = []
    real = lm_train.evaluate

    def fake_evaluate(model, data, bptt, cache=None):
        seen.append([layer.noise_p for layer in model.modules() if isinstance(layer, G2LSTM)])
        result = real(model, data, bptt, cache)
        return type(result)(loss=next(losses), tokens=result.tokens)

    monkeypatch.setattr(lm_train, "evaluate", fake_evaluate)
    config = tiny_config(epochs=4, nonmono=1, noise_p=0.2, noise_p_final=0.8, schedule_phase="train",
                         schedule_epochs=3, finetune_epochs=1, max_steps=None)
    lm_train.train_language_model(config, tmp_path, corpus_dir, show_progress=False)
    assert [values[0] for values in seen[:4]] == pytest.approx([0.4, 0.6, 0.8, 0.8])
    assert all(len(set(values)) == 1 for values in seen)  # every layer the same
    records = [line for line in read_metrics(tmp_path) if "valid_loss" in line and "epoch" in line]
    assert [line["noise_p"] for line in records] == pytest.approx([0.4, 0.6, 0.8, 0.8])
    assert [line["averaging"] for line in records] == [False] * 4
    best = load_checkpoint(CheckpointPaths(tmp_path).best)
    assert best["progress"]["epoch"] == 4 and best["metrics"]["valid_loss"] == 2.5


def test_finetune_with_a_schedule_into_its_own_folder(
    corpus_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, tuned = tmp_path / "run", tmp_path / "p1"
    config = tiny_config(epochs=1, finetune_epochs=1)
    lm_train.train_language_model(config, run, corpus_dir, show_progress=False)
    common = ["lm", "finetune", str(run), "--data", str(corpus_dir), "--quiet", "--epochs", "2"]
    code = main([*common, "--out", str(tuned), "--set", "noise_p_final=1", "--set", "schedule_epochs=2"])
    assert code == 0, capsys.readouterr().err
    assert not (run / "finetune").exists()
    saved = json.loads((tuned / "config.json").read_text())
    assert saved["noise_p_final"] == 1.0 and saved["finetune_epochs"] == 2
    records = [line for line in read_metrics(tuned) if "valid_loss" in line and "epoch" in line]
    assert [line["noise_p"] for line in records] == pytest.approx([0.6, 1.0])
    # averaged SGD's average restarts with the final gates: it holds epoch 2's steps only
    averaged = load_checkpoint(CheckpointPaths(tuned).last)["optimizer"]["state"]
    assert {int(entry["step"]) for entry in averaged.values()} == {records[1]["step"] - records[0]["step"]}
    capsys.readouterr()
    code = main([*common, "--out", str(tmp_path / "other"), "--set", "hidden_size=8"])
    assert code == 2 and "architecture" in capsys.readouterr().err
