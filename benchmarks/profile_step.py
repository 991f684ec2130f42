"""Where the time of one training step goes: torch.profiler over G2LSTM and nn.LSTM at one shape.

    python benchmarks/profile_step.py 70 20 400 1150            # T B IN H; 5 profiled steps after 3 warm-ups
    python benchmarks/profile_step.py 35 20 200 200 --rows 8 --json profile.json

Prints, for each module, milliseconds per step of the operators with the most self time (their share of
the step and calls per step), and the step's total; ``--json`` writes the same numbers.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from g2lstm import G2LSTM
from g2lstm.benchmark import machine_description


def profile_module(module: nn.Module, inputs: torch.Tensor, steps: int) -> dict:
    """Self time per step of each operator over ``steps`` forward + backward passes of ``output.sum()``."""

    def step() -> None:
        module(inputs)[0].sum().backward()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        for _ in range(steps):
            step()
    events = sorted(recorded.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events) / steps / 1e3
    return {"ms_per_step": total,
            "operators": [{"name": event.key, "ms_per_step": event.self_cpu_time_total / steps / 1e3,
                           "calls_per_step": event.count / steps} for event in events]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("shape", type=int, nargs=4, metavar=("T", "B", "IN", "H"))
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (after 3 warm-ups)")
    parser.add_argument("--rows", type=int, default=10, help="operators listed per module")
    parser.add_argument("--json", help="also write the profile to this JSON file")
    args = parser.parse_args()
    steps, batch, input_size, hidden = args.shape
    torch.manual_seed(0)
    lstm = nn.LSTM(input_size, hidden)
    modules = {"nn.LSTM": lstm, "G2LSTM": G2LSTM.from_lstm(lstm, gate="g2").train()}
    inputs = torch.randn(steps, batch, input_size, requires_grad=True)
    profiles = {name: profile_module(module, inputs, args.steps) for name, module in modules.items()}
    print(f"machine: {machine_description()}; shape (T, B, in, H) = {tuple(args.shape)}; {args.steps} steps")
    for name, result in profiles.items():
        print(f"\n{name}: {result['ms_per_step']:.1f} ms per step (self time of all operators)\n")
        print("| operator | ms per step | share | calls per step |\n|---|---|---|---|")
        for operator in result["operators"][: args.rows]:
            share = operator["ms_per_step"] / result["ms_per_step"]
            print(
                f"| {operator['name']} | {operator['ms_per_step']:.1f} | {share:.0%} | "
                f"{operator['calls_per_step']:g} |"
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"machine": machine_description(), "shape": args.shape, "profiles": profiles}, out, indent=2
            )


if __name__ == "__main__":
    main()
