"""Training-step time of G2LSTM under ``torch.compile`` beside eager G2LSTM and nn.LSTM, same run.

    python benchmarks/compile_speed.py --shape 70 20 400 1150 --repeats 9 --json compile.json

A step is forward, ``output.sum()`` and backward of one layer on a (T, B, IN) input. The three modules hold
the same weights (G2: τ = 0.9, p = 0.2); the compiled one (``fullgraph=True``) is compiled by a warm-up step
before timing. Within every repeat the three take turns, so slow drifts of the machine affect them alike;
each figure is the median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from g2lstm import G2LSTM
from g2lstm.benchmark import kernel_description, machine_description


def step_seconds(module: torch.nn.Module, inputs: torch.Tensor) -> float:
    start = time.perf_counter()
    module(inputs)[0].sum().backward()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, default=[70, 20, 400, 1150], metavar=("T", "B", "IN", "H")
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path, help="also write the raw times and the header here")
    args = parser.parse_args(argv)
    steps, batch, size, hidden = args.shape
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(size, hidden)
    eager = G2LSTM.from_lstm(lstm)
    compiled = torch.compile(eager, fullgraph=True)
    modules = {"nn.LSTM": lstm, "G2LSTM eager": eager, "G2LSTM compiled": compiled}
    inputs = torch.randn(steps, batch, size)
    times: dict[str, list[float]] = {name: [] for name in modules}
    for repeat in range(args.repeats + 1):  # the first round warms up (and compiles)
        for name, module in modules.items():
            seconds = step_seconds(module, inputs)
            if repeat:
                times[name].append(seconds)
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    header = (
        f"{machine_description()}; {kernel_description()}; "
        f"shape {tuple(args.shape)}, median of {args.repeats}"
    )
    print(header)
    for name, ms in medians.items():
        print(f"{name:16s} {ms:8.1f} ms  {ms / medians['nn.LSTM']:.2f}× nn.LSTM")
    if args.json is not None:
        record = {"header": header, "shape": args.shape, "median_ms": medians, "seconds": times}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
