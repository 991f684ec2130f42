"""Seeded LSTM vs G2 comparisons on Penn Treebank, `cpu-reg` and `cpu` presets: results/ptb-seeds.

    python benchmarks/ptb_seeds.py --runs RUNS_DIR --jobs 2        # every run, resumable, two at a time
    python benchmarks/ptb_seeds.py --runs RUNS_DIR --only cpu-reg-lstm-s141 cpu-reg-g2-s141
    python benchmarks/ptb_seeds.py --runs RUNS_DIR --report-only

Each run is a chain of `g2lstm` commands (train, finetune, evaluations, compression sweep, gate
histograms); a stage that finished is not run again and one that was cut off resumes from its checkpoint.
Runs are taken in the order of RUNS, pairs (LSTM and G2 of one seed) next to each other, so that with two
jobs each pair finishes together. The decision rules are in results/ptb-seeds/DECISION.md, written
before the runs; the report (REPORT.md, results.json, and each run's metrics, sweep, histogram and stage
JSON under runs/) applies them to the runs done so far and says which are missing. No machine path is written.
A run whose folder is not under RUNS_DIR (made on another machine, its folder gone) keeps its entry of the
committed results.json and its committed copies, so the report stays whole when the runs continue elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seeded import mean_sd_cell, paired_row, portable, value_cell, verdict_cell

from g2lstm.benchmark import PairedDifference, machine_description, paired_verdict
from g2lstm.train import read_metrics

from stages import pace, run_stages, stage_table

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "results" / "ptb-seeds"
SEEDS = (141, 142, 143)


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: preset, gate options and seed."""

    preset: str
    gate: str
    seed: int
    noise_p: float | None = None  # None: the preset's (0.2)
    scheduled: bool = False  # SCHEDULE's finetune of the G2 run of this preset and seed (DECISION.md rule 5)

    @property
    def name(self) -> str:
        gate = self.gate if self.noise_p is None else f"{self.gate}-p{self.noise_p:g}"
        return f"{self.preset}-{gate}{'-sched' if self.scheduled else ''}-s{self.seed}"

    @property
    def source(self) -> str:
        """The run whose trained model a scheduled run finetunes."""
        return f"{self.preset}-{self.gate}-s{self.seed}"

    def train_options(self) -> list[str]:
        options = ["--preset", self.preset, "--gate", self.gate, "--seed", str(self.seed)]
        return options + ([] if self.noise_p is None else ["--noise-p", str(self.noise_p)])


# DECISION.md rule 5, fixed before any scheduled run: finetune the trained G2 (p = 0.2) model for 4 epochs
# (the preset's 2 plus 2) with p rising to 1 over the first 2, so that at least 2 epochs run at p = 1.
SCHEDULE = ["--epochs", "4", "--set", "noise_p_final=1", "--set", "schedule_epochs=2"]
SCHEDULE_TEXT = "finetune p 0.2 -> 1 over 2 of 4 epochs"

RUNS = (
    *(Run("cpu-reg", gate, seed) for seed in SEEDS for gate in ("lstm", "g2")),
    Run("cpu-reg", "sharpened", 141),
    Run("cpu-reg", "g2", 141, noise_p=1.0),
    *(Run("cpu-reg", "g2", seed, scheduled=True) for seed in SEEDS),
    *(Run("cpu", gate, seed) for seed in (142, 143, 141) for gate in ("lstm", "g2")),
)


def stages(run: Run, folder: Path, data: list[str]) -> dict[str, list[str]]:
    """The commands of one run, in order; `eval...` stages print their metrics as a JSON line. A scheduled
    run has no training of its own: it finetunes its source run's model into ``folder``."""
    best = str(folder / "best.pt" if run.scheduled else folder / "finetune" / "best.pt")
    source = folder.parent / run.source
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
    if run.scheduled:
        del commands["train"]
        commands["finetune"] = ["g2lstm", "lm", "finetune", str(source), "--out", str(folder), *SCHEDULE,
                                "--quiet", *data]
    return commands


def run_all_stages(run: Run, runs: Path, data: list[str], threads: int) -> bool:
    folder = runs / run.name
    if run.scheduled and not _load(runs / run.source / "stages.json").get("train", {}).get("done"):
        print(f"{run.name} waits for {run.source}'s training to finish", flush=True)
        return False
    folder.mkdir(parents=True, exist_ok=True)
    return run_stages(run.name, stages(run, folder, data), folder / "stages.json", threads)


