"""Training-step and eval-forward speed of G2LSTM against nn.LSTM and a per-step loop, same run.

    python benchmarks/speed.py                          # the three shapes of the issue, CPU
    python benchmarks/speed.py --device cuda --json speed.json
    python benchmarks/speed.py --shape 70 20 400 1150 --repeats 11
    python benchmarks/speed.py --cpu-kernel python      # the fused kernel's Python loop, not the compiled one
    python benchmarks/speed.py --cpu-isa avx2           # the compiled loop's AVX2 build on an AVX-512 CPU

Same as ``g2lstm bench`` (see ``g2lstm.benchmark.measure_speed`` for the method), plus ``--cpu-kernel`` and
``--cpu-isa``, which set ``G2LSTM_CPU_KERNEL`` and ``G2LSTM_CPU_ISA`` for the run. The printed header and
the JSON name the CPU capability torch reports and the kernel loop and build that ran.
"""

import argparse
import os
import sys

from g2lstm.cli import main
from g2lstm.kernels.compiled import KERNEL_ENV, KERNELS, VARIANT_ENV, VARIANTS


def run(argv: list[str]) -> int:
    """Run ``g2lstm bench`` with the CPU loop and build chosen by ``--cpu-kernel`` and ``--cpu-isa``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cpu-kernel", choices=KERNELS)
    parser.add_argument("--cpu-isa", choices=VARIANTS)
    choice, rest = parser.parse_known_args(argv)
    if choice.cpu_kernel is not None:
        os.environ[KERNEL_ENV] = choice.cpu_kernel
    if choice.cpu_isa is not None:
        os.environ[VARIANT_ENV] = choice.cpu_isa
    return main(["bench", *rest])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
