"""One prepared run on a CUDA machine: the Triton loop's correctness there, its speed against cuDNN, and what
would be worth changing next. Meant to finish in well under 8 minutes on an H200 and to install nothing.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT

Sections, in order (the JSON is rewritten after each one, so a run cut short keeps what it measured; past
``--budget`` seconds the optional sections are skipped and marked so):

1. checks: the Triton loop against the step-by-step reference at kernel level (float64 to 1e-10, float32 to
   1e-5 absolute and relative, TF32 off: packed, reverse, scaled and hard gates, tiles split), its in-kernel
   noise against the Python loop's with the same key, a float32 sequence at the AWD-LSTM size; G2LSTM on the
   Triton loop against ``nn.LSTM`` (cuDNN, TF32 off) for outputs, states and every gradient; noisy G2LSTM
   training on the GPU against the same module on the CPU, same seed; gradcheck of the noisy path (float64);
   the share of perturbed gate elements; ``torch.manual_seed`` repeating a run bit for bit; bf16 and fp16
   autocast training; ``flatten_parameters`` (one buffer, no re-packing warning from cuDNN).
2. speed: ``g2lstm.benchmark.measure_speed`` at the three shapes of the issue, torch's defaults (the Triton
   loop in full float32, cuDNN with its default TF32), then with TF32 allowed for both, then (optional) the
   previous CUDA path, the Python loop, in the same run.
3. graphs (optional): a whole training step of G2LSTM captured in a CUDA graph against the same step run
   eagerly: what removing the host's launch overhead would save (a captured step reuses its noise keys, so
   this is a measurement, not a mode to train in).
4. sweep (optional): the training step at each shape for a few tile sizes of the step kernels.

Writes ``gpu_check.json`` (everything, raw) and ``gpu_check.md`` (the tables). ``--device cpu --smoke`` runs
the same code on tiny sizes through Triton's interpreter (set ``TRITON_INTERPRET=1``), to check the script
itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

import g2lstm
from g2lstm.benchmark import AWD_SHAPES, format_speed_table, measure_speed
from g2lstm.kernels import lstm_sequence, lstm_sequence_reference, triton_loop
from g2lstm.kernels.compiled import KERNEL_ENV

TOLERANCE = {torch.float64: (1e-10, 0.0), torch.float32: (1e-5, 1e-5)}  # (absolute, relative)
SMOKE_SHAPES = ((6, 4, 8, 16),)
REFLOW_WARNING = "not part of single contiguous chunk of memory"


def full_float32() -> None:
    """No TF32 anywhere: comparisons at float32 precision (cuDNN would otherwise use TF32 for float32)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def torch_defaults() -> None:
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("highest")


def differences(actual: list[Tensor], expected: list[Tensor]) -> tuple[float, float]:
    """Largest absolute difference, and largest difference relative to the expected tensor's largest value."""
    absolute = max((a.double() - e.double()).abs().max().item() for a, e in zip(actual, expected))
    relative = max(
        ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-30)).item()
        for a, e in zip(actual, expected)
    )
    return absolute, relative


def verdict(absolute: float, relative: float, dtype: torch.dtype, scale: float = 1.0) -> dict[str, Any]:
    """A check's record: passes where every tensor is within ``scale`` times the dtype's tolerance, absolute
    or relative to its largest value."""
    atol, rtol = TOLERANCE[dtype]
    passed = absolute <= scale * atol or (rtol > 0 and relative <= scale * rtol)
    return {
        "max_abs_difference": absolute,
        "max_rel_difference": relative,
        "tolerance": [scale * atol, scale * rtol],
        "pass": passed,
    }


# ---------------------------------------------------------------------------------------- 1. checks


