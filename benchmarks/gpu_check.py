"""One prepared run on a CUDA machine: the fused G2 kernel's correctness there, and its speed vs cuDNN.

    PYTHONPATH=src python benchmarks/gpu_check.py --out results/gpu

Checks (each printed as PASS/FAIL with the largest difference): G2LSTM's fused path against nn.LSTM
(cuDNN) in float32 and float64 for outputs, states and every gradient, packed and bidirectional;
gradcheck of the noisy G2 path in float64; the share of perturbed gate elements. Then the speed table of
``g2lstm.benchmark.measure_speed`` on the GPU. Writes ``gpu_check.json`` and ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import g2lstm
from g2lstm.benchmark import AWD_SHAPES, format_speed_table, machine_description, measure_speed


def fused_vs_cudnn(device: str, dtype: torch.dtype, packed: bool, bidirectional: bool) -> float:
    """Largest difference between the fused kernel (forced by recording) and cuDNN, values and grads."""
    torch.manual_seed(0)
    lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=bidirectional).to(device, dtype)
    g2 = g2lstm.G2LSTM.from_lstm(lstm, gate="lstm")
    x = torch.randn(12, 5, 16, device=device, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([12, 9, 9, 4, 1])
    results = []
    for module in (lstm, g2):
        inputs = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        with g2lstm.record_gates(g2):
            output, (h, c) = module(inputs)
        data = output.data if packed else output
        loss = (data.sin() * 1.7).sum() + (h * h).sum() + c.sum()
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
        results.append([data, h, c, *grads])
    return max((a - b).abs().max().item() for a, b in zip(*results))


def noisy_gradcheck(device: str) -> bool:
    torch.manual_seed(0)
    g2 = g2lstm.G2LSTM(3, 4, num_layers=2, bidirectional=True, gate="g2", noise_p=0.2).to(
        device, torch.float64
    )
    x = torch.randn(5, 2, 3, device=device, dtype=torch.float64, requires_grad=True)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1)
        return g2(inputs)[0]

    return torch.autograd.gradcheck(run, (x,), atol=1e-6)


def perturbed_share(device: str, noise_p: float) -> float:
    noise = g2lstm.functional.logistic_noise((1000, 1000), noise_p=noise_p, device=device)
    return (noise != 0).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results/gpu")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checks = {}
    # cuDNN computes float32 LSTMs in TF32 by default (about 1e-3 relative); compare at full precision.
    torch.backends.cudnn.allow_tf32 = False
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        for packed in (False, True):
            for bidirectional in (False, True):
                name = f"fused vs cuDNN {str(dtype)[6:]} packed={packed} bidirectional={bidirectional}"
                difference = fused_vs_cudnn(args.device, dtype, packed, bidirectional)
                checks[name] = {"max_abs_difference": difference, "pass": difference < tolerance}
    torch.backends.cudnn.allow_tf32 = True
    checks["gradcheck noisy G2 float64"] = {"pass": noisy_gradcheck(args.device)}
    share = perturbed_share(args.device, 0.2)
    checks["perturbed share at noise_p=0.2"] = {"share": share, "pass": abs(share - 0.2) < 0.005}
    for name, result in checks.items():
        print(("PASS " if result["pass"] else "FAIL ") + name + "  " + json.dumps(result))
    start = time.perf_counter()
    shapes = AWD_SHAPES if args.device == "cuda" else [AWD_SHAPES[1]]
    rows = measure_speed(shapes, repeats=args.repeats, reference_repeats=1, device=args.device)
    table = format_speed_table(rows)
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    header = f"machine: {device}; host {machine_description()}; medians of {args.repeats} repeats"
    print(header)
    print(table)
    (out / "gpu_check.json").write_text(
        json.dumps({"device": device, "checks": checks, "speed": [r.as_dict() for r in rows],
                    "speed_seconds": time.perf_counter() - start}, indent=2)
    )
    (out / "gpu_check.md").write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
