"""Resident memory of one saved model loaded for inference, measured in the fresh process that runs this file.

    python benchmarks/resident_memory.py FOLDER MODEL RUNTIME THREADS    # run by compress_speed.py

FOLDER holds ``models.json`` (the shape and, per model, how to build it and its files), ``input.npy``,
``outputs.npz`` (the parent's outputs) and a tiny ``nn.LSTM(1, 1)`` saved as ``warmup.pt`` and
``warmup.onnx``. The process imports only what ``RUNTIME`` needs (torch and g2lstm for ``torch``,
onnxruntime for ``onnxruntime``) and first does what holds no part of the model: for ``torch`` it builds the
skeleton on the meta device with the compressed layout and runs ``torch.load`` once on the tiny file; for
``onnxruntime`` it opens and closes a session of the tiny graph (onnxruntime's one-time set-up, ~10 MB).

Then, in kB from /proc/self/status: ``baseline``, VmRSS after glibc's ``malloc_trim(0)`` has returned the
heap's free memory (so that loading takes fresh pages); ``loaded``, VmRSS after loading the model as a
deployment would (``load_state_dict(torch.load(file), assign=True)`` into the skeleton, or an
InferenceSession of the ONNX file); ``loaded_trimmed``, VmRSS after another ``malloc_trim`` (None without
glibc), which tells live memory from memory the allocator kept. A forward on a 1 x 1 slice of the input
loads code, kernels and thread pools; then, after another trim, two full forwards, each with VmRSS before it
and its peak VmHWM (reset before it by writing 5 to /proc/self/clear_refs, Linux): the first shows the
forward's working memory in fresh pages, the second what it adds when the allocator kept the first's.
Prints these figures and the largest difference of the outputs from the parent's as one JSON line.
"""

from __future__ import annotations

import ctypes
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

G2_OPTIONS = {"gate": "g2"}  # the benchmark's G2LSTMs' gates (σ gates at evaluation unless eval_gate says)
Forward = Callable[[np.ndarray], np.ndarray]
Loader = Callable[[], Forward]


def onnx_session(path: Path, threads: int, config: dict[str, str] | None = None) -> Any:
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads that do not spin when idle
    (spinning threads would take the cores from whatever runs next), and the session ``config`` entries."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM (the peak since the last reset) of this process, in kB."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    return {name: int(value.split()[0]) for name, value in fields.items()}


def reset_peak() -> None:
    """Reset VmHWM to the current VmRSS."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def torch_loader(entry: dict[str, Any], folder: Path, shape: list[int], threads: int) -> Loader:
    """Build the skeleton of model ``entry`` on the meta device (no data) with its compressed layout, and
    load the tiny file once; the returned function loads the saved tensors into the skeleton (assigned, not
    copied)."""
    import torch
    from torch import nn

    from g2lstm import G2LSTM
    from g2lstm.compress import restore_compressed

    torch.set_num_threads(threads)
    _, _, input_size, hidden = shape
    with torch.device("meta"):
        if entry["class"] == "nn.LSTM":
            module: nn.Module = nn.LSTM(input_size, hidden)
        else:
            module = G2LSTM(input_size, hidden, **G2_OPTIONS, eval_gate=entry["eval_gate"])
    restore_compressed(module, entry["compression"])
    module.eval()
    torch.load(folder / "warmup.pt", weights_only=True)
    path = folder / entry["state_dict"]

    def load() -> Forward:
        module.load_state_dict(torch.load(path, weights_only=True), assign=True)
        left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"tensors left on the meta device after loading {path.name}: {left}")

        def forward(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x))[0].numpy()

        return forward

    return load


def onnx_loader(entry: dict[str, Any], folder: Path, threads: int) -> Loader:
    """Open and close a session of the tiny graph; the returned function opens one of model ``entry``."""
    onnx_session(folder / "warmup.onnx", threads)

    def load() -> Forward:
        session = onnx_session(folder / entry["onnx"], threads, entry["onnxruntime_config"])
        return lambda x: session.run(None, {"input": x})[0]

    return load


def trim() -> bool:
    """Return the heap's free memory to the system (glibc's ``malloc_trim``); False without glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except AttributeError:
        return False
    return True


def measure(folder: Path, name: str, runtime: str, threads: int) -> dict[str, Any]:
    """The memory figures (kB) of model ``name`` of ``folder`` in ``runtime`` and its outputs' largest
    difference from the parent's."""
    spec = json.loads((folder / "models.json").read_text())
    entry = spec["models"][name]
    inputs = np.load(folder / "input.npy")
    if runtime == "torch":
        load = torch_loader(entry, folder, spec["shape"], threads)
    elif runtime == "onnxruntime":
        load = onnx_loader(entry, folder, threads)
    else:
        raise ValueError(f"runtime must be 'torch' or 'onnxruntime', got {runtime!r}")
    trim()  # so that loading takes fresh pages rather than those freed by the imports
    figures: dict[str, Any] = {"baseline": memory_status()["VmRSS"]}
    forward = load()
    figures["loaded"] = memory_status()["VmRSS"]
    figures["loaded_trimmed"] = memory_status()["VmRSS"] if trim() else None
    forward(np.ascontiguousarray(inputs[:1, :1]))
    trim()
    errors = []
    for run in ("first", "second"):
        figures[f"{run}_before"] = memory_status()["VmRSS"]
        reset_peak()
        output = forward(inputs)
        figures[f"{run}_peak"] = memory_status()["VmHWM"]
        with np.load(folder / "outputs.npz") as expected:
            errors.append(float(np.abs(output - expected[entry["key"]]).max()))
        del output
    return {**figures, "max_error": max(errors)}


if __name__ == "__main__":
    folder, model, runtime, threads = sys.argv[1:]
    print(json.dumps(measure(Path(folder), model, runtime, int(threads))))
