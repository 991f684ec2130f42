"""What the seeded-comparison drivers (ptb_seeds.py, multi30k_seeds.py) share: portable paths for the
files they copy into results/, and the Markdown cells of their paired-difference tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from g2lstm.benchmark import mean_sd

__all__ = ["mean_sd_cell", "paired_row", "portable", "value_cell", "verdict_cell"]

_ABSOLUTE = re.compile(r"(?<![\w.~-])/[^\s\"'`|:,;()]+")


def portable(value: Any, roots: dict[str, str]) -> Any:
    """``value`` (JSON-like) with every machine path made portable: the folders in ``roots`` by their names
    (e.g. the runs folder as ``RUNS_DIR``), any other absolute path by ``.../`` and its last part."""
    if isinstance(value, dict):
        return {key: portable(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, roots) for item in value]
    if not isinstance(value, str):
        return value
    for root, name in sorted(roots.items(), key=lambda item: -len(item[0])):
        value = value.replace(root, name)
    return _ABSOLUTE.sub(lambda match: ".../" + Path(match.group()).name, value)


def value_cell(value: float | None, digits: int = 2) -> str:
    """A number for a table, or a dash when it is missing."""
    return "–" if value is None else f"{value:.{digits}f}"


def mean_sd_cell(values: list[float], digits: int = 2) -> str:
    """``mean ± sd`` of ``values`` (the mean alone for one value, a dash for none)."""
    if not values:
        return "–"
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" + ("" if len(values) < 2 else f" ± {sd:.{digits}f}")


def verdict_cell(record: dict) -> str:
    """The verdict of a paired comparison, marked PARTIAL while pairs are missing."""
    if "verdict" not in record:
        return "not run yet (fewer than two pairs)"
    return record["verdict"] + ("" if record["complete"] else f" (PARTIAL: {len(record['seeds'])} pairs)")


def paired_row(label: str, record: dict, scale: float = 1.0, digits: int = 2) -> str:
    """A table row: the differences per seed, their mean, sd and se (times ``scale``) and the verdict."""
    differences = " / ".join(f"{scale * d:+.{digits}f}" for d in record["differences"]) or "–"
    if "mean" not in record:
        return f"| {label} | {differences} | – | – | – | {verdict_cell(record)} |"
    mean, sd, se = (scale * record[key] for key in ("mean", "sd", "se"))
    statistics = f"{mean:+.{digits}f} | {sd:.{digits}f} | {se:.{digits}f}"
    return f"| {label} | {differences} | {statistics} | {verdict_cell(record)} |"


