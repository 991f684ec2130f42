"""Runs that cannot be silently corrupted: resume checks, one writer per run folder, checkpoints checked
before use, environment faults and bad stdin as one-line errors, and the command line's error boundary."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_mt_cli import SMALL as MT_SMALL
from test_mt_cli import write_corpus as write_parallel_corpus

from g2lstm import G2LSTM
from g2lstm.cli import main
from g2lstm.errors import CheckpointError, ConfigError, G2LSTMError
from g2lstm.lm import train as lm_train
from g2lstm.mt import train as mt_train
from g2lstm.train import CheckpointPaths, TrainingInterrupted, load_checkpoint, save_checkpoint

WORDS = "the cat sat on a mat and a dog ran to the park while it rained".split()
LM_SMALL = ["--preset", "tiny", "--quiet", *(f"--set={setting}" for setting in (
    "emb_size=8", "hidden_size=8", "batch_size=2", "bptt=5", "eval_batch_size=2", "test_batch_size=2",
    "log_interval=1",
))]
MT_OPTIONS = ["--preset", "tiny", "--quiet", "--src", "de", "--tgt", "en",
              *(f"--set={key}={value}" for key, value in MT_SMALL.items())]


def write_lm_corpus(folder: Path, shift: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 60), ("valid", 12), ("test", 12)):
        text = "\n".join(
            " ".join(WORDS[(5 * i + j + shift) % len(WORDS)] for j in range(3 + i % 4)) for i in range(lines)
        )
        (folder / f"ptb.{split}.txt").write_text(text + "\n")
    return folder


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("g2lstm: error: "), err
    return lines[0]


def snapshot(run: Path) -> dict[str, bytes]:
    """The files of a run folder (but its lock file, which holds the PID of the last process to lock it)."""
    return {
        path.name: path.read_bytes()
        for path in sorted(run.iterdir())
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture(scope="module")
def lm_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lm_corpus(tmp_path_factory.mktemp("lm") / "corpus")


@pytest.fixture(scope="module")
def lm_run(lm_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A language-model run stopped after 2 steps, and the command that started it (without --out)."""
    command = ["lm", "train", "--data", str(lm_corpus), "--max-steps", "2", "--epochs", "3", *LM_SMALL]
    run = tmp_path_factory.mktemp("lm-run") / "run"
    assert main([*command, "--out", str(run)]) == 0
    return run, command


