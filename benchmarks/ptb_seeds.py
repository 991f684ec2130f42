"""Seeded LSTM vs G2 comparisons on Penn Treebank, `cpu-reg` and `cpu` presets: results/ptb-seeds.

    python benchmarks/ptb_seeds.py --runs RUNS_DIR --jobs 2        # every run, resumable, two at a time
    python benchmarks/ptb_seeds.py --runs RUNS_DIR --only cpu-reg-lstm-s141 cpu-reg-g2-s141
    python benchmarks/ptb_seeds.py --runs RUNS_DIR --report-only

Each run is a chain of `g2lstm` commands (train, finetune, evaluations, compression sweep, gate
histograms); a stage that finished is not run again and one that was cut off resumes from its checkpoint.
Runs are taken in the order of RUNS, pairs (LSTM and G2 of one seed) next to each other, so that with two
jobs each pair finishes together. The decision rules are in results/ptb-seeds/DECISION.md, written
before the runs.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stages import run_stages

RESULTS = Path(__file__).resolve().parent.parent / "results" / "ptb-seeds"
SEEDS = (141, 142, 143)


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: preset, gate options and seed."""

    preset: str
    gate: str
    seed: int
    noise_p: float | None = None  # None: the preset's (0.2)

    @property
    def name(self) -> str:
        gate = self.gate if self.noise_p is None else f"{self.gate}-p{self.noise_p:g}"
        return f"{self.preset}-{gate}-s{self.seed}"

    def train_options(self) -> list[str]:
        options = ["--preset", self.preset, "--gate", self.gate, "--seed", str(self.seed)]
        return options + ([] if self.noise_p is None else ["--noise-p", str(self.noise_p)])


RUNS = (
    *(Run("cpu-reg", gate, seed) for seed in SEEDS for gate in ("lstm", "g2")),
    Run("cpu-reg", "sharpened", 141),
    Run("cpu-reg", "g2", 141, noise_p=1.0),
    *(Run("cpu", gate, seed) for seed in (142, 143, 141) for gate in ("lstm", "g2")),
)


def stages(run: Run, folder: Path, data: list[str]) -> dict[str, list[str]]:
    """The commands of one run, in order; `eval...` stages print their metrics as a JSON line."""
    best = str(folder / "finetune" / "best.pt")
    commands = {
        "train": ["g2lstm", "lm", "train", *run.train_options(), "--out", str(folder), "--quiet", *data],
        "finetune": ["g2lstm", "lm", "finetune", str(folder), "--quiet", *data],
        "eval": ["g2lstm", "lm", "eval", best, "--json", "--quiet", *data],
        "eval_cache": ["g2lstm", "lm", "eval", best, "--cache-pointer", "--json", "--quiet", *data],
        "eval_tempered": [
            "g2lstm",
            "lm",
            "eval",
            best,
            "--eval-gate",
            "tempered",
            "--json",
            "--quiet",
            *data,
        ],
        "sweep": [
            "g2lstm",
            "compress",
            "sweep",
            best,
            "--out",
            str(folder / "sweep"),
            "--batch-size",
            "10",
            "--no-curves",
            *data,
        ],
        "analyze": [
            "g2lstm",
            "analyze",
            best,
            "--out",
            str(folder / "analysis"),
            "--max-tokens",
            "20000",
            *data,
        ],
    }
    if run.gate == "lstm":  # an LSTM's gates have no temperature: tempered is its sigmoid
        del commands["eval_tempered"]
    return commands


def run_all_stages(run: Run, runs: Path, data: list[str], threads: int) -> bool:
    folder = runs / run.name
    folder.mkdir(parents=True, exist_ok=True)
    return run_stages(run.name, stages(run, folder, data), folder / "stages.json", threads)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="PTB folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; the cores are shared out")
    parser.add_argument("--only", nargs="+", choices=[run.name for run in RUNS], help="run just these")
    args = parser.parse_args()
    runs = Path(args.runs)
    data = ["--data", args.data] if args.data else []
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    chosen = [run for run in RUNS if args.only is None or run.name in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda run: run_all_stages(run, runs, data, threads), chosen))


if __name__ == "__main__":
    main()
