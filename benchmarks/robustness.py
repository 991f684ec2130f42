"""Fuzzing the command line and the module with bad input: every case must run or end in a clear error.

Five classes of input, each a seeded stream of random cases:
- corpus files: empty, blank or very long lines, invalid UTF-8, NUL bytes, garbage, a missing split, a
  folder in place of a file (``g2lstm lm train`` on them);
- parallel corpora: the same damage, and line counts that differ between the two sides
  (``g2lstm mt train``);
- presets and overrides: unknown keys, wrong value types, out-of-range values, broken TOML, malformed
  ``--set`` (``g2lstm lm train``);
- checkpoints: truncated, bit-flipped, garbage, foreign, a pickle that tries to run code, missing
  (``g2lstm lm eval``, ``g2lstm compress``);
- module inputs: random shapes, dtypes, lengths, packed or padded, states given or not (``G2LSTM`` against
  ``nn.LSTM`` on the same weights, or the documented ValueError/TypeError).

A command case is *clear* when it exits with code 2 and a one-line ``g2lstm: error: ...`` message (or
argparse's usage line), *ran* when it exits 0; anything else (a traceback, another exception, another
exit code, code that ran from a checkpoint) is a *crash*. A module case is a crash when it raises anything
but ValueError/TypeError with a message, or when its result differs from ``nn.LSTM``.

    python benchmarks/robustness.py --cases 60 --markdown results/robustness.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import pickle
import random
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from g2lstm import G2LSTM
from g2lstm.cli import main as cli_main

WORDS = "the cat sat on a mat and a dog ran to the park while it rained".split()
SMALL = ["--quiet", "--set", "emb_size=8", "--set", "hidden_size=8", "--set", "batch_size=2", "--set", "bptt=5",
         "--set", "eval_batch_size=2", "--set", "test_batch_size=2", "--set", "log_interval=1"]


@dataclass
class Outcome:
    kind: str  # "ran", "clear" or "crash"
    detail: str = ""


@dataclass
class Tally:
    cases: int = 0
    ran: int = 0
    clear: int = 0
    crashes: list[str] = field(default_factory=list)

    def add(self, description: str, outcome: Outcome) -> None:
        self.cases += 1
        if outcome.kind == "crash":
            self.crashes.append(f"{description}: {outcome.detail}")
        else:
            setattr(self, outcome.kind, getattr(self, outcome.kind) + 1)


def run_cli(argv: list[str]) -> Outcome:
    """Run ``g2lstm ARGV`` in this process and judge its exit."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    except BaseException as error:  # noqa: BLE001 - anything escaping main() is what we count
        return Outcome("crash", f"{type(error).__name__}: {error}"[:300])
    message = stderr.getvalue().strip()
    if code == 0:
        return Outcome("ran")
    lines = [line for line in message.splitlines() if line.strip()]
    one_line_error = len(lines) == 1 and lines[0].startswith("g2lstm: error: ")
    usage_error = lines and lines[-1].startswith("g2lstm") and "error:" in lines[-1] and "Traceback" not in message
    if code == 2 and (one_line_error or usage_error):
        return Outcome("clear", lines[-1])
    return Outcome("crash", f"exit {code}: {message[-300:]}")


def sentences(rng: random.Random, count: int) -> str:
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) + "\n" for _ in range(count))


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
MT_SMALL = ["--quiet", "--set", "emb_size=8", "--set", "hidden_size=8", "--set", "batch_size=4",
            "--set", "eval_batch_size=8", "--set", "beam_size=2", "--set", "bpe_size=60", "--set", "log_interval=1"]


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
KEYS = ["emb_size", "hidden_size", "num_layers", "dropout", "weight_dropout", "batch_size", "bptt", "lr", "clip",
        "epochs", "nonmono", "gate", "temperature", "noise_p", "eval_gate", "unit", "tie_weights", "seed",
        "cache_lambda", "stop_on_plateau", "log_interval", "checkpoint_minutes"]


def preset_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    data = work / "preset-corpus"
    write_corpus(data, rng)
    for index in itertools.count():
        run = work / f"preset-run{index}"
        kind = rng.choice(["toml value", "unknown key", "broken toml", "set value", "set syntax", "preset name"])
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
                text = rng.choice(["emb_size = ", "[section\n", "emb_size = 8\nemb_size = 9\n", "= 3", "a b c",
                                   "\x00\x01", "lr = 1,\n"])
                description = f"broken TOML {text!r}"
            preset_file.write_text(text)
            preset = str(preset_file)
        elif kind == "set value":
            key, value = rng.choice(KEYS), rng.choice(["abc", "-1", "0", "nan", "inf", "", "1e400", "none", "2.5",
                                                        "yes", "g3", "[1]"])
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
        kind = rng.choice(["truncated", "bit flips", "garbage", "empty", "foreign", "code", "missing", "folder",
                           "zip of text"])
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
            torch.save(rng.choice([{"weights": torch.ones(3)}, [1, 2, 3], torch.zeros(2), {"model": {}}]), path)
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