@pytest.fixture
def stopped_lm(lm_run: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A fresh copy of :func:`lm_run`, to resume."""
    run, command = lm_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, [*command, "--out", str(copy)]


# ------------------------------------------------------------------------------------ resume checks


@pytest.mark.parametrize(
    ("options", "differences"),
    [
        (["--gate", "lstm"], ["gate 'g2' -> 'lstm'"]),
        (["--set", "lr=1", "--set", "bptt=10"], ["bptt 5 -> 10", "lr 20.0 -> 1.0"]),
        (["--noise-p", "1.0", "--temperature", "0.1"], ["noise_p 0.2 -> 1.0", "temperature None -> 0.1"]),
        (["--seed", "5"], ["seed 141 -> 5"]),
        (["--set", "hidden_size=16"], ["hidden_size 8 -> 16"]),
        (["--unit", "char"], ["unit 'word' -> 'char'"]),
        (["--set", "batch_size=4"], ["batch_size 2 -> 4"]),
        (["--preset", "cpu"], ["dropout 0.2 -> 0.0", "nonmono 2 -> 1"]),
    ],
    ids=["gate", "lr-bptt", "noise", "seed", "hidden_size", "unit", "batch_size", "preset"],
)
def test_a_resume_with_other_settings_is_refused_listing_each_and_writes_nothing(
    stopped_lm: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    differences: list[str],
) -> None:
    run, command = stopped_lm
    before = snapshot(run)
    code, _, err = cli(capsys, *command, *options)
    assert code == 2
    message = one_line_error(err)
    for difference in differences:
        assert difference in message
    assert "may change on resume" in message and "another output folder" in message
    assert snapshot(run) == before  # config.json, environment.json, checkpoints and metrics as they were


@pytest.mark.parametrize("other", ["other words", "unknown words"])
def test_a_resume_on_other_data_is_refused(
    stopped_lm: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], other: str
) -> None:
    run, command = stopped_lm
    folder = write_lm_corpus(tmp_path / "other", shift=3)
    if other == "unknown words":
        (folder / "ptb.train.txt").write_text("zebra quagga okapi\n" * 40)
    before = snapshot(run)
    code, _, err = cli(capsys, *command, "--data", str(folder))
    assert code == 2
    assert f"trained on other data than --data {folder}" in one_line_error(err)
    assert snapshot(run) == before


def test_a_resume_may_change_the_resumable_keys_and_the_record_says_from_which_step(
    stopped_lm: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run, command = stopped_lm
    code, _, err = cli(capsys, *command, "--max-steps", "4", "--set", "log_interval=2")
    assert code == 0, err
    environment = json.loads((run / "environment.json").read_text())
    assert environment["resumed_at_step"] == 2
    assert environment["changed_on_resume"] == {"log_interval": [1, 2], "max_steps": [2, 4]}
    assert "resumed_at_step" not in environment["earlier_starts"][0]
    assert json.loads((run / "config.json").read_text())["max_steps"] == 4
    assert load_checkpoint(CheckpointPaths(run).last)["progress"]["step"] == 4


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A translation run stopped after 2 steps, and the command that started it (without --out)."""
    root = tmp_path_factory.mktemp("mt")
    corpus = write_parallel_corpus(root / "corpus")
    command = ["mt", "train", "--data", str(corpus), "--max-steps", "2", *MT_OPTIONS]
    assert main([*command, "--out", str(root / "run")]) == 0
    return root / "run", command


@pytest.mark.parametrize(
    ("options", "difference"),
    [(["--set", "batch_size=8"], "batch_size 16 -> 8"), (["--gate", "lstm"], "gate 'g2' -> 'lstm'"),
     (["--set", "max_len=10"], "max_len 64 -> 10"), (["--set", "bpe_size=500"], "bpe_size 200 -> 500")],
    ids=["batch_size", "gate", "max_len", "bpe_size"],
)
def test_a_translation_resume_with_other_settings_is_refused(
    mt_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str],
    difference: str,
) -> None:
    run, command = mt_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    code, _, err = cli(capsys, *command, "--out", str(copy), *options)
    assert code == 2
    assert difference in one_line_error(err)
    assert snapshot(copy) == before


# ------------------------------------------------------------------------------- one writer per folder

HOLD_LOCK = (
    "import sys, time\nfrom g2lstm.train import lock_run_folder\nwith lock_run_folder(sys.argv[1]):\n"
    "    print('locked', flush=True)\n    time.sleep(120)\n"
)


