"""Peak memory of one training step (forward + backward) of G2LSTM against nn.LSTM on the same input.

    python benchmarks/memory.py                       # T = 10,000 x batch 1, and T = 35 x batch 4096

Each measurement runs in a fresh subprocess and reports the growth of its peak resident memory
(``ru_maxrss``) over the process's size just before the step, so the figures include everything the step
allocates (activations kept for the backward pass, gradients, workspaces).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = {"long sequence": (10_000, 1, 64, 128), "large batch": (35, 4096, 64, 128)}


def measure(kind: str, steps: int, batch: int, inputs: int, hidden: int) -> float:
    """MiB the peak RSS grows by during one training step (run inside the child process)."""
    import torch
    from torch import nn

    from g2lstm import G2LSTM

    torch.manual_seed(0)
    module = nn.LSTM(inputs, hidden) if kind == "nn.LSTM" else G2LSTM(inputs, hidden, gate="g2")
    x = torch.randn(steps, batch, inputs, requires_grad=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    output, _ = module(x)
    output.sum().backward()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *sizes = args.child
        print(json.dumps(measure(kind, *map(int, sizes))))
        return
    print("| case (T, B, in, H) | nn.LSTM MiB | G2LSTM MiB | ratio | activations T·B·H·4 bytes, MiB |")
    print("|---|---|---|---|---|")
    for case, sizes in CASES.items():
        peaks = {}
        for kind in ("nn.LSTM", "G2LSTM"):
            child = [sys.executable, __file__, "--child", kind, *map(str, sizes)]
            peaks[kind] = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
        steps, batch, _, hidden = sizes
        unit = steps * batch * hidden * 4 / 2**20
        print(f"| {case} {sizes} | {peaks['nn.LSTM']:.1f} | {peaks['G2LSTM']:.1f} | "
              f"{peaks['G2LSTM'] / peaks['nn.LSTM']:.2f}× | {unit:.1f} |")


if __name__ == "__main__":
    main()
