"""The shared training infrastructure: configs, checkpoints, RNG states, signals, run folders, DDP helpers."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

import g2lstm
from g2lstm.train import (
    CheckpointError,
    CheckpointPaths,
    ConfigError,
    RunLog,
    all_reduce_mean,
    any_rank,
    apply_overrides,
    broadcast_module,
    config_from_dict,
    config_to_dict,
    init_distributed,
    list_presets,
    load_checkpoint,
    load_config,
    parse_overrides,
    read_metrics,
    rng_state,
    save_checkpoint,
    seed_all,
    set_rng_state,
    stop_on_signals,
)
from g2lstm.train import run_dir as run_dir_module

# ---------------------------------------------------------------------------------------------- config


@dataclass
class Demo:
    name: str
    lr: float = 1.0
    steps: int = 10
    shuffle: bool = True
    gate: Literal["g2", "sharpened", "lstm"] = "g2"
    sizes: tuple[int, ...] = (4, 4)
    weights: list[float] = field(default_factory=lambda: [0.5])
    pair: tuple[int, float] = (1, 2.0)
    checkpoint: str | None = None
    limit: int | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@pytest.fixture
def presets(tmp_path: Path) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "tiny.toml").write_text('name = "tiny"\nlr = 20\nsizes = [8, 16]\ngate = "lstm"\n')
    (folder / "paper.toml").write_text('name = "paper"\nshuffle = false\npair = [3, 0.5]\n')
    return folder


def test_load_config_by_name_and_path(presets: Path) -> None:
    config = load_config(Demo, "tiny", preset_dir=presets)
    assert config == Demo(name="tiny", lr=20.0, sizes=(8, 16), gate="lstm")
    assert isinstance(config.lr, float)
    assert load_config(Demo, presets / "paper.toml") == Demo(name="paper", shuffle=False, pair=(3, 0.5))
    assert load_config(Demo, str(presets / "paper.toml"), {"lr": "2"}).lr == 2.0
    assert list_presets(presets) == ["paper", "tiny"]


def test_unknown_keys_are_rejected_with_the_valid_keys(presets: Path) -> None:
    (presets / "typo.toml").write_text('name = "x"\nlearning_rate = 3\n')
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'") as error:
        load_config(Demo, "typo", preset_dir=presets)
    message = str(error.value)
    assert str(presets / "typo.toml") in message
    valid = "name, lr, steps, shuffle, gate, sizes, weights, pair, checkpoint, limit"
    assert message.endswith(f"valid keys: {valid}")
    with pytest.raises(ConfigError, match=f"'step' in overrides.*did you mean 'steps'. valid keys: {valid}"):
        load_config(Demo, "tiny", {"step": "3"}, preset_dir=presets)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('steps = "ten"', "steps in preset .* must be an int, got 'ten'"),
        ("steps = 2.5", "steps .* must be an int, got 2.5"),
        ("steps = true", "steps .* must be an int, got True"),
        ("lr = true", "lr .* must be a float"),
        ("shuffle = 1", r"shuffle .* must be a bool \(true or false\), got 1"),
        ('gate = "gru"', "gate .* must be one of 'g2', 'sharpened', 'lstm', got 'gru'"),
        ('sizes = [1, "a"]', r"sizes\[1\] .* must be an int"),
        ("sizes = 3", "sizes .* must be a list of an int"),
        ("pair = [1, 2, 3]", "pair .* must have 2 items, got 3"),
        ("checkpoint = 3", "checkpoint .* must be a string or none"),
        ("steps = 99999999999999999999", "steps = 99999999999999999999 .* out of range"),
    ],
)
def test_wrong_types_in_a_preset(presets: Path, line: str, expected: str) -> None:
    path = presets / "bad.toml"
    path.write_text(f'name = "bad"\n{line}\n')
    with pytest.raises(ConfigError, match=expected):
        load_config(Demo, path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr", "30", 30.0),
        ("lr", "1e-3", 1e-3),
        ("lr", 3, 3.0),
        ("steps", "7", 7),
        ("shuffle", "false", False),
        ("shuffle", "True", True),
        ("shuffle", False, False),
        ("gate", "sharpened", "sharpened"),
        ("sizes", "1,2, 3", (1, 2, 3)),
        ("sizes", [5], (5,)),
        ("sizes", "", ()),
        ("weights", "0.1,0.2", [0.1, 0.2]),
        ("pair", "3,4.5", (3, 4.5)),
        ("checkpoint", "runs/a.pt", "runs/a.pt"),
        ("checkpoint", "none", None),
        ("limit", "5", 5),
        ("limit", None, None),
        ("name", "42", "42"),
    ],
)
def test_overrides_are_parsed_to_the_field_type(
    presets: Path, key: str, value: object, expected: object
) -> None:
    config = load_config(Demo, "tiny", {key: value}, preset_dir=presets)
    assert getattr(config, key) == expected
    assert type(getattr(config, key)) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("steps", "7.5", "steps in overrides must be an int, got '7.5'"),
        ("steps", 2.0, "must be an int, got 2.0"),
        ("lr", "fast", "must be a float"),
        ("lr", True, "must be a float"),
        ("shuffle", "yes", r"must be a bool \(true or false\)"),
        ("gate", "gru", "must be one of 'g2', 'sharpened', 'lstm'"),
        ("sizes", "1,x", r"sizes\[1\] in overrides must be an int"),
        ("pair", "1", "must have 2 items, got 1"),
        ("limit", "many", "must be an int or none"),
    ],
)
def test_bad_overrides_name_the_key_and_type(presets: Path, key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as error:
        load_config(Demo, "tiny", {key: value}, preset_dir=presets)
    assert str(error.value).endswith("fix the value in overrides")


def test_validate_missing_keys_and_bad_presets(presets: Path) -> None:
    with pytest.raises(ConfigError, match="invalid Demo from overrides: steps must be >= 1, got 0"):
        apply_overrides(Demo(name="x"), {"steps": "0"})
    (presets / "anonymous.toml").write_text("lr = 2\n")
    with pytest.raises(ConfigError, match="lacks the required keys name of Demo; .* --set name="):
        load_config(Demo, "anonymous", preset_dir=presets)
    with pytest.raises(ConfigError, match="unknown preset 'huge' .* presets: anonymous, paper, tiny"):
        load_config(Demo, "huge", preset_dir=presets)
    (presets / "broken.toml").write_text("name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(Demo, "broken", preset_dir=presets)
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_config(Demo, presets / "missing.toml")
    with pytest.raises(TypeError, match="expected a dataclass"):
        load_config(dict, "tiny", preset_dir=presets)  # type: ignore[arg-type]


def test_config_dict_round_trip_and_override_parsing() -> None:
    config = Demo(name="x", sizes=(1, 2), pair=(3, 0.5), checkpoint="a.pt")
    data = json.loads(json.dumps(config_to_dict(config)))
    assert data["sizes"] == [1, 2]
    assert config_from_dict(Demo, data) == config
    with pytest.raises(ConfigError, match="unknown key 'extra' in checkpoint last.pt"):
        config_from_dict(Demo, {**data, "extra": 1}, source="checkpoint last.pt")
    overrides = parse_overrides(["lr=30", " gate = lstm ", "sizes=1,2"])
    assert overrides == {"lr": "30", "gate": "lstm", "sizes": "1,2"}
    with pytest.raises(ConfigError, match="key=value, got 'lr'"):
        parse_overrides(["lr"])
    assert apply_overrides(config, parse_overrides(["lr=0.5"])) == Demo(**{**config.__dict__, "lr": 0.5})


# ---------------------------------------------------------------------------------------------- checkpoints


def _state() -> dict:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "best": float("inf"),
        "hidden": (torch.zeros(1, 2), None),
        "rng": rng_state(),
    }


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    paths = CheckpointPaths(tmp_path / "run")
    assert paths.last == tmp_path / "run" / "last.pt" and paths.best == tmp_path / "run" / "best.pt"
    state = _state()
    save_checkpoint(paths.last, state)
    loaded = load_checkpoint(paths.last)
    _assert_same(state, loaded)
    assert sorted(path.name for path in paths.run_dir.iterdir()) == ["last.pt"]
    raw = torch.load(paths.last, weights_only=True)
    assert raw["format"] == "g2lstm-checkpoint" and raw["version"] == 1


def test_a_torn_temporary_file_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last = CheckpointPaths(tmp_path).last
    save_checkpoint(last, {"step": 1})
    # A writer killed halfway leaves garbage under the temporary name; last.pt is untouched.
    (tmp_path / "last.pt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert load_checkpoint(last) == {"step": 1}

    # A write that fails midway keeps the previous checkpoint and cleans up after itself.
    def failing_save(obj: object, file: object) -> None:
        file.write(b"PK\x03\x04 partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(last, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(last) == {"step": 1}
    assert not (tmp_path / "last.pt.tmp").exists()
    save_checkpoint(last, {"step": 3})
    assert load_checkpoint(last) == {"step": 3}


def test_damaged_and_foreign_files_raise_checkpoint_error(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    data = good.read_bytes()
    cases = {
        "truncated.pt": (data[: len(data) // 2], "damaged or truncated"),
        "empty.pt": (b"", "damaged or truncated: the file is empty"),
        "text.pt": (b"step = 3\n", "not a g2lstm checkpoint"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=expected) as error:
            load_checkpoint(tmp_path / name)
        assert name in str(error.value)
    # One flipped bit in a tensor: torch.load alone would return the wrong number without a word.
    save_checkpoint(good, {"weight": torch.full((64,), 1.5)})
    data = bytearray(good.read_bytes())
    data[data.index(torch.full((4,), 1.5).numpy().tobytes()) + 1] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.pt is damaged or truncated: .* fails its CRC check"):
        load_checkpoint(tmp_path / "flipped.pt")
    torch.save({"weight": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt is not a g2lstm checkpoint: it lacks the format"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


class _Malicious:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "g2lstm-checkpoint", "version": 1, "payload": _Malicious(marker)}, evil)
    with pytest.raises(CheckpointError, match="refuses to load objects other than tensors and plain values"):
        load_checkpoint(evil)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(_Malicious(marker)))
    with pytest.raises(CheckpointError, match="not a g2lstm checkpoint"):
        load_checkpoint(legacy)
    assert not marker.exists()


def test_only_tensors_and_plain_values_are_saved(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    with pytest.raises(TypeError, match=r"state\['model'\]\['layer'\] is a torch.nn.modules.linear.Linear"):
        save_checkpoint(path, {"model": {"layer": nn.Linear(2, 2)}})
    with pytest.raises(TypeError, match=r"state\['data'\]\[1\] is a numpy.ndarray"):
        save_checkpoint(path, {"data": [1, np.zeros(2)]})
    with pytest.raises(TypeError, match=r"state\['x'\] has a key of type tuple"):
        save_checkpoint(path, {"x": {(1, 2): 3}})
    with pytest.raises(ValueError, match="reserved keys"):
        save_checkpoint(path, {"version": 2})
    assert not path.exists() and not (tmp_path / "last.pt.tmp").exists()


# ---------------------------------------------------------------------------------------------- rng


def _draws() -> tuple:
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    seed_all(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in both Python's and NumPy's generator
    np.random.standard_normal()
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = _draws()
    seed_all(4)
    assert _draws() != expected
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected
    with pytest.raises(ValueError, match=r"lacks the keys \['numpy'"):
        set_rng_state({"python": None, "torch": None, "cuda": []})


# ---------------------------------------------------------------------------------------------- signals


def _wait_for(condition, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


def test_signals_set_a_stop_request_and_handlers_are_restored() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        assert not stop.requested and stop.signal_name is None
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: stop.requested)
        assert stop.requested and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM only repeats the request
        time.sleep(0.01)
    assert {number: signal.getsignal(number) for number in before} == before

    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: stop.requested)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C quits at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert {number: signal.getsignal(number) for number in before} == before


# ---------------------------------------------------------------------------------------------- run folder


def test_run_log_files_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    log = RunLog(run)
    log.write_config(config_to_dict(Demo(name="x")), seed=5)
    assert json.loads((run / "config.json").read_text())["name"] == "x"
    environment = json.loads((run / "environment.json").read_text())
    assert environment["g2lstm_version"] == g2lstm.__version__
    assert environment["torch_version"] == torch.__version__ and environment["seed"] == 5
    assert environment["argv"] == sys.argv and "git_commit" in environment and "start_time" in environment
    for step in range(1, 6):
        log.log(step=step, loss=torch.tensor(1.0 / step), split="train")
        if step == 2:
            log.log(note="evaluated")  # no step: belongs to step 2
    with pytest.raises(TypeError, match="log value loss must be a number"):
        log.log(loss=torch.ones(2))
    records = read_metrics(run)
    assert [record.get("step") for record in records] == [1, 2, None, 3, 4, 5]
    assert records[1]["loss"] == 0.5 and all("time" in record for record in records)

    # A killed run leaves a torn line; the resumed run drops it and everything after its checkpoint, which
    # recorded 4 lines (steps 1, 2, the note, 3).
    assert log.lines == 6
    with open(run / "metrics.jsonl", "a") as file:
        file.write('{"step": 6, "lo')
    assert len(read_metrics(run)) == 6
    resumed = RunLog(run)
    assert resumed.lines == 6
    resumed.write_config(config_to_dict(Demo(name="y")), seed=5)
    resumed.truncate(4, step=3)
    resumed.log(step=4, loss=0.1)
    assert [record.get("step") for record in read_metrics(run)] == [1, 2, None, 3, 4] and resumed.lines == 5
    resumed.truncate(9, step=4)  # a count beyond the file keeps everything
    assert resumed.lines == 5
    with pytest.raises(TypeError, match="lines must be an int >= 0"):
        resumed.truncate(-1, step=0)
    environment = json.loads((run / "environment.json").read_text())
    assert [set(start) for start in environment["earlier_starts"]] == [set(environment) - {"earlier_starts"}]
    assert json.loads((run / "config.json").read_text())["name"] == "y"
    assert not list(run.glob("*.tmp"))

    quiet = RunLog(tmp_path / "rank1", enabled=False)
    quiet.write_config({"a": 1})
    quiet.log(step=1, loss=1.0)
    quiet.message("hello")
    quiet.truncate(0, step=0)
    assert not (tmp_path / "rank1").exists()


def test_run_log_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = RunLog(tmp_path)
    text = "stopped by SIGINT at step 3; resume with the same command"
    log.message(text)
    assert capsys.readouterr().out == text + "\n"
    line = (tmp_path / "log.txt").read_text()
    assert line[:4].isdigit() and line.endswith(f" {text}\n")


def test_run_log_writes_tensorboard_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeWriter:
        def __init__(self, log_dir: Path, purge_step: int | None) -> None:
            self.purge_step, self.scalars, self.closed = purge_step, [], False

        def add_scalar(self, tag: str, value: float, step: int | None) -> None:
            self.scalars.append((tag, value, step))

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(run_dir_module, "_open_tensorboard", FakeWriter)
    with RunLog(tmp_path) as log:
        log.truncate(0, step=9)
        log.log(step=10, loss=2.0, split="valid", done=False)
        writer = log._writer
    assert writer.purge_step == 10 and writer.scalars == [("loss", 2.0, 10)] and writer.closed


# ---------------------------------------------------------------------------------------------- distributed


def test_single_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    context = init_distributed("cpu")
    assert (context.enabled, context.rank, context.world_size, context.is_main) == (False, 0, 1, True)
    tensor = torch.tensor([2.0])
    assert all_reduce_mean(tensor) is tensor and any_rank(True) and not any_rank(False)
    assert context.gather_objects({"a": 1}) == [{"a": 1}]
    broadcast_module(nn.Linear(2, 2))


_WORKER = """
import json, sys, torch
from torch import nn
from g2lstm.train import all_reduce_mean, any_rank, broadcast_module, cleanup, init_distributed, rng_state

