"""Data-parallel training in nanoGPT's compact style, with public ``torch.distributed`` APIs only.

Launch with ``torchrun --nproc_per_node N ...``; :func:`init_distributed` sees torchrun's ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` and joins the process group (gloo on CPU, nccl on CUDA). Without them it
returns a single-process context and every helper here does nothing, so one loop serves both cases::

    context = init_distributed("cuda")
    torch.manual_seed(seed)                          # the same initial weights on every rank ...
    model = build_model().to(context.device)
    if context.enabled:
        model = DistributedDataParallel(model, device_ids=...)  # ... which DDP also broadcasts from rank 0
    torch.manual_seed(seed + context.rank)           # distinct gate noise and dropout per rank
    ...                                              # log, evaluate and checkpoint if context.is_main
    cleanup()

Initial weights: ``DistributedDataParallel``'s constructor broadcasts rank 0's parameters and buffers to all
ranks, and the recipes rely on that; :func:`broadcast_module` does the same for a module that is not
wrapped in DDP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from g2lstm.errors import ConfigError

__all__ = [
    "DistributedContext",
    "all_reduce_mean",
    "any_rank",
    "any_ranks",
    "broadcast_module",
    "cleanup",
    "init_distributed",
    "require_device",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run."""

    enabled: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def gather_objects(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order, on every rank (``[value]`` in a single process).

        For what rank 0 saves on behalf of all, e.g. each rank's :func:`g2lstm.train.rng_state`. Every rank
        must call it at the same point.
        """
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered


def require_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, refused with a :class:`~g2lstm.errors.ConfigError` when it is not a
    device name or this machine lacks it (no CUDA, or fewer GPUs than its index)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device {device!r} is not a torch device ({error}); e.g. cpu or cuda") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(parsed.type, False):
        raise ConfigError(f"device {device!r} is not available here; use --device cpu or one it has")
    gpus = torch.cuda.device_count()
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= gpus:
        raise ConfigError(f"device {device!r} does not exist: this machine has {gpus} GPU(s)")
    return parsed


def init_distributed(device: str | torch.device) -> DistributedContext:
    """Join the process group when started by torchrun, else describe a single process on ``device``.

    Under torchrun, a CUDA ``device`` becomes ``cuda:<LOCAL_RANK>`` (and the current device) with the nccl
    backend; any other device uses gloo. The rendezvous address comes from torchrun's ``MASTER_ADDR`` and
    ``MASTER_PORT``.
    """
    device = require_device(device)
    if "RANK" not in os.environ:
        return DistributedContext(False, 0, 0, 1, device)
    rank, local_rank, world_size = (_environment_int(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(True, rank, local_rank, world_size, device)


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over all ranks, as a new tensor (``tensor`` itself when not distributed)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"all_reduce_mean expects a Tensor, got {type(tensor).__name__}")
    if not _distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank; e.g. a stop request, so that every rank stops at the same step."""
    return any_ranks(flag)[0]


def any_ranks(*flags: bool) -> tuple[bool, ...]:
    """For each of ``flags``, whether it is set on any rank, in one collective call."""
    if not _distributed():
        return tuple(bool(flag) for flag in flags)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(value) for value in values.tolist())


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"broadcast_module expects an nn.Module, got {type(module).__name__}")
    if not _distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _environment_int(name: str) -> int:
    text = os.environ.get(name)
    if text is None:
        raise ValueError(f"environment variable {name} is not set although RANK is; launch with torchrun")
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None
