"""Training an AWD-LSTM language model as the paper did: SGD, then averaged SGD, then a finetune.

``train_language_model`` is the whole loop, to be read top to bottom: setup -> data -> model ->
optimizer -> resume -> loop (random BPTT length, AR/TAR, clipping, checkpoints) -> end-of-epoch
validation (with averaged weights once averaged SGD runs) and the non-monotone switch -> final test.
``finetune`` runs the same loop from the best model with averaged SGD from the first step, stopping by
the same non-monotone criterion, as the authors' finetune.py.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from g2lstm import G2LSTM
from g2lstm.data import Corpus, CorpusError
from g2lstm.errors import CheckpointError, ConfigError, MissingFileError
from g2lstm.lm.config import ARCHITECTURE_KEYS, RESUMABLE_KEYS, LMConfig
from g2lstm.lm.evaluate import (
    MODEL_ENTRIES,
    check_layers,
    checkpoint_vocab,
    evaluate,
    load_corpus,
    split_streams,
)
from g2lstm.lm.model import AWDLSTM, State
from g2lstm.signature import model_signature
from g2lstm.train import (
    CheckpointPaths,
    DistributedContext,
    RunLog,
    any_ranks,
    apply_overrides,
    check_resume,
    check_same_data,
    checkpoint_config,
    cleanup,
    config_to_dict,
    data_fingerprint,
    init_distributed,
    load_checkpoint,
    lock_run_folder,
    other_data,
    require_entries,
    restore_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stop_on_signals,
)
from g2lstm.train.faults import skip_non_finite_step
from g2lstm.train.signals import stop_if_requested

__all__ = ["corpus_fingerprint", "finetune", "train_language_model"]

RESUME_ENTRIES = (
    *MODEL_ENTRIES,
    "optimizer",
    "progress",
    "hidden",
    "rng",
    "lengths_rng",
)  # what resuming needs
# Under torchrun the ranks agree on a stop or a time-based checkpoint every CHECK_IN_STEPS steps (one
# all_reduce), not at every step: a signal is honoured within that many steps.
CHECK_IN_STEPS = 10


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that a resumed run continues exactly."""

    epoch: int = 1
    position: int = 0  # next row of the training stream within the epoch
    step: int = 0
    averaging: bool = False  # averaged SGD switched on
    best_valid: float = math.inf
    valid_history: list[float] = field(default_factory=list)
    bad_steps: int = 0
    done: bool = False


def corpus_fingerprint(corpus: Corpus) -> str:
    """The fingerprint of the corpus a run trains on: its vocabulary and token ids (so where the files lie
    does not matter, what they hold does)."""
    parts = ["\n".join(corpus.vocab.to_list()).encode()]
    return data_fingerprint(
        parts + [getattr(corpus, split).numpy().tobytes() for split in ("train", "valid", "test")]
    )


def _cross_entropy(model: AWDLSTM, output: Tensor, targets: Tensor) -> Tensor:
    logits = model.decode(output)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@contextmanager
def _averaged_weights(optimizer: torch.optim.Optimizer, active: bool) -> Iterator[None]:
    """Swap in averaged SGD's running averages for evaluation (a no-op before the switch)."""
    if not active:
        yield
        return
    saved = []
    with torch.no_grad():
        for group in optimizer.param_groups:
            for param in group["params"]:
                if "ax" in optimizer.state[param]:
                    saved.append((param, param.detach().clone()))
                    param.copy_(optimizer.state[param]["ax"])
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


def _make_optimizer(model: nn.Module, config: LMConfig, averaging: bool) -> torch.optim.Optimizer:
    if averaging:
        return torch.optim.ASGD(
            model.parameters(), lr=config.lr, t0=0, lambd=0.0, weight_decay=config.weight_decay
        )
    return torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _set_gates(model: nn.Module, noise_p: float, temperature: float | None) -> None:
    """Give every G2LSTM layer of ``model`` this noise probability and temperature (a gate schedule's)."""
    for layer in model.modules():
        if isinstance(layer, G2LSTM):
            layer.noise_p, layer.temperature = noise_p, temperature