# ---------------------------------------------------------------------------------------------- the report

COMPRESSIONS = ("round", "round_clip", "rank_h9", "rank_h18", "hard")
COMPRESSION_LABELS = {"round": "round 0.2", "round_clip": "round 0.2 & clip 0.4", "rank_h9": "rank H/9",
                      "rank_h18": "rank H/18", "hard": "hard gates"}
EQUIVALENCE = 0.01  # DECISION.md rule 1: "no worse" within 1 % of the LSTM's mean perplexity


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _sweep_column(label: str) -> str | None:
    """The results.json key of a sweep column (``rank 28`` is H/9 or H/18 by its place in the sweep)."""
    names = {"round 0.2": "round", "round 0.2 & clip 0.4": "round_clip", "hard gates": "hard"}
    return names.get(label)


def _asgd_epoch(folder: Path) -> int | None:
    """The first epoch validated with averaged SGD's weights in training (None: never switched)."""
    if not (folder / "metrics.jsonl").exists():
        return None
    return next((m["epoch"] for m in read_metrics(folder)
                 if m.get("phase") == "train" and m.get("averaging") and "valid_ppl" in m), None)


def collect(run: Run, runs: Path, results: Path, roots: dict[str, str]) -> dict[str, Any]:
    """One run's entry of results.json; its small files are copied (made portable) under ``results/runs``."""
    folder, copies = runs / run.name, results / "runs" / run.name
    record = _load(folder / "stages.json")

    def metric(stage: str, key: str) -> Any:
        return record.get(stage, {}).get("metrics", {}).get(key)

    sweep = next(iter(_load(folder / "sweep" / "sweep.json").get("runs", {}).values()), {}).get("table", {})
    compression: dict[str, Any] = {}
    ranks = [label for label in sweep if label.startswith("rank ")]
    for label, values in sweep.items():
        by_rank = {ranks[0]: "rank_h9", ranks[-1]: "rank_h18"} if ranks else {}
        key = _sweep_column(label) or by_rank.get(label)
        if key is not None:
            compression[key] = {
                "label": label,
                "test_ppl": values["test_ppl"],
                "gain": values["test_ppl"] - sweep["original"]["test_ppl"],
            }
    histograms = next(
        iter(_load(folder / "analysis" / "gate_histograms.json").get("histograms", {}).values()), {}
    )
    outer = {
        f"{layer}_{gate}": values["outer_share"]
        for layer, gates in histograms.items()
        for gate, values in gates.items()
    }
    files = {}
    copies.mkdir(parents=True, exist_ok=True)
    trained = runs / run.source if run.scheduled else folder  # the folder of the training phase
    sources = {
        "metrics": trained / "metrics.jsonl",
        "finetune_metrics": (folder if run.scheduled else folder / "finetune") / "metrics.jsonl",
        "sweep": folder / "sweep" / "sweep.json",
        "histograms": folder / "analysis" / "gate_histograms.json",
        "stages": folder / "stages.json",
    }
    for key, source in sources.items():
        if not source.exists():
            continue
        target = copies / ("finetune_metrics.jsonl" if key == "finetune_metrics" else source.name)
        if run.scheduled and key == "metrics":  # the source run's training, copied with that run
            target = results / "runs" / run.source / source.name
        elif source.suffix == ".jsonl":
            lines = [json.dumps(portable(line, roots)) for line in read_metrics(source.parent)]
            target.write_text("".join(line + "\n" for line in lines))
        else:
            target.write_text(json.dumps(portable(json.loads(source.read_text()), roots), indent=2) + "\n")
        files[key] = str(target.relative_to(REPOSITORY if target.is_relative_to(REPOSITORY) else results))
    done = all(entry.get("done") for entry in record.values()) and len(record) == len(stages(run, folder, []))
    validations = [
        len([m for m in read_metrics(path.parent) if "valid_ppl" in m and "epoch" in m])
        for path in (sources["metrics"], sources["finetune_metrics"])
        if path.exists()
    ]
    return {
        "name": run.name,
        "preset": run.preset,
        "gate": run.gate,
        "noise_p": (run.noise_p if run.noise_p is not None else 0.2) if run.gate == "g2" else None,
        "schedule": SCHEDULE_TEXT if run.scheduled else None,
        "seed": run.seed,
        "asgd_epoch": _asgd_epoch(trained),
        "epoch_cap": _load(trained / "config.json").get("epochs"),
        "done": done,
        "epochs": " + ".join(map(str, validations)),
        "valid_ppl": metric("eval", "valid_ppl"),
        "test_ppl": metric("eval", "test_ppl"),
        "valid_ppl_cache": metric("eval_cache", "valid_ppl"),
        "test_ppl_cache": metric("eval_cache", "test_ppl"),
        "test_ppl_tempered": metric("eval_tempered", "test_ppl"),
        "compression": compression,
        "outer_share": outer,
        "metrics": files.get("metrics"),
        "finetune_metrics": files.get("finetune_metrics"),
        "sweep": files.get("sweep"),
        "histograms": files.get("histograms"),
    }


