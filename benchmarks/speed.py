"""Training-step and eval-forward speed of G2LSTM against nn.LSTM and a per-step loop, same run.

    python benchmarks/speed.py                          # the three shapes of the issue, CPU
    python benchmarks/speed.py --device cuda --json speed.json
    python benchmarks/speed.py --shape 70 20 400 1150 --repeats 11
    python benchmarks/speed.py --cpu-kernel python      # the fused kernel's Python loop, not the compiled one

Same as ``g2lstm bench`` (see ``g2lstm.benchmark.measure_speed`` for the method), plus ``--cpu-kernel``,
which sets ``G2LSTM_CPU_KERNEL`` for the run; the loop that ran is printed first and added to the JSON.
"""

import argparse
import json
import os
import sys

import torch

from g2lstm.cli import main
from g2lstm.kernels.compiled import KERNEL_ENV, KERNELS, use_compiled


def run(argv: list[str]) -> int:
    """Run ``g2lstm bench`` with the CPU loop chosen by ``--cpu-kernel`` and record which one ran."""
    kernel_parser = argparse.ArgumentParser(add_help=False)
    kernel_parser.add_argument("--cpu-kernel", choices=KERNELS)
    kernel, rest = kernel_parser.parse_known_args(argv)
    bench_parser = argparse.ArgumentParser(add_help=False)
    bench_parser.add_argument("--device", default="cpu")
    bench_parser.add_argument("--json")
    bench, _ = bench_parser.parse_known_args(rest)
    if kernel.cpu_kernel is not None:
        os.environ[KERNEL_ENV] = kernel.cpu_kernel
    compiled = use_compiled(torch.device(bench.device), torch.float32)  # builds the compiled loop if needed
    loop = "compiled" if compiled else "python"
    print(f"fused kernel loop: {loop}", flush=True)
    status = main(["bench", *rest])
    if bench.json and not status:
        with open(bench.json) as file:
            measurements = json.load(file)
        with open(bench.json, "w") as file:
            json.dump({**measurements, "fused_kernel_loop": loop}, file, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
