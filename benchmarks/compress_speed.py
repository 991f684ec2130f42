"""Eval-mode forward speed and size of compressed G2LSTMs against the dense G2LSTM and nn.LSTM, same run.

    python benchmarks/compress_speed.py                      # T=70, B=20, in=400, H=1150; ranks H/9, H/18
    python benchmarks/compress_speed.py --shape 5 2 8 16 --repeats 2   # a smoke test

Models: nn.LSTM; the dense G2LSTM (σ gates: torch's own kernel); the paper's compressions of the input and
forget blocks (low rank H/9 and H/18, round 0.2, round 0.2 & clip 0.4), which at inference multiply by the
factors and by the int8 codes directly in the compiled CPU loop (g2lstm.kernels.stored); and the dense
G2LSTM with hard 0/1 gates. All hold the same weights before compression, run in evaluation mode without
autograd and alternate within every repeat, so slow drifts of the machine affect them alike; each time is the
median over the repeats after one warm-up round.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from g2lstm import G2LSTM
from g2lstm.benchmark import kernel_description, machine_description
from g2lstm.compress import compress, count_parameters_and_bytes

AWD_LAYER = (70, 20, 400, 1150)  # (time, batch, input, hidden): the first AWD-LSTM layer of the paper


def models_of(lstm: nn.LSTM, ranks: Sequence[int]) -> dict[str, nn.Module]:
    """nn.LSTM, the dense G2LSTM with its weights, each compression of the benchmark, and hard gates."""
    dense = G2LSTM.from_lstm(lstm, gate="g2").eval()
    models: dict[str, nn.Module] = {"nn.LSTM": lstm.eval(), "G2LSTM": dense}
    settings = {**{f"rank {rank}": dict(rank=rank) for rank in ranks},
                "round 0.2": dict(round=0.2), "round 0.2 & clip 0.4": dict(round=0.2, clip=0.4)}
    for name, setting in settings.items():
        compressed = copy.deepcopy(dense)
        compress(compressed, **setting)
        models[f"G2LSTM {name}"] = compressed
    hard = copy.deepcopy(dense)
    hard.eval_gate = "hard"
    models["G2LSTM hard gates"] = hard
    return models


def measure(
    shape: Sequence[int], ranks: Sequence[int], repeats: int, seed: int
) -> dict[str, tuple[float, int]]:
    """For each model, the median seconds of one eval forward of ``shape`` and its size in bytes."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(seed)
    models = models_of(nn.LSTM(input_size, hidden), ranks)
    inputs = torch.randn(steps, batch, input_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for repeat in range(repeats + 1):
            for name, model in models.items():
                start = time.perf_counter()
                model(inputs)
                if repeat > 0:  # the first round is the warm-up
                    times[name].append(time.perf_counter() - start)
    return {
        name: (statistics.median(times[name]), count_parameters_and_bytes(model)[1])
        for name, model in models.items()
    }


def format_table(results: dict[str, tuple[float, int]]) -> str:
    """A Markdown table: size, milliseconds per forward and the ratios to nn.LSTM and the dense G2LSTM."""
    lstm_time, g2_time = results["nn.LSTM"][0], results["G2LSTM"][0]
    lines = [
        "| model | size (MB) | eval forward (ms) | vs nn.LSTM | vs G2LSTM |",
        "|---|---|---|---|---|",
    ]
    for name, (seconds, size) in results.items():
        lines.append(
            f"| {name} | {size / 1e6:.3g} | {seconds * 1e3:.1f} | {seconds / lstm_time:.2f}× "
            f"| {seconds / g2_time:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, metavar=("T", "B", "IN", "H"), default=list(AWD_LAYER),
        help="sequence length, batch, input and hidden size (default: %(default)s)",
    )
    parser.add_argument(
        "--ranks", type=int, nargs="+", help="default: hidden/9 and hidden/18, the paper's ratios"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up (default: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if min(args.shape) < 1 or args.repeats < 1:
        parser.error(f"--shape values and --repeats must be >= 1, got {args.shape} and {args.repeats}")
    ranks = args.ranks or [max(1, args.shape[3] // 9), max(1, args.shape[3] // 18)]
    try:
        results = measure(args.shape, ranks, args.repeats, args.seed)
    except ValueError as error:  # e.g. a rank above min(H, in)
        parser.error(str(error))
    print(
        f"eval forward, shape (T, B, in, H) = {tuple(args.shape)}, median of {args.repeats} repeats; "
        f"{machine_description()}; {kernel_description()}\n"
    )
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "machine": machine_description(),
                    "kernel": kernel_description(),
                    "shape": args.shape,
                    "models": {
                        name: {"seconds": seconds, "bytes": size} for name, (seconds, size) in results.items()
                    },
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
