"""Fuzzing the command line and the module with bad input: every case must run or end in a clear error.

Ten classes of input, each a seeded stream of random cases:
- corpus files: empty, blank or very long lines, invalid UTF-8, NUL bytes, garbage, a missing split, a
  folder in place of a file (``g2lstm lm train`` on them);
- parallel corpora: the same damage, and line counts that differ between the two sides
  (``g2lstm mt train``);
- presets and overrides: unknown keys, wrong value types, out-of-range values, broken TOML, malformed
  ``--set`` (``g2lstm lm train``);
- checkpoints: truncated, bit-flipped, garbage, foreign, a pickle that tries to run code, missing
  (``g2lstm lm eval``, ``g2lstm compress``);
- module inputs: random shapes, dtypes, lengths, packed or padded, states given or not (``G2LSTM`` against
  ``nn.LSTM`` on the same weights, or the documented ValueError/TypeError);
- resumes with a changed option: a stopped run started again with one setting changed (any config key, the
  preset, the data), which must be refused naming the key unless the key may change on resume
  (``g2lstm lm train``, ``g2lstm mt train``);
- concurrent writers: a second command on a run folder whose lock a live process holds, one whose holder was
  killed, and two trainings started together on one folder;
- structurally wrong checkpoints: valid files whose contents do not fit (a missing entry, weights of another
  shape, dtype or NaN, a config claiming a huge model, a damaged vocabulary, BPE model, training state or
  compression config, a beam of a million, a compressed model where training continues) for every command
  that reads checkpoints;
- environment faults: a full disk and a read-only folder (real tmpfs mounts where the machine allows it,
  else simulated), an output path that is a file or lies under one, a CPU kernel that cannot be built
  (a compiler that fails) and a bad ``G2LSTM_CPU_KERNEL``;
- ``g2lstm mt translate`` input: lines with form feeds, ``\\x1c``-``\\x1e``, NEL, U+2028, lone CRs, CRLF,
  empty lines, NUL bytes, a BOM, very long lines, invalid UTF-8.

A command case is *clear* when it exits with code 2 and one line ``g2lstm: error: ...``, the form the
command line gives only to g2lstm's own errors (``g2lstm.errors``; any other exception is shown with its
traceback as a bug), or argparse's usage line; *ran* when it exits 0. Anything else is a *crash*: a
traceback, another exit code, code that ran from a checkpoint, or a case that ran although it had to be
refused (a *silent mix*: a resume that mixes two configurations, a corrupt checkpoint used as if whole, a
second writer let in) or was refused although it had to run (a stale lock, an allowed resume change), an
error that does not name what it is about, or translations out of line with their sources. A module case
is a crash when it raises anything but ValueError/TypeError with a message, or when its result differs from
``nn.LSTM``.

    python benchmarks/robustness.py --cases 60 --markdown results/robustness.md

Full disks and read-only folders are real tmpfs mounts when the process may mount (root with
CAP_SYS_ADMIN); the report says whether they were real or simulated.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from g2lstm import G2LSTM
from g2lstm.cli import main as cli_main
from g2lstm.lm.config import RESUMABLE_KEYS as LM_RESUMABLE
from g2lstm.mt.config import RESUMABLE_KEYS as MT_RESUMABLE
from g2lstm.train import load_checkpoint, save_checkpoint

WORDS = "the cat sat on a mat and a dog ran to the park while it rained".split()
SMALL = ["--quiet", *(f"--set={setting}" for setting in (
    "emb_size=8", "hidden_size=8", "batch_size=2", "bptt=5", "eval_batch_size=2", "test_batch_size=2",
    "log_interval=1",
))]


@dataclass
class Outcome:
    kind: str  # "ran", "clear" or "crash"
    detail: str = ""
    crash: str = ""  # for crashes: "traceback", "silent mix" or "other"
    output: str = ""  # what the command printed on stdout


@dataclass
class Tally:
    cases: int = 0
    ran: int = 0
    clear: int = 0
    crashes: list[str] = field(default_factory=list)
    tracebacks: int = 0
    silent_mixes: int = 0

    def add(self, description: str, outcome: Outcome) -> None:
        self.cases += 1
        if outcome.kind == "crash":
            self.crashes.append(f"{description}: [{outcome.crash}] {outcome.detail}")
            self.tracebacks += outcome.crash == "traceback"
            self.silent_mixes += outcome.crash == "silent mix"
        else:
            setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)


def crash(detail: str, kind: str = "other") -> Outcome:
    return Outcome("crash", detail[:400], kind)


def run_cli(argv: list[str], stdin: bytes | None = None) -> Outcome:
    """Run ``g2lstm ARGV`` in this process (``stdin``: the bytes on its standard input) and judge its exit."""
    stderr, stdout = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = cli_main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    except BaseException as error:  # noqa: BLE001 - anything escaping main() is what we count
        return crash(f"{type(error).__name__}: {error}", "traceback")
    finally:
        sys.stdin = saved_stdin
    return judge_exit(code, stderr.getvalue(), stdout.getvalue())


def judge_exit(code: int | str | None, stderr: str, stdout: str = "") -> Outcome:
    """Ran, clear or crash, from a command's exit code and what it printed."""
    message = stderr.strip()
    if "Traceback (most recent call last)" in message:
        return crash(f"exit {code}: {message[-300:]}", "traceback")
    if code == 0:
        return Outcome("ran", output=stdout)
    lines = [line for line in message.splitlines() if line.strip()]
    one_line_error = len(lines) == 1 and lines[0].startswith("g2lstm: error: ")
    usage_error = lines and lines[-1].startswith("g2lstm") and "error:" in lines[-1]
    if code == 2 and (one_line_error or usage_error):
        return Outcome("clear", lines[-1])
    return crash(f"exit {code}: {message[-300:]}")


