"""Training-step time of G2LSTM eager against ``torch.compile`` at one layer shape, same run.

    python benchmarks/compile_speed.py --shape 70 20 400 1150 --repeats 9

A step is forward, ``output.sum()`` and backward of one G2LSTM layer on a (T, B, IN) input; the compiled
module (``fullgraph=True``) is warmed up (compiled) first. Prints the median of ``--repeats`` steps each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from g2lstm import G2LSTM


def step_ms(module: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        module(inputs)[0].sum().backward()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, default=[70, 20, 400, 1150], metavar=("T", "B", "IN", "H")
    )
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    steps, batch, size, hidden = args.shape
    module = G2LSTM(size, hidden)
    inputs = torch.randn(steps, batch, size)
    eager = step_ms(module, inputs, args.repeats)
    compiled = step_ms(torch.compile(module, fullgraph=True), inputs, args.repeats)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; shape {tuple(args.shape)}, median of {args.repeats}"
    )
    print(
        f"eager {eager:.1f} ms, torch.compile(fullgraph=True) {compiled:.1f} ms, ratio {compiled / eager:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