context = init_distributed("cpu")
torch.manual_seed(context.rank)
module = nn.Linear(3, 2)
broadcast_module(module)
result = {
    "context": [context.enabled, context.rank, context.world_size, context.is_main],
    "mean": all_reduce_mean(torch.tensor([context.rank + 1.0, 10.0])).tolist(),
    "any": [any_rank(context.rank == 1), any_rank(False)],
    "weight": module.weight.tolist(),
    "gathered": [
        [item["rank"], item["rng"]["torch"].tolist()]
        for item in context.gather_objects({"rank": context.rank, "rng": rng_state()})
    ],
}
cleanup()
with open(f"{sys.argv[1]}/rank{context.rank}.json", "w") as file:
    json.dump(result, file)
"""


@pytest.mark.slow
def test_two_process_gloo_helpers(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(tmp_path)]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for rank, result in enumerate(results):
        assert result["context"] == [True, rank, 2, rank == 0]
        assert result["mean"] == [1.5, 10.0]
        assert result["any"] == [True, False]
        assert [rank for rank, _ in result["gathered"]] == [0, 1]
    # Each rank's own generator state arrives at its index: rank r seeded with r.
    assert results[0]["gathered"] == results[1]["gathered"]
    assert results[0]["gathered"][0][1] != results[0]["gathered"][1][1]
    torch.manual_seed(0)
    assert results[0]["weight"] == results[1]["weight"] == nn.Linear(3, 2).weight.tolist()
