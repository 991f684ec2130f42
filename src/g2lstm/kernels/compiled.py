"""The compiled CPU loop of the fused kernel: ``cpu_step.cpp``, built on first use per instruction set.

``cpu_step.cpp`` runs a whole sequence in one call: its own register-blocked recurrent product on weights
packed once per call, with each step's element-wise work (gate noise, nonlinearities, cell update; local
derivatives going back) fused right behind it, one OpenMP region per sequence and one barrier per step. The
Python loop of :mod:`g2lstm.kernels.fused` computes the same function with library products and is the
fallback. The source is compiled with ``torch.utils.cpp_extension.load`` the first time it is needed (a
minute or two, then cached under ``$XDG_CACHE_HOME/g2lstm`` or ``~/.cache/g2lstm``), once per instruction
set: ``avx512``, ``avx2`` or ``default`` (ATen's portable vector code), each in its own cache folder. The
best build the CPU supports is used, judged by the capability torch itself reports, so a build never runs
instructions the CPU lacks; ``$G2LSTM_CPU_ISA`` picks a narrower one (to compare or test them).
``$G2LSTM_CPU_KERNEL`` picks the loop on CPU: ``auto`` (default: compiled, or the Python loop with one
warning when it cannot be built), ``compiled`` (an error when it cannot be built) or ``python``.
"""

from __future__ import annotations

import os
import platform
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Literal, overload

import torch

__all__ = [
    "COMPILED_DTYPES",
    "KERNEL_ENV",
    "KERNELS",
    "VARIANT_ENV",
    "VARIANTS",
    "compiled_module",
    "kernel_choice",
    "supported_variants",
    "use_compiled",
    "variant_in_use",
]

KERNEL_ENV = "G2LSTM_CPU_KERNEL"
KERNELS = ("auto", "compiled", "python")
VARIANT_ENV = "G2LSTM_CPU_ISA"
_SOURCE = Path(__file__).with_name("cpu_step.cpp")

# Instruction sets a build can target, best first, with the compiler flags that select ATen's vector types for
# it; "default" is ATen's portable vector code with no instruction-set flag.
VARIANTS = ("avx512", "avx2", "default")
_ISA_FLAGS = {
    "avx512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-mf16c",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "default": [],
}

# The builds of this process: the extension module of each variant, or the error that stopped it (each built
# at most once).
_builds: dict[str, ModuleType | Exception] = {}


def kernel_choice(kernel: str | None = None) -> str:
    """The CPU loop asked for: ``kernel`` if given, else ``$G2LSTM_CPU_KERNEL``, else ``"auto"``."""
    source = "kernel" if kernel is not None else KERNEL_ENV
    value = kernel if kernel is not None else os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if value not in KERNELS:
        raise ValueError(f"{source} must be one of {KERNELS}, got {value!r}")
    return value


def supported_variants() -> tuple[str, ...]:
    """The builds this machine can run, best first, by the CPU capability torch reports (which
    ``ATEN_CPU_CAPABILITY`` can lower): a build never uses instructions torch does not use itself."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ("default",)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        return VARIANTS
    if capability == "AVX2":
        return ("avx2", "default")
    return ("default",)


def variant_in_use() -> str:
    """The build the compiled loop uses: ``$G2LSTM_CPU_ISA`` if set (to compare or test a narrower
    instruction set), else the best this machine supports."""
    supported = supported_variants()
    value = os.environ.get(VARIANT_ENV, "").strip().lower()
    if not value:
        return supported[0]
    if value not in supported:
        raise ValueError(f"{VARIANT_ENV} must be one of {supported} on this CPU, got {value!r}")
    return value


def _build_directory(name: str) -> Path:
    """Per-user cache folder of one build, keyed by torch version (the extension's ABI) and variant."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "g2lstm" / f"torch-{torch.__version__}" / name


def _compile(variant: str) -> ModuleType:
    """Build (or load the cached build of) ``cpu_step.cpp`` for one instruction-set variant."""
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:  # torch's builder runs `ninja`: use the one the ninja package installed
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
    name = f"g2lstm_cpu_step_{variant}"
    directory = _build_directory(name)
    directory.mkdir(parents=True, exist_ok=True)
    # torch's builder waits for as long as its `lock` file exists, and a build killed midway (Ctrl-C during
    # the first minute) leaves it behind. Builds of this folder take our own advisory lock, which the kernel
    # releases with its holder, so a `lock` file found while holding it is stale and is removed.
    import fcntl  # POSIX; the compiled loop is built on Linux and macOS

    with open(directory / "g2lstm.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        return cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-fopenmp", *_ISA_FLAGS[variant]],
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            verbose=False,
        )


@overload
def compiled_module(required: Literal[True], variant: str | None = None) -> ModuleType: ...


@overload
def compiled_module(required: bool = False, variant: str | None = None) -> ModuleType | None: ...


def compiled_module(required: bool = False, variant: str | None = None) -> ModuleType | None:
    """The compiled loop for ``variant`` (default: the best this machine supports), built on first use in
    the process; ``None`` if it cannot be built.

    A failed build warns once (the Python loop is used instead); with ``required`` it raises instead.
    """
    if variant is None:
        variant = variant_in_use()  # one this CPU supports
    elif variant not in supported_variants():
        raise ValueError(f"this CPU cannot run the {variant!r} build; it supports {supported_variants()}")
    if variant not in _builds:
        try:
            _builds[variant] = _compile(variant)
        except Exception as error:  # a missing compiler or ninja surfaces as several exception types
            _builds[variant] = error
            if not required:
                warnings.warn(
                    f"g2lstm could not compile its CPU kernel ({type(error).__name__}: {error}); using the "
                    f"slower Python loop. Set {KERNEL_ENV}=python to skip the attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    build = _builds[variant]
    if isinstance(build, Exception):
        if required:
            raise RuntimeError(
                f"{KERNEL_ENV}=compiled, but g2lstm's CPU kernel could not be compiled: {build}"
            ) from build
        return None
    return build


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
