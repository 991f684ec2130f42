"""How many epochs until validation perplexity stops improving, for candidate language-model presets.

Trains a grid of preset variants side by side (one process each, on one device) with the averaged-SGD
switch on, and writes each run's validation curve and step time to one JSON file. The epoch at which a
curve flattens does not depend on the hardware, so a fast device can choose the settings of the ``cpu``
preset, whose wall time is then measured on the CPU itself.

    PYTHONPATH=src python benchmarks/lm_convergence.py --data DIR --device cuda --epochs 14 --json probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LIGHT = {"dropout": 0.1, "dropout_hidden": 0.1, "dropout_input": 0.1, "dropout_embedding": 0.0,
         "weight_dropout": 0.1}
NONE = {"dropout": 0.0, "dropout_hidden": 0.0, "dropout_input": 0.0, "dropout_embedding": 0.0,
        "weight_dropout": 0.0}
MEDIUM = {"dropout": 0.2, "dropout_hidden": 0.1, "dropout_input": 0.2, "dropout_embedding": 0.0,
          "weight_dropout": 0.2}

GRID: dict[str, dict[str, object]] = {
    "preset": {},
    "light": LIGHT,
    "none": NONE,
    "emb64-light": {"emb_size": 64, **LIGHT},
    "emb64-medium": {"emb_size": 64, **MEDIUM},
    "emb64-none": {"emb_size": 64, **NONE},
    "light-g2": {"gate": "g2", **LIGHT},
    "emb64-light-g2": {"gate": "g2", "emb_size": 64, **LIGHT},
}


def launch(name: str, overrides: dict[str, object], args: argparse.Namespace, root: Path) -> subprocess.Popen:
    settings = {
        "gate": "lstm",
        "epochs": args.epochs,
        "nonmono": 1,
        "checkpoint_minutes": 1000.0,
        **overrides,
    }
    command = [sys.executable, "-m", "g2lstm", "lm", "train", "--preset", args.preset, "--data", args.data,
               "--device", args.device, "--out", str(root / name), "--quiet"]
    for key, value in settings.items():
        command += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    log = open(root / f"{name}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})


def curves(root: Path, started: float) -> dict[str, dict[str, object]]:
    summary: dict[str, dict[str, object]] = {}
    for name, overrides in GRID.items():
        metrics = root / name / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        valid = [r for r in records if "valid_ppl" in r and "epoch" in r and not r.get("final")]
        steps = [r["ms_per_step"] for r in records if "ms_per_step" in r]
        summary[name] = {
            "overrides": overrides,
            "valid_ppl": [round(r["valid_ppl"], 2) for r in valid],
            "averaging": [r.get("averaging", False) for r in valid],
            "median_ms_per_step": sorted(steps)[len(steps) // 2] if steps else None,
            "seconds": round(time.time() - started, 1),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before unfinished runs stop")
    parser.add_argument("--work", default="runs/convergence", help="folder for the runs")
    parser.add_argument("--json", required=True, help="where the summary goes (rewritten every 20 s)")
    args = parser.parse_args()

    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    processes = {name: launch(name, overrides, args, root) for name, overrides in GRID.items()}
    while any(p.poll() is None for p in processes.values()) and time.time() - started < args.timeout:
        time.sleep(20)
        Path(args.json).write_text(json.dumps(curves(root, started), indent=1))
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    summary = curves(root, started)
    for name, process in processes.items():
        summary[name]["exit_code"] = process.wait()
    Path(args.json).write_text(json.dumps(summary, indent=1))
    for name, run in summary.items():
        print(f"{name:16s} {run['median_ms_per_step']} ms/step  {run['valid_ppl']}")


if __name__ == "__main__":
    main()
