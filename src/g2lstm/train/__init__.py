"""What the training recipes share: configs, checkpoints, random states, signals, run folders, DDP."""

from g2lstm.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointPaths,
    load_checkpoint,
    save_checkpoint,
)
from g2lstm.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    parse_overrides,
)
from g2lstm.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    any_rank,
    broadcast_module,
    cleanup,
    init_distributed,
    unwrap_model,
)
from g2lstm.train.rng import rng_state, seed_all, set_rng_state
from g2lstm.train.run_dir import RunLog, describe_environment, read_metrics, run_names
from g2lstm.train.signals import StopRequest, stop_on_signals

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointPaths",
    "ConfigError",
    "DistributedContext",
    "RunLog",
    "StopRequest",
    "all_reduce_mean",
    "any_rank",
    "apply_overrides",
    "broadcast_module",
    "cleanup",
    "config_from_dict",
    "config_to_dict",
    "describe_environment",
    "init_distributed",
    "list_presets",
    "load_checkpoint",
    "load_config",
    "parse_overrides",
    "read_metrics",
    "rng_state",
    "run_names",
    "save_checkpoint",
    "seed_all",
    "set_rng_state",
    "stop_on_signals",
    "unwrap_model",
]
