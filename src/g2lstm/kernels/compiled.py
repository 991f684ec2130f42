"""The compiled CPU loop of the fused kernel: ``cpu_step.cpp``, built on first use, and its selection.

The Python loop of :mod:`g2lstm.kernels.fused` issues every element-wise operation of a step from Python;
``cpu_step.cpp`` runs each step's element-wise work as one vectorised C++ pass (and the whole sequence as
one call), with the same saved quantities and gradients. It is compiled with
``torch.utils.cpp_extension.load`` the first time it is needed (a minute or so, then cached under
``$XDG_CACHE_HOME/g2lstm`` or ``~/.cache/g2lstm``). The environment variable ``G2LSTM_CPU_KERNEL`` picks
the loop on CPU: ``auto`` (default: compiled, or the Python loop with one warning when it cannot be
built), ``compiled`` (an error when it cannot be built) or ``python``.
"""

from __future__ import annotations

import os
import platform
import shutil
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["COMPILED_DTYPES", "KERNEL_ENV", "KERNELS", "compiled_module", "kernel_choice", "use_compiled"]

KERNEL_ENV = "G2LSTM_CPU_KERNEL"
KERNELS = ("auto", "compiled", "python")
_SOURCE = Path(__file__).with_name("cpu_step.cpp")

# The build of this process: the extension module, or the error that stopped it (built at most once).
_build: ModuleType | Exception | None = None


def kernel_choice(kernel: str | None = None) -> str:
    """The CPU loop asked for: ``kernel`` if given, else ``$G2LSTM_CPU_KERNEL``, else ``"auto"``."""
    source = "kernel" if kernel is not None else KERNEL_ENV
    value = kernel if kernel is not None else os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if value not in KERNELS:
        raise ValueError(f"{source} must be one of {KERNELS}, got {value!r}")
    return value


def _build_directory(name: str) -> Path:
    """Per-user cache folder of one build, keyed by torch version (the extension's ABI)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "g2lstm" / f"torch-{torch.__version__}" / name


def _compile() -> ModuleType:
    """Build (or load the cached build of) ``cpu_step.cpp`` for this machine's vector capability.

    AVX2 code is generated only where torch itself reports AVX2 (or better), so a build never uses
    instructions the CPU lacks; elsewhere ATen's portable vector types are compiled with ``-O3`` alone.
    """
    from torch.utils import cpp_extension

    avx2 = platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in (
        "AVX2",
        "AVX512",
    )
    flags = ["-O3", "-fopenmp"]
    if avx2:
        flags += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    if shutil.which("ninja") is None:  # torch's builder runs `ninja`: use the one the ninja package installed
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
    name = f"g2lstm_cpu_step_{'avx2' if avx2 else 'default'}"
    directory = _build_directory(name)
    directory.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=False,
    )


def compiled_module(required: bool = False) -> ModuleType | None:
    """The compiled loop, built on the first call of the process; ``None`` if it cannot be built.

    A failed build warns once (the Python loop is used instead); with ``required`` it raises instead.
    """
    global _build
    if _build is None:
        try:
            _build = _compile()
        except Exception as error:  # a missing compiler or ninja surfaces as several exception types
            _build = error
            if not required:
                warnings.warn(
                    f"g2lstm could not compile its CPU kernel ({type(error).__name__}: {error}); using the "
                    f"slower Python loop. Set {KERNEL_ENV}=python to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    if isinstance(_build, Exception):
        if required:
            raise RuntimeError(
                f"{KERNEL_ENV}=compiled, but g2lstm's CPU kernel could not be compiled: {_build}"
            ) from _build
        return None
    return _build


COMPILED_DTYPES = (torch.float32, torch.float64)


def use_compiled(device: torch.device, dtype: torch.dtype, kernel: str | None = None) -> bool:
    """Whether a sequence on ``device`` in ``dtype`` runs the compiled loop: float32 and float64 on the CPU
    (half precision and CUDA keep the Python loop)."""
    choice = kernel_choice(kernel)
    if device.type != "cpu" or dtype not in COMPILED_DTYPES:
        if kernel == "compiled":
            raise ValueError(
                f"kernel='compiled' runs on float32 and float64 CPU tensors only, got {dtype} on {device}"
            )
        return False
    if choice == "python":
        return False
    return compiled_module(required=choice == "compiled") is not None