def test_a_second_writer_stops_at_once_naming_the_holder_and_a_killed_holder_never_blocks(
    stopped_lm: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run, command = stopped_lm
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        code, _, err = cli(capsys, *command)
        assert code == 2
        assert f"is being written by process {holder.pid}" in one_line_error(err)
        assert snapshot(run) == before
    finally:
        holder.kill()  # SIGKILL: the holder cannot release anything itself
        holder.wait()
    code, _, err = cli(capsys, *command)
    assert code == 0, err


# ------------------------------------------------------------------------------------ mt translate


def translate(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, checkpoint: Path,
              data: bytes) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    return cli(capsys, "mt", "translate", str(checkpoint), "--beam", "2")


@pytest.mark.parametrize(
    "data",
    [
        b"ein mann\x0cfrau\nzwei hunde\x1crennen\nende\n",
        "a\u2028b\nc\u0085d\ne\x1d\x1ef\n".encode(),
        b"ein hund\r\n\r\nein kind .",
        b"\n\n\n",
    ],
    ids=["form-feed-and-separators", "unicode-line-separators", "crlf-and-empty-lines", "empty-lines"],
)
def test_translate_gives_one_line_out_per_line_in(
    mt_run: tuple[Path, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
) -> None:
    code, out, err = translate(capsys, monkeypatch, CheckpointPaths(mt_run[0]).best, data)
    assert code == 0, err
    assert out.count("\n") == 3


def test_translate_refuses_invalid_utf8_naming_the_line(
    mt_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = translate(
        capsys, monkeypatch, CheckpointPaths(mt_run[0]).best, b"ein hund\nein \xff kind\n"
    )
    assert code == 2 and out == ""
    assert "standard input line 2 is not valid UTF-8" in one_line_error(err)


# ------------------------------------------------------------------------ structurally wrong checkpoints


def altered(source: Path, target: Path, change) -> Path:
    state = load_checkpoint(source)
    change(state)
    save_checkpoint(target, state)
    return target


def set_weight(name: str, value) -> object:
    return lambda state: state["model"].__setitem__(name, value(state["model"][name]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.pop("vocab"), "lacks vocab"),
        (
            set_weight("layers.0.weight_hh_l0", lambda w: w[:, :4].clone()),
            "layers.0.weight_hh_l0 is torch.float32 [32, 4]",
        ),
        (
            lambda state: state["config"].update(hidden_size=100_000),
            "weight layers.0.weight_ih_l0 is torch.float32",
        ),
        (set_weight("decoder.bias", lambda w: torch.full_like(w, float("nan"))), "decoder.bias holds NaN"),
        (set_weight("layers.1.bias_ih_l0", lambda w: w.long()), "layers.1.bias_ih_l0 is torch.int64"),
        (lambda state: state["model"].pop("embedding.weight"), "missing embedding.weight"),
        (lambda state: state.update(config=[1, 2]), "has no config dict"),
        (lambda state: state.update(vocab=["a", "a"]), "no usable vocabulary"),
    ],
    ids=["missing-key", "shape", "huge-config", "nan", "int64", "missing-weight", "config-type", "vocab"],
)
def test_lm_eval_refuses_a_checkpoint_whose_contents_do_not_fit(
    lm_run: tuple[Path, list[str]],
    lm_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change,
    message: str,
) -> None:
    path = altered(CheckpointPaths(lm_run[0]).best, tmp_path / "odd.pt", change)
    code, out, err = cli(capsys, "lm", "eval", str(path), "--data", str(lm_corpus), "--json")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert str(path) in line and message in line


def test_compressed_checkpoints_are_refused_where_training_continues(
    lm_run: tuple[Path, list[str]], lm_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, command = lm_run
    compressed = tmp_path / "compressed.pt"
    assert (
        cli(capsys, "compress", str(CheckpointPaths(run).best), "--rank", "2", "--out", str(compressed))[0]
        == 0
    )
    finetune = tmp_path / "finetune-run"
    finetune.mkdir()
    shutil.copy(compressed, CheckpointPaths(finetune).best)
    code, _, err = cli(capsys, "lm", "finetune", str(finetune), "--data", str(lm_corpus), "--quiet")
    assert code == 2 and "holds a compressed model" in one_line_error(err)
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.copy(compressed, CheckpointPaths(resumed).last)
    code, _, err = cli(capsys, *command, "--out", str(resumed))
    assert code == 2 and "holds a compressed model" in one_line_error(err)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.update(bpe=torch.tensor(list(b"not a sentencepiece model"), dtype=torch.uint8)),
         "its BPE model does not parse"),
        (lambda state: state.update(bpe=torch.zeros(3)), "its BPE model must be a 1-D uint8 tensor"),
        (lambda state: state["config"].update(beam_size=10**6), "beam_size must be <= 256"),
        (lambda state: state.pop("recipe"), "is not a translation model"),
    ],
    ids=["garbage-bpe", "bpe-type", "beam", "no-recipe"],
)
def test_translation_commands_refuse_a_checkpoint_whose_contents_do_not_fit(
    mt_run: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, change, message: str,
) -> None:
    path = altered(CheckpointPaths(mt_run[0]).best, tmp_path / "odd.pt", change)
    code, out, err = translate(capsys, monkeypatch, path, b"ein hund .\n")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert str(path) in line and message in line


