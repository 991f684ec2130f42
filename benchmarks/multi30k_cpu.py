"""The `multi30k-cpu` translation preset for lstm, sharpened and g2, De->En: results/multi30k-cpu.

    python benchmarks/multi30k_cpu.py --runs /work/runs/multi30k-cpu            # all stages, resumable
    python benchmarks/multi30k_cpu.py --runs /work/runs/multi30k-cpu --jobs 3   # three runs at a time
    python benchmarks/multi30k_cpu.py --runs /work/runs/multi30k-cpu --only lstm --threads 1   # one run
    python benchmarks/multi30k_cpu.py --runs /work/runs/multi30k-cpu --report-only

Stages: per model `train` and `eval` (test BLEU, beam 5); then for all three together `compress` (the paper's
Table 4 settings: Round r = 0.5, Round & clip c = 1.0, ranks hidden/8 and hidden/16, and hard 0/1 gates) and
`analyze` (decoder gate histograms over 10,000 training pairs, per-word gates of two test sentences). Every
stage is a `g2lstm` command (printed in the report); a stage that finished is not run again, and a training
that was cut off resumes from its last checkpoint. The report marks missing stages as PARTIAL.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from g2lstm.benchmark import machine_description
from g2lstm.train import read_metrics

from stages import epoch_pace, run_stages, stage_table

# The results of this driver are of the decoder before issue 18 (attention over the decoder's outputs); the
# preset's decoder is now the conditional one, so the runs name theirs (results/multi30k-seeds: the new one).
RUNS = {name: ["--gate", name, "--set", "decoder=attention-on-top"] for name in ("lstm", "sharpened", "g2")}
LABELS = {"lstm": "LSTM (baseline)", "sharpened": "Sharpened sigmoid", "g2": "G2-LSTM (p = 0.2)"}
PAPER_BLEU = {"lstm": "31.00", "sharpened": "29.73", "g2": "31.95"}  # SPEC §3.2, IWSLT'14 De->En
PAPER_TABLE4 = {  # original, round, round & clip, rank 32, rank 16
    "lstm": ("31.00", "28.65", "21.97", "30.52", "29.56"),
    "sharpened": ("29.73", "27.08", "25.14", "29.17", "28.82"),
    "g2": ("31.95", "31.44", "31.44", "31.62", "31.28"),
}
RESULTS = Path(__file__).resolve().parent.parent / "results" / "multi30k-cpu"


def model_stages(name: str, run: Path, data: list[str]) -> dict[str, list[str]]:
    return {
        "train": [
            "g2lstm",
            "mt",
            "train",
            "--preset",
            "multi30k-cpu",
            *RUNS[name],
            "--out",
            str(run),
            "--quiet",
            *data,
        ],
        "eval": [
            "g2lstm",
            "mt",
            "eval",
            str(run / "best.pt"),
            "--split",
            "test",
            "--json",
            "--output",
            str(run / "test.hyp"),
            *data,
        ],
    }


def shared_stages(runs: Path, data: list[str]) -> dict[str, list[str]]:
    best = [str(runs / name / "best.pt") for name in RUNS]
    return {
        "compress": ["g2lstm", "compress", "sweep", *best, "--out", str(runs / "compression"), *data],
        "analyze": [
            "g2lstm",
            "analyze",
            *best,
            "--out",
            str(runs / "analysis"),
            "--max-pairs",
            "10000",
            *data,
        ],
    }


def train_and_evaluate(name: str, runs: Path, data: list[str], threads: int) -> bool:
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    return run_stages(name, model_stages(name, run, data), run / "stages.json", threads)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_records(runs: Path) -> dict[str, dict]:
    return {name: _load(runs / name / "stages.json") for name in RUNS}


def models_complete(records: dict[str, dict]) -> bool:
    """Whether every model is trained and evaluated, so that the shared stages can compare them."""
    return all(records[name].get(stage, {}).get("done") for name in RUNS for stage in ("train", "eval"))


def _epochs(run: Path) -> str:
    if not (run / "metrics.jsonl").exists():
        return "–"
    epochs = [m for m in read_metrics(run) if "valid_bleu" in m and "final" not in m]
    if not epochs:
        return "–"
    best = max(epochs, key=lambda m: m["valid_bleu"])
    return f"{len(epochs)} (best: epoch {best['epoch']}, valid BLEU {best['valid_bleu']:.2f} greedy)"


def write_report(runs: Path) -> Path:
    from g2lstm.plots import plot_learning_curves

    RESULTS.mkdir(parents=True, exist_ok=True)
    records = load_records(runs)
    shared = _load(runs / "stages.json")
    complete = models_complete(records) and all(
        shared.get(s, {}).get("done") for s in ("compress", "analyze")
    )
    curves = {LABELS[name]: [(m["epoch"], m["valid_bleu"]) for m in read_metrics(runs / name)
                             if "valid_bleu" in m and "final" not in m]
              for name in RUNS if (runs / name / "metrics.jsonl").exists()}
    figure = plot_learning_curves(
        curves,
        RESULTS / "learning_curves.png",
        "Multi30k De->En, multi30k-cpu preset: validation BLEU (greedy)",
        "validation BLEU",
        log_y=False,
    )
    lines = [
        "# Multi30k German→English, `multi30k-cpu` preset: LSTM vs sharpened sigmoid vs G2-LSTM"
        + ("" if complete else " (PARTIAL)"),
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d}, on {machine_description()}.",
        "Produced by `python benchmarks/multi30k_cpu.py --runs RUNS_DIR [--jobs N]` (N trainings at a time, "
        "the cores shared out);",
        "one preset (`src/g2lstm/presets/mt/multi30k-cpu.toml`) and seed for all runs, only `--gate` "
        "changes.",
        "Data: Multi30k task 1 (29,000 / 1,014 / 1,000 pairs; test = test_2016_flickr), official lowercased, "
        "tokenized files.",
        "",
        "## BLEU on the test set (beam 5)",
        "",
        "`bleu`: tokenized, case-insensitive (the paper's measure); `sacrebleu`: detokenized output "
        "against the raw "
        "references (case-insensitive, since the model writes lowercase).",
        "",
        "| model | BLEU | sacreBLEU | test loss | epochs | paper (IWSLT'14) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    signature = ""
    for name in RUNS:
        metrics = records[name].get("eval", {}).get("metrics")
        cells = (f"{metrics['bleu']:.2f} | {metrics['sacrebleu']:.2f} | {metrics['loss']:.3f}" if metrics
                 else "(not run yet) | | ")
        signature = signature or (metrics or {}).get("sacrebleu_signature", "")
        lines.append(f"| {LABELS[name]} | {cells} | {_epochs(runs / name)} | {PAPER_BLEU[name]} |")
    if signature:
        lines += ["", f"sacreBLEU signature: `{signature}`"]
    lines += [
        "",
        f"![validation BLEU]({figure.name})",
        "",
        "## Compression of the gates (Table 4 layout)",
        "",
    ]
    sweep = _load(runs / "compression" / "sweep.json")
    if sweep:
        lines += [
            "Tokenized BLEU on the test set after compressing the input- and forget-gate blocks of every "
            "layer "
            "(no retraining):",
            "",
            sweep["table_markdown"],
            "",
            "sacreBLEU:",
            "",
            sweep["sacrebleu_markdown"],
            "",
            "Model size (state dict):",
            "",
            sweep["sizes_markdown"],
        ]
    else:
        lines.append("(not run yet: PARTIAL)")
    lines += [
        "",
        "The paper's Table 4 (IWSLT'14 De→En, hidden 256: ranks 32 and 16):",
        "",
        "| model | original | round | round & clip | rank 32 | rank 16 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {LABELS[name]} | " + " | ".join(PAPER_TABLE4[name]) + " |" for name in RUNS]
    lines += ["", "## Gate histograms of the first decoder layer", ""]
    histograms = runs / "analysis" / "gate_histograms.md"
    if histograms.exists():
        for picture in ("gate_histograms.png", "gate_words.png"):
            (RESULTS / picture).write_bytes((runs / "analysis" / picture).read_bytes())
        table = histograms.read_text().split("\n", 2)[2].strip()
        lines += [
            table,
            "",
            "![gate histograms](gate_histograms.png)",
            "",
            "## Case study: per-word gate values of two test sentences",
            "",
            "![gate words](gate_words.png)",
        ]
    else:
        lines.append("(not run yet: PARTIAL)")
    observations = RESULTS / "observations.md"  # written by a person after reading the numbers
    if observations.exists():
        lines += ["", "## Observations", "", observations.read_text().strip()]
    lines += ["", "## Pace", "",
              "Minutes between consecutive validations in each run's `metrics.jsonl`, fewest / median: the "
              "fewest is the run's own pace at its thread count (in the last table), the median includes "
              "epochs slowed by other work on the machine.", "",
              "| run | epochs | minutes per epoch |", "|---|---|---|"]
    for name in RUNS:
        epochs, minutes = epoch_pace(runs / name, "valid_bleu")
        lines.append(f"| {name} | {epochs} | {minutes} |")
    lines += ["", "## Commands and wall times", "", *stage_table({**records, "all": shared}, runs)]
    report = RESULTS / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps({"runs": records, "shared": shared}, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="Multi30k folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time; threads are shared out")
    parser.add_argument("--threads", type=int, help="threads per run and for the shared stages "
                        "(default: the cores shared out among the runs, all cores for the shared stages)")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="train and evaluate just these")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.report_only:
        data = ["--data", args.data] if args.data else []
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            trained = list(pool.map(lambda name: train_and_evaluate(name, runs, data, threads),
                                    args.only or list(RUNS)))
        if all(trained) and models_complete(load_records(runs)):
            run_stages("all", shared_stages(runs, data), runs / "stages.json",
                       args.threads or os.cpu_count() or 1)
    print(write_report(runs))


if __name__ == "__main__":
    main()
