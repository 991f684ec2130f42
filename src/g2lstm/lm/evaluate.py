"""Reading and scoring language models: the corpus and a checkpoint's model, checked, and perplexity over a
token stream, with or without the continuous cache pointer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from g2lstm.compress import restore_compressed
from g2lstm.data import Corpus, Vocabulary, batchify, find_dataset
from g2lstm.errors import CheckpointError, DataError
from g2lstm.gates import set_eval_gate
from g2lstm.lm.config import LMConfig
from g2lstm.lm.model import AWDLSTM
from g2lstm.signature import model_signature
from g2lstm.train import check_layer_count, checkpoint_config, load_checkpoint, require_entries, restore_model

__all__ = [
    "MODEL_ENTRIES",
    "CachePointer",
    "EvalResult",
    "cache_pointer",
    "cache_pointer_probability",
    "check_layers",
    "checkpoint_vocab",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_language_model",
    "load_corpus",
    "load_model",
    "split_streams",
]

MODEL_ENTRIES = ("config", "vocab", "model")  # what evaluating a saved language model needs


@dataclass(frozen=True)
class CachePointer:
    """Continuous cache pointer (Grave et al. 2016): mix the model's softmax with an attention over
    the last ``window`` hidden states, each pointing at the word that followed it."""

    window: int = 500
    theta: float = 1.0
    lambdah: float = 0.1


def cache_pointer(
    config: LMConfig, *, window: int | None = None, theta: float | None = None, lambdah: float | None = None
) -> CachePointer:
    """The cache pointer of a run: its config's ``cache_window``, ``cache_theta`` and ``cache_lambda`` (the
    preset's, tuned per data set), each replaced by the value given here, if any."""
    return CachePointer(
        window=config.cache_window if window is None else window,
        theta=config.cache_theta if theta is None else theta,
        lambdah=config.cache_lambda if lambdah is None else lambdah,
    )


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean negative log-likelihood per token, in nats
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)


def cache_pointer_probability(
    vocab_probs: Tensor,
    targets: Tensor,
    hidden: Tensor,
    history_hidden: Tensor,
    history_words: Tensor,
    cache: CachePointer,
) -> Tensor:
    """Probability of each target under the cache-mixed distribution, for one stream.

    ``vocab_probs (L, V)``, ``targets (L,)`` and ``hidden (L, H)`` are the positions of one chunk;
    ``history_hidden (M, H)`` / ``history_words (M,)`` hold the preceding positions (at most ``window``,
    the most recent last) and the words that followed them. Position ``j`` of the chunk attends over the
    ``window`` positions before it, and uses the cache only when ``M + j > window``: the rule of the
    authors' pointer.py, kept so that numbers compare (it skips the first position of each chunk).
    """
    chunk = targets.shape[0]
    keys = torch.cat([history_hidden, hidden])
    words = torch.cat([history_words, targets])
    start = history_hidden.shape[0]
    positions = torch.arange(chunk, device=hidden.device)
    key_index = torch.arange(keys.shape[0], device=hidden.device)
    query_index = start + positions
    in_window = (key_index[None, :] < query_index[:, None]) & (
        key_index[None, :] >= query_index[:, None] - cache.window
    )
    logits = (cache.theta * hidden @ keys.t()).masked_fill(~in_window, float("-inf"))
    use_cache = start + positions > cache.window
    attention = torch.softmax(logits.masked_fill(~use_cache[:, None], 0.0), dim=1)
    pointer = (attention * (words[None, :] == targets[:, None])).sum(dim=1)
    vocab = vocab_probs.gather(1, targets[:, None]).squeeze(1)
    return torch.where(use_cache, cache.lambdah * pointer + (1 - cache.lambdah) * vocab, vocab)


@torch.no_grad()
def evaluate(
    model: AWDLSTM, data: Tensor, bptt: int = 70, cache: CachePointer | None = None
) -> EvalResult:
    """Mean loss over ``data (T, B)`` (batchified streams), carrying the hidden state across chunks.

    With ``cache``, each stream keeps its own cache of the last ``window`` positions.
    """
    was_training = model.training
    model.eval()
    streams = data.shape[1]
    hidden = model.init_hidden(streams)
    total, count = 0.0, 0
    width = model.decoder.in_features
    history_hidden = [data.new_zeros(0, width, dtype=torch.float32) for _ in range(streams)]
    history_words = [data.new_zeros(0) for _ in range(streams)]
    for start in range(0, data.shape[0] - 1, bptt):
        length = min(bptt, data.shape[0] - 1 - start)
        words, targets = data[start : start + length], data[start + 1 : start + 1 + length]
        result = model(words, hidden)
        hidden = result.hidden
        logits = model.decode(result.output)
        if cache is None:
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            ).item()
        else:
            probs = torch.softmax(logits, dim=-1)
            for stream in range(streams):
                hidden_states = result.raw_last[:, stream].to(history_hidden[stream].dtype)
                p = cache_pointer_probability(
                    probs[:, stream], targets[:, stream], hidden_states,
                    history_hidden[stream], history_words[stream], cache,
                )
                total -= torch.log(p).sum().item()
                history_hidden[stream] = torch.cat([history_hidden[stream], hidden_states])[-cache.window :]
                history_words[stream] = torch.cat([history_words[stream], targets[:, stream]])[
                    -cache.window :
                ]
        count += targets.numel()
    model.train(was_training)
    return EvalResult(loss=total / count, tokens=count)