def module_cases(rng: random.Random, work: Path) -> Iterator[tuple[str, Callable[[], Outcome]]]:
    del work
    for _ in itertools.count():
        input_size, hidden, layers = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 3)
        bidirectional, batch_first = rng.random() < 0.5, rng.random() < 0.5
        dtype = rng.choice([torch.float32, torch.float64])
        input_dtype = rng.choice([dtype, dtype, torch.float16, torch.int64])
        steps, batch = rng.randint(0, 5), rng.randint(0, 4)
        feature = input_size if rng.random() < 0.8 else input_size + rng.choice([-1, 1])
        unbatched = rng.random() < 0.2
        packed = not unbatched and rng.random() < 0.3
        state = rng.choice(["none", "good", "bad shape"])
        description = (f"in {input_size} hidden {hidden} layers {layers} bi {bidirectional} batch_first "
                       f"{batch_first} {dtype} input {input_dtype} T {steps} B {batch} feature {feature} "
                       f"unbatched {unbatched} packed {packed} state {state}")

        def attempt() -> Outcome:
            torch.manual_seed(0)
            reference = torch.nn.LSTM(input_size, hidden, layers, batch_first=batch_first,
                                      bidirectional=bidirectional).to(dtype)
            module = G2LSTM.from_lstm(reference, gate="g2").eval()
            shape = (steps, feature) if unbatched else ((batch, steps, feature) if batch_first else
                                                         (steps, batch, feature))
            x = torch.randn(shape, dtype=torch.float64).to(input_dtype)
            directions = 2 if bidirectional else 1
            hx = None
            if state != "none":
                state_shape = (layers * directions, hidden) if unbatched else (layers * directions, batch, hidden)
                if state == "bad shape":
                    state_shape = (*state_shape[:-1], hidden + 1)
                hx = (torch.randn(state_shape, dtype=dtype), torch.randn(state_shape, dtype=dtype))
            if packed and x.numel() > 0:
                lengths = sorted((rng.randint(1, steps) for _ in range(batch)), reverse=True)
                x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=batch_first)
            try:
                output, (h, c) = module(x, hx)
            except (ValueError, TypeError) as error:
                return Outcome("clear") if str(error) else Outcome("crash", f"{type(error).__name__} without text")
            except Exception as error:  # noqa: BLE001
                return Outcome("crash", f"{type(error).__name__}: {error}"[:300])
            try:
                expected, (expected_h, expected_c) = reference(x, hx)
            except Exception as error:  # noqa: BLE001
                return Outcome("crash", f"G2LSTM accepted what nn.LSTM refuses ({type(error).__name__}: {error})"[:300])
            is_packed = isinstance(output, torch.nn.utils.rnn.PackedSequence)
            got, want = (output.data, expected.data) if is_packed else (output, expected)
            tolerance = 1e-10 if dtype == torch.float64 else 1e-5
            if not all(torch.allclose(a, b, atol=tolerance) for a, b in ((got, want), (h, expected_h), (c, expected_c))):
                return Outcome("crash", "differs from nn.LSTM")
            return Outcome("ran")

        yield description, attempt


CLASSES: dict[str, Callable[[random.Random, Path], Iterator[tuple[str, Callable[[], Outcome]]]]] = {
    "corpus files (`lm train`)": corpus_cases,
    "parallel corpora (`mt train`)": parallel_corpus_cases,
    "presets and `--set` overrides (`lm train`)": preset_cases,
    "checkpoints (`lm eval`, `compress`, `lm finetune`)": checkpoint_cases,
    "module inputs (`G2LSTM` vs `nn.LSTM`)": module_cases,
}


def fuzz(cases: int, seed: int = 0) -> dict[str, Tally]:
    """Run ``cases`` random cases of every class; the tallies say how each ended."""
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory() as temporary:
        for offset, (name, generate) in enumerate(CLASSES.items()):
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
    args = parser.parse_args()
    os.environ.setdefault("G2LSTM_CACHE", tempfile.mkdtemp())
    start = time.time()
    tallies = fuzz(args.cases, args.seed)
    lines = [
        "| input class | cases | ran | clear errors | crashes |", "|---|---:|---:|---:|---:|",
        *(f"| {name} | {t.cases} | {t.ran} | {t.clear} | {len(t.crashes)} |" for name, t in tallies.items()),
    ]
    print("\n".join(lines))
    for name, tally in tallies.items():
        for crash in tally.crashes:
            print(f"CRASH [{name}] {crash}")
    if args.markdown:
        from g2lstm.benchmark import machine_description

        report = Path(args.markdown)
        report.write_text("\n".join([
            "# Robustness: bad input, tried systematically", "",
            f"Command: `python benchmarks/robustness.py --cases {args.cases} --seed {args.seed} --markdown "
            f"{args.markdown}`; {time.strftime('%Y-%m-%d')}, {machine_description()}, "
            f"{(time.time() - start) / 60:.1f} minutes.", "",
            (__doc__ or "").split("\n\n")[1].strip(), "",
            (__doc__ or "").split("\n\n")[2].strip(), "",
            *lines, "",
            "The property tests of `tests/test_properties.py` (hypothesis) cover the module's inputs further; "
            "`tests/test_robustness.py` runs a few cases of every class on each test run.",
        ]) + "\n")
        report.with_suffix(".json").write_text(json.dumps(
            {name: {"cases": t.cases, "ran": t.ran, "clear": t.clear, "crashes": t.crashes}
             for name, t in tallies.items()}, indent=1))


if __name__ == "__main__":
    main()
