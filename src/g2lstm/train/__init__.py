"""What the training recipes share: configs, checkpoints, random states, signals, run folders, DDP."""

from g2lstm.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointPaths,
    check_layer_count,
    checkpoint_config,
    load_checkpoint,
    require_entries,
    restore_model,
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
    preset_descriptions,
)
from g2lstm.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    any_rank,
    any_ranks,
    broadcast_module,
    cleanup,
    init_distributed,
)
from g2lstm.train.resume import check_resume, check_same_data, data_fingerprint, other_data
from g2lstm.train.rng import rng_state, seed_all, set_rng_state
from g2lstm.train.run_dir import (
    RunLog,
    describe_environment,
    lock_run_folder,
    read_metrics,
    run_names,
)
from g2lstm.train.signals import StopRequest, TrainingInterrupted, stop_on_signals
from g2lstm.train.storage import make_output_folder, write_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointPaths",
    "ConfigError",
    "DistributedContext",
    "RunLog",
    "StopRequest",
    "TrainingInterrupted",
    "all_reduce_mean",
    "any_rank",
    "any_ranks",
    "apply_overrides",
    "broadcast_module",
    "check_layer_count",
    "check_resume",
    "check_same_data",
    "checkpoint_config",
    "cleanup",
    "config_from_dict",
    "config_to_dict",
    "data_fingerprint",
    "describe_environment",
    "init_distributed",
    "list_presets",
    "load_checkpoint",
    "load_config",
    "lock_run_folder",
    "make_output_folder",
    "other_data",
    "parse_overrides",
    "preset_descriptions",
    "read_metrics",
    "require_entries",
    "restore_model",
    "rng_state",
    "run_names",
    "save_checkpoint",
    "seed_all",
    "set_rng_state",
    "stop_on_signals",
    "write_file",
]