def sequence_results(
    sequence: Callable[..., Any], leaves: list[Tensor], *args: Any, **options: Any
) -> list[Tensor]:
    """Outputs, gates and the gradients of all four inputs of one sequence under fixed random upstream grads
    (drawn in float64 whatever the dtype, so that runs in two dtypes get the same ones)."""
    inputs = [t.clone().requires_grad_() for t in leaves]
    output, h_n, c_n, gates = sequence(*inputs, *args, **options)
    generator = torch.Generator(device=output.device).manual_seed(5)
    upstream = [
        torch.randn(t.shape, dtype=torch.float64, device=t.device, generator=generator).to(t.dtype)
        for t in (output, h_n, c_n)
    ]
    return [output, h_n, c_n, gates, *torch.autograd.grad([output, h_n, c_n], inputs, upstream)]


def sequence_leaves(batch_sizes: list[int], hidden: int, dtype: torch.dtype, device: str) -> list[Tensor]:
    rows, batch = sum(batch_sizes), batch_sizes[0]
    factory = {"dtype": dtype, "device": device}
    return [
        torch.randn(rows, 4 * hidden, **factory),
        torch.randn(batch, hidden, **factory),
        torch.randn(batch, hidden, **factory),
        torch.randn(4 * hidden, hidden, **factory) / hidden**0.5,
    ]


def kernel_checks(device: str, smoke: bool) -> dict[str, dict[str, Any]]:
    """The Triton loop against the reference loop and, with noise, against the Python loop (same key)."""
    checks = {}
    cases = [
        ([5, 5, 4, 2, 2, 1], 3, False, 1 / 0.9, False),
        ([5, 5, 4, 2, 2, 1], 3, True, 1 / 0.9, False),
        ([6, 4, 1], 19, True, 1.0, True),
        ([3, 3, 3, 3], 13, False, 1.0, False),
        ([40, 40, 33, 20], 70, True, 1 / 0.9, False),
    ]
    for dtype in (torch.float64, torch.float32):
        for batch_sizes, hidden, reverse, scale, hard in cases:
            torch.manual_seed(0)
            leaves = sequence_leaves(batch_sizes, hidden, dtype, device)
            flags = {"reverse": reverse, "scale": scale, "hard": hard}
            expected = sequence_results(lstm_sequence_reference, leaves, batch_sizes, **flags)
            actual = sequence_results(lstm_sequence, leaves, batch_sizes, kernel="triton", **flags)
            name = (
                f"triton vs reference {str(dtype)[6:]} sizes={batch_sizes[:3]}... H={hidden} "
                f"reverse={reverse} scale={scale:.3f} hard={hard}"
            )
            checks[name] = verdict(*differences(actual, expected), dtype)
        for noise_p in (0.2, 1.0):
            torch.manual_seed(0)
            leaves = sequence_leaves([9, 9, 7, 4], 21, dtype, device)
            noise = {"noise_seed": 2**61 + 12345, "noise_p": noise_p, "noise_eps": 1e-3}
            expected = sequence_results(lstm_sequence, leaves, [9, 9, 7, 4], kernel="python", **noise)
            actual = sequence_results(lstm_sequence, leaves, [9, 9, 7, 4], kernel="triton", **noise)
            checks[f"triton vs python loop, same noise key, {str(dtype)[6:]} noise_p={noise_p}"] = verdict(
                *differences(actual, expected), dtype
            )
    # The AWD-LSTM layer in float32, judged by the norm of the error relative to the norm of the result (over
    # 1150-term products a largest-element criterion measures rounding, not correctness): without noise
    # against the float64 reference, with noise against the Python loop in float32 (same key, same bits).
    steps, batch, hidden = (4, 3, 24) if smoke else (70, 20, 1150)
    size = [batch] * steps
    torch.manual_seed(0)
    leaves = sequence_leaves(size, hidden, torch.float32, device)
    expected = sequence_results(lstm_sequence_reference, [t.double() for t in leaves], size, scale=1 / 0.9)
    actual = sequence_results(lstm_sequence, leaves, size, scale=1 / 0.9, kernel="triton")
    checks[f"triton float32 vs reference float64 at (T, B, H) = {(steps, batch, hidden)}"] = norm_verdict(
        actual, expected
    )
    noise = {"noise_seed": 99, "noise_p": 0.2}
    expected = sequence_results(lstm_sequence, leaves, size, scale=1 / 0.9, kernel="python", **noise)
    actual = sequence_results(lstm_sequence, leaves, size, scale=1 / 0.9, kernel="triton", **noise)
    checks[f"triton vs python loop float32 at (T, B, H) = {(steps, batch, hidden)}, noise_p=0.2"] = (
        norm_verdict(actual, expected)
    )
    return checks