def expect(outcome: Outcome, must: str | None = None, mentions: Sequence[str] = ()) -> Outcome:
    """``outcome``, judged against what the case demands: ``must`` be ``"ran"`` or ``"clear"`` (None: either),
    and a clear error must mention each of ``mentions``."""
    if outcome.kind == "crash":
        return outcome
    if must == "clear" and outcome.kind == "ran":
        return crash("ran although it had to be refused", "silent mix")
    if must == "ran" and outcome.kind == "clear":
        return crash(f"refused although it had to run: {outcome.detail}")
    missing = [text for text in mentions if outcome.kind == "clear" and text not in outcome.detail]
    if missing:
        return crash(f"the error does not name {missing}: {outcome.detail}")
    return outcome


def snapshot(folder: Path) -> dict[str, bytes]:
    """The files directly in ``folder`` and their contents (but the lock file, which holds the last writer's
    PID)."""
    return {
        path.name: path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != ".lock"
    }


def sentences(rng: random.Random, count: int) -> str:
    return "".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) + "\n" for _ in range(count)
    )


def write_corpus(folder: Path, rng: random.Random) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 60), ("valid", 12), ("test", 12)):
        (folder / f"ptb.{split}.txt").write_text(sentences(rng, count))


# ------------------------------------------------------------------------------------------- damaged files

SHARED_DAMAGE = ["empty", "blank lines", "long line", "invalid utf-8", "nul bytes", "garbage", "missing",
                 "folder", "crlf", "bom"]


def damage(path: Path, kind: str, rng: random.Random, words: list[str]) -> None:
    """Damage the text file ``path`` in the way ``kind`` names (``words``: the vocabulary of added text)."""
    text = path.read_bytes()
    lines = text.split(b"\n")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "blank lines":
        path.write_bytes(b"\n".join(line + b"\n" * rng.randint(0, 3) for line in lines))
    elif kind == "long line":  # replaces the first line, so that parallel files keep their line counts
        long_line = " ".join(rng.choice(words) for _ in range(rng.randint(200, 2 * 10**4))).encode()
        path.write_bytes(b"\n".join([long_line, *lines[1:]]))
    elif kind == "invalid utf-8":
        at = rng.randrange(len(text) + 1)
        path.write_bytes(text[:at] + bytes([rng.choice([0x80, 0xC3, 0xFF, 0xFE])]) + text[at:])
    elif kind == "nul bytes":
        at = rng.randrange(len(text) + 1)
        path.write_bytes(text[:at] + b"\x00" * rng.randint(1, 5) + text[at:])
    elif kind == "garbage":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 4000))))
    elif kind == "missing":
        path.unlink()
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "crlf":
        path.write_bytes(text.replace(b"\n", b"\r\n"))
    elif kind == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + text)
    elif kind == "whitespace only":
        path.write_bytes(b" \t\n" * rng.randint(1, 50))
    elif kind == "unicode words":
        path.write_text(text.decode() + "Größe café 東京 😀\n", encoding="utf-8")
    elif kind == "one word":
        path.write_bytes(b"word\n")
    elif kind == "one line fewer":
        path.write_bytes(b"\n".join(lines[1:]))
    elif kind == "extra line":
        path.write_bytes(text + " ".join(rng.choice(words) for _ in range(3)).encode() + b"\n")
    else:
        raise ValueError(f"unknown kind of damage {kind!r}")


# ------------------------------------------------------------------------------------------- corpus files

def corrupt_corpus(folder: Path, rng: random.Random) -> str:
    """Damage one split of a good corpus in one random way; return what was done."""
    split = rng.choice(["train", "valid", "test"])
    kind = rng.choice([*SHARED_DAMAGE, "whitespace only", "unicode words", "one word"])
    damage(folder / f"ptb.{split}.txt", kind, rng, WORDS)
    return f"{split}: {kind}"


def corpus_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    for index in itertools.count():
        folder = work / f"corpus{index}"
        write_corpus(folder, rng)
        description = corrupt_corpus(folder, rng)
        unit = rng.choice(["word", "word", "char"])
        argv = ["lm", "train", "--preset", "tiny", "--data", str(folder), "--max-steps", "1", "--unit", unit,
                "--out", str(work / f"run{index}"), *SMALL]
        yield f"{description} (--unit {unit})", lambda argv=argv: run_cli(argv)


# -------------------------------------------------------------------------------------- parallel corpora

GERMAN = "ein mann hund kind läuft schläft spielt im park haus garten und".split()
MT_SMALL = ["--quiet", *(f"--set={setting}" for setting in (
    "emb_size=8", "hidden_size=8", "batch_size=4", "eval_batch_size=8", "beam_size=2", "bpe_size=60",
    "log_interval=1",
))]


