"""The `cpu` preset on Penn Treebank for lstm, sharpened, g2 (p = 0.2) and g2 (p = 1): results/ptb-cpu.

    python benchmarks/ptb_cpu.py --runs /work/runs/ptb-cpu            # all stages, resumable
    python benchmarks/ptb_cpu.py --runs /work/runs/ptb-cpu --jobs 2   # two runs at a time, 1 thread each
    python benchmarks/ptb_cpu.py --runs /work/runs/ptb-cpu --report-only

Every stage is a `g2lstm` command (printed in the report); a stage that finished is not run again, and a
stage that was cut off resumes from its last checkpoint. The report marks missing stages as partial.
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

RUNS = {
    "lstm": ["--gate", "lstm"],
    "sharpened": ["--gate", "sharpened"],
    "g2": ["--gate", "g2"],
    "g2-p1": ["--gate", "g2", "--noise-p", "1"],
}
LABELS = {"lstm": "LSTM (baseline)", "sharpened": "Sharpened sigmoid", "g2": "G2-LSTM (p = 0.2)",
          "g2-p1": "G2-LSTM (p = 1, the paper's formula)"}
PAPER = {  # SPEC §3.1, Table 1: valid / test perplexity
    "lstm": ("60.7 / 58.8", "60.0 / 57.3", "53.9 / 52.8"),
    "sharpened": ("61.6 / 59.4", "59.9 / 57.5", "53.9 / 53.2"),
    "g2": ("60.4 / 58.2", "58.5 / 56.1", "52.9 / 52.1"),
    "g2-p1": ("—", "—", "—"),
}
STAGES = ("train", "finetune", "eval", "eval_finetuned", "eval_cache")
RESULTS = Path(__file__).resolve().parent.parent / "results" / "ptb-cpu"


def stages(name: str, run: Path, data: list[str]) -> dict[str, list[str]]:
    g2lstm = ["g2lstm"]
    return {
        "train": g2lstm
        + ["lm", "train", "--preset", "cpu", *RUNS[name], "--out", str(run), "--quiet", *data],
        "finetune": g2lstm + ["lm", "finetune", str(run), "--quiet", *data],
        "eval": g2lstm + ["lm", "eval", str(run / "best.pt"), "--json", *data],
        "eval_finetuned": g2lstm + ["lm", "eval", str(run / "finetune" / "best.pt"), "--json", *data],
        "eval_cache": g2lstm
        + ["lm", "eval", str(run / "finetune" / "best.pt"), "--cache-pointer", "--json", *data],
    }


def run_all_stages(name: str, runs: Path, data: list[str], threads: int) -> bool:
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    return run_stages(name, stages(name, run, data), run / "stages.json", threads)


def comparison_stages(runs: Path, data: list[str]) -> dict[str, list[str]]:
    """Compression (Table 3 shape, with and without the cache pointer) and gate analysis of all finetuned
    models."""
    checkpoints = [str(runs / name / "finetune" / "best.pt") for name in RUNS]
    return {
        "sweep": [
            "g2lstm",
            "compress",
            "sweep",
            *checkpoints,
            "--out",
            str(RESULTS / "compression"),
            "--batch-size",
            "10",
            *data,
        ],
        "sweep_cache": [
            "g2lstm",
            "compress",
            "sweep",
            *checkpoints,
            "--out",
            str(RESULTS / "compression-cache"),
            "--cache-pointer",
            "--no-curves",
            *data,
        ],
        "analyze": [
            "g2lstm",
            "analyze",
            *checkpoints,
            "--out",
            str(RESULTS / "analysis"),
            "--max-tokens",
            "20000",
            *data,
        ],
    }


def cell(record: dict, stage: str) -> str:
    metrics = record.get(stage, {}).get("metrics")
    return f"{metrics['valid_ppl']:.1f} / {metrics['test_ppl']:.1f}" if metrics else "(not run yet)"


def load_records(runs: Path) -> dict[str, dict]:
    return {
        name: json.loads((runs / name / "stages.json").read_text())
        if (runs / name / "stages.json").exists()
        else {}
        for name in RUNS
    }


def runs_complete(records: dict[str, dict]) -> dict[str, bool]:
    return {
        name: all(record.get(stage, {}).get("done") for stage in STAGES) for name, record in records.items()
    }


def write_report(runs: Path) -> Path:
    from g2lstm.plots import plot_learning_curves

    RESULTS.mkdir(parents=True, exist_ok=True)
    records = load_records(runs)
    complete = all(runs_complete(records).values())
    curves = {}
    for name in RUNS:
        points = []
        for phase_dir, offset in ((runs / name, 0), (runs / name / "finetune", None)):
            if not (phase_dir / "metrics.jsonl").exists():
                continue
            lines = [m for m in read_metrics(phase_dir) if "valid_ppl" in m and "epoch" in m]
            base = points[-1][0] if offset is None and points else 0
            points += [(base + m["epoch"], m["valid_ppl"]) for m in lines]
        curves[LABELS[name]] = points
    figure = plot_learning_curves(curves, RESULTS / "learning_curves.png",
                                  "PTB, cpu preset: validation perplexity (finetune epochs follow)")
    lines = [
        "# Penn Treebank, `cpu` preset: LSTM vs sharpened sigmoid vs G2-LSTM"
        + ("" if complete else " (PARTIAL)"),
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d}, on {machine_description()}.",
        "Produced by `python benchmarks/ptb_cpu.py --runs RUNS_DIR [--jobs N]` (N runs at a time, the cores "
        "shared out);",
        "one preset (`src/g2lstm/presets/lm/cpu.toml`) for all runs, only the gate options change.",
        "",
        "## Perplexity (valid / test)",
        "",
        "| model | w/o finetune | finetuned | + cache pointer | paper: w/o finetune | finetuned | + cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in RUNS:
        record = records[name]
        paper = PAPER[name]
        lines.append(f"| {LABELS[name]} | {cell(record, 'eval')} | {cell(record, 'eval_finetuned')} | "
                     f"{cell(record, 'eval_cache')} | {paper[0]} | {paper[1]} | {paper[2]} |")
    observations = RESULTS / "observations.md"  # written by a person after reading the numbers
    if observations.exists():
        lines += ["", "## Observations", "", observations.read_text().strip()]
    lines += [
        "",
        "The paper's numbers are for its 24M-parameter model trained 500 + 500 epochs on a GPU; ours are "
        "for the small `cpu` preset and compare the gate types with each other, not with the paper's "
        "absolute values.",
        "",
        f"![learning curves]({figure.name})",
        "",
        "## Pace",
        "",
        "Minutes between consecutive validations in each run's `metrics.jsonl`, fewest / median: the "
        "fewest is the run's own pace at its thread count (in the last table; two runs at a time with one "
        "thread each share the cores by design), the median includes epochs slowed by other work on the "
        "machine.",
        "",
        "| run | epochs | minutes per epoch | finetune epochs | minutes per finetune epoch |",
        "|---|---|---|---|---|",
    ]
    for name in RUNS:
        epochs, minutes = epoch_pace(runs / name, "valid_ppl")
        finetune_epochs, finetune_minutes = epoch_pace(runs / name / "finetune", "valid_ppl")
        lines.append(f"| {name} | {epochs} | {minutes} | {finetune_epochs} | {finetune_minutes} |")
    lines += ["", "## Commands and wall times", "", *stage_table(records, runs)]
    report = RESULTS / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps(records, indent=2))
    return report


def embedded(path: Path) -> list[str]:
    """A generated Markdown file's body (its title dropped), or a note that it is missing."""
    if not path.exists():
        return [f"(not run yet: {path.relative_to(RESULTS)})"]
    return path.read_text().split("\n", 1)[1].strip().splitlines()