def norm_verdict(actual: list[Tensor], expected: list[Tensor], tolerance: float = 1e-5) -> dict[str, Any]:
    """Passes where every tensor's error norm is within ``tolerance`` of its norm."""
    relative = max(
        ((a.double() - e.double()).norm() / e.double().norm().clamp_min(1e-30)).item()
        for a, e in zip(actual, expected)
    )
    return {
        "max_norm_rel_difference": relative,
        "max_abs_difference": differences(actual, expected)[0],
        "tolerance": tolerance,
        "pass": relative <= tolerance,
    }


def module_results(module: nn.Module, x: Tensor, packed: bool, record: bool) -> list[Tensor]:
    inputs = pack_padded_sequence(x, torch.tensor([12, 9, 9, 4, 1]), enforce_sorted=False) if packed else x
    if record:
        with g2lstm.record_gates(module):
            output, (h, c) = module(inputs)
    else:
        output, (h, c) = module(inputs)
    data = output.data if packed else output
    loss = (data.sin() * 1.7).sum() + (h * h).sum() + c.sum()
    return [data, h, c, *torch.autograd.grad(loss, [x, *module.parameters()])]


def module_checks(device: str) -> dict[str, dict[str, Any]]:
    checks = {}
    for dtype in (torch.float64, torch.float32):
        for packed in (False, True):
            for bidirectional in (False, True):
                torch.manual_seed(0)
                lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=bidirectional).to(device, dtype)
                g2 = g2lstm.G2LSTM.from_lstm(lstm, gate="lstm")  # recorded: the fused (Triton) path
                x = torch.randn(12, 5, 16, device=device, dtype=dtype, requires_grad=True)
                expected = module_results(lstm, x, packed, record=False)
                actual = module_results(g2, x, packed, record=True)
                name = f"G2LSTM (triton) vs nn.LSTM {str(dtype)[6:]} packed={packed} bidir={bidirectional}"
                checks[name] = verdict(*differences(actual, expected), dtype)
        torch.manual_seed(0)
        module = g2lstm.G2LSTM(16, 32, num_layers=2, bidirectional=True, noise_p=0.3, dtype=dtype)
        x = torch.randn(12, 5, 16, dtype=dtype, requires_grad=True)
        results = []
        for where in (device, "cpu"):
            torch.manual_seed(1)  # the same noise keys on both (drawn from the CPU generator)
            module.to(where)
            inputs = x.detach().to(where).requires_grad_()
            results.append([t.cpu() for t in module_results(module, inputs, packed=True, record=False)])
        checks[f"noisy G2LSTM training on {device} vs cpu, same seed, {str(dtype)[6:]}"] = verdict(
            *differences(*results), dtype
        )
    return checks