def load_corpus(data: str | Path | None, unit: str, vocab: list[str] | None = None) -> Corpus:
    """The corpus at ``data`` (a folder of splits, or one raw text file for ``unit="char"``); Penn
    Treebank from ``$G2LSTM_DATA``, the cache or its public address when ``data`` is None."""
    known = Vocabulary.from_list(vocab) if vocab is not None else None
    if data is not None and Path(data).is_file():
        return Corpus.from_text_file(data, unit=unit, vocab=known)
    folder = Path(data) if data is not None else find_dataset("ptb")
    return Corpus.from_folder(folder, unit=unit, vocab=known)


def split_streams(corpus: Corpus, split: str, streams: int) -> Tensor:
    """``batchify`` of one split, refusing a split too short to give every stream a word and its successor."""
    tokens = getattr(corpus, split)
    if len(tokens) < 2 * streams:
        raise DataError(
            f"the {split} split of {corpus.source or 'the corpus'} has {len(tokens)} tokens, too few for "
            f"{streams} "
            f"parallel streams (at least {2 * streams}); add text to it or lower the batch size with --set"
        )
    return batchify(tokens, streams)


def checkpoint_vocab(checkpoint: dict[str, Any], source: str | Path) -> list[str]:
    """The vocabulary stored in a language-model checkpoint, checked (distinct strings with ``<eos>``)."""
    try:
        return Vocabulary.from_list(checkpoint["vocab"]).to_list()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {source} holds no usable vocabulary: {error}") from None


def load_model(
    checkpoint: dict[str, Any], device: str = "cpu", *, source: str | Path = "(in memory)"
) -> tuple[AWDLSTM, LMConfig, list[str]]:
    """Rebuild the model of a checkpoint read from ``source`` (its config, vocabulary and any compression
    travel with it), every part checked before the model is allocated."""
    if "recipe" in checkpoint:
        raise CheckpointError(
            f"checkpoint {source} holds a {checkpoint['recipe']} model, not a language model; "
            f"read it with the g2lstm command of its recipe (e.g. g2lstm mt eval)"
        )
    require_entries(checkpoint, MODEL_ENTRIES, source, "a language model")
    config = checkpoint_config(LMConfig, checkpoint, source)
    vocab = checkpoint_vocab(checkpoint, source)
    check_layers(config, checkpoint["model"], source)

    def build() -> AWDLSTM:
        model = AWDLSTM(config.model_spec(len(vocab)))
        restore_compressed(model, checkpoint.get("compression"))
        return model

    return restore_model(build, checkpoint["model"], source, device), config, vocab


def check_layers(config: LMConfig, weights: Any, source: str | Path) -> None:
    """Refuse weights whose LSTM layers are not as many as ``config`` says (before building anything)."""
    check_layer_count(weights, r"layers\.(\d+)\..+", config.num_layers, "LSTM", source)


def evaluate_language_model(
    model: AWDLSTM,
    config: LMConfig,
    corpus: Corpus,
    *,
    cache: CachePointer | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    splits: Sequence[str] = ("valid", "test"),
) -> dict[str, float]:
    """Perplexity on each split (and bits per token for characters) of a model in memory.

    Streams per split: ``batch_size``, else 1 with the cache pointer (as the authors' pointer.py), else the
    config's evaluation batch sizes."""
    results: dict[str, float] = {}
    default_batches = {
        "train": config.eval_batch_size,
        "valid": config.eval_batch_size,
        "test": config.test_batch_size,
    }
    for split in splits:
        default_batch = default_batches[split]
        streams = batch_size or (1 if cache is not None else default_batch)
        result: EvalResult = evaluate(
            model, split_streams(corpus, split, streams).to(device), config.bptt, cache
        )
        results[f"{split}_loss"] = result.loss
        results[f"{split}_ppl"] = result.perplexity
        if config.unit == "char":
            results[f"{split}_bpc"] = result.bits_per_token
    return results


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path | None = None,
    *,
    cache_pointer_options: dict[str, Any] | None = None,
    eval_gate: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`evaluate_language_model` of a saved (possibly compressed) model, with its ``signature``.

    ``cache_pointer_options``: evaluate with the cache pointer of the checkpoint's config, with these of
    :func:`cache_pointer`'s options replaced (``{}``: none); None: without the cache pointer.
    """
    state = load_checkpoint(checkpoint)
    model, config, vocab = load_model(state, device, source=checkpoint)
    if eval_gate is not None:
        set_eval_gate(model, eval_gate)
    corpus = load_corpus(data, config.unit, vocab)
    cache = cache_pointer(config, **cache_pointer_options) if cache_pointer_options is not None else None
    metrics: dict[str, Any] = evaluate_language_model(
        model, config, corpus, cache=cache, batch_size=batch_size, device=device
    )
    signature = model_signature(model, noise_p=config.noise_p, seed=config.seed, data=corpus.source,
                                split="valid,test", compression=state.get("compression"))
    return {**metrics, "signature": str(signature)}