def write_compression_report(runs: Path) -> Path:
    """results/ptb-cpu/COMPRESSION.md: Table 3 shape, gate histograms and sensitivity of the finetuned
    models."""
    record_path = runs / "comparison.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    complete = all(record.get(stage, {}).get("done") for stage in ("sweep", "sweep_cache", "analyze"))
    lines = [
        "# Compressing the gates of the PTB `cpu` models" + ("" if complete else " (PARTIAL)"),
        "",
        "Produced by `python benchmarks/ptb_cpu.py --runs RUNS_DIR` once the four runs of "
        "[REPORT.md](REPORT.md) "
        "have finished; the checkpoints are their finetuned best models.",
        "",
        "As the paper, only the input- and forget-gate blocks of every input-to-hidden and hidden-to-hidden "
        "matrix are compressed, each block on its own: Round r = 0.2, Round & clip c = 0.4, ranks "
        "hidden/9 and "
        "hidden/18 (the paper's rank-to-hidden ratios, 1150 → 128 and 64). One column beyond the paper: the "
        "uncompressed model with hard 0/1 gates at inference.",
        "",
        "## Table 3 shape, with the cache pointer (as the paper's Table 3; batch 1)",
        "",
        *embedded(RESULTS / "compression-cache" / "sweep.md"),
        "",
        "Paper (test, with cache): baseline 52.8 → 53.2 / 53.6 / 56.6 / 65.5; G2 52.1 → 52.2 / 52.8 / "
        "53.3 / 56.0.",
        "",
        "## Without the cache pointer (10 streams), with perplexity against rank and rounding step",
        "",
        *embedded(RESULTS / "compression" / "sweep.md"),
        "",
        "![perplexity against rank and rounding step](compression/sweep.png)",
        "",
        "## Gate histograms (valid split, first 20,000 tokens, eval mode)",
        "",
        *embedded(RESULTS / "analysis" / "gate_histograms.md"),
        "",
        "![gate histograms](analysis/gate_histograms.png) ![per-word gates](analysis/gate_words.png)",
        "",
        "## Sensitivity (beyond the paper)",
        "",
        *embedded(RESULTS / "analysis" / "sensitivity.md"),
    ]
    observations = RESULTS / "compression-observations.md"  # written by a person after reading the numbers
    if observations.exists():
        lines += ["", "## Observations", "", observations.read_text().strip()]
    lines += ["", "## Commands and wall times", "", *stage_table({"comparison": record}, runs)]
    report = RESULTS / "COMPRESSION.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="PTB folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; threads are shared out")
    parser.add_argument("--threads", type=int, help="threads per run and for the shared stages "
                        "(default: the cores shared out among the runs, all cores for the shared stages)")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="run just these")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.report_only:
        data = ["--data", args.data] if args.data else []
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            finished = list(pool.map(lambda name: run_all_stages(name, runs, data, threads),
                                     args.only or list(RUNS)))
        if all(finished) and all(runs_complete(load_records(runs)).values()):
            run_stages("comparison", comparison_stages(runs, data), runs / "comparison.json",
                       args.threads or os.cpu_count() or 1)
    print(write_report(runs))
    print(write_compression_report(runs))


if __name__ == "__main__":
    main()
