"""Translating with a trained model and scoring it: loss, beam search over a split, both BLEU scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from g2lstm.compress import restore_compressed
from g2lstm.errors import CheckpointError
from g2lstm.gates import set_eval_gate
from g2lstm.mt.beam import beam_search
from g2lstm.mt.bleu import corpus_bleu, detokenize
from g2lstm.mt.bpe import EOS, PAD, SubwordVocabulary
from g2lstm.mt.config import MTConfig, saved_config
from g2lstm.mt.data import ParallelSplit, batch_indices, collate, find_corpus_folder, load_split
from g2lstm.mt.model import AttentionSeq2Seq
from g2lstm.signature import model_signature
from g2lstm.train import (
    check_layer_count,
    load_checkpoint,
    require_entries,
    restore_model,
    write_file,
)

__all__ = [
    "MODEL_ENTRIES",
    "RECIPE",
    "check_layers",
    "checkpoint_bpe",
    "evaluate_checkpoint",
    "evaluate_split",
    "is_translation_checkpoint",
    "load_model",
    "translate_ids",
    "translate_lines",
    "validation_loss",
]

RECIPE = "translation"  # the "recipe" entry of every translation checkpoint
MODEL_ENTRIES = ("recipe", "config", "bpe", "model")  # what evaluating a saved translation model needs


def is_translation_checkpoint(checkpoint: dict[str, Any]) -> bool:
    return checkpoint.get("recipe") == RECIPE


def checkpoint_bpe(checkpoint: dict[str, Any], source: str | Path) -> SubwordVocabulary:
    """The BPE vocabulary stored in a translation checkpoint, refused unless it parses."""
    stored = checkpoint["bpe"]
    if not (isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8 and stored.dim() == 1):
        raise CheckpointError(
            f"checkpoint {source}: its BPE model must be a 1-D uint8 tensor, got "
            f"{getattr(stored, 'dtype', type(stored).__name__)} {list(getattr(stored, 'shape', []))}"
        )
    try:
        vocab = SubwordVocabulary.from_tensor(stored)
    except (
        RuntimeError,
        ValueError,
    ) as error:  # sentencepiece reports a model it cannot parse as RuntimeError
        raise CheckpointError(
            f"checkpoint {source}: its BPE model does not parse ({' '.join(str(error).split())})"
        ) from None
    if len(vocab) <= EOS:
        raise CheckpointError(f"checkpoint {source}: its BPE model has {len(vocab)} pieces, fewer than the "
                              f"{EOS + 1} reserved ids")
    return vocab


def check_layers(config: MTConfig, weights: Any, source: str | Path) -> None:
    """Refuse weights whose stacked encoder or decoder layers are not as many as ``config`` says."""
    encoder = config.encoder_layers - 1  # above the bidirectional first layer
    check_layer_count(weights, r"encoder\.bias_ih_l(\d+)", encoder, "stacked encoder", source)
    if config.decoder == "conditional":  # its first layer is two G2LSTMs, the others one stacked G2LSTM
        upper = config.decoder_layers - 1
        check_layer_count(weights, r"decoder\.upper\.bias_ih_l(\d+)", upper, "stacked upper decoder", source)
    else:
        layers = config.decoder_layers
        check_layer_count(weights, r"decoder\.bias_ih_l(\d+)", layers, "stacked decoder", source)


def load_model(
    checkpoint: dict[str, Any], device: str = "cpu", *, source: str | Path = "(in memory)"
) -> tuple[AttentionSeq2Seq, MTConfig, SubwordVocabulary]:
    """Rebuild the model of a checkpoint read from ``source`` (its config, BPE vocabulary and any compression
    travel with it), every part checked before the model is allocated."""
    if not is_translation_checkpoint(checkpoint):
        raise CheckpointError(
            f"checkpoint {source} is not a translation model (g2lstm mt train writes those); "
            f"language models are read by g2lstm lm eval"
        )
    require_entries(checkpoint, MODEL_ENTRIES, source, "a translation model")
    config = saved_config(checkpoint, source)
    vocab = checkpoint_bpe(checkpoint, source)
    check_layers(config, checkpoint["model"], source)

    def build() -> AttentionSeq2Seq:
        model = AttentionSeq2Seq(config.model_spec(len(vocab)))
        restore_compressed(model, checkpoint.get("compression"))
        return model

    return restore_model(build, checkpoint["model"], source, device).eval(), config, vocab


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
    model, config, vocab = load_model(state, device, source=checkpoint)
    if eval_gate is not None:
        set_eval_gate(model, eval_gate)
    folder = find_corpus_folder(data, config.dataset)
    loaded = load_split(folder, split, config.src, config.tgt, vocab)
    metrics, hypotheses = evaluate_split(model, config, vocab, loaded, beam_size=beam_size, device=device)
    if output is not None:
        write_file(output, "".join(line + "\n" for line in hypotheses))
    signature = model_signature(model, noise_p=config.noise_p, seed=config.seed, data=folder, split=split,
                                compression=state.get("compression"))
    decoding = {"beam": beam_size or config.beam_size, "length_penalty": config.length_penalty,
                "sentences": len(loaded)}
    return {"split": split, **metrics, "signature": str(signature), "decoding": decoding}