def write_parallel_corpus(folder: Path, rng: random.Random) -> None:
    """Short German-English pairs in the fairseq layout (train/valid/test.{de,en})."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 80), ("valid", 6), ("test", 6)):
        german = [" ".join(rng.choice(GERMAN) for _ in range(rng.randint(2, 8))) for _ in range(count)]
        english = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) for _ in range(count)]
        (folder / f"{split}.de").write_text("\n".join(german) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(english) + "\n", encoding="utf-8")


def corrupt_parallel_corpus(folder: Path, rng: random.Random) -> str:
    """Damage one file of a good parallel corpus in one random way; return what was done."""
    name = f"{rng.choice(['train', 'valid', 'test'])}.{rng.choice(['de', 'en'])}"
    kind = rng.choice([*SHARED_DAMAGE, "one line fewer", "extra line"])
    damage(folder / name, kind, rng, GERMAN)
    return f"{name}: {kind}"


def parallel_corpus_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    for index in itertools.count():
        folder = work / f"parallel{index}"
        write_parallel_corpus(folder, rng)
        description = corrupt_parallel_corpus(folder, rng)
        argv = ["mt", "train", "--preset", "tiny", "--data", str(folder), "--src", "de", "--tgt", "en",
                "--max-steps", "1", "--out", str(work / f"run{index}"), *MT_SMALL]
        yield description, lambda argv=argv: run_cli(argv)


# ----------------------------------------------------------------------------------------------- presets

BAD_VALUES = ['"text"', "[1, 2]", "{ a = 1 }", "-1", "0", "1e400", "nan", "inf", "-inf", "true", "1.5", '""',
              "99999999999999999999", "1000000000000"]
KEYS = [
    "emb_size",
    "hidden_size",
    "num_layers",
    "dropout",
    "weight_dropout",
    "batch_size",
    "bptt",
    "lr",
    "clip",
    "epochs",
    "nonmono",
    "gate",
    "temperature",
    "noise_p",
    "eval_gate",
    "unit",
    "tie_weights",
    "seed",
    "cache_lambda",
    "stop_on_plateau",
    "log_interval",
    "checkpoint_minutes",
]


def preset_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    data = work / "preset-corpus"
    write_corpus(data, rng)
    for index in itertools.count():
        run = work / f"preset-run{index}"
        kind = rng.choice(
            ["toml value", "unknown key", "broken toml", "set value", "set syntax", "preset name"]
        )
        extra: list[str] = []
        preset = "tiny"
        if kind in ("toml value", "unknown key", "broken toml"):
            preset_file = work / f"preset{index}.toml"
            if kind == "toml value":
                key, value = rng.choice(KEYS), rng.choice(BAD_VALUES)
                text, description = f"{key} = {value}\n", f"preset file {key} = {value}"
            elif kind == "unknown key":
                key = rng.choice(["hiden_size", "learning_rate", "Emb_size", "epoch", "x"])
                text, description = f"{key} = 3\n", f"preset file with unknown key {key}"
            else:
                text = rng.choice(
                    [
                        "emb_size = ",
                        "[section\n",
                        "emb_size = 8\nemb_size = 9\n",
                        "= 3",
                        "a b c",
                        "\x00\x01",
                        "lr = 1,\n",
                    ]
                )
                description = f"broken TOML {text!r}"
            preset_file.write_text(text)
            preset = str(preset_file)
        elif kind == "set value":
            key, value = (
                rng.choice(KEYS),
                rng.choice(["abc", "-1", "0", "nan", "inf", "", "1e400", "none", "2.5", "yes", "g3", "[1]"]),
            )
            extra, description = ["--set", f"{key}={value}"], f"--set {key}={value}"
        elif kind == "set syntax":
            text = rng.choice(["emb_size", "=8", "emb_size==8", "nokey=1", " emb_size=8", "emb size=8"])
            extra, description = ["--set", text], f"--set {text!r}"
        else:
            preset = rng.choice(["huge", "", "../cpu", "cpu.toml", "/nonexistent.toml", str(work)])
            description = f"--preset {preset!r}"
        argv = ["lm", "train", "--preset", preset, "--data", str(data), "--max-steps", "1", "--out", str(run),
                *SMALL, *extra]
        yield description, lambda argv=argv: run_cli(argv)


# ------------------------------------------------------------------------------------------- checkpoints

class _RunsCode:
    """A pickle payload that would create a marker file if unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def checkpoint_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    data = work / "checkpoint-corpus"
    write_corpus(data, rng)
    good_run = work / "checkpoint-run"
    outcome = run_cli(["lm", "train", "--preset", "tiny", "--data", str(data), "--max-steps", "2",
                       "--out", str(good_run), *SMALL])
    if outcome.kind != "ran":
        raise RuntimeError(f"could not train the model to damage: {outcome.detail}")
    good = (good_run / "best.pt").read_bytes()
    marker = work / "code-ran"
    for index in itertools.count():
        path = work / f"damaged{index}.pt"
        kind = rng.choice(
            [
                "truncated",
                "bit flips",
                "garbage",
                "empty",
                "foreign",
                "code",
                "missing",
                "folder",
                "zip of text",
            ]
        )
        if kind == "truncated":
            path.write_bytes(good[: rng.randrange(len(good))])
        elif kind == "bit flips":
            damaged = bytearray(good)
            for _ in range(rng.randint(1, 20)):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(damaged))
        elif kind == "garbage":
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000))))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "foreign":
            torch.save(
                rng.choice([{"weights": torch.ones(3)}, [1, 2, 3], torch.zeros(2), {"model": {}}]), path
            )
        elif kind == "code":
            with open(path, "wb") as file:
                pickle.dump({"model": _RunsCode(marker)}, file)
        elif kind == "folder":
            path.mkdir()
        elif kind == "zip of text":
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("archive/data.pkl", "not a pickle")
        command = rng.choice(["eval", "compress", "finetune"])
        if command == "eval":
            argv = ["lm", "eval", str(path), "--data", str(data), "--json"]
        elif command == "compress":
            argv = ["compress", str(path), "--rank", "2", "--out", str(work / f"compressed{index}.pt")]
        else:
            run = work / f"finetune{index}"
            run.mkdir()
            if path.exists() and path.is_file():
                (run / "best.pt").write_bytes(path.read_bytes())
            argv = ["lm", "finetune", str(run), "--data", str(data), "--epochs", "1", "--quiet"]

        def attempt(argv: list[str] = argv) -> Outcome:
            result = run_cli(argv)
            if marker.exists():
                marker.unlink()
                return Outcome("crash", "unpickling ran code from the checkpoint")
            return result

        yield f"{kind} checkpoint, g2lstm {command}", attempt


# ------------------------------------------------------------------------------------------- module input

class ModuleCase(NamedTuple):
    """One random call of a G2LSTM, and of the nn.LSTM it was converted from."""

    input_size: int
    hidden: int
    layers: int
    bidirectional: bool
    batch_first: bool
    dtype: torch.dtype
    input_dtype: torch.dtype
    steps: int
    batch: int
    feature: int
    unbatched: bool
    packed: bool
    state: str  # "none", "good" or "bad shape"