Value = Callable[[dict], "float | None"]


def compare(entries: list[dict], preset: str, value: Value, rule: Callable[[PairedDifference], str],
            schedule: str | None = None) -> dict:
    """Paired G2 (p = 0.2; finetuned with ``schedule`` if given) against LSTM of ``preset`` over the seeds
    where both have ``value``; positive differences favour G2 (``value`` is oriented so that larger is
    better for G2)."""
    by_key = {(e["preset"], e["gate"], e["noise_p"], e["schedule"], e["seed"]): e for e in entries}
    seeds, lstm, g2 = [], [], []
    for seed in SEEDS:
        a = by_key.get((preset, "lstm", None, None, seed))
        b = by_key.get((preset, "g2", 0.2, schedule, seed))
        if a is not None and b is not None and value(a) is not None and value(b) is not None:
            seeds.append(seed)
            lstm.append(value(a))
            g2.append(value(b))
    record: dict[str, Any] = {
        "seeds": seeds,
        "differences": [b - a for a, b in zip(lstm, g2)],
        "complete": len(seeds) == len(SEEDS),
    }
    if len(seeds) >= 2:
        paired = PairedDifference.of(lstm, g2)
        record.update(mean=paired.mean, sd=paired.sd, se=paired.se, verdict=rule(paired))
    return record


def _quality(margin: float) -> Callable[[PairedDifference], str]:
    words = {"better": "G2 better", "worse": "G2 worse", "no worse": "G2 no worse (equivalent)"}
    return lambda paired: words.get(paired_verdict(paired, margin), "not resolved")


def _robust(paired: PairedDifference) -> str:
    return {"better": "G2 more robust", "worse": "G2 less robust"}.get(paired_verdict(paired), "not resolved")


def _binary(paired: PairedDifference) -> str:
    return "G2 more binary" if all(d > 0 for d in paired.differences) else "not in every pair"


def comparisons(entries: list[dict], preset: str) -> dict[str, dict]:
    """DECISION.md rules 1-3 for one preset; perplexity differences are shown as G2 - LSTM (negative favours
    G2), so the perplexities are compared negated."""
    margin = EQUIVALENCE * _lstm_mean(entries, preset)
    out = {
        key: compare(entries, preset, lambda e, k=key: None if e[k] is None else -e[k], _quality(margin))
        for key in ("test_ppl", "valid_ppl", "test_ppl_cache")
    }
    for column in COMPRESSIONS:
        out[f"gain: {column}"] = compare(
            entries,
            preset,
            lambda e, c=column: -e["compression"][c]["gain"] if c in e["compression"] else None,
            _robust,
        )
    for share in ("layer0_input", "layer0_forget", "layer1_input", "layer1_forget"):
        out[f"outer: {share}"] = compare(entries, preset, lambda e, s=share: e["outer_share"].get(s), _binary)
    return out


def _negated(record: dict) -> dict:
    """A comparison of negated values shown as G2 - LSTM of the values themselves."""
    flipped = {**record, "differences": [-d for d in record["differences"]]}
    if "mean" in record:
        flipped["mean"] = -record["mean"]
    return flipped


def _baseline_lines(entries: list[dict]) -> list[str]:
    """DECISION.md rule 4: the regularised LSTM against the unregularised one, per seed (validation)."""
    cells = []
    for seed in SEEDS:
        reg = next(
            (e for e in entries if (e["preset"], e["gate"], e["seed"]) == ("cpu-reg", "lstm", seed)), None
        )
        plain = next(
            (e for e in entries if (e["preset"], e["gate"], e["seed"]) == ("cpu", "lstm", seed)), None
        )
        if reg and plain and reg["valid_ppl"] and plain["valid_ppl"]:
            cells.append((seed, reg["valid_ppl"], plain["valid_ppl"]))
    if not cells:
        return ["- Rule 4 (a proper regularised baseline): no seed has both LSTM runs yet."]
    holds = all(reg < plain for _, reg, plain in cells)
    pairs = "; ".join(f"seed {seed}: {reg:.1f} against {plain:.1f}" for seed, reg, plain in cells)
    verdict = "holds" if holds else "does not hold"
    partial = "" if len(cells) == len(SEEDS) else f" (PARTIAL: {len(cells)} of {len(SEEDS)} seeds)"
    return [
        f"- Rule 4 (the cpu-reg LSTM's finetuned validation perplexity below the cpu LSTM's): **{verdict}**"
        f"{partial} — {pairs}."
    ]


