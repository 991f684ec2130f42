"""Perplexity of a language model over a token stream, with or without the continuous cache pointer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from g2lstm.lm.model import AWDLSTM

__all__ = ["CachePointer", "EvalResult", "evaluate", "cache_pointer_probability"]


@dataclass(frozen=True)
class CachePointer:
    """Continuous cache pointer (Grave et al. 2016): mix the model's softmax with an attention over
    the last ``window`` hidden states, each pointing at the word that followed it."""

    window: int = 500
    theta: float = 1.0
    lambdah: float = 0.1


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
    in_window = (key_index[None, :] < query_index[:, None]) & (key_index[None, :] >= query_index[:, None] - cache.window)
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
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
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
                history_words[stream] = torch.cat([history_words[stream], targets[:, stream]])[-cache.window :]
        count += targets.numel()
    model.train(was_training)
    return EvalResult(loss=total / count, tokens=count)