def module_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    del work
    for _ in itertools.count():
        input_size = rng.randint(1, 6)
        dtype = rng.choice([torch.float32, torch.float64])
        unbatched = rng.random() < 0.2
        case = ModuleCase(
            input_size=input_size, hidden=rng.randint(1, 6), layers=rng.randint(1, 3),
            bidirectional=rng.random() < 0.5, batch_first=rng.random() < 0.5, dtype=dtype,
            input_dtype=rng.choice([dtype, dtype, torch.float16, torch.int64]), steps=rng.randint(0, 5),
            batch=rng.randint(0, 4),
            feature=input_size if rng.random() < 0.8 else input_size + rng.choice([-1, 1]),
            unbatched=unbatched, packed=not unbatched and rng.random() < 0.3,
            state=rng.choice(["none", "good", "bad shape"]),
        )
        description = " ".join(f"{name} {value}" for name, value in case._asdict().items())
        yield description, functools.partial(module_attempt, case, rng)


def module_attempt(case: ModuleCase, rng: random.Random) -> Outcome:
    """Call the G2LSTM of ``case`` and judge it against nn.LSTM (``rng`` draws packed lengths)."""
    torch.manual_seed(0)
    reference = torch.nn.LSTM(case.input_size, case.hidden, case.layers, batch_first=case.batch_first,
                              bidirectional=case.bidirectional).to(case.dtype)
    module = G2LSTM.from_lstm(reference, gate="g2").eval()
    if case.unbatched:
        shape = (case.steps, case.feature)
    else:
        batch, steps = (case.batch, case.steps) if case.batch_first else (case.steps, case.batch)
        shape = (batch, steps, case.feature)
    x = torch.randn(shape, dtype=torch.float64).to(case.input_dtype)
    directions = 2 if case.bidirectional else 1
    hx = None
    if case.state != "none":
        rows = case.layers * directions
        state_shape = (rows, case.hidden) if case.unbatched else (rows, case.batch, case.hidden)
        if case.state == "bad shape":
            state_shape = (*state_shape[:-1], case.hidden + 1)
        hx = (torch.randn(state_shape, dtype=case.dtype), torch.randn(state_shape, dtype=case.dtype))
    if case.packed and x.numel() > 0:
        lengths = sorted((rng.randint(1, case.steps) for _ in range(case.batch)), reverse=True)
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=case.batch_first)
    try:
        output, (h, c) = module(x, hx)
    except (ValueError, TypeError) as error:
        return Outcome("clear") if str(error) else crash(f"{type(error).__name__} without text")
    except Exception as error:  # noqa: BLE001 - anything else is what we count
        return crash(f"{type(error).__name__}: {error}", "traceback")
    try:
        expected, (expected_h, expected_c) = reference(x, hx)
    except Exception as error:  # noqa: BLE001
        return crash(f"G2LSTM accepted what nn.LSTM refuses ({type(error).__name__}: {error})", "silent mix")
    is_packed = isinstance(output, torch.nn.utils.rnn.PackedSequence)
    got, want = (output.data, expected.data) if is_packed else (output, expected)
    tolerance = 1e-10 if case.dtype == torch.float64 else 1e-5
    pairs = ((got, want), (h, expected_h), (c, expected_c))
    if not all(torch.allclose(a, b, atol=tolerance) for a, b in pairs):
        return crash("differs from nn.LSTM", "silent mix")
    return Outcome("ran")


# ------------------------------------------------------------------------------- resume with a changed option

LM_BASE = ["lm", "train", "--preset", "tiny", "--max-steps", "2", *SMALL]
MT_BASE = ["mt", "train", "--preset", "tiny", "--src", "de", "--tgt", "en", "--max-steps", "2", *MT_SMALL]


def train_base_runs(work: Path, rng: random.Random) -> dict[str, tuple[Path, list[str]]]:
    """A stopped language-model run and a stopped translation run, each with the command that started it."""
    write_corpus(work / "corpus", rng)
    write_parallel_corpus(work / "parallel", rng)
    runs = {}
    for recipe, base, data in (("lm", LM_BASE, work / "corpus"), ("mt", MT_BASE, work / "parallel")):
        command = [*base, "--data", str(data)]
        outcome = run_cli([*command, "--out", str(work / f"{recipe}-base")])
        if outcome.kind != "ran":
            raise RuntimeError(f"could not train the {recipe} run to work on: {outcome.detail}")
        runs[recipe] = work / f"{recipe}-base", command
    return runs


def changed_value(value: Any, key: str, rng: random.Random) -> str | None:
    """A valid value other than ``value`` for config key ``key``, as ``--set`` writes it; None if none."""
    choices = {"gate": ["g2", "sharpened", "lstm"], "eval_gate": ["sigmoid", "tempered", "hard", "none"],
               "unit": ["word", "char"], "optimizer": ["adadelta", "adam"], "early_stop": ["bleu", "loss"],
               "src": ["de", "fr"], "tgt": ["en", "cs"], "dataset": ["multi30k", "iwslt14"]}
    if key == "device":
        return None  # this machine has one device
    if key in choices:
        return rng.choice([choice for choice in choices[key] if choice != str(value).lower()])
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int):
        return str(value + rng.randint(1, 3))
    if isinstance(value, float):
        return repr(round(value * rng.choice([0.5, 1.5]), 6)) if value else "0.1"
    if value is None:
        return {"temperature": "0.5", "asgd_epoch": "1", "max_steps": "3"}.get(key)
    return None


