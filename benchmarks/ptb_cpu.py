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
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from g2lstm.benchmark import machine_description
from g2lstm.train import read_metrics

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
RESULTS = Path(__file__).resolve().parent.parent / "results" / "ptb-cpu"


def stages(name: str, run: Path, data: list[str]) -> dict[str, list[str]]:
    g2lstm = ["g2lstm"]
    return {
        "train": g2lstm + ["lm", "train", "--preset", "cpu", *RUNS[name], "--out", str(run), "--quiet", *data],
        "finetune": g2lstm + ["lm", "finetune", str(run), "--quiet", *data],
        "eval": g2lstm + ["lm", "eval", str(run / "best.pt"), "--json", *data],
        "eval_finetuned": g2lstm + ["lm", "eval", str(run / "finetune" / "best.pt"), "--json", *data],
        "eval_cache": g2lstm + ["lm", "eval", str(run / "finetune" / "best.pt"), "--cache-pointer", "--json", *data],
    }


def run_all_stages(name: str, runs: Path, data: list[str], threads: int) -> None:
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    record_path = run / "stages.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for stage, command in stages(name, run, data).items():
        if record.get(stage, {}).get("done"):
            continue
        start = time.time()
        argv = [sys.executable, "-m", "g2lstm", *command[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        entry = record.setdefault(stage, {"command": " ".join(command), "seconds": 0.0})
        entry["seconds"] += time.time() - start
        if done.returncode != 0:
            entry["error"] = done.stderr[-2000:]
            record_path.write_text(json.dumps(record, indent=2))
            print(f"{name} {stage} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return
        entry["done"] = True
        entry.pop("error", None)
        if stage.startswith("eval"):
            entry["metrics"] = json.loads(done.stdout.strip().splitlines()[-1])
        record_path.write_text(json.dumps(record, indent=2))
        print(f"{name} {stage} done in {entry['seconds'] / 60:.1f} min", flush=True)


def cell(record: dict, stage: str) -> str:
    metrics = record.get(stage, {}).get("metrics")
    return f"{metrics['valid_ppl']:.1f} / {metrics['test_ppl']:.1f}" if metrics else "(not run yet)"


def write_report(runs: Path, jobs: int) -> Path:
    from g2lstm.plots import plot_learning_curves

    RESULTS.mkdir(parents=True, exist_ok=True)
    records = {name: json.loads((runs / name / "stages.json").read_text()) if (runs / name / "stages.json").exists()
               else {} for name in RUNS}
    complete = all(record.get(stage, {}).get("done") for record in records.values()
                   for stage in ("train", "finetune", "eval", "eval_finetuned", "eval_cache"))
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
        "# Penn Treebank, `cpu` preset: LSTM vs sharpened sigmoid vs G2-LSTM" + ("" if complete else " (PARTIAL)"),
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d}, on {machine_description()}; "
        f"{jobs} run(s) at a time ({'1 thread each' if jobs > 1 else 'all threads'}).",
        "Produced by `python benchmarks/ptb_cpu.py --runs RUNS_DIR" + (f" --jobs {jobs}" if jobs > 1 else "") + "`;",
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
    lines += ["", "The paper's numbers are for its 24M-parameter model trained 500 + 500 epochs on a GPU; ours are "
              "for the small `cpu` preset and compare the gate types with each other, not with the paper's "
              "absolute values.", "", f"![learning curves]({figure.name})", "", "## Commands and wall times", "",
              "| run | stage | minutes | command |", "|---|---|---|---|"]
    for name in RUNS:
        for stage, entry in records[name].items():
            state = "" if entry.get("done") else " (unfinished)"
            lines.append(f"| {name} | {stage}{state} | {entry['seconds'] / 60:.1f} | `{entry['command']}` |")
    report = RESULTS / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    (RESULTS / "results.json").write_text(json.dumps(records, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="PTB folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; threads are shared out")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), help="run just these")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    runs = Path(args.runs)
    if not args.report_only:
        data = ["--data", args.data] if args.data else []
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda name: run_all_stages(name, runs, data, threads), args.only or list(RUNS)))
    print(write_report(runs, args.jobs))


if __name__ == "__main__":
    main()