def noise_checks(device: str, smoke: bool) -> dict[str, dict[str, Any]]:
    checks = {}
    torch.manual_seed(0)
    g2 = g2lstm.G2LSTM(3, 4, num_layers=2, bidirectional=True, gate="g2", noise_p=0.2).to(
        device, torch.float64
    )
    x = torch.randn(5, 2, 3, device=device, dtype=torch.float64, requires_grad=True)

    def run(inputs: Tensor) -> Tensor:
        torch.manual_seed(1)
        return g2(inputs)[0]

    checks["gradcheck noisy G2LSTM float64 (triton)"] = {
        "pass": torch.autograd.gradcheck(run, (x,), atol=1e-6)
    }

    # Zero weights and biases: unperturbed input gates are exactly sigmoid(0) = 0.5.
    rows, hidden = (50, 64) if smoke else (1000, 1000)
    zeros = torch.zeros(rows, 4 * hidden, device=device)
    state = torch.zeros(rows, hidden, device=device)
    gates = lstm_sequence(
        zeros,
        state,
        state,
        torch.zeros(4 * hidden, hidden, device=device),
        [rows],
        kernel="triton",
        noise_seed=123,
        noise_p=0.2,
    )[3]
    share = (gates[:, : 2 * hidden] != 0.5).double().mean().item()
    tolerance = 0.02 if smoke else 0.002
    checks[f"share of perturbed gate elements, noise_p=0.2, {2 * rows * hidden} elements"] = {
        "share": share,
        "pass": abs(share - 0.2) < tolerance,
    }

    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        module = g2lstm.G2LSTM(8, 16, num_layers=2, device=device)
        output, _ = module(torch.randn(6, 3, 8, device=device))
        output.sum().backward()
        outputs.append([output, *[p.grad for p in module.parameters()]])
    checks["torch.manual_seed repeats a training step bit for bit"] = {
        "pass": all(torch.equal(a, b) for a, b in zip(*outputs))
    }
    return checks


def autocast_checks(device: str) -> dict[str, dict[str, Any]]:
    """A small model (embedding-free: linear in, G2LSTM, linear out) trained for 30 steps under autocast."""
    checks = {}
    for half in (torch.bfloat16, torch.float16):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.Tanh()).to(device)
        rnn = g2lstm.G2LSTM(32, 64, num_layers=2, device=device)
        head = nn.Linear(64, 1).to(device)
        parameters = [*model.parameters(), *rnn.parameters(), *head.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=3e-3)
        scaler = torch.amp.GradScaler(device, enabled=half == torch.float16 and device == "cuda")
        x = torch.randn(20, 16, 8, device=device)
        target = x.cumsum(0).sum(-1, keepdim=True) / 10
        losses, dtypes = [], set()
        for _ in range(30):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=half):
                output, _ = rnn(model(x))
                dtypes.add(str(output.dtype))
                loss = nn.functional.mse_loss(head(output).float(), target)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
        finite = all(torch.isfinite(p).all().item() for p in parameters)
        checks[f"autocast {str(half)[6:]} training, 30 steps"] = {
            "recurrence_dtypes": sorted(dtypes),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "pass": dtypes == {"torch.float32"} and finite and losses[-1] < losses[0],
        }
    return checks


def flatten_checks(device: str) -> dict[str, dict[str, Any]]:
    if device != "cuda":
        return {"flatten_parameters": {"pass": None, "note": "needs CUDA"}}
    torch.manual_seed(0)
    lstm = nn.LSTM(64, 128, num_layers=2, bidirectional=True).to(device)
    g2 = g2lstm.G2LSTM.from_lstm(lstm).eval()
    storages = {p.untyped_storage().data_ptr() for p in g2.parameters()}
    x = torch.randn(10, 4, 64, device=device)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        difference = (g2(x)[0] - lstm.eval()(x)[0]).abs().max().item()
    reflowed = [str(w.message) for w in caught if REFLOW_WARNING in str(w.message)]
    g2.to(torch.float64).to(torch.float32)
    again = len({p.untyped_storage().data_ptr() for p in g2.parameters()}) == 1
    return {
        "flatten_parameters: one cuDNN buffer, no re-packing in eval": {
            "storages": len(storages),
            "reflow_warnings": reflowed,
            "eval_vs_nn_lstm": difference,
            "one_buffer_after_to": again,
            "pass": len(storages) == 1 and not reflowed and again and difference < 1e-5,
        }
    }


# ---------------------------------------------------------------------------------------- 3. graphs, 4. sweep