def resume_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    runs = train_base_runs(work, rng)
    other = work / "other-corpus"
    write_corpus(other, random.Random(rng.random()))
    for index in itertools.count():
        recipe = rng.choice(["lm", "lm", "mt"])
        base, command = runs[recipe]
        resumable = LM_RESUMABLE if recipe == "lm" else MT_RESUMABLE
        config = json.loads((base / "config.json").read_text())
        kind = rng.choice(["key", "key", "key", "key", "preset", "data"])
        if kind == "preset":
            change, key = ["--preset", "cpu" if recipe == "lm" else "multi30k-cpu"], None
        elif kind == "data" and recipe == "lm":
            change, key = ["--data", str(other)], None
        else:
            key = rng.choice([k for k in config if changed_value(config[k], k, rng) is not None])
            change = ["--set", f"{key}={changed_value(config[key], key, rng)}"]
        allowed = key in resumable

        def attempt(recipe: str = recipe, change: list[str] = change, key: str | None = key,
                    allowed: bool = allowed, index: int = index) -> Outcome:
            run = work / f"resume{index}"
            shutil.copytree(runs[recipe][0], run)
            before = snapshot(run)
            outcome = run_cli([*runs[recipe][1], "--out", str(run), *change])
            if allowed:
                if outcome.kind == "ran":
                    recorded = json.loads((run / "environment.json").read_text()).get("changed_on_resume", {})
                    if key not in recorded:
                        return crash(
                            f"{key} changed on resume but environment.json records {recorded}", "silent mix"
                        )
                return expect(outcome, "ran")
            if outcome.kind == "ran":
                return crash(f"resumed with {change} although the run was started otherwise", "silent mix")
            if outcome.kind == "clear" and snapshot(run) != before:
                return crash("refused the resume but changed the run folder first", "silent mix")
            return expect(outcome, "clear", [key] if key else [str(run)])

        yield f"{recipe} resume with {' '.join(change)}{' (may change)' if allowed else ''}", attempt


# ------------------------------------------------------------------------------------ concurrent writers

HOLD_LOCK = (
    "import sys, time\nfrom g2lstm.train import lock_run_folder\nwith lock_run_folder(sys.argv[1]):\n"
    "    print('locked', flush=True)\n    time.sleep(600)\n"
)


def hold_lock(folder: Path) -> subprocess.Popen:
    """A process holding the lock of ``folder`` until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True
    )
    if holder.stdout.readline().strip() != "locked":
        raise RuntimeError(f"the lock holder for {folder} did not start")
    return holder


def writer_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    runs = train_base_runs(work, rng)
    for index in itertools.count():
        recipe = rng.choice(["lm", "lm", "mt"])
        kind = rng.choice(["live holder", "live holder", "killed holder", "killed holder", "two trainings"])
        finetune = recipe == "lm" and kind != "two trainings" and rng.random() < 0.3

        def attempt(
            recipe: str = recipe, kind: str = kind, finetune: bool = finetune, index: int = index
        ) -> Outcome:
            base, command = runs[recipe]
            run = work / f"writers{index}"
            shutil.copytree(base, run)
            folder = run / "finetune" if finetune else run
            argv = (["lm", "finetune", str(run), "--data", command[command.index("--data") + 1], "--quiet"]
                    if finetune else [*command, "--out", str(run), "--max-steps", "3"])
            if kind == "two trainings":
                return two_trainings(
                    [*command, "--out", str(run), "--max-steps", "40"], run, rng.uniform(0, 1)
                )
            holder = hold_lock(folder)
            try:
                if kind == "killed holder":
                    holder.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel drops it
                    holder.wait()
                    return expect(run_cli(argv), "ran")
                before = snapshot(folder)
                outcome = run_cli(argv)
                if outcome.kind == "clear" and snapshot(folder) != before:
                    return crash("refused the second writer but wrote to the folder first", "silent mix")
                return expect(outcome, "clear", [f"process {holder.pid}"])
            finally:
                holder.kill()
                holder.wait()

        yield f"{kind}: {'lm finetune' if finetune else recipe + ' train'} on a folder in use", attempt


def two_trainings(argv: list[str], run: Path, delay: float) -> Outcome:
    """Two ``g2lstm`` processes on one run folder, the second ``delay`` seconds later: one must stop at once
    naming the other, and the folder must hold one clean run."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "g2lstm", *argv]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    time.sleep(delay)
    second = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    outcomes = [finish(process, " ".join(argv)) for process in (first, second)]
    crashes = [outcome for outcome in outcomes if outcome.kind == "crash"]
    if crashes:
        return crashes[0]
    steps = [line["step"] for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "train_loss" in line]
    if steps != sorted(set(steps)):
        return crash(f"metrics.jsonl holds steps twice or out of order: {steps}", "silent mix")
    load_checkpoint(run / "last.pt")
    refused = [outcome for outcome in outcomes if outcome.kind == "clear"]
    if refused and "is being written by process" not in refused[0].detail:
        return crash(f"the second writer was refused for another reason: {refused[0].detail}")
    return refused[0] if refused else outcomes[0]  # both ran: one after the other, which is fine


# ---------------------------------------------------------------------------- structurally wrong checkpoints

def nudge_weight(rng: random.Random, how: str) -> Callable[[dict], None]:
    """A change of one random weight of a checkpoint: ``how`` is "shape", "dtype", "nan" or "missing"."""

    def change(state: dict) -> None:
        weights = state["model"]
        name = rng.choice(sorted(weights))
        if how == "missing":
            del weights[name]
        elif how == "shape":
            weights[name] = torch.zeros(
                *[size + rng.choice([-1, 1]) if size > 1 else 2 for size in weights[name].shape]
            )
        elif how == "dtype":
            weights[name] = weights[name].to(
                rng.choice([torch.int64, torch.float64, torch.float16, torch.int8])
            )
        else:
            value = weights[name].clone()
            value.view(-1)[rng.randrange(value.numel())] = rng.choice([float("nan"), float("inf")])
            weights[name] = value

    return change