PAPER_SHARES = {"layer0_input": 0.747, "layer0_forget": 0.619}  # DECISION.md rule 5: the paper's G2 shares
HARD_GATE_COST = 0.02  # rule 5: hard-gate test perplexity within 2 % of the model's own


def _schedule_lines(entries: list[dict]) -> list[str]:
    """DECISION.md rule 5 on the scheduled cpu-reg G2 runs: each of its three parts, per seed and in the
    mean, and the verdict."""
    runs = [e for e in entries if e["schedule"] and e["preset"] == "cpu-reg" and e["test_ppl"] is not None]
    if not runs:
        return ["No scheduled run has finished its evaluation yet (PARTIAL)."]
    lines = ["| seed | test | hard gates | hard-gate cost | outer share, layer 0 input / forget |",
             "|---|---|---|---|---|"]
    shares_met, hard_met = [], []
    for e in runs:
        hard = e["compression"].get("hard")
        cost = hard["gain"] / (hard["test_ppl"] - hard["gain"]) if hard else None
        shares = [e["outer_share"].get(key) for key in PAPER_SHARES]
        shares_met.append(all(s is not None and s >= PAPER_SHARES[k] for s, k in zip(shares, PAPER_SHARES)))
        hard_met.append(cost is not None and cost <= HARD_GATE_COST)
        share_text = " / ".join("–" if s is None else f"{100 * s:.1f} %" for s in shares)
        lines.append(f"| {e['seed']} | {value_cell(e['test_ppl'])} | "
                     f"{value_cell(hard['test_ppl'] if hard else None)} | "
                     f"{'–' if cost is None else f'{100 * cost:+.1f} %'} | {share_text} |")
    quality = compare(entries, "cpu-reg", lambda e: None if e["test_ppl"] is None else -e["test_ppl"],
                      _quality(EQUIVALENCE * _lstm_mean(entries, "cpu-reg")), schedule=SCHEDULE_TEXT)
    partial = "" if len(runs) == len(SEEDS) else f" (PARTIAL: {len(runs)} of {len(SEEDS)} seeds)"
    return lines + [
        "",
        "| measure | scheduled G2 − LSTM per seed | mean | sd | se | verdict |",
        "|---|---|---|---|---|---|",
        paired_row("test perplexity", _negated(quality)),
        "",
        f"Rule 5{partial}: outer-bin shares at least the paper's (74.7 % input, 61.9 % forget) in "
        f"{sum(shares_met)} of {len(runs)} seeds; hard-gate cost within 2 % in {sum(hard_met)} of "
        f"{len(runs)}; test perplexity against the paired LSTM: **{verdict_cell(quality)}**.",
    ]


def _validations(entry: dict, key: str, results: Path) -> list[dict]:
    """The per-epoch validation records of a run's copied ``metrics`` or ``finetune_metrics`` file."""
    if entry[key] is None:
        return []
    source = (REPOSITORY if (REPOSITORY / entry[key]).exists() else results) / entry[key]
    records = [json.loads(line) for line in source.read_text().splitlines()]
    return [m for m in records if "valid_ppl" in m and "epoch" in m]


