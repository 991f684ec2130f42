"""The stage runner of the results drivers (``ptb_cpu.py``, ``multi30k_cpu.py``, ``ptb_seeds.py``): each
``g2lstm`` command of a study run once, resumed after an interruption, with its wall time, threads and
metrics recorded; and the tables of those records and of a run's pace per epoch."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from g2lstm.train import read_metrics

__all__ = ["epoch_pace", "pace", "run_stages", "stage_table"]


def run_stages(label: str, commands: dict[str, list[str]], record_path: Path, threads: int) -> bool:
    """Run the ``g2lstm`` commands of a results driver that are not yet done, in order, recording each one's
    command, wall time, thread counts, torch's CPU capability (machines differ, and so does their speed) and
    (for stages named ``eval...``, which print JSON last) metrics in ``record_path``; False after a failure.
    A stage cut off earlier runs again and resumes from its own checkpoint; its wall time then sums the
    invocations that returned (a killed driver records nothing)."""
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for stage, command in commands.items():
        if record.get(stage, {}).get("done"):
            continue
        start = time.time()
        argv = [sys.executable, "-m", "g2lstm", *command[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        entry = record.setdefault(stage, {"command": " ".join(command), "seconds": 0.0})
        entry["seconds"] += time.time() - start
        entry["threads"] = sorted({*entry.get("threads", []), threads})
        capability = torch.backends.cpu.get_cpu_capability()
        entry["cpu_capability"] = sorted({*entry.get("cpu_capability", []), capability})
        if done.returncode != 0:
            entry["error"] = done.stderr[-2000:]
            record_path.write_text(json.dumps(record, indent=2))
            print(f"{label} {stage} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return False
        entry["done"] = True
        entry.pop("error", None)
        if stage.startswith("eval"):
            entry["metrics"] = json.loads(done.stdout.strip().splitlines()[-1])
        record_path.write_text(json.dumps(record, indent=2))
        print(f"{label} {stage} done in {entry['seconds'] / 60:.1f} min", flush=True)
    return True


def stage_table(records: dict[str, dict], runs: Path | None = None) -> list[str]:
    """Markdown lines: every stage :func:`run_stages` recorded, per run, with minutes, threads and command,
    its paths shown relative to the runs folder ``runs``, the data folder and the repository
    (:func:`portable`)."""
    lines = ["A stage's minutes sum the invocations that ran it to its end or to a failure; an invocation "
             "killed together with its driver is not counted.", "",
             "| run | stage | minutes | threads | CPU capability | command |", "|---|---|---|---|---|---|"]
    for name, record in records.items():
        for stage, entry in record.items():
            state = "" if entry.get("done") else " (unfinished)"
            threads = ", ".join(map(str, entry.get("threads", []))) or "not recorded"
            capability = ", ".join(entry.get("cpu_capability", [])) or "not recorded"
            lines.append(f"| {name} | {stage}{state} | {entry['seconds'] / 60:.1f} | {threads} | "
                         f"{capability} | `{portable(entry['command'], runs)}` |")
    return lines


def portable(text: str, runs: Path | None = None) -> str:
    """``text`` with the absolute paths of this machine written as ``$RUNS/...`` (the runs folder ``runs``),
    ``$G2LSTM_DATA/...`` and paths relative to the repository, so that results name no machine's folders."""
    places = [(Path(__file__).resolve().parent.parent, ".")]
    if os.environ.get("G2LSTM_DATA"):
        places.append((Path(os.environ["G2LSTM_DATA"]).resolve(), "$G2LSTM_DATA"))
    if runs is not None:
        places.append((Path(runs).resolve(), "$RUNS"))
    for folder, name in sorted(places, key=lambda place: len(str(place[0])), reverse=True):
        text = text.replace(str(folder), name)
    return text


def epoch_pace(run_dir: Path, key: str) -> tuple[int, str]:
    """Validations (records with ``key`` and an epoch) in a run folder's ``metrics.jsonl``, and the fewest and
    the median minutes between consecutive ones: the run's own pace, and its pace including slowed epochs."""
    if not (run_dir / "metrics.jsonl").exists():
        return 0, "–"
    return pace([m for m in read_metrics(run_dir) if key in m and "epoch" in m])


def pace(validations: list[dict]) -> tuple[int, str]:
    """The number of validation records (each with its ``time``) and the fewest and the median minutes
    between consecutive ones."""
    ends = [m["time"] for m in validations]
    gaps = [later - earlier for earlier, later in zip(ends, ends[1:])]
    return len(ends), f"{min(gaps) / 60:.1f} / {statistics.median(gaps) / 60:.1f}" if gaps else "–"
