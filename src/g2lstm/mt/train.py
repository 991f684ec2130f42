"""Training the attention encoder-decoder as the paper did: AdaDelta (or Adam), clipping 2.0, validation
BLEU every epoch, early stopping.

``train_translation_model`` is the whole loop, to be read top to bottom: setup -> data (joint BPE learned
on the training split, long pairs dropped, batches of similar length) -> model -> optimizer -> resume ->
loop (teacher-forced cross-entropy, clipping, checkpoints) -> end-of-epoch validation (loss and beam-search
BLEU), best model and early stopping -> final scores of the best model on the validation and test splits.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from g2lstm.errors import CheckpointError, DataError
from g2lstm.mt.bpe import PAD, SubwordVocabulary
from g2lstm.mt.config import RESUMABLE_KEYS, MTConfig, saved_config
from g2lstm.mt.data import batch_indices, collate, find_corpus_folder, find_split, load_split, read_parallel
from g2lstm.mt.evaluate import MODEL_ENTRIES, RECIPE, check_layers, checkpoint_bpe, evaluate_split
from g2lstm.mt.model import AttentionSeq2Seq
from g2lstm.signature import model_signature
from g2lstm.train import (
    CheckpointPaths,
    RunLog,
    check_resume,
    check_same_data,
    config_to_dict,
    data_fingerprint,
    load_checkpoint,
    lock_run_folder,
    require_device,
    require_entries,
    restore_model,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stop_on_signals,
)
from g2lstm.train.faults import skip_non_finite_step
from g2lstm.train.signals import stop_if_requested

__all__ = ["train_translation_model"]

RESUME_ENTRIES = (
    *MODEL_ENTRIES,
    "optimizer",
    "progress",
    "rng",
    "metrics_lines",
)  # what resuming a run needs


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint so that a resumed run continues exactly."""

    epoch: int = 1
    position: int = 0  # next batch of the epoch's order
    step: int = 0
    best_score: float = -math.inf  # validation BLEU, or minus the validation loss
    bad_epochs: int = 0
    bad_steps: int = 0
    done: bool = False