def structure_change(rng: random.Random, recipe: str, use: str) -> tuple[str, Callable[[dict], None]]:
    """A random way to make a checkpoint's contents wrong, and its description."""
    required = {"lm": ["config", "vocab", "model"], "mt": ["recipe", "config", "bpe", "model"]}[recipe]
    if use == "resume":
        required = required + (["optimizer", "progress", "rng"] + (["hidden", "lengths_rng"] if recipe == "lm"
                                                                   else ["metrics_lines"]))
    kinds = ["missing entry", "weight shape", "weight dtype", "non-finite weight", "missing weight",
             "huge config", "config value", "config type", "compression config"]
    kinds += ["vocabulary"] if recipe == "lm" else ["bpe model", "beam"]
    kinds += ["training state"] if use == "resume" else []
    kind = rng.choice(kinds)
    if kind == "missing entry":
        key = rng.choice(required)
        return f"{kind} {key}", lambda state: state.pop(key)
    if kind.startswith("weight") or kind in ("non-finite weight", "missing weight"):
        how = {"weight shape": "shape", "weight dtype": "dtype", "non-finite weight": "nan",
               "missing weight": "missing"}[kind]
        return kind, nudge_weight(rng, how)
    if kind == "huge config":
        key = rng.choice(
            ["hidden_size", "emb_size"] + (["num_layers"] if recipe == "lm" else ["decoder_layers"])
        )
        size = rng.choice([20_000, 10**6])
        return f"{kind} {key}={size}", lambda state: state["config"].__setitem__(key, size)
    if kind == "config value":
        key, value = rng.choice(
            [
                ("dropout", 7.0),
                ("gate", "gumbel"),
                ("noise_p", -1.0),
                ("temperature", 1e-300),
                ("bogus_key", 1),
                ("batch_size", 0),
            ]
        )
        return f"{kind} {key}={value!r}", lambda state: state["config"].__setitem__(key, value)
    if kind == "config type":
        value = rng.choice([[1, 2], "text", None, 3])
        return f"{kind} {value!r}", lambda state: state.__setitem__("config", value)
    if kind == "compression config":
        value = rng.choice([{"layers.0": {"round": 0.1}}, {"nowhere": {}}, "text", {"": None}])
        return f"{kind} {value!r}", lambda state: state.__setitem__("compression", value)
    if kind == "vocabulary":
        value = rng.choice([["a", "a", "<eos>"], ["a", "b"], "text", [1, 2, "<eos>"], []])
        return f"{kind} {value!r}", lambda state: state.__setitem__("vocab", value)
    if kind == "bpe model":
        value = rng.choice(
            [
                torch.tensor(list(b"garbage"), dtype=torch.uint8),
                torch.zeros(0, dtype=torch.uint8),
                torch.zeros(5),
                torch.randint(0, 256, (500,), dtype=torch.uint8),
            ]
        )
        return f"{kind} {value.dtype} {list(value.shape)}", lambda state: state.__setitem__("bpe", value)
    if kind == "beam":
        value = rng.choice([10**6, 0, -3])
        return f"beam_size={value}", lambda state: state["config"].__setitem__("beam_size", value)
    key = rng.choice(["progress", "optimizer", "rng"] + (["hidden", "lengths_rng"] if recipe == "lm" else []))
    value = rng.choice([{"epoch": "x"}, [1, 2], {"state": {}, "param_groups": [{"params": [0]}]}, "text",
                        [(torch.zeros(3), torch.zeros(3))]])
    return f"{kind}: {key}={str(value)[:40]}", lambda state: state.__setitem__(key, value)


def structure_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    runs = train_base_runs(work, rng)
    compressed = {}
    for recipe, (base, _) in runs.items():
        compressed[recipe] = work / f"{recipe}-compressed.pt"
        if (
            run_cli(["compress", str(base / "best.pt"), "--rank", "2", "--out", str(compressed[recipe])]).kind
            != "ran"
        ):
            raise RuntimeError(f"could not compress the {recipe} checkpoint")
    for index in itertools.count():
        recipe = rng.choice(["lm", "mt"])
        base = runs[recipe][0]
        uses = {"lm": ["lm eval", "compress", "lm finetune", "resume", "analyze"],
                "mt": ["mt translate", "mt eval", "compress", "resume"]}[recipe]
        use = rng.choice(uses)
        if rng.random() < 0.15 and use in ("lm finetune", "resume"):
            description, source, change = "a compressed model", compressed[recipe], None
        else:
            description, change = structure_change(rng, recipe, use)
            source = base / ("last.pt" if use == "resume" else "best.pt")

        def attempt(recipe: str = recipe, use: str = use, source: Path = source, change=change,
                    index: int = index) -> Outcome:
            base, command = runs[recipe]
            data = command[command.index("--data") + 1]
            run = work / f"structure{index}"
            shutil.copytree(base, run)
            path = run / ("last.pt" if use == "resume" else "best.pt")
            state = load_checkpoint(source)
            if change is not None:
                change(state)
            save_checkpoint(path, state)
            argv = {"lm eval": ["lm", "eval", str(path), "--data", data, "--json"],
                    "compress": ["compress", str(path), "--rank", "2", "--out", str(run / "small.pt")],
                    "lm finetune": ["lm", "finetune", str(run), "--data", data, "--epochs", "1", "--quiet"],
                    "resume": [*command, "--out", str(run), "--max-steps", "3"],
                    "analyze": ["analyze", str(path), "--data", data, "--out", str(run / "analysis"),
                                "--max-tokens", "40", "--sentence", " ".join(WORDS[:6])],
                    "mt eval": ["mt", "eval", str(path), "--data", data, "--beam", "2"],
                    "mt translate": ["mt", "translate", str(path), "--beam", "2"]}[use]
            outcome = run_cli(argv, stdin=b"ein mann und ein hund\n" if use == "mt translate" else None)
            return expect(outcome, "clear", [str(path)])

        yield f"{description}, g2lstm {use} ({recipe})", attempt


# ------------------------------------------------------------------------------------- environment faults

def mount_tmpfs(folder: Path, size: str, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size`` at ``folder`` (read-only when asked); False when this process may not."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def bind_read_only(folder: Path) -> bool:
    """Make ``folder`` read-only by bind-mounting it over itself; False when this process may not."""
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
        return False
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode != 0:
        unmount(folder)
        return False
    return True


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True, check=True)