def median_seconds(run: Callable[[], Any], device: str, repeats: int) -> float:
    times = []
    for repeat in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        if repeat:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def graph_row(shape: tuple[int, int, int, int], repeats: int) -> dict[str, Any]:
    """A training step (forward and backward) of one G2LSTM layer, eager and replayed from a CUDA graph."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(0)
    g2 = g2lstm.G2LSTM(input_size, hidden, device="cuda")
    x = torch.randn(steps, batch, input_size, device="cuda", requires_grad=True)

    def step() -> None:
        g2(x)[0].sum().backward()

    row: dict[str, Any] = {"shape": shape, "eager": median_seconds(step, "cuda", repeats)}
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        row["graph_replay"] = median_seconds(graph.replay, "cuda", repeats)
        row["replay_over_eager"] = row["graph_replay"] / row["eager"]
    except Exception as error:  # a capture that fails is a result too
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def sweep_row(
    shape: tuple[int, int, int, int], blocks: triton_loop.Blocks, device: str, repeats: int
) -> dict:
    """The training step of one sequence through the Triton loop with the given tiles."""
    steps, batch, _, hidden = shape
    torch.manual_seed(0)
    leaves = [t.requires_grad_() for t in sequence_leaves([batch] * steps, hidden, torch.float32, device)]

    def step() -> None:
        output, h_n, _, _ = triton_loop.triton_sequence(
            *leaves, [batch] * steps, scale=1 / 0.9, noise_seed=5, noise_p=0.2, blocks=blocks
        )
        (output.sum() + h_n.sum()).backward()

    return {
        "shape": shape,
        "blocks": blocks._asdict(),
        "train_sequence": median_seconds(step, device, repeats),
    }


# ---------------------------------------------------------------------------------------- driver


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as error:
        info["triton"] = f"not importable: {error}"
    if device == "cuda":
        info.update(
            device=torch.cuda.get_device_name(), cudnn=torch.backends.cudnn.version(), cuda=torch.version.cuda
        )
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        info["commit"] = commit.stdout.strip() or None
    except OSError:  # no git on the machine
        info["commit"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/gpu")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script itself")
    parser.add_argument(
        "--budget", type=float, default=390.0, help="seconds after which the optional sections are skipped"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    os.environ[KERNEL_ENV] = "python"  # the CPU side of the comparisons: no C++ build on the GPU machine
    shapes = SMOKE_SHAPES if args.smoke else AWD_SHAPES
    repeats = 2 if args.smoke else args.repeats
    report: dict[str, Any] = {"environment": environment(args.device), "checks": {}, "seconds": {}}

    def save() -> None:
        report["seconds"]["total"] = time.perf_counter() - start
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    def section(name: str, run: Callable[[], Any], optional: bool = False, part: str = "") -> None:
        """Run one section into the report; an error is recorded (as a failed check in "checks") and the
        run goes on, so that one broken part does not cost the rest of the lease."""
        began = time.perf_counter()
        if optional and began - start > args.budget:
            report[name] = f"skipped: {began - start:.0f} s spent, over the budget of {args.budget:.0f} s"
        else:
            try:
                result = run()
            except Exception:  # recorded with its traceback, then the next section
                error = traceback.format_exc()
                print(error, flush=True)
                failed = {"pass": False, "error": error[-3000:]}
                result = {f"{part} raised": failed} if name == "checks" else failed
            if name == "checks":
                report["checks"].update(result)
            else:
                report[name] = result
        report["seconds"][name] = report["seconds"].get(name, 0.0) + time.perf_counter() - began
        save()
        print(f"[{time.perf_counter() - start:6.1f} s] {name} done", flush=True)

    full_float32()
    section("checks", lambda: kernel_checks(args.device, args.smoke), part="kernel checks")
    section("checks", lambda: module_checks(args.device), part="module checks")
    section("checks", lambda: noise_checks(args.device, args.smoke), part="noise checks")
    torch_defaults()
    section("checks", lambda: autocast_checks(args.device), part="autocast checks")
    section("checks", lambda: flatten_checks(args.device), part="flatten checks")
    for name, result in report["checks"].items():
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[result["pass"]]
        print(f"{mark} {name}  " + json.dumps({k: v for k, v in result.items() if k != "pass"}, default=str))

    def speed(reference_repeats: int = 1) -> list[dict]:
        return [
            row.as_dict()
            for row in measure_speed(
                shapes, repeats=repeats, reference_repeats=reference_repeats, device=args.device
            )
        ]

    torch_defaults()
    section("speed_torch_defaults", speed)
    torch.set_float32_matmul_precision("high")  # TF32 for the Triton loop's and the library's products
    section("speed_tf32_both", speed)
    torch_defaults()
    os.environ[triton_loop.CUDA_KERNEL_ENV] = "python"  # the CUDA path before the Triton loop, same run
    section("speed_python_loop", lambda: speed(reference_repeats=0), optional=True)
    del os.environ[triton_loop.CUDA_KERNEL_ENV]
    if args.device == "cuda":
        section("graphs", lambda: [graph_row(shape, repeats) for shape in shapes], optional=True)
    sweep = [
        triton_loop.Blocks(0, 16, 32, 4),
        triton_loop.Blocks(0, 32, 32, 4),
        triton_loop.Blocks(0, 16, 64, 4),
        triton_loop.Blocks(0, 16, 32, 8),
    ]
    section(
        "sweep",
        lambda: [
            sweep_row(
                shape, blocks._replace(rows=triton_loop.default_blocks(shape[1]).rows), args.device, repeats
            )
            for shape in shapes
            for blocks in sweep
        ],
        optional=True,
    )

    tables = []
    for name, title in (
        ("speed_torch_defaults", "torch defaults: Triton loop in float32, cuDNN with TF32"),
        ("speed_tf32_both", "TF32 allowed for both"),
        ("speed_python_loop", "the previous CUDA path (the Python loop), torch defaults"),
    ):
        if isinstance(report.get(name), list):
            rows = [_speed_row(row) for row in report[name]]
            tables.append(f"### Speed, {title} (medians of {repeats})\n\n{format_speed_table(rows)}")
    if isinstance(report.get("graphs"), list):
        lines = ["| shape | eager ms | graph replay ms | ratio |", "|---|---|---|---|"]
        for row in report["graphs"]:
            replay = row.get("graph_replay")
            lines.append(
                f"| {row['shape']} | {row['eager'] * 1e3:.2f} | "
                + (
                    f"{replay * 1e3:.2f} | {row['replay_over_eager']:.2f} |"
                    if replay
                    else f"— | {row.get('error')} |"
                )
            )
        tables.append("### A training step eager and replayed from a CUDA graph\n\n" + "\n".join(lines))
    if isinstance(report.get("sweep"), list):
        lines = ["| shape | rows, units, inner, warps | train sequence ms |", "|---|---|---|"]
        for row in report["sweep"]:
            blocks = row["blocks"]
            lines.append(
                f"| {row['shape']} | {blocks['rows']}, {blocks['units']}, {blocks['inner']}, "
                f"{blocks['warps']} | {row['train_sequence'] * 1e3:.2f} |"
            )
        tables.append("### Tiles of the step kernels\n\n" + "\n".join(lines))
    header = f"{json.dumps(report['environment'], default=str)}; total {time.perf_counter() - start:.0f} s"
    (out / "gpu_check.md").write_text(header + "\n\n" + "\n\n".join(tables) + "\n")
    save()
    print(header)
    print("\n\n".join(tables))


def _speed_row(row: dict) -> Any:
    from g2lstm.benchmark import SpeedRow

    fields = {key: row[key] for key in SpeedRow.__dataclass_fields__}
    return SpeedRow(**{**fields, "shape": tuple(fields["shape"])})


if __name__ == "__main__":
    main()