def _make_optimizer(model: nn.Module, config: MTConfig) -> torch.optim.Optimizer:
    if (
        config.optimizer == "adadelta"
    ):  # the paper's, with the defaults of its Theano code (rho 0.95, eps 1e-6)
        return torch.optim.Adadelta(model.parameters(), lr=config.lr, rho=0.95, eps=1e-6)
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def train_translation_model(
    config: MTConfig,
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train into ``run_dir`` (``best.pt``, ``last.pt``, ``bpe.model``, logs), resuming from
    ``run_dir/last.pt`` when it exists. Returns the best model's scores on the validation and test splits.

    The run folder is locked while this runs. A resume must keep the run's config but for
    :data:`~g2lstm.mt.config.RESUMABLE_KEYS`, and its data.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM asked it to stop; ``last.pt`` was saved first.
        ConfigError: a resume with other settings or data than the run's.
        RunFolderBusy: another process writes ``run_dir``.
        CheckpointError: ``last.pt`` cannot be continued from.
    """
    with ExitStack() as resources:  # closed in reverse, however the run ends: run log, lock
        resources.enter_context(lock_run_folder(run_dir))
        return _train(config, Path(run_dir), data, show_progress, resources)


def _train(
    config: MTConfig, run_dir: Path, data: str | Path | None, show_progress: bool, resources: ExitStack
) -> dict[str, Any]:
    # ---- setup: the checkpoint to resume from, checked before anything is written
    paths = CheckpointPaths(run_dir)
    resume = None
    if paths.last.exists():
        resume = load_checkpoint(paths.last)
        require_entries(resume, RESUME_ENTRIES, paths.last, "resuming a translation run", trains=True)
    changes = {}
    if resume is not None:  # the run's settings, but for those that may change on resume
        saved = config_to_dict(saved_config(resume, paths.last))
        changes = check_resume(saved, config_to_dict(config), RESUMABLE_KEYS, run_dir)
    device = require_device(config.device)
    torch.manual_seed(config.seed)

    # ---- data: the same as the run's when resuming
    folder = find_corpus_folder(data, config.dataset)
    train_files = find_split(folder, "train", config.src, config.tgt)
    fingerprint = data_fingerprint(_read_bytes(path) for files in (train_files, find_split(
        folder, "valid", config.src, config.tgt)) for path in (files.source, files.target))
    if resume is not None:
        check_same_data(resume.get("data"), fingerprint, run_dir, data)
        vocab = checkpoint_bpe(resume, paths.last)
    else:
        source_lines, target_lines = read_parallel(train_files)
        vocab = SubwordVocabulary.learn(source_lines + target_lines, config.bpe_size)
    train = load_split(folder, "train", config.src, config.tgt, vocab)
    valid = load_split(folder, "valid", config.src, config.tgt, vocab)
    kept = [i for i, (s, t) in enumerate(zip(train.source_ids, train.target_ids))
            if 0 < len(s) <= config.max_len and 0 < len(t) <= config.max_len]
    batches = [
        [kept[i] for i in group]
        for group in batch_indices(
            [(len(train.source_ids[i]), len(train.target_ids[i])) for i in kept],
            config.batch_size,
            seed=config.seed,
        )
    ]

    # ---- model and optimizer
    def build() -> AttentionSeq2Seq:
        return AttentionSeq2Seq(config.model_spec(len(vocab)))

    if resume is not None:
        check_layers(config, resume["model"], paths.last)
    model = (
        restore_model(build, resume["model"], paths.last, device)
        if resume is not None
        else build().to(device)
    )
    optimizer = _make_optimizer(model, config)
    progress = Progress()

    # ---- resume: the training state of last.pt
    if resume is not None:
        try:
            optimizer.load_state_dict(resume["optimizer"])
            progress = Progress(**resume["progress"])
            set_rng_state(resume["rng"])
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint {paths.last} holds a training state this run cannot continue "
                                  f"from ({error}); resume from another copy or start a new run") from None
    log = resources.enter_context(RunLog(run_dir))
    log.write_config(config_to_dict(config), seed=config.seed, changes=changes,
                     resumed_at_step=progress.step if resume is not None else None)
    vocab.save(run_dir / "bpe.model")
    log.message(
        f"{folder}: {len(vocab)} sub-words; {len(kept)} of {len(train)} training pairs kept (empty or "
        f"over {config.max_len} sub-words dropped), {len(batches)} batches; {len(valid)} validation pairs"
    )
    if resume is not None:
        log.truncate(resume["metrics_lines"], step=progress.step)  # drop lines logged after the checkpoint
        changed = "".join(f"; {key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
        log.message(f"resumed from {paths.last} at epoch {progress.epoch}, step {progress.step}{changed}")

    def checkpoint_state() -> dict[str, Any]:
        return {
            "recipe": RECIPE,
            "config": config_to_dict(config),
            "bpe": vocab.to_tensor(),
            "data": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": vars(progress).copy(),
            "rng": rng_state(),
            "metrics_lines": log.lines,
        }

    def save_last() -> None:
        save_checkpoint(paths.last, checkpoint_state())

    def save_best(metrics: dict[str, Any]) -> None:
        state = checkpoint_state()
        state.update(optimizer={}, metrics={key: metrics[key] for key in ("loss", "bleu", "sacrebleu")})
        save_checkpoint(paths.best, state)

    # ---- loop
    last_save = time.monotonic()
    with stop_on_signals() as stop:

        def stop_if_asked() -> None:
            stop_if_requested(
                stop, stop.requested, save_last, paths.last, f"epoch {progress.epoch}, step {progress.step}"
            )

        # max_steps ends the loop rather than the run (progress.done): a resume may raise it and go on
        while (not progress.done and progress.epoch <= config.epochs
               and progress.step < (config.max_steps or math.inf)):
            model.train()
            order = torch.randperm(
                len(batches), generator=torch.Generator().manual_seed(config.seed + progress.epoch)
            )
            with tqdm(
                total=len(batches),
                initial=progress.position,
                desc=f"epoch {progress.epoch}",
                unit="batch",
                disable=not show_progress,
                leave=False,
            ) as bar:
                step_start, interval_steps = time.monotonic(), 0
                while progress.position < len(batches):
                    batch = collate(train.source_ids, train.target_ids, batches[order[progress.position]]).to(
                        device
                    )
                    logits = model(batch.source, batch.source_lengths, batch.target_input)
                    loss = F.cross_entropy(
                        logits.flatten(0, 1), batch.target_output.flatten(), ignore_index=PAD
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                    progress.position += 1
                    bar.update(1)
                    if skip_non_finite_step(loss, grad_norm, progress, config.max_bad_steps, paths.last, log):
                        continue
                    optimizer.step()
                    progress.step += 1
                    interval_steps += 1
                    if progress.step % config.log_interval == 0:
                        ms = (time.monotonic() - step_start) * 1000 / interval_steps
                        log.log(step=progress.step, epoch=progress.epoch, train_loss=loss.item(),
                                grad_norm=grad_norm.item(), ms_per_step=ms)
                        bar.set_postfix(loss=f"{loss.item():.2f}")
                        step_start, interval_steps = time.monotonic(), 0
                    stop_if_asked()
                    if progress.step >= (config.max_steps or math.inf):
                        break
                    if time.monotonic() - last_save > config.checkpoint_minutes * 60:
                        save_last()
                        last_save = time.monotonic()

            # ---- end of epoch: validation loss and BLEU, best model, early stopping
            metrics, _ = evaluate_split(
                model, config, vocab, valid, beam_size=config.valid_beam_size, device=device
            )
            score = metrics["bleu"] if config.early_stop == "bleu" else -metrics["loss"]
            if score > progress.best_score:
                progress.best_score, progress.bad_epochs = score, 0
                save_best(metrics)
            else:
                progress.bad_epochs += 1
            log.log(
                step=progress.step,
                epoch=progress.epoch,
                valid_loss=metrics["loss"],
                valid_ppl=metrics["ppl"],
                valid_bleu=metrics["bleu"],
                valid_sacrebleu=metrics["sacrebleu"],
            )
            log.message(
                f"epoch {progress.epoch}: valid loss {metrics['loss']:.3f}, BLEU {metrics['bleu']:.2f} "
                f"(beam {config.valid_beam_size}), sacreBLEU {metrics['sacrebleu']:.2f}"
                + (f"; no better for {progress.bad_epochs} epoch(s)" if progress.bad_epochs else "")
            )
            if progress.bad_epochs >= config.patience:
                log.message(
                    f"epoch {progress.epoch}: validation {config.early_stop} stopped improving, training ends"
                )
                progress.done = True
            progress.epoch += 1
            progress.position = 0
            save_last()
            last_save = time.monotonic()
            stop_if_asked()  # a signal during validation: the run stops here, not after its final scores

    # ---- final evaluation of the best model
    model.load_state_dict(load_checkpoint(paths.best)["model"])
    test = load_split(folder, "test", config.src, config.tgt, vocab)
    results: dict[str, Any] = {}
    for split in (valid, test):
        metrics, _ = evaluate_split(model, config, vocab, split, device=device)
        results.update({f"{split.name}_{key}": value for key, value in metrics.items()
                        if key in ("loss", "bleu", "sacrebleu")})
    results["sacrebleu_signature"] = metrics["sacrebleu_signature"]
    results["signature"] = str(model_signature(model, noise_p=config.noise_p, seed=config.seed, data=folder,
                                               split="valid,test"))
    log.log(step=progress.step, final=True, **results)
    return results


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path} cannot be read: {error.strerror or error}") from None