@contextlib.contextmanager
def simulated_fault(error_number: int) -> Iterator[None]:
    """Opening any file for writing fails with ``error_number`` (for machines that may not mount)."""
    import builtins

    real_open, real_os_open = builtins.open, os.open

    def failing_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+"):
            raise OSError(error_number, os.strerror(error_number), str(file))
        return real_open(file, mode, *args, **kwargs)

    def failing_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(error_number, os.strerror(error_number), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open, os.open = failing_open, failing_os_open
    try:
        yield
    finally:
        builtins.open, os.open = real_open, real_os_open


def environment_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    runs = train_base_runs(work, rng)
    full, read_only = work / "full-disk", work / "read-only"
    real_full = mount_tmpfs(full, "2m")
    shutil.copytree(runs["lm"][0], read_only / "lm-run")
    real_read_only = bind_read_only(read_only)
    ENVIRONMENT_MODES.update({"full disk": "real 2 MiB tmpfs" if real_full else "simulated (ENOSPC)",
                              "read-only folder": "real read-only bind mount" if real_read_only
                              else "simulated (EROFS)"})
    try:
        for index in itertools.count():
            recipe = rng.choice(["lm", "lm", "mt"])
            base, command = runs[recipe]
            kind = rng.choice(
                [
                    "full disk",
                    "full disk",
                    "read-only folder",
                    "read-only folder",
                    "file in the way",
                    "file in the way",
                    "kernel build",
                    "kernel variable",
                ]
            )
            command_kind = rng.choice(["train", "resume", "compress", "sweep", "analyze", "eval output"])

            def attempt(recipe: str = recipe, kind: str = kind, command_kind: str = command_kind,
                        index: int = index) -> Outcome:
                base, command = runs[recipe]
                if kind == "kernel build":
                    return failing_kernel_build(work, command, index)
                if kind == "kernel variable":
                    os.environ["G2LSTM_CPU_KERNEL"] = rng.choice(["fast", "gpu", "1"])
                    try:
                        return expect(run_cli([*command, "--out", str(work / f"env{index}")]), "clear",
                                      ["G2LSTM_CPU_KERNEL"])
                    finally:
                        del os.environ["G2LSTM_CPU_KERNEL"]
                if kind == "file in the way":  # a file where a folder must be, or above the output
                    blocker = work / f"file{index}"
                    blocker.write_text("in the way")
                    needs_folder = command_kind in ("train", "resume", "sweep", "analyze")
                    target = blocker if needs_folder and rng.random() < 0.5 else blocker / "below"
                    argv = output_command(recipe, command_kind, base, command, target)
                    return expect(run_cli(argv), "clear", [str(blocker)])
                if kind == "full disk":
                    if not real_full:
                        target = work / f"env{index}"
                        with simulated_fault(28):
                            return expect(
                                run_cli(output_command(recipe, command_kind, base, command, target)),
                                None,
                                [str(target)],
                            )
                    for leftover in full.iterdir():
                        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                    free = shutil.disk_usage(full).free
                    (full / "filler").write_bytes(b"\0" * max(0, free - rng.randint(0, 96) * 1024))
                    target = full / f"env{index}"
                    return expect(run_cli(output_command(recipe, command_kind, base, command, target)), None,
                                  [str(full)])
                target = read_only / (
                    "lm-run" if command_kind == "resume" and recipe == "lm" else f"new{index}"
                )
                if not real_read_only:
                    with simulated_fault(30):
                        return expect(
                            run_cli(output_command(recipe, command_kind, base, command, target)),
                            "clear",
                            [str(target)],
                        )
                return expect(run_cli(output_command(recipe, command_kind, base, command, target)), "clear",
                              [str(read_only)])

            shown = "" if kind.startswith("kernel") else f": {recipe} {command_kind}"
            yield f"{kind}{shown}", attempt
    finally:
        for folder, mounted in ((read_only, real_read_only), (full, real_full)):
            if mounted:
                unmount(folder)


ENVIRONMENT_MODES: dict[str, str] = {}


def output_command(recipe: str, kind: str, base: Path, command: list[str], target: Path) -> list[str]:
    """A command of ``kind`` writing to ``target`` (a run folder, checkpoint file or output folder)."""
    data = command[command.index("--data") + 1]
    checkpoint = str(base / "best.pt")
    if kind in ("train", "resume"):
        return [*command, "--out", str(target), "--max-steps", "3"]
    if kind == "compress":
        return ["compress", checkpoint, "--round", "0.5", "--out", str(target)]
    if kind == "sweep":
        return ["compress", "sweep", checkpoint, "--data", data, "--out", str(target), "--ranks", "2", "1",
                *(["--no-curves"] if recipe == "lm" else [])]
    if kind == "analyze":
        return [
            "analyze",
            checkpoint,
            "--data",
            data,
            "--out",
            str(target),
            *(
                ["--max-tokens", "40", "--sentence", " ".join(WORDS[:6])]
                if recipe == "lm"
                else ["--max-pairs", "20"]
            ),
        ]
    if (
        recipe == "lm"
    ):  # the language model has no command writing a text file: a compressed checkpoint instead
        return ["compress", checkpoint, "--rank", "2", "--out", str(target)]
    return ["mt", "eval", checkpoint, "--data", data, "--beam", "2", "--output", str(target)]


def finish(process: subprocess.Popen, description: str) -> Outcome:
    """How ``process`` ended; one that does not end within PROCESS_TIMEOUT is killed and counted a crash."""
    try:
        out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return crash(f"{description} did not end within {PROCESS_TIMEOUT} s")
    return judge_exit(process.returncode, err, out)


# A busy machine may pause processes (e.g. while others measure), so the limit is generous.
PROCESS_TIMEOUT = 3600


def failing_kernel_build(work: Path, command: list[str], index: int) -> Outcome:
    """``G2LSTM_CPU_KERNEL=compiled`` with a compiler that fails, in a fresh process and kernel cache."""
    environment = {**os.environ, "G2LSTM_CPU_KERNEL": "compiled", "CXX": "false", "OMP_NUM_THREADS": "1",
                   "XDG_CACHE_HOME": str(work / f"kernel-cache{index}")}
    argv = [sys.executable, "-m", "g2lstm", *command, "--out", str(work / f"kernel{index}")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment)
    return expect(finish(process, "the kernel build"), "clear", ["G2LSTM_CPU_KERNEL=compiled"])


# ------------------------------------------------------------------------------------- mt translate stdin

SEPARATORS = ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r", "\x00", "\ufeff"]


def translate_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    checkpoint = train_base_runs(work, rng)["mt"][0] / "best.pt"
    for _ in itertools.count():
        lines, kinds = [], set()
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(GERMAN) for _ in range(rng.choice([0, 1, 3, 6, 300]))]
            line = " ".join(words)
            if rng.random() < 0.5:
                separator = rng.choice(SEPARATORS)
                at = rng.randrange(len(line) + 1)
                line, kinds = line[:at] + separator + line[at:], kinds | {repr(separator)}
            lines.append(line.encode())
        ending = rng.choice([b"\n", b"\r\n"])
        data = ending.join(lines) + (ending if rng.random() < 0.7 else b"")
        invalid_line = None
        if rng.random() < 0.2:
            invalid_line = rng.randrange(len(lines))
            lines[invalid_line] += bytes([rng.choice([0x80, 0xC3, 0xFF])])
            data = ending.join(lines) + ending
        expected = len(data.split(b"\n")) - (data.endswith(b"\n"))

        def attempt(
            data: bytes = data, expected: int = expected, invalid_line: int | None = invalid_line
        ) -> Outcome:
            outcome = run_cli(["mt", "translate", str(checkpoint), "--beam", "2"], stdin=data)
            if invalid_line is not None:
                return expect(outcome, "clear", [f"line {invalid_line + 1} is not valid UTF-8"])
            if outcome.kind == "ran" and outcome.output.count("\n") != expected:
                return crash(f"{expected} lines in, {outcome.output.count(chr(10))} out", "silent mix")
            return expect(outcome, "ran")

        described = ", ".join(sorted(kinds)) or "plain lines"
        yield (
            f"{len(lines)} lines ({described}){', invalid UTF-8' if invalid_line is not None else ''}",
            attempt,
        )


