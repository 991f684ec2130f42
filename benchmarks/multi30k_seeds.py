"""Seeded LSTM vs G2 translation runs with the paper's decoder, Multi30k De->En: results/multi30k-seeds.

    python benchmarks/multi30k_seeds.py --runs RUNS_DIR --jobs 2        # every run, resumable, two at a time
    python benchmarks/multi30k_seeds.py --runs RUNS_DIR --only lstm-s142 g2-s142
    python benchmarks/multi30k_seeds.py --runs RUNS_DIR --report-only

Each run is a chain of `g2lstm` commands: `train` (preset multi30k-cpu, whose decoder is the conditional
one), `eval` (test BLEU and sacreBLEU, the preset's beam 5), `sweep` (Table 4 on the authors' blocks, the
input blocks as extra columns) and `analyze` (decoder gate histograms over 10,000 training pairs). A stage
that finished is not run again and one that was cut off resumes from its checkpoint. Runs are taken in the
order of RUNS, pairs (LSTM and G2 of one seed) next to each other, so that with two jobs each pair finishes
together; the sharpened sigmoid comes last, with 30 epochs.

The report (REPORT.md, results.json, and each run's metrics, sweep, histogram and stage JSON under runs/)
applies the rules of results/multi30k-seeds/DECISION.md, written before the runs; no machine path is
written. It is made from the committed copies as much as from the run folders: a run whose folder is not
under RUNS_DIR (made on another machine) keeps its entry of the committed results.json, and the seed-141
histogram figure and per-word gate map are drawn from those runs' committed analyses, so the runs may be
spread over machines.
The whole chain on the `tiny` preset, in minutes, with the report kept out of the repository:

    python benchmarks/multi30k_seeds.py --runs /tmp/smoke --results /tmp/smoke/report --preset tiny \\
        --set max_steps=20 --max-pairs 200
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
from g2lstm.mt.analyze import merge_translation_analyses, write_translation_analysis
from g2lstm.train import read_metrics

from stages import pace, run_stages, stage_table

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "results" / "multi30k-seeds"
SEEDS = (141, 142, 143)
FIGURE_SEED = 141
EQUIVALENCE_MARGIN = 0.5  # BLEU: DECISION.md rule 1
AUTHORS_SETTINGS = ("round 0.5", "round 0.5 & clip 1", "rank 16", "rank 8", "hard gates")  # at hidden 128
INPUT_PREFIX = "input blocks: "
ATTENTION_ON_TOP = REPOSITORY / "results" / "multi30k-cpu" / "results.json"  # the old decoder, one seed


@dataclass(frozen=True)
class Run:
    """One training run of the comparison: gate type, seed and (None: the preset's) epoch cap."""

    gate: str
    seed: int
    epochs: int | None = None

    @property
    def name(self) -> str:
        return f"{self.gate}-s{self.seed}"

    def train_options(self) -> list[str]:
        options = ["--gate", self.gate, "--seed", str(self.seed)]
        return options + ([] if self.epochs is None else ["--epochs", str(self.epochs)])


RUNS = (*(Run(gate, seed) for seed in SEEDS for gate in ("lstm", "g2")),
        Run("sharpened", FIGURE_SEED, epochs=30))
FIGURE_RUNS = [run for run in RUNS if run.seed == FIGURE_SEED]


@dataclass(frozen=True)
class Settings:
    """What every run's commands share: preset, its overrides, the data option and the pairs analyzed."""

    preset: str = "multi30k-cpu"
    overrides: tuple[str, ...] = ()  # KEY=VALUE for `mt train --set`
    data: tuple[str, ...] = ()  # ("--data", DIR) or ()
    max_pairs: int = 10_000


def stages(run: Run, folder: Path, settings: Settings) -> dict[str, list[str]]:
    """The commands of one run, in order; `eval` prints its metrics as a JSON line."""
    best = str(folder / "best.pt")
    sets = [item for override in settings.overrides for item in ("--set", override)]
    return {
        "train": ["g2lstm", "mt", "train", "--preset", settings.preset, *run.train_options(), *sets,
                  "--out", str(folder), "--quiet", *settings.data],
        "eval": ["g2lstm", "mt", "eval", best, "--split", "test", "--json", "--output",
                 str(folder / "test.hyp"), *settings.data],
        "sweep": ["g2lstm", "compress", "sweep", best, "--out", str(folder / "sweep"), *settings.data],
        "analyze": ["g2lstm", "analyze", best, "--out", str(folder / "analysis"), "--max-pairs",
                    str(settings.max_pairs), *settings.data],
    }


def run_all_stages(run: Run, runs: Path, settings: Settings, threads: int) -> bool:
    folder = runs / run.name
    folder.mkdir(parents=True, exist_ok=True)
    return run_stages(run.name, stages(run, folder, settings), folder / "stages.json", threads)


# ---------------------------------------------------------------------------------------------- report


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _stages_done(folder: Path) -> bool:
    record = _load(folder / "stages.json")
    return all(record.get(stage, {}).get("done") for stage in ("train", "eval", "sweep", "analyze"))


def _epochs(folder: Path) -> dict[str, Any]:
    """Validations, the best epoch and how training ended, from a run's metrics and config."""
    if not (folder / "metrics.jsonl").exists():
        return {"epochs": 0, "best_epoch": None, "best_valid_bleu": None, "stopped": "not started",
                "cap": None}
    metrics = read_metrics(folder)
    epochs = [m for m in metrics if "valid_bleu" in m and "final" not in m]
    cap = _load(folder / "config.json").get("epochs")
    best = max(epochs, key=lambda m: m["valid_bleu"]) if epochs else None
    if not any(m.get("final") for m in metrics):
        stopped = "running"
    elif len(epochs) < (cap or 0):
        stopped = "early stopping"
    else:
        stopped = "capped" if best is not None and best["epoch"] == cap else "at the cap"
    return {"epochs": len(epochs), "best_epoch": best["epoch"] if best else None,
            "best_valid_bleu": best["valid_bleu"] if best else None, "stopped": stopped, "cap": cap}


def collect(run: Run, runs: Path, results: Path, roots: dict[str, str]) -> dict[str, Any]:
    """One run's entry of results.json; its small files are copied (made portable) under ``results/runs``,
    and named relative to the repository (or to ``results`` when it lies outside the repository)."""
    folder, copies = runs / run.name, results / "runs" / run.name
    evaluation = _load(folder / "stages.json").get("eval", {}).get("metrics", {})
    sweep = _load(folder / "sweep" / "sweep.json")
    histograms = _load(folder / "analysis" / "gate_histograms.json")
    table = sweep.get("runs", {}).get(run.name, {}).get("table", {})
    shares: dict[str, dict[str, float]] = {}
    for entry in histograms.get("histograms", {}).get(run.name, []):
        shares.setdefault(entry["name"], {})[entry["gate"]] = entry["outer_share"]
    copies.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, source in (("metrics", folder / "metrics.jsonl"), ("sweep", folder / "sweep" / "sweep.json"),
                        ("histograms", folder / "analysis" / "gate_histograms.json"),
                        ("stages", folder / "stages.json")):
        if source.exists():
            target = copies / source.name
            if source.suffix == ".jsonl":
                lines = [json.dumps(portable(record, roots)) for record in read_metrics(folder)]
                target.write_text("".join(line + "\n" for line in lines))
            else:
                made = portable(json.loads(source.read_text()), roots)
                target.write_text(json.dumps(made, indent=2) + "\n")
            files[key] = str(target.relative_to(REPOSITORY if target.is_relative_to(REPOSITORY) else results))
    return {
        "name": run.name, "gate": run.gate, "seed": run.seed, "done": _stages_done(folder),
        "bleu": evaluation.get("bleu"), "sacrebleu": evaluation.get("sacrebleu"),
        "test_loss": evaluation.get("loss"),
        "compression": {column: {"bleu": m["bleu"], "sacrebleu": m["sacrebleu"]}
                        for column, m in table.items()},
        "outer_share": shares,
        "beam": (evaluation.get("decoding") or {}).get("beam"),
        "histogram_pairs": histograms.get("signature", {}).get("pairs"),
        **_epochs(folder),
        "metrics": files.get("metrics"), "sweep": files.get("sweep"), "histograms": files.get("histograms"),
        "signature": portable(evaluation.get("signature"), roots),
    }


Value = Callable[[dict], "float | None"]  # one number of a run's results.json entry, None when missing


def _pairs(entries: list[dict], value: Value) -> tuple[list[int], list[float], list[float]]:
    """The seeds where both the LSTM and the G2 run have a value, and those values in seed order."""
    by_key = {(e["gate"], e["seed"]): e for e in entries}
    seeds, lstm, g2 = [], [], []
    for seed in SEEDS:
        pair = [by_key.get((gate, seed)) for gate in ("lstm", "g2")]
        values = [value(e) if e is not None else None for e in pair]
        if None not in values:
            seeds.append(seed)
            lstm.append(values[0])
            g2.append(values[1])
    return seeds, lstm, g2


def _lost(column: str) -> Value:
    """BLEU lost under ``column``: original minus compressed, from one sweep."""

    def value(entry: dict) -> float | None:
        table = entry["compression"]
        return table["original"]["bleu"] - table[column]["bleu"] if column in table else None

    return value


def _share(layer: str, gate: str) -> Value:
    return lambda entry: entry["outer_share"].get(layer, {}).get(gate)


def _quality(paired: PairedDifference) -> str:
    """DECISION.md rule 1 on d = G2 - LSTM test BLEU."""
    words = {"better": "G2 better", "worse": "G2 worse", "no worse": "G2 no worse (equivalent)"}
    verdict = paired_verdict(paired, EQUIVALENCE_MARGIN)
    return words.get(verdict, verdict)


def _robustness(paired: PairedDifference) -> str:
    """DECISION.md rule 2 on e = BLEU lost by G2 - BLEU lost by the LSTM (less lost favours G2)."""
    verdict = paired_verdict(PairedDifference(tuple(-e for e in paired.differences)))
    return {"better": "G2 more robust", "worse": "G2 less robust"}.get(verdict, verdict)


def _binary(paired: PairedDifference) -> str:
    """DECISION.md rule 3 on d = G2 - LSTM outer-bin share."""
    return "G2 more binary" if all(d > 0 for d in paired.differences) else "not in every pair"


def comparisons(entries: list[dict]) -> dict[str, Any]:
    """The paired differences G2 - LSTM and the verdicts of DECISION.md rules 1-3, over the seeds where both
    runs are done; keys ``bleu``, ``sacrebleu``, ``lost: COLUMN`` and ``outer: LAYER: GATE``."""
    out: dict[str, Any] = {}

    def compare(key: str, value: Value, rule: Callable[[PairedDifference], str]) -> None:
        seeds, lstm, g2 = _pairs(entries, value)
        record: dict[str, Any] = {"seeds": seeds, "lstm": lstm, "g2": g2,
                                  "differences": [b - a for a, b in zip(lstm, g2)],
                                  "complete": len(seeds) == len(SEEDS)}
        if len(seeds) >= 2:
            paired = PairedDifference.of(lstm, g2)
            record.update(mean=paired.mean, sd=paired.sd, se=paired.se, verdict=rule(paired))
        out[key] = record

    compare("bleu", lambda e: e["bleu"], _quality)
    compare("sacrebleu", lambda e: e["sacrebleu"], _quality)
    for column in _columns(entries)[1:]:
        compare(f"lost: {column}", _lost(column), _robustness)
    for layer in _first_layer_names(entries):
        for gate in ("input", "forget"):
            compare(f"outer: {layer}: {gate}", _share(layer, gate), _binary)
    return out


def _columns(entries: list[dict]) -> list[str]:
    return next((list(e["compression"]) for e in entries if e["compression"]), [])


def _first_layer_names(entries: list[dict]) -> list[str]:
    names = next((list(e["outer_share"]) for e in entries if e["outer_share"]), [])
    return [name for name in names if name.split()[0] == "0"]


def _sharpened(entries: list[dict]) -> list[str]:
    """DECISION.md rule 4: the sharpened run against the LSTM seeds' range, and whether it plateaued."""
    sharpened = next((e for e in entries if e["gate"] == "sharpened"), None)
    lstm = [e["bleu"] for e in entries if e["gate"] == "lstm" and e["bleu"] is not None]
    if sharpened is None or sharpened["bleu"] is None or not lstm:
        return ["- Rule 4 (sharpened sigmoid): not run yet."]
    place = ("below" if sharpened["bleu"] < min(lstm) else "above" if sharpened["bleu"] > max(lstm)
             else "within the LSTM's seed range")
    plateau = (f"trained to its plateau (early stopping at epoch {sharpened['epochs']})"
               if sharpened["stopped"] == "early stopping" else sharpened["stopped"])
    return [f"- Rule 4 (sharpened sigmoid, one seed): test BLEU {sharpened['bleu']:.2f}, {place} "
            f"(LSTM seeds {min(lstm):.2f}–{max(lstm):.2f}); {plateau}."]


def write_report(runs: Path, results: Path, roots: dict[str, str]) -> Path:
    """REPORT.md and results.json in ``results`` from the run folders under ``runs``."""
    from g2lstm.plots import plot_learning_curves

    results.mkdir(parents=True, exist_ok=True)
    committed = {e["name"]: e for e in _load(results / "results.json").get("runs", [])}
    entries = [collect(run, runs, results, roots)
               if (runs / run.name / "metrics.jsonl").exists() or run.name not in committed
               else committed[run.name] for run in RUNS]
    stats = comparisons(entries)
    complete = all(e.get("done") for e in entries)
    validations = {e["name"]: _validations(e, results) for e in entries}
    curves = {name: [(m["epoch"], m["valid_bleu"]) for m in epochs] for name, epochs in validations.items()
              if epochs}
    figure = plot_learning_curves(curves, results / "learning_curves.png",
                                  "Multi30k De->En, conditional decoder: validation BLEU (greedy)",
                                  "validation BLEU", log_y=False)
    capped = [e["name"] for e in entries if e["gate"] != "sharpened" and e["stopped"] == "capped"]
    lines = [
        "# Multi30k German→English with the paper's decoder: LSTM vs G2-LSTM over three seeds"
        + ("" if complete else " (PARTIAL)"),
        "",
        f"Report written {datetime.now(timezone.utc):%Y-%m-%d}, on {machine_description(threads=False)}. "
        "Produced by `python benchmarks/multi30k_seeds.py --runs RUNS_DIR --jobs 2`, then `--report-only` "
        "(each stage's threads are in the table of commands).",
        "Preset `multi30k-cpu` (`src/g2lstm/presets/mt/multi30k-cpu.toml`) with its decoder `conditional`: "
        "the attention context enters the first decoder layer's gates through its own weight `W_c` "
        "(dl4mt's conditional LSTM, as the authors' code). Only `--gate` and `--seed` change between runs "
        "(and `--epochs 30` for the sharpened sigmoid). Decision rules: [DECISION.md](DECISION.md), "
        "written before the runs.",
        "",
        "## Verdicts",
        "",
    ]
    lines += _verdict_lines(stats, capped)
    lines += _sharpened(entries)
    beams = sorted({e["beam"] for e in entries if e["beam"] is not None})
    lines += ["", f"## Test BLEU (beam {', '.join(map(str, beams)) or '–'})", "",
              "`bleu`: tokenized, case-insensitive (the paper's measure); `sacrebleu`: detokenized output "
              "against the raw references.", "",
              "| run | BLEU | sacreBLEU | test loss | epochs | best epoch (valid BLEU, greedy) | ended by |",
              "|---|---:|---:|---:|---:|---|---|"]
    for e in entries:
        best = "–" if e["best_epoch"] is None else f"{e['best_epoch']} ({e['best_valid_bleu']:.2f})"
        lines.append(f"| {e['name']} | {value_cell(e['bleu'])} | {value_cell(e['sacrebleu'])} "
                     f"| {value_cell(e['test_loss'], 3)} | {e['epochs']} | {best} | {e['stopped']} |")
    old = _load(ATTENTION_ON_TOP).get("runs", {})
    lines += ["", "| gate | BLEU, mean ± sd | sacreBLEU, mean ± sd | attention-on-top decoder, one seed "
              "([multi30k-cpu](../multi30k-cpu/REPORT.md)) |", "|---|---:|---:|---:|"]
    for gate in ("lstm", "g2", "sharpened"):
        mine = [e for e in entries if e["gate"] == gate]
        reference = old.get(gate, {}).get("eval", {}).get("metrics", {}).get("bleu")
        lines.append(f"| {gate} | {mean_sd_cell([e['bleu'] for e in mine if e['bleu'] is not None])} "
                     f"| {mean_sd_cell([e['sacrebleu'] for e in mine if e['sacrebleu'] is not None])} "
                     f"| {value_cell(reference)} |")
    lines += ["", "Paired differences G2 − LSTM (seeds " + ", ".join(map(str, SEEDS)) + "):", "",
              "| measure | d per seed | mean | sd | se | verdict |", "|---|---|---:|---:|---:|---|",
              paired_row("test BLEU", stats["bleu"]), paired_row("test sacreBLEU", stats["sacrebleu"]),
              "", f"![validation BLEU]({figure.name})", ""]
    lines += _compression_lines(entries, stats)
    lines += _gate_lines(entries, stats, results)
    lines += ["", "## Pace", "", "Minutes between consecutive validations, fewest / median.", "",
              "| run | epochs | minutes per epoch |", "|---|---|---|"]
    for name, epochs in validations.items():
        count, minutes = pace(epochs)
        lines.append(f"| {name} | {count} | {minutes} |")
    records = {run.name: _load(runs / run.name / "stages.json") if (runs / run.name).exists()
               else _load(results / "runs" / run.name / "stages.json") for run in RUNS}
    lines += ["", "## Commands and wall times", "", *portable(stage_table(records), roots)]
    report = results / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    summary = {"runs": entries, "comparisons": stats}
    (results / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return report


def _verdict_lines(stats: dict, capped: list[str]) -> list[str]:
    budget = (f" At the preset's 20-epoch budget: {', '.join(capped)} had its best epoch at the cap (rule 5)."
              if capped else "")
    lines = [f"- Rule 1 (quality, test BLEU): **{verdict_cell(stats['bleu'])}**.{budget}"]
    for key, record in stats.items():
        if key.startswith("lost: ") and not key.startswith(f"lost: {INPUT_PREFIX}"):
            lines.append(f"- Rule 2 (compression, {key.removeprefix('lost: ')}): **{verdict_cell(record)}**.")
    outer = {key.removeprefix("outer: "): record for key, record in stats.items()
             if key.startswith("outer: ")}
    holds = [name for name, record in outer.items()
             if record["complete"] and record["verdict"] == "G2 more binary"]
    if outer:
        claim = "reproduced" if len(holds) == len(outer) else "holds for " + (", ".join(holds) or "none")
        lines.append(f"- Rule 3 (binary gates, first decoder layer, G2 more binary in every pair): {claim}.")
    return lines


def _compression_lines(entries: list[dict], stats: dict) -> list[str]:
    columns = _columns(entries)
    authors = [c for c in columns if not c.startswith(INPUT_PREFIX)]
    inputs = ["original", *(c for c in columns if c.startswith(INPUT_PREFIX))]
    lines = ["## Compression of the gates (Table 4 layout)", ""]
    if not columns:
        return lines + ["(not run yet: PARTIAL)", ""]
    for title, chosen in (("the authors' blocks (hidden-to-hidden and context-to-gate)", authors),
                          ("the input-to-hidden blocks instead (beyond the paper)", inputs)):
        lines += [f"Test BLEU after compressing {title}, no retraining:", "",
                  "| run | " + " | ".join(chosen) + " |", "|---|" + "---:|" * len(chosen)]
        for e in entries:
            lines.append(f"| {e['name']} | " + " | ".join(value_cell(e["compression"].get(c, {}).get("bleu"))
                                                          for c in chosen) + " |")
        for gate in ("lstm", "g2"):
            tables = [e["compression"] for e in entries if e["gate"] == gate and e["compression"]]
            cells = [mean_sd_cell([table[c]["bleu"] for table in tables if c in table]) for c in chosen]
            lines.append(f"| {gate}, mean ± sd | " + " | ".join(cells) + " |")
        lines += ["", "BLEU lost (original − compressed), paired e = lost by G2 − lost by the LSTM:", "",
                  "| setting | e per seed | mean | sd | se | verdict |", "|---|---|---:|---:|---:|---|"]
        lines += [paired_row(column, stats[f"lost: {column}"]) for column in chosen[1:]]
        lines.append("")
    lines += ["The paper's Table 4 (IWSLT'14 De→En, hidden 256): LSTM 31.00 → 28.65 / 21.97 / 30.52 / "
              "29.56, G2-LSTM 31.95 → 31.44 / 31.44 / 31.62 / 31.28 (round, round & clip, rank 32, "
              "rank 16).", ""]
    return lines


def _committed(entry: dict, key: str, results: Path) -> Path | None:
    """A run's committed copy of its ``key`` file (``metrics``, ``histograms``...), None when it has none."""
    if entry.get(key) is None:
        return None
    return (REPOSITORY if (REPOSITORY / entry[key]).exists() else results) / entry[key]


def _validations(entry: dict, results: Path) -> list[dict]:
    """The per-epoch validations (greedy BLEU) of a run, from its committed metrics."""
    path = _committed(entry, "metrics", results)
    records = [json.loads(line) for line in path.read_text().splitlines()] if path else []
    return [m for m in records if "valid_bleu" in m and "final" not in m and "epoch" in m]


def _figure_lines(entries: list[dict], results: Path) -> list[str]:
    """The seed-141 runs' histograms and per-word gate maps drawn together, from their committed analyses
    (each run analyzed on its own, perhaps on another machine), once all of them have one."""
    mine = [e for e in entries if e["seed"] == FIGURE_SEED and e.get("done")]
    paths = [_committed(e, "histograms", results) for e in mine]
    if len(mine) < len(FIGURE_RUNS) or None in paths:
        return []
    merged = merge_translation_analyses([json.loads(path.read_text()) for path in paths if path])
    folder = results / "figures"
    write_translation_analysis(merged, folder)
    table = (folder / "gate_histograms.md").read_text().split("\n", 2)[2].strip()
    return [
        f"### Seed {FIGURE_SEED}: histograms and a per-word gate map",
        "",
        table,
        "",
        "![gate histograms](figures/gate_histograms.png)",
        "",
        "![gate words](figures/gate_words.png)",
    ]


def _gate_lines(entries: list[dict], stats: dict, results: Path) -> list[str]:
    lines = ["## Gates of the first decoder layer", ""]
    names = _first_layer_names(entries)
    if not names:
        return lines + ["(not run yet: PARTIAL)"]
    keys = [(name, gate) for name in names for gate in ("input", "forget")]
    pairs = next((e["histogram_pairs"] for e in entries if e["histogram_pairs"]), 0)
    lines += [f"Share (%) of gate values in the outer bins [0, 0.1) and [0.9, 1] over the first {pairs:,} "
              "training pairs, eval mode. The first layer makes two updates a word: the input update "
              "(gates of x·W + h·U) and the context update (gates of ctx·W_c + h'·U_nl).", "",
              "| run | " + " | ".join(f"{name}, {gate}" for name, gate in keys) + " |",
              "|---|" + "---:|" * len(keys)]
    for e in entries:
        lines.append(
            f"| {e['name']} | "
            + " | ".join(
                value_cell(
                    None if e["outer_share"].get(n, {}).get(g) is None else 100 * e["outer_share"][n][g], 1
                )
                for n, g in keys
            )
            + " |"
        )
    lines += [
        "",
        "Paired differences G2 − LSTM of the outer-bin share (percentage points):",
        "",
        "| update, gate | d per seed | mean | sd | se | rule 3 |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        paired_row(f"{name}, {gate}", stats[f"outer: {name}: {gate}"], scale=100, digits=1)
        for name, gate in keys
    ]
    lines += [
        "",
        "The paper's shares (its first decoder layer, IWSLT'14): LSTM input 22.1 %, forget 13.0 %; "
        "G2-LSTM input 74.7 %, forget 61.9 %.",
        "",
    ]
    return lines + _figure_lines(entries, results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", required=True, help="folder for the run folders (outside the repository)")
    parser.add_argument("--data", help="Multi30k folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; the cores are shared out")
    parser.add_argument("--threads", type=int, help="threads per run (default: the cores shared out)")
    parser.add_argument("--only", nargs="+", choices=[run.name for run in RUNS], help="run just these")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--preset", default="multi30k-cpu", help="the runs' preset (another for smoke tests)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a preset override")
    parser.add_argument("--max-pairs", type=int, default=10_000, help="training pairs read for histograms")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the report's folder")
    args = parser.parse_args()
    runs = Path(args.runs).resolve()
    if not args.report_only:
        data = ("--data", args.data) if args.data else ()
        settings = Settings(args.preset, tuple(args.set), data, args.max_pairs)
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        chosen = [run for run in RUNS if args.only is None or run.name in args.only]
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda run: run_all_stages(run, runs, settings, threads), chosen))
    roots = {str(runs): "RUNS_DIR", str(REPOSITORY): "."}
    if args.data:
        roots[str(Path(args.data).resolve())] = "DATA_DIR"
    print(write_report(runs, args.results, roots))


if __name__ == "__main__":
    main()