def _plateau_lines(entries: list[dict], results: Path) -> list[str]:
    """Issue 13's "reach its plateau within its epoch cap": whether training ended by the preset's plateau
    stop or at the cap, and the end of each finished run's validation curve, from the committed metrics."""
    lines = ["| run | training epochs / cap | ASGD from epoch | valid, last 3 training epochs "
             "| valid, finetune epochs | last finetune epoch's gain |", "|---|---|---|---|---|---|"]
    finished, at_cap, gains = 0, 0, []
    for e in entries:
        train = _validations(e, "metrics", results)
        if not e["done"] or e["schedule"] or not train:
            continue
        finetune = _validations(e, "finetune_metrics", results)
        finished += 1
        at_cap += e["epoch_cap"] is not None and len(train) >= e["epoch_cap"]
        gain = (train + finetune)[-2]["valid_ppl"] - finetune[-1]["valid_ppl"] if finetune else None
        if gain is not None:
            gains.append(gain)
        switch = e["asgd_epoch"] or "finetune only"
        lines.append(
            f"| {e['name']} | {len(train)} / {e['epoch_cap'] or '–'} | {switch} | "
            + " → ".join(f"{m['valid_ppl']:.2f}" for m in train[-3:]) + " | "
            + (" → ".join(f"{m['valid_ppl']:.2f}" for m in finetune) or "–") + f" | {value_cell(gain)} |"
        )
    if not finished:
        return ["No run has finished yet (PARTIAL)."]
    summary = (f"Training ended at the epoch cap in {at_cap} of {finished} finished runs and by the "
               f"preset's plateau stop in {finished - at_cap}.")
    if gains:
        summary += (f" The last finetune epoch still lowered validation perplexity by {min(gains):.2f} to "
                    f"{max(gains):.2f}.")
    return [*lines, "", summary]


def _lstm_mean(entries: list[dict], preset: str) -> float:
    values = [
        e["test_ppl"] for e in entries if e["preset"] == preset and e["gate"] == "lstm" and e["test_ppl"]
    ]
    return sum(values) / len(values) if values else 0.0


def _entries(runs: Path, results: Path, roots: dict[str, str]) -> list[dict]:
    """results.json's entries: from each run's folder under ``runs``, else (its folder gone, or made on
    another machine) the entry the committed results.json has for it."""
    committed = {e["name"]: e for e in _load(results / "results.json").get("runs", [])}
    entries = []
    for run in RUNS:
        if (runs / run.name / "metrics.jsonl").exists():
            entries.append(collect(run, runs, results, roots))
        elif run.name in committed:
            entries.append(committed[run.name])
    return entries


def _stage_records(runs: Path, results: Path, entries: list[dict]) -> dict[str, dict]:
    """Each run's stage record: its folder's, else its committed copy (runs from results.json only)."""
    records = {}
    for e in entries:
        live, copy = runs / e["name"] / "stages.json", results / "runs" / e["name"] / "stages.json"
        records[e["name"]] = _load(live if live.exists() else copy)
    return records