CLASSES: dict[str, Callable[[random.Random, Path], Iterator[tuple[str, Callable[[], Outcome]]]]] = {
    "corpus files (`lm train`)": corpus_cases,
    "parallel corpora (`mt train`)": parallel_corpus_cases,
    "presets and `--set` overrides (`lm train`)": preset_cases,
    "checkpoints (`lm eval`, `compress`, `lm finetune`)": checkpoint_cases,
    "module inputs (`G2LSTM` vs `nn.LSTM`)": module_cases,
    "resume with a changed option (`lm train`, `mt train`)": resume_cases,
    "concurrent writers (`lm train`, `mt train`, `lm finetune`)": writer_cases,
    "structurally wrong checkpoints (every command that reads one)": structure_cases,
    "environment faults (full disk, read-only folder, file in the way, kernel build)": environment_cases,
    "`mt translate` standard input": translate_cases,
}


def fuzz(cases: int, seed: int = 0, classes: Sequence[str] | None = None) -> dict[str, Tally]:
    """Run ``cases`` random cases of every class (or of ``classes``); the tallies say how each ended."""
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory() as temporary:
        for offset, (name, generate) in enumerate(CLASSES.items()):
            if classes is not None and name not in classes:
                continue
            rng = random.Random(seed * 1000 + offset)
            work = Path(temporary) / f"class{offset}"
            work.mkdir()
            tally = tallies[name] = Tally()
            for _, (description, attempt) in zip(range(cases), generate(rng, work)):
                tally.add(description, attempt())
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60, help="cases per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="write the table here (and the details as JSON beside it)")
    parser.add_argument("--class", dest="classes", action="append", choices=list(CLASSES), metavar="NAME",
                        help="run only this class (repeatable; default: all)")
    args = parser.parse_args()
    os.environ.setdefault("G2LSTM_CACHE", tempfile.mkdtemp())
    start = time.time()
    tallies = fuzz(args.cases, args.seed, args.classes)
    lines = [
        "| input class | cases | ran | clear errors | crashes | of which tracebacks | of which silent "
        "mixes |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {t.cases} | {t.ran} | {t.clear} | {len(t.crashes)} | {t.tracebacks} | "
            f"{t.silent_mixes} |"
            for name, t in tallies.items()
        ),
    ]
    print("\n".join(lines))
    for name, tally in tallies.items():
        for crash in tally.crashes:
            print(f"CRASH [{name}] {crash}")
    if args.markdown:
        from g2lstm.benchmark import machine_description

        report = Path(args.markdown)
        report.write_text(
            "\n".join(
                [
                    "# Robustness: bad input, tried systematically",
                    "",
                    f"Command: `python benchmarks/robustness.py --cases {args.cases} --seed {args.seed} "
                    "--markdown "
                    f"{args.markdown}`; {time.strftime('%Y-%m-%d')}, {machine_description()}, "
                    f"{(time.time() - start) / 60:.1f} minutes.",
                    "",
                    (__doc__ or "").split("\n\n")[1].strip(),
                    "",
                    (__doc__ or "").split("\n\n")[2].strip(),
                    "",
                    *lines,
                    "",
                    "Environment faults on this machine: "
                    + "; ".join(f"{kind}: {mode}" for kind, mode in ENVIRONMENT_MODES.items())
                    + ".",
                    "",
                    "The property tests of `tests/test_properties.py` (hypothesis) cover the module's "
                    "inputs further; "
                    "`tests/test_robustness.py` runs a few cases of every class in the full suite "
                    "(`make test`).",
                ]
            )
            + "\n"
        )
        report.with_suffix(".json").write_text(
            json.dumps(
                {
                    name: {
                        "cases": t.cases,
                        "ran": t.ran,
                        "clear": t.clear,
                        "tracebacks": t.tracebacks,
                        "silent_mixes": t.silent_mixes,
                        "crashes": t.crashes,
                    }
                    for name, t in tallies.items()
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