@pytest.mark.parametrize(
    "change", [{"progress": {"epoch": "x", "bogus": 1}}, {"optimizer": "text"}, {"rng": [1, 2]}],
    ids=["progress", "optimizer", "rng"],
)
def test_an_unusable_training_state_in_last_pt_is_refused(
    stopped_lm: tuple[Path, list[str]], mt_run: tuple[Path, list[str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], change: dict,
) -> None:
    mt_copy = tmp_path / "mt-run"
    shutil.copytree(mt_run[0], mt_copy)
    for run, command in (stopped_lm, (mt_copy, [*mt_run[1], "--out", str(mt_copy)])):
        altered(CheckpointPaths(run).last, CheckpointPaths(run).last, lambda state: state.update(change))
        code, _, err = cli(capsys, *command)
        assert code == 2 and "holds a training state this run cannot continue from" in one_line_error(err)


# --------------------------------------------------------------------------------- environment faults


def test_out_naming_an_existing_file_is_one_line(lm_corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code, _, err = cli(
        capsys, "lm", "train", "--data", str(lm_corpus), "--max-steps", "1", "--out", str(target), *LM_SMALL
    )
    assert code == 2 and f"output folder {target} is an existing file" in one_line_error(err)
    assert target.read_text() == "keep me"


def test_a_read_only_folder_is_one_line_naming_the_path(
    lm_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Permissions do not stop root, so the read-only file system is simulated (benchmarks/robustness.py
    # mounts a real one where the machine allows it).
    from g2lstm.train import run_dir

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_dir.os, "open", read_only)
    code, _, err = cli(capsys, "lm", "train", "--data", str(lm_corpus), "--max-steps", "1",
                       "--out", str(tmp_path / "run"), *LM_SMALL)
    assert code == 2
    line = one_line_error(err)
    assert str(tmp_path / "run" / ".lock") in line and "Read-only file system" in line


def test_a_full_disk_is_one_line_naming_the_checkpoint_and_leaves_no_temporary_file(
    stopped_lm: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, command = stopped_lm
    from g2lstm.train import checkpoint

    real_save = torch.save

    def disk_full(state, file):  # what torch's writer raises when the disk fills up mid-file
        real_save({"part": torch.zeros(10)}, file)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    paths = CheckpointPaths(run)
    before = {path: path.read_bytes() for path in (paths.last, paths.best)}
    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    code, _, err = cli(capsys, *command, "--max-steps", "3")
    assert code == 2
    line = one_line_error(err)
    # the first write of the step: best.pt when validation improved, else last.pt
    named = [path for path in before if f"cannot write checkpoint {path}:" in line]
    assert named and "unexpected pos" in line
    assert {path: path.read_bytes() for path in before} == before
    assert not list(run.glob("*.tmp"))


def test_a_failed_kernel_build_under_g2lstm_cpu_kernel_compiled_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from g2lstm.kernels import compiled

    monkeypatch.setenv(compiled.KERNEL_ENV, "compiled")
    failed = {variant: OSError("c++: command not found") for variant in compiled.supported_variants()}
    monkeypatch.setattr(compiled, "_builds", failed)
    code, _, err = cli(capsys, "lm", "eval", str(tmp_path / "any.pt"))
    assert code == 2
    assert (
        "G2LSTM_CPU_KERNEL=compiled, but g2lstm's CPU kernel cannot be built here (c++: command not found)"
        in one_line_error(err)
    )
    monkeypatch.setenv(compiled.KERNEL_ENV, "fast")
    code, _, err = cli(capsys, "lm", "eval", str(tmp_path / "any.pt"))
    assert code == 2 and "G2LSTM_CPU_KERNEL must be one of" in one_line_error(err)


# ------------------------------------------------------------------------------------- edge values


@pytest.mark.parametrize("temperature", [1e-300, 1e-39])
def test_temperatures_whose_inverse_overflows_float32_are_refused_at_construction(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be at least 2.94e-39"):
        G2LSTM(3, 4, temperature=temperature)
    module = G2LSTM(3, 4, temperature=3e-39)  # the smallest accepted: 1/temperature is still finite
    with pytest.raises(ValueError, match="temperature must be at least"):
        module.temperature = temperature
    assert module.temperature == 3e-39


def test_the_command_line_refuses_such_a_temperature_by_name(
    lm_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "lm", "train", "--data", str(lm_corpus), "--temperature", "1e-300",
                       "--out", str(tmp_path / "run"), *LM_SMALL)
    assert code == 2 and "temperature must be at least" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def sigterm_on_first_call(function):
    calls = []

    def wrapped(*args, **kwargs):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the validation runs
        calls.append(1)
        return function(*args, **kwargs)

    return wrapped


def test_sigterm_during_the_last_epochs_validation_stops_a_language_model_run(
    lm_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_lm import tiny_config

    monkeypatch.setattr(lm_train, "evaluate", sigterm_on_first_call(lm_train.evaluate))
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at epoch 2"):
        lm_train.train_language_model(tiny_config(epochs=1), tmp_path / "run", lm_corpus, show_progress=False)
    assert load_checkpoint(CheckpointPaths(tmp_path / "run").last)["progress"]["epoch"] == 2
    assert not any(line.get("final") for line in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open()))


def test_sigterm_during_the_last_epochs_validation_stops_a_translation_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_mt_cli import tiny_config

    corpus = write_parallel_corpus(tmp_path / "corpus", sizes=(32, 4, 4))
    monkeypatch.setattr(mt_train, "evaluate_split", sigterm_on_first_call(mt_train.evaluate_split))
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM at epoch 2"):
        mt_train.train_translation_model(tiny_config(epochs=1), tmp_path / "run", corpus, show_progress=False)
    assert load_checkpoint(CheckpointPaths(tmp_path / "run").last)["progress"]["epoch"] == 2


# ------------------------------------------------------------------------------------ error boundary


def test_errors_of_the_hierarchy_are_one_line_and_derive_from_the_old_built_in_types() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(CheckpointError, ValueError)
    assert all(issubclass(cls, G2LSTMError) for cls in (ConfigError, CheckpointError))


def test_any_other_exception_is_a_bug_shown_with_its_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import g2lstm.cli as command_line

    def buggy(args) -> None:
        raise ValueError("an internal mistake")

    monkeypatch.setattr(command_line, "_lm_eval", buggy)
    code, _, err = cli(capsys, "lm", "eval", "x.pt")
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ValueError: an internal mistake" in err
    assert err.strip().splitlines()[-1].startswith("g2lstm: internal error: this is a bug in g2lstm")


def test_debug_shows_the_traceback_of_a_user_error_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "lm", "eval", str(tmp_path / "missing.pt"))
    assert code == 2 and "Traceback" not in err
    code, _, err = cli(capsys, "--debug", "lm", "eval", str(tmp_path / "missing.pt"))
    assert code == 2 and "Traceback (most recent call last)" in err
    assert (
        err.strip().splitlines()[-1] == f"g2lstm: error: checkpoint {tmp_path / 'missing.pt'} does not exist"
    )


@pytest.mark.parametrize(
    ("device", "message"), [("cuda:99", "device 'cuda:99'"), ("gpu", "is not a torch device")]
)
def test_a_device_this_machine_lacks_is_one_line(
    lm_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str, message: str
) -> None:
    code, _, err = cli(capsys, "lm", "train", "--data", str(lm_corpus), "--device", device,
                       "--out", str(tmp_path / "run"), *LM_SMALL)
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "run").exists()
    code, _, err = cli(capsys, "lm", "eval", str(tmp_path / "any.pt"), "--device", device)
    assert code == 2 and message in one_line_error(err)