def _detach(hidden: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    return [(h.detach(), c.detach()) for h, c in hidden]


def train_language_model(
    config: LMConfig,
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    phase: str = "train",
    init_checkpoint: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (``phase="train"``) or finetune (``phase="finetune"``, from ``init_checkpoint``) into
    ``run_dir``, resuming from ``run_dir/last.pt`` when it exists. Returns the final metrics.

    The run folder is locked while this runs (rank 0 writes it). A resume must keep the run's config but
    for :data:`~g2lstm.lm.config.RESUMABLE_KEYS`, and its data.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM asked it to stop; ``last.pt`` was saved first.
        ConfigError: a resume with other settings or data than the run's.
        RunFolderBusy: another process writes ``run_dir``.
        CheckpointError: ``last.pt`` or ``init_checkpoint`` cannot be continued from.
    """
    dist = init_distributed(config.device)
    with ExitStack() as resources:  # closed in reverse, however the run ends: run log, lock, process group
        resources.callback(cleanup)
        if dist.is_main:
            resources.enter_context(lock_run_folder(run_dir))
        return _train(config, Path(run_dir), data, dist, phase, init_checkpoint, show_progress, resources)


def _train(
    config: LMConfig,
    run_dir: Path,
    data: str | Path | None,
    dist: DistributedContext,
    phase: str,
    init_checkpoint: str | Path | None,
    show_progress: bool,
    resources: ExitStack,
) -> dict[str, Any]:
    # ---- setup: the checkpoints to start from, checked before anything is written
    paths = CheckpointPaths(run_dir)
    resume = (
        _checked_state(paths.last, RESUME_ENTRIES, "resuming a language-model run")
        if paths.last.exists()
        else None
    )
    init = (_checked_state(init_checkpoint, MODEL_ENTRIES, f"{phase} from a checkpoint")
            if init_checkpoint is not None and resume is None else None)
    changes = {}
    if resume is not None:  # the run's settings, but for those that may change on resume
        saved = config_to_dict(checkpoint_config(LMConfig, resume, paths.last))
        changes = check_resume(saved, config_to_dict(config), RESUMABLE_KEYS, run_dir)
    device = dist.device
    torch.manual_seed(config.seed + dist.rank)  # identical weights come from DDP's broadcast
    lengths_rng = np.random.default_rng(config.seed)  # the same BPTT lengths on every rank

    # ---- data: the same as the run's when resuming
    start = resume or init  # the checkpoint whose weights (and vocabulary) the run starts from
    start_path = init_checkpoint if resume is None and init_checkpoint is not None else paths.last
    try:
        corpus = load_corpus(
            data, config.unit, checkpoint_vocab(start, start_path) if start is not None else None
        )
    except CorpusError as error:
        if resume is None:
            raise
        load_corpus(data, config.unit)  # files that cannot be read at all raise their own error here
        raise ConfigError(other_data(run_dir, data, f" ({error})")) from None
    fingerprint = corpus_fingerprint(corpus)
    if resume is not None:
        check_same_data(resume.get("data"), fingerprint, run_dir, data)
    train_data = split_streams(corpus, "train", config.batch_size)
    if dist.enabled:
        if config.batch_size % dist.world_size:
            raise ConfigError(
                f"batch_size {config.batch_size} must divide by the {dist.world_size} processes"
            )
        share = config.batch_size // dist.world_size
        train_data = train_data[:, dist.rank * share : (dist.rank + 1) * share]
    train_data = train_data.to(device)
    valid_data = split_streams(corpus, "valid", config.eval_batch_size).to(device)
    test_data = split_streams(corpus, "test", config.test_batch_size).to(device)

    # ---- model and optimizer
    def build() -> AWDLSTM:
        return AWDLSTM(config.model_spec(len(corpus.vocab)))

    if start is not None:
        check_layers(config, start["model"], start_path)
    model = (
        restore_model(build, start["model"], start_path, device) if start is not None else build().to(device)
    )
    trainable: nn.Module = model
    if dist.enabled:
        trainable = nn.parallel.DistributedDataParallel(model)
    progress = Progress(averaging=phase == "finetune" or config.asgd_epoch == 1)
    optimizer = _make_optimizer(model, config, progress.averaging)
    hidden = None

    # ---- resume: the training state of last.pt
    if resume is not None:
        try:
            progress = Progress(**resume["progress"])
            optimizer = _make_optimizer(model, config, progress.averaging)
            optimizer.load_state_dict(resume["optimizer"])
            hidden = _saved_hidden(resume["hidden"], model.init_hidden(train_data.shape[1]), device)
            _restore_rank_rng(resume["rng"], dist.rank, config.seed, progress.step)
            lengths_rng.bit_generator.state = resume["lengths_rng"]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint {paths.last} holds a training state this run cannot continue "
                                  f"from ({error}); resume from another copy or start a new run") from None
    log = resources.enter_context(RunLog(run_dir, enabled=dist.is_main))
    log.write_config(config_to_dict(config), seed=config.seed, changes=changes,
                     resumed_at_step=progress.step if resume is not None else None)
    if resume is not None:
        if "metrics_lines" in resume:  # older checkpoints lack it: their log is kept whole
            log.truncate(resume["metrics_lines"], step=progress.step)
        changed = "".join(f"; {key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        log.message(f"resumed from {paths.last} at epoch {progress.epoch}, step {progress.step}{changed}")

    def checkpoint_state() -> dict[str, Any]:
        return {
            "config": config_to_dict(config),
            "vocab": corpus.vocab.to_list(),
            "data": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": vars(progress).copy(),
            "hidden": [(h.cpu(), c.cpu()) for h, c in hidden] if hidden is not None else [],
            "rng": dist.gather_objects(rng_state()),
            "lengths_rng": lengths_rng.bit_generator.state,
            "phase": phase,
            "metrics_lines": log.lines,
        }

    def save_last() -> None:
        state = checkpoint_state()  # every rank takes part in gathering the random states
        if dist.is_main:
            save_checkpoint(paths.last, state)

    def save_best(valid_loss: float) -> None:
        progress.best_valid = valid_loss
        state = checkpoint_state()
        state.update(optimizer={}, hidden=[], metrics={"valid_loss": valid_loss})
        if dist.is_main:
            save_checkpoint(paths.best, state)

    if init is not None:  # finetune keeps the starting model unless it improves on it
        save_best(evaluate(model, valid_data, config.bptt).loss)

    # ---- loop
    epochs = config.finetune_epochs if phase == "finetune" else config.epochs
    last_save = time.monotonic()
    with stop_on_signals() as stop:

        def check_in(every: int) -> tuple[bool, ...]:
            """Whether any rank was asked to stop, and whether a checkpoint is due on any (rank 0's clock
            decides for all): every rank gets the same answers at the same step. Under torchrun that takes an
            all_reduce, so it is asked at every ``every``-th step only; a single process asks each time."""
            if dist.enabled and progress.step % every:
                return False, False
            return any_ranks(stop.requested, time.monotonic() - last_save > config.checkpoint_minutes * 60)

        def where() -> str:
            return f"epoch {progress.epoch}, step {progress.step}"

        # max_steps ends the loop rather than the run (progress.done): a resume may raise it and go on
        while (
            not progress.done and progress.epoch <= epochs and progress.step < (config.max_steps or math.inf)
        ):
            trainable.train()
            noise_p, temperature = config.gates_at(phase, progress.epoch)
            final_gates_begin = (config.scheduled and phase == config.schedule_phase
                                 and progress.epoch == config.schedule_epochs)
            if config.scheduled:
                _set_gates(model, noise_p, temperature)
            if final_gates_begin and progress.averaging and progress.position == 0:
                optimizer = _make_optimizer(model, config, True)  # the average starts at the final gates
            if hidden is None:
                hidden = model.init_hidden(train_data.shape[1])
            streams = train_data.shape[1]
            # the bar's total (and so its ETA): the epoch, or the tokens max_steps leaves, if fewer
            rows_left = ((config.max_steps or math.inf) - progress.step) * config.bptt * 0.975  # mean length
            epoch_rows = min(train_data.shape[0] - 1, progress.position + rows_left)
            with tqdm(
                total=int(epoch_rows * streams), initial=progress.position * streams,
                desc=f"{phase} epoch {progress.epoch}", unit="tok", unit_scale=True,
                disable=not (show_progress and dist.is_main), leave=False,
            ) as bar:
                step_start, interval_steps = time.monotonic(), 0
                while progress.position < train_data.shape[0] - 2:
                    base = config.bptt if lengths_rng.random() < 0.95 else config.bptt / 2
                    length = max(5, int(lengths_rng.normal(base, 5)))
                    length = min(length, train_data.shape[0] - 1 - progress.position)
                    start_row = progress.position
                    words = train_data[start_row : start_row + length]
                    targets = train_data[start_row + 1 : start_row + 1 + length]
                    hidden = _detach(hidden)
                    result = trainable(words, hidden)
                    hidden = result.hidden
                    raw_loss = _cross_entropy(model, result.output, targets)
                    loss = raw_loss + config.alpha * result.output.pow(2).mean()
                    loss = loss + config.beta * (result.raw_last[1:] - result.raw_last[:-1]).pow(2).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                    progress.position += length
                    bar.update(length * streams)
                    if skip_non_finite_step(loss, grad_norm, progress, config.max_bad_steps, paths.last, log):
                        continue
                    for group in optimizer.param_groups:  # learning rate scaled to the sequence length
                        group["lr"] = config.lr * length / config.bptt
                    optimizer.step()
                    progress.step += 1
                    interval_steps += 1
                    if progress.step % config.log_interval == 0:
                        ms = (time.monotonic() - step_start) * 1000 / interval_steps
                        applied_lr = optimizer.param_groups[0]["lr"]  # this step's, scaled to its length
                        log.log(
                            phase=phase,
                            step=progress.step,
                            epoch=progress.epoch,
                            train_loss=raw_loss.item(),
                            train_ppl=math.exp(raw_loss.item()),
                            lr=applied_lr,
                            ms_per_step=ms,
                        )
                        bar.set_postfix(loss=f"{raw_loss.item():.2f}", ppl=f"{math.exp(raw_loss.item()):.0f}")
                        step_start, interval_steps = time.monotonic(), 0
                    stop_asked, save_due = check_in(every=CHECK_IN_STEPS)
                    stop_if_requested(stop, stop_asked, save_last, paths.last, where())
                    if progress.step >= (config.max_steps or math.inf):
                        break
                    if save_due:
                        save_last()
                        last_save = time.monotonic()

            # ---- end of epoch: validation, best model, averaged-SGD switch or finetune stop
            # a gate schedule: the best model and the plateau rules count only epochs at its final gates
            ramping = config.ramping(phase, progress.epoch)
            if final_gates_begin:
                progress.best_valid, progress.valid_history = math.inf, []
            with _averaged_weights(optimizer, progress.averaging):
                valid = evaluate(model, valid_data, config.bptt)
                if valid.loss < progress.best_valid:
                    save_best(valid.loss)
            gates = {"noise_p": noise_p, "temperature": temperature} if config.scheduled else {}
            log.log(phase=phase, step=progress.step, epoch=progress.epoch, valid_loss=valid.loss,
                    valid_ppl=valid.perplexity, averaging=progress.averaging, **gates)
            log.message(
                f"{phase} epoch {progress.epoch}: valid ppl {valid.perplexity:.2f} "
                f"(best {math.exp(progress.best_valid):.2f}){', averaged SGD' if progress.averaging else ''}"
            )
            history = progress.valid_history
            stalled = (not ramping and len(history) > config.nonmono
                       and valid.loss > min(history[: -config.nonmono]))
            switch = stalled if config.asgd_epoch is None else progress.epoch + 1 >= config.asgd_epoch
            if switch and phase == "train" and not progress.averaging:
                log.message(f"epoch {progress.epoch}: switching to averaged SGD")
                progress.averaging = True
                optimizer = _make_optimizer(model, config, True)
            elif stalled and (phase == "finetune" or (progress.averaging and config.stop_on_plateau)):
                log.message(f"epoch {progress.epoch}: validation stopped improving, {phase} ends")
                progress.done = True
            if not ramping:
                history.append(valid.loss)
            progress.epoch += 1
            progress.position = 0
            hidden = None
            save_last()
            last_save = time.monotonic()
            # a signal during validation: the run stops here, not after its final test
            stop_if_requested(stop, check_in(every=1)[0], lambda: None, paths.last, where())

    # ---- final evaluation of the best model
    model.load_state_dict(load_checkpoint(paths.best)["model"])
    metrics: dict[str, Any] = {
        "valid_ppl": evaluate(model, valid_data, config.bptt).perplexity,
        "test_ppl": evaluate(model, test_data, config.bptt).perplexity,
    }
    signature = model_signature(model, noise_p=config.noise_p, seed=config.seed, data=corpus.source,
                                split="valid,test")
    metrics["signature"] = str(signature)
    log.log(phase=phase, step=progress.step, final=True, **metrics)
    return metrics


def _checked_state(path: str | Path, entries: Sequence[str], use: str) -> dict[str, Any]:
    """The checkpoint at ``path``, refused unless it has ``entries`` (and is not compressed)."""
    state = load_checkpoint(path)
    require_entries(state, entries, path, use, trains=True)
    return state


def _restore_rank_rng(saved: list[dict[str, Any]], rank: int, seed: int, step: int) -> None:
    """The random generators of ``rank`` from the per-rank states a checkpoint saved. A rank the run did not
    have before (a resume with more processes) gets rank 0's Python and NumPy states and a torch generator
    seeded from (seed, rank, step) of its own, so that no two ranks draw the same gate noise and dropout."""
    if rank < len(saved):
        set_rng_state(saved[rank])
        return
    set_rng_state(saved[0])
    torch.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{rank}:{step}".encode()).digest()[:8], "little"))


def _saved_hidden(saved: Any, expected: State, device: torch.device) -> State | None:
    """The hidden state a checkpoint carried between steps (``None`` at an epoch start), checked against
    the shapes of ``expected``."""
    if not saved:
        return None
    shapes = [[tuple(h.shape), tuple(c.shape)] for h, c in saved]
    wanted = [[tuple(h.shape), tuple(c.shape)] for h, c in expected]
    if shapes != wanted:
        raise ValueError(f"the saved hidden state has shapes {shapes}, the model needs {wanted}")
    return [(h.to(device), c.to(device)) for h, c in saved]


def finetune(run_dir: str | Path, data: str | Path | None = None, *, epochs: int | None = None,
             out: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
             show_progress: bool = True) -> dict[str, Any]:
    """Finetune the best model of a training run into ``out`` (default ``run_dir/finetune``; resumable as
    well), with the run's config but for ``overrides`` (``--set`` values: e.g. a gate schedule,
    ``{"noise_p_final": "1"}``); the model's architecture cannot change."""
    run_dir = Path(run_dir)
    best = CheckpointPaths(run_dir).best
    if not best.exists():
        raise MissingFileError(
            f"{best} does not exist: finetune needs a finished (or validated) training run"
        )
    config = checkpoint_config(LMConfig, load_checkpoint(best), best)
    changes = dict(overrides or {})
    fixed = sorted(set(changes) & {*ARCHITECTURE_KEYS, "unit"})
    if fixed:
        raise ConfigError(f"finetune keeps the trained model's architecture; {', '.join(fixed)} cannot be "
                          f"set (train a new run for another model)")
    if epochs is not None:
        changes["finetune_epochs"] = epochs
    config = apply_overrides(config, changes)
    return train_language_model(config, Path(out) if out is not None else run_dir / "finetune", data,
                                phase="finetune", init_checkpoint=best, show_progress=show_progress)