def write_report(runs: Path, results: Path, roots: dict[str, str]) -> Path:
    """REPORT.md and results.json in ``results`` from the run folders under ``runs`` and, for runs made
    elsewhere, the committed results.json and copies in ``results``."""
    from g2lstm.plots import plot_learning_curves

    results.mkdir(parents=True, exist_ok=True)
    entries = _entries(runs, results, roots)
    (results / "results.json").write_text(json.dumps({"runs": entries}, indent=2) + "\n")
    complete = len(entries) == len(RUNS) and all(e["done"] for e in entries)
    lines = [
        f"# Penn Treebank, seeded: LSTM against G2-LSTM{'' if complete else ' (PARTIAL)'}",
        "",
        f"Report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{machine_description(threads=False)} from the run folders (and, for runs whose folder was on an "
        "earlier machine, the committed copies under [runs/](runs/)) by "
        "`python benchmarks/ptb_seeds.py --runs RUNS_DIR --report-only`; runs made with "
        "`python benchmarks/ptb_seeds.py --runs RUNS_DIR --jobs N` (N runs side by side, the cores shared "
        "out; each stage's threads and torch's CPU capability are in the table of commands). The decision "
        "rules, [DECISION.md](DECISION.md), were committed before the first run started.",
        "",
        f"Runs done: {sum(e['done'] for e in entries)} of {len(RUNS)}"
        + (
            ""
            if complete
            else "; missing or running: "
            + ", ".join(
                run.name for run in RUNS if not any(e["name"] == run.name and e["done"] for e in entries)
            )
        )
        + ".",
        "",
        "## Every run (valid / test perplexity after finetuning)",
        "",
        "| run | epochs (train + finetune) | ASGD from epoch | valid | test | + cache (valid / test) "
        "| test, tempered eval | done |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        switch = e["asgd_epoch"] or ("finetune only" if e["done"] else "not yet")  # the trigger never fired
        lines.append(
            f"| {e['name']} | {e['epochs']} | {switch} | "
            f"{value_cell(e['valid_ppl'])} | {value_cell(e['test_ppl'])} | "
            f"{value_cell(e['valid_ppl_cache'])} / {value_cell(e['test_ppl_cache'])} | "
            f"{value_cell(e['test_ppl_tempered'])} | {'yes' if e['done'] else 'no'} |"
        )
    lines += ["", "## Did training reach its plateau within the epoch cap?", "",
              *_plateau_lines(entries, results)]
    for preset in ("cpu-reg", "cpu"):
        mine = [e for e in entries if e["preset"] == preset]
        stats = comparisons(entries, preset)
        lines += [
            "",
            f"## `{preset}`: paired G2 (p = 0.2) − LSTM",
            "",
            "| model | test perplexity, mean ± sd over seeds |",
            "|---|---|",
        ]
        for gate, noise in (("lstm", None), ("g2", 0.2)):
            values = [
                e["test_ppl"]
                for e in mine
                if e["gate"] == gate and e["noise_p"] == noise and not e["schedule"] and e["test_ppl"]
            ]
            lines.append(f"| {gate} | {mean_sd_cell(values)} |")
        lines += [
            "",
            "| measure | G2 − LSTM per seed | mean | sd | se | verdict |",
            "|---|---|---|---|---|---|",
            paired_row("test perplexity (rule 1)", _negated(stats["test_ppl"])),
            paired_row("valid perplexity", _negated(stats["valid_ppl"])),
            paired_row("test perplexity, cache pointer", _negated(stats["test_ppl_cache"])),
        ]
        lines += [
            paired_row(f"perplexity gained, {COMPRESSION_LABELS[c]} (rule 2)", _negated(stats[f"gain: {c}"]))
            for c in COMPRESSIONS
        ]
        lines += [
            paired_row(
                f"outer-bin share, {s.replace('_', ' ')} (rule 3), %",
                stats[f"outer: {s}"],
                scale=100,
                digits=1,
            )
            for s in ("layer0_input", "layer0_forget", "layer1_input", "layer1_forget")
        ]
        lines += ["", f"Rule 1 on `{preset}` (test perplexity): **{verdict_cell(stats['test_ppl'])}**."]
    lines += ["", "## The regularised baseline", "", *_baseline_lines(entries)]
    lines += ["", f"## Binary gates without a perplexity cost: {SCHEDULE_TEXT} (rule 5)", "",
              *_schedule_lines(entries)]
    curves = {}
    for e in entries:
        points = [(m["epoch"], m["valid_ppl"]) for m in _validations(e, "metrics", results)]
        base = points[-1][0] if points else 0  # finetune epochs follow the training's
        points += [(base + m["epoch"], m["valid_ppl"]) for m in _validations(e, "finetune_metrics", results)]
        curves[e["name"]] = points
    if curves:
        figure = plot_learning_curves(
            curves,
            results / "learning_curves.png",
            "PTB, seeded runs: validation perplexity (finetune epochs follow)",
        )
        lines += ["", f"![learning curves]({figure.name})"]
    observations = results / "observations.md"  # written by a person after reading the numbers
    if observations.exists():
        lines += ["", "## Observations", "", observations.read_text().strip()]
    lines += ["", "## Pace", "", "| run | epochs | minutes per epoch (fewest / median) |", "|---|---|---|"]
    for e in entries:  # a scheduled run's own epochs are its finetune's
        epochs, minutes = pace(_validations(e, "finetune_metrics" if e["schedule"] else "metrics", results))
        lines.append(f"| {e['name']} | {epochs} | {minutes} |")
    records = _stage_records(runs, results, entries)
    lines += ["", "## Commands and wall times", "", *portable(stage_table(records), roots)]
    report = results / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="PTB folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; the cores are shared out")
    parser.add_argument("--only", nargs="+", choices=[run.name for run in RUNS], help="run just these")
    parser.add_argument("--report-only", action="store_true", help="write the report from the runs so far")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the report's folder")
    args = parser.parse_args()
    runs = Path(args.runs)
    roots = {str(runs.resolve()): "RUNS_DIR", str(REPOSITORY): "REPOSITORY"}
    if args.data:
        roots[str(Path(args.data).resolve())] = "DATA_DIR"
    if not args.report_only:
        data = ["--data", args.data] if args.data else []
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        chosen = [run for run in RUNS if args.only is None or run.name in args.only]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda run: run_all_stages(run, runs, data, threads), chosen))
    print(write_report(runs, args.results, roots))


if __name__ == "__main__":
    main()
