"""Compressed G2LSTMs against the dense G2LSTM and nn.LSTM at inference: size on disk, resident memory and
eval speed in PyTorch and in onnxruntime, each as a ratio to nn.LSTM measured in the same run.

    python benchmarks/compress_speed.py                      # T=70, B=20, in=400, H=1150; ranks H/9, H/18
    python benchmarks/compress_speed.py --shape 35 10 128 256   # the `cpu` preset's first layer
    python benchmarks/compress_speed.py --shape 5 2 32 64 --repeats 2   # a smoke test

Models: nn.LSTM; the dense G2LSTM (σ gates: torch's own kernel); the paper's compressions of the input and
forget blocks (low rank H/9 and H/18, round 0.2, round 0.2 & clip 0.4), which at inference multiply by the
factors and by the int8 codes directly in the compiled CPU loop (g2lstm.kernels.stored); round & clip once
more, with onnxruntime's session option ``session.disable_quant_qdq`` (its constant folding then multiplies
the codes' DequantizeLinear out into float weights: dense speed and memory); the dense G2LSTM with hard
0/1 gates; and hard gates on rank H/9 and on round & clip, the deployable combinations (the int4, ternary
and sign blocks of benchmarks/hard_gates.py are simulated, with no packed storage to measure). All hold the
same weights before compression.

- Size on disk: the bytes of the state dict saved with ``torch.save`` (compressed layers store factors or
  int8 codes) and of the ONNX export (graph and external data, if any).
- ONNX: the TorchScript exporter (``dynamo=False``), the output sequence alone, dynamic time and batch axes.
  σ-gate layers become ONNX's LSTM op (a rounded layer converts its int8 codes with DequantizeLinear in
  front of it), low-rank layers and hard gates a Loop (g2lstm.kernels.export). Sessions run on the CPU
  provider with as many intra-op threads as torch and no spinning threads; each session's output must match
  the module's within 1e-4.
- Speed: every model in PyTorch (evaluation mode, ``torch.no_grad``) and in onnxruntime alternates within
  every repeat, so slow drifts of the machine affect them alike; each time is the median over the repeats
  after one warm-up round.
- Resident memory: measured in a fresh process per model and runtime (benchmarks/resident_memory.py says
  how), which loads only what a deployment would: for PyTorch the skeleton built on the meta device and the
  saved state dict assigned to it, for onnxruntime a session of the ONNX file (its default graph
  optimizations, which fold neither the factored loop nor DequantizeLinear into dense weights). "loaded":
  VmRSS after loading above VmRSS before; "loaded, trimmed": the same once glibc's malloc_trim has returned
  the freed heap, i.e. live memory; "forward peak": the peak VmHWM of a full forward above VmRSS just before
  it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from onnx_size import export_size
from resident_memory import G2_OPTIONS, onnx_session
from torch import Tensor, nn

from g2lstm import G2LSTM
from g2lstm.benchmark import kernel_description, machine_description
from g2lstm.compress import compress, compression_config, count_parameters_and_bytes

AWD_LAYER = (70, 20, 400, 1150)  # (time, batch, input, hidden): the first AWD-LSTM layer of the paper
RUNTIMES = ("torch", "onnxruntime")
TOLERANCE = 1e-4  # the largest difference allowed between onnxruntime's output and the module's
MB = 1e6
# A session option of onnxruntime that lets its constant folding multiply DequantizeLinear out into float
# weights: the rounded model once more with it, to show what a deployment trades between memory and speed
FOLDED = "G2LSTM round 0.2 & clip 0.4, codes folded by onnxruntime"
ONNXRUNTIME_CONFIG = {FOLDED: {"session.disable_quant_qdq": "1"}}


def models_of(lstm: nn.LSTM, ranks: Sequence[int]) -> dict[str, nn.Module]:
    """nn.LSTM, the dense G2LSTM with its weights, each compression of the benchmark (round & clip twice:
    the second for onnxruntime with ``ONNXRUNTIME_CONFIG``), hard gates, and hard gates on the first rank's
    factors and on the round & clip codes."""
    dense = G2LSTM.from_lstm(lstm, **G2_OPTIONS).eval()
    models: dict[str, nn.Module] = {"nn.LSTM": lstm.eval(), "G2LSTM": dense}
    settings = {**{f"rank {rank}": dict(rank=rank) for rank in ranks},
                "round 0.2": dict(round=0.2), "round 0.2 & clip 0.4": dict(round=0.2, clip=0.4)}
    for name, setting in settings.items():
        compressed = copy.deepcopy(dense)
        compress(compressed, **setting)
        models[f"G2LSTM {name}"] = compressed
    models[FOLDED] = models["G2LSTM round 0.2 & clip 0.4"]
    stored = (f"rank {ranks[0]}", "round 0.2 & clip 0.4")  # hard gates on the dense weights and stored forms
    hard_sources = {"G2LSTM hard gates": "G2LSTM"}
    hard_sources |= {f"G2LSTM hard gates, {name}": f"G2LSTM {name}" for name in stored}
    for name, source in hard_sources.items():
        hard = copy.deepcopy(models[source])
        hard.eval_gate = "hard"
        models[name] = hard
    return models


def runner(target: nn.Module | onnxruntime.InferenceSession) -> Callable[[Tensor], Tensor]:
    """One eval forward of ``(T, B, in)`` inputs to the output sequence, by a module or a session."""
    if isinstance(target, nn.Module):
        return lambda x: target(x)[0]
    return lambda x: torch.from_numpy(target.run(None, {"input": x.numpy()})[0])


def measure_resident_memory(folder: Path, name: str, runtime: str) -> dict[str, Any]:
    """The resident memory of ``name`` in ``runtime``, measured in a fresh process
    (benchmarks/resident_memory.py, given torch's thread count)."""
    script = Path(__file__).resolve().with_name("resident_memory.py")
    command = [sys.executable, str(script), str(folder), name, runtime, str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the resident-memory process of {name} ({runtime}) failed:\n{done.stderr}")
    figures = json.loads(done.stdout.splitlines()[-1])
    if not figures["max_error"] <= TOLERANCE:
        raise RuntimeError(f"{name} loaded in a fresh process ({runtime}) gives other outputs: max "
                           f"difference {figures['max_error']:.2e}")
    return figures


# ------------------------------------------------------------------------------------------- measurement


def save_models(
    models: dict[str, nn.Module], inputs: Tensor, hidden: int, folder: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, onnxruntime.InferenceSession]]:
    """Save each model's state dict and ONNX export into ``folder`` with what the resident-memory processes
    read (models.json, the input, the modules' outputs, a tiny model for their warm-up); each model's sizes
    and onnxruntime's error, and its onnxruntime session."""
    steps, batch, input_size = inputs.shape
    spec: dict[str, Any] = {"shape": [steps, batch, input_size, hidden], "models": {}}
    outputs, sizes, sessions = {}, {}, {}
    for index, (name, model) in enumerate(models.items()):
        entry = {
            "class": "G2LSTM" if isinstance(model, G2LSTM) else "nn.LSTM",
            "eval_gate": getattr(model, "eval_gate", None),
            "compression": compression_config(model) if isinstance(model, G2LSTM) else None,
            "state_dict": f"{index}.pt",
            "onnx": f"{index}.onnx",
            "key": f"model{index}",
            "onnxruntime_config": ONNXRUNTIME_CONFIG.get(name, {}),
        }
        spec["models"][name] = entry
        torch.save(model.state_dict(), folder / entry["state_dict"])
        onnx_bytes = export_size(model, folder / entry["onnx"], dynamo=False, compressed=False)
        outputs[entry["key"]] = runner(model)(inputs).numpy()
        sessions[name] = onnx_session(
            folder / entry["onnx"], torch.get_num_threads(), entry["onnxruntime_config"]
        )
        actual = runner(sessions[name])(inputs).numpy()
        error = float(np.abs(actual - outputs[entry["key"]]).max())
        if not error <= TOLERANCE:
            raise RuntimeError(f"onnxruntime's output of {name} differs from the module's by {error:.2e}")
        sizes[name] = {
            "state_bytes": count_parameters_and_bytes(model)[1],
            "state_dict_file_bytes": (folder / entry["state_dict"]).stat().st_size,
            "onnx_file_bytes": onnx_bytes,
            "onnx_max_error": error,
            "onnxruntime_config": entry["onnxruntime_config"],
        }
    warmup = nn.LSTM(1, 1).eval()
    torch.save(warmup.state_dict(), folder / "warmup.pt")
    export_size(warmup, folder / "warmup.onnx", dynamo=False, compressed=False)
    (folder / "models.json").write_text(json.dumps(spec))
    np.save(folder / "input.npy", inputs.numpy())
    np.savez(folder / "outputs.npz", **outputs)
    return sizes, sessions


def measure(
    shape: Sequence[int], ranks: Sequence[int], repeats: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Every figure of every model at ``shape``: sizes (bytes), raw times (s) and memory (kB)."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(seed)
    models = models_of(nn.LSTM(input_size, hidden), ranks)
    inputs = torch.randn(steps, batch, input_size)
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        folder = Path(directory)
        results, sessions = save_models(models, inputs, hidden, folder)
        runs = {
            (name, runtime): runner(models[name] if runtime == "torch" else sessions[name])
            for name in models for runtime in RUNTIMES
        }
        times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
        for repeat in range(repeats + 1):
            for key, forward in runs.items():
                start = time.perf_counter()
                forward(inputs)
                if repeat > 0:  # the first round is the warm-up
                    times[key].append(time.perf_counter() - start)
        for name in models:
            for runtime in RUNTIMES:
                results[name][f"{runtime}_seconds"] = times[name, runtime]
                results[name][f"{runtime}_median_seconds"] = statistics.median(times[name, runtime])
                results[name][f"{runtime}_memory_kb"] = measure_resident_memory(folder, name, runtime)
    return results


def memory_mb(figures: dict[str, Any]) -> tuple[float, float, float]:
    """MB resident once loaded and after malloc_trim (above the baseline; NaN without glibc), and the peak
    of the first full forward above the resident memory just before it."""
    kib = 1024 / MB
    trimmed = figures["loaded_trimmed"]
    return ((figures["loaded"] - figures["baseline"]) * kib,
            math.nan if trimmed is None else (trimmed - figures["baseline"]) * kib,
            (figures["first_peak"] - figures["first_before"]) * kib)


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: each figure of each model, and its ratio to nn.LSTM's."""

    def columns(row: dict[str, Any]) -> list[float]:
        return [row["state_dict_file_bytes"] / MB, row["onnx_file_bytes"] / MB,
                *memory_mb(row["torch_memory_kb"]), *memory_mb(row["onnxruntime_memory_kb"]),
                row["torch_median_seconds"] * 1e3, row["onnxruntime_median_seconds"] * 1e3]

    def cell(value: float, reference: float) -> str:
        if math.isnan(value):
            return "–"
        ratio = f"{value / reference:.2f}×" if reference > 0 else "–"
        return f"{value:,.0f} ({ratio})" if value >= 1000 else f"{value:.3g} ({ratio})"

    reference = columns(results["nn.LSTM"])
    memory = ("loaded (MB)", "loaded, trimmed (MB)", "forward peak (MB)")
    headings = ["state dict file (MB)", "ONNX file (MB)", *(f"{runtime}: {figure}" for runtime in
                ("PyTorch", "onnxruntime") for figure in memory), "PyTorch (ms)", "onnxruntime (ms)"]
    lines = [f"| model | {' | '.join(headings)} |", "|---|" + "---|" * len(headings)]
    for name, row in results.items():
        cells = [cell(value, ref) for value, ref in zip(columns(row), reference)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, absolute paths made relative to the working folder."""
    words = [os.path.relpath(word) if os.path.isabs(word) else word for word in argv]
    return shlex.join(["python", "benchmarks/compress_speed.py", *words])


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    parser.add_argument("--threads", type=int, help="torch's and onnxruntime's threads (default: torch's)")
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    parser.add_argument("--markdown", help="also write the header and the table to this Markdown file")
    args = parser.parse_args(argv)
    if min(args.shape) < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--shape values, --repeats and --threads must be >= 1, got {args.shape}, "
                     f"{args.repeats} and {args.threads}")
    ranks = args.ranks or [max(1, args.shape[3] // 9), max(1, args.shape[3] // 18)]
    previous = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return run(args, ranks, argv)
    except ValueError as error:  # e.g. a rank above min(H, in)
        parser.error(str(error))
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace, ranks: Sequence[int], argv: Sequence[str]) -> int:
    """Measure, print the header and table, and write the files asked for."""
    started = datetime.now(timezone.utc)
    results = measure(args.shape, ranks, args.repeats, args.seed)
    header = (
        f"{started:%Y-%m-%d %H:%M} UTC, `{command_line(argv)}`: shape (T, B, in, H) = {tuple(args.shape)}, "
        f"median of {args.repeats} repeats; {machine_description()}; {kernel_description()}; onnxruntime "
        f"{onnxruntime.__version__} ({torch.get_num_threads()} intra-op threads, no spinning); TorchScript "
        f"ONNX exporter"
    )
    table = format_table(results)
    print(f"{header}\n\n{table}")
    if args.markdown:
        Path(args.markdown).write_text(f"{header}\n\n{table}\n")
    if args.json:
        record = {
            "date": started.isoformat(timespec="seconds"),
            "command": command_line(argv),
            "machine": machine_description(),
            "kernel": kernel_description(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": torch.get_num_threads(),
            "exporter": "torchscript",
            "shape": args.shape,
            "ranks": ranks,
            "repeats": args.repeats,
            "seed": args.seed,
            "models": results,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
