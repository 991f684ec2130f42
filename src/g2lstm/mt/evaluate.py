"""Translating with a trained model and scoring it: loss, beam search over a split, both BLEU scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from g2lstm.compress import restore_compressed
from g2lstm.mt.beam import beam_search
from g2lstm.mt.bleu import corpus_bleu, detokenize
from g2lstm.mt.bpe import PAD, SubwordVocabulary
from g2lstm.mt.config import MTConfig, saved_config
from g2lstm.mt.data import ParallelSplit, batch_indices, collate, find_corpus_folder, load_split
from g2lstm.mt.model import AttentionSeq2Seq
from g2lstm.train import describe_environment, load_checkpoint

__all__ = ["RECIPE", "evaluate_checkpoint", "evaluate_split", "is_translation_checkpoint", "load_model",
           "translate_ids", "translate_lines", "validation_loss"]

RECIPE = "translation"  # the "recipe" entry of every translation checkpoint


def is_translation_checkpoint(checkpoint: dict[str, Any]) -> bool:
    return checkpoint.get("recipe") == RECIPE


def load_model(checkpoint: dict[str, Any], device: str = "cpu") -> tuple[AttentionSeq2Seq, MTConfig, SubwordVocabulary]:
    """Rebuild the model of a checkpoint (its config, BPE vocabulary and any compression travel with it)."""
    if not is_translation_checkpoint(checkpoint):
        raise ValueError("this checkpoint is not a translation model (g2lstm mt train writes those); "
                         "language models are read by g2lstm lm eval")
    config = saved_config(checkpoint["config"])
    vocab = SubwordVocabulary.from_tensor(checkpoint["bpe"])
    model = AttentionSeq2Seq(config.model_spec(len(vocab)))
    restore_compressed(model, checkpoint.get("compression"))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config, vocab


@torch.no_grad()
def validation_loss(
    model: AttentionSeq2Seq, split: ParallelSplit, batch_size: int, device: str | torch.device = "cpu"
) -> float:
    """Mean negative log-likelihood per target sub-word (EOS included), teacher-forced, in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    lengths = [(len(s), len(t)) for s, t in zip(split.source_ids, split.target_ids)]
    for indices in batch_indices(lengths, batch_size):
        batch = collate(split.source_ids, split.target_ids, indices).to(device)
        logits = model(batch.source, batch.source_lengths, batch.target_input)
        total += F.cross_entropy(logits.flatten(0, 1).float(), batch.target_output.flatten(),
                                 ignore_index=PAD, reduction="sum").item()
        count += int((batch.target_output != PAD).sum())
    model.train(was_training)
    return total / count


@torch.no_grad()
def translate_ids(
    model: AttentionSeq2Seq,
    sources: Sequence[list[int]],
    config: MTConfig,
    *,
    beam_size: int | None = None,
    device: str | torch.device = "cpu",
) -> list[list[int]]:
    """The sub-word ids of the best translation of each source (batched by length, returned in order)."""
    was_training = model.training
    model.eval()
    outputs: list[list[int]] = [[] for _ in sources]
    for indices in batch_indices([(len(s), 0) for s in sources], config.eval_batch_size):
        batch = collate(sources, None, indices).to(device)
        hypotheses = beam_search(model, batch.source, batch.source_lengths,
                                 beam_size=beam_size or config.beam_size,
                                 max_length=config.max_output_length(batch.source.shape[0]),
                                 length_penalty=config.length_penalty)
        for index, hypothesis in zip(indices, hypotheses):
            outputs[index] = hypothesis.tokens
    model.train(was_training)
    return outputs


def translate_lines(
    model: AttentionSeq2Seq,
    config: MTConfig,
    vocab: SubwordVocabulary,
    lines: Sequence[str],
    *,
    beam_size: int | None = None,
    raw: bool = False,
    device: str | torch.device = "cpu",
) -> list[str]:
    """Translations of ``lines``, in the form of the training text (tokenized, lowercased).

    With ``raw``, the lines are plain text: they are Moses-tokenized, escaped and lowercased first (as the
    official tokenized corpora were made), and the translations detokenized.
    """
    if raw:
        from sacremoses import MosesTokenizer

        tokenizer = MosesTokenizer(lang=config.src)
        lines = [tokenizer.tokenize(line.lower(), return_str=True, escape=True) for line in lines]
    ids = translate_ids(model, vocab.encode(list(lines)), config, beam_size=beam_size, device=device)
    outputs = [vocab.decode(sentence) for sentence in ids]
    return detokenize(outputs, config.tgt) if raw else outputs


def evaluate_split(
    model: AttentionSeq2Seq,
    config: MTConfig,
    vocab: SubwordVocabulary,
    split: ParallelSplit,
    *,
    beam_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Any], list[str]]:
    """Loss, tokenized BLEU and sacreBLEU of ``model`` on ``split``, and its translations."""
    ids = translate_ids(model, split.source_ids, config, beam_size=beam_size, device=device)
    hypotheses = [vocab.decode(sentence) for sentence in ids]
    scores = corpus_bleu(hypotheses, split.target_lines, lang=config.tgt, raw_references=split.raw_references)
    loss = validation_loss(model, split, config.eval_batch_size, device)
    metrics = {"loss": loss, "ppl": math.exp(loss), **scores.as_dict()}
    return metrics, hypotheses


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    beam_size: int | None = None,
    eval_gate: str | None = None,
    output: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a saved (possibly compressed) translation model on ``split`` of its corpus.

    ``output``: also write the translations there, one per line (tokenized, as scored by ``bleu``).
    """
    state = load_checkpoint(checkpoint)
    model, config, vocab = load_model(state, device)
    if eval_gate is not None:
        model.set_eval_gate(eval_gate)
    folder = find_corpus_folder(data, config.dataset)
    loaded = load_split(folder, split, config.src, config.tgt, vocab)
    metrics, hypotheses = evaluate_split(model, config, vocab, loaded, beam_size=beam_size, device=device)
    if output is not None:
        Path(output).write_text("".join(line + "\n" for line in hypotheses), encoding="utf-8")
    environment = describe_environment(config.seed)
    signature = {"data": str(loaded.files.source.parent), "split": split, "sentences": len(loaded),
                 "gate": config.gate, "eval_gate": model.bidirectional.eval_gate,
                 "temperature": model.bidirectional.temperature, "noise_p": config.noise_p,
                 "beam": beam_size or config.beam_size, "length_penalty": config.length_penalty,
                 "compression": state.get("compression"), "seed": config.seed,
                 "g2lstm": environment["g2lstm_version"], "commit": environment["git_commit"]}
    return {"split": split, **metrics, "signature": signature}
