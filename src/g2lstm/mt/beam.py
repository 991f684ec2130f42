"""Batched beam search with length normalisation over an :class:`~g2lstm.mt.model.AttentionSeq2Seq`.

The search space of a sentence is every sequence ``y_1 .. y_n`` with ``y_n = EOS``, no EOS before and
``n <= max_length`` (at the last step only EOS is allowed); PAD and BOS are never produced. A hypothesis is
ranked by ``sum log p(y_t | y_<t, x) / n ** length_penalty``. At each step the ``2 * beam_size`` best
extensions of all beams are taken: those ending in EOS among the first ``beam_size`` are set aside as
finished, the best ``beam_size`` others go on. A sentence is done when ``beam_size`` hypotheses have
finished (as fairseq does); the search ends when every sentence is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from g2lstm.errors import ConfigError
from g2lstm.mt.bpe import BOS, EOS, PAD
from g2lstm.mt.model import AttentionSeq2Seq

__all__ = ["Hypothesis", "beam_search"]


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # without the final EOS
    log_prob: float  # sum over the tokens and the final EOS
    score: float  # log_prob / (len(tokens) + 1) ** length_penalty


@torch.no_grad()
def beam_search(
    model: AttentionSeq2Seq,
    source: Tensor,
    lengths: Tensor,
    *,
    beam_size: int = 5,
    max_length: int,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """The best hypothesis for each sentence of ``source (S, B)`` (padded, ``lengths (B,)`` on the CPU).

    ``max_length`` bounds the output in tokens, EOS included. The model is used as it is (call ``eval()``
    first for deterministic gates and no dropout).
    """
    if beam_size < 1:
        raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    sentences, width = source.shape[1], beam_size
    rows = torch.arange(sentences, device=source.device).repeat_interleave(width)  # beam row -> sentence
    encoded = model.encode(source, lengths)
    state = model.initial_state(encoded)
    encoded = encoded.select(rows)
    state = (state[0][:, rows], state[1][:, rows])
    scores = torch.full((sentences, width), float("-inf"), device=source.device)
    scores[:, 0] = 0.0  # one live beam per sentence at the start
    history = torch.full((sentences * width, 0), BOS, dtype=torch.long, device=source.device)
    tokens = torch.full((sentences * width,), BOS, dtype=torch.long, device=source.device)
    finished: list[list[Hypothesis]] = [[] for _ in range(sentences)]
    for step in range(1, max_length + 1):
        logits, state = model.decode(tokens.view(1, -1), encoded, state)
        log_probs = torch.log_softmax(logits[0].float(), dim=-1)
        vocab = log_probs.shape[1]
        log_probs[:, [PAD, BOS]] = float("-inf")
        if step == max_length:  # the last step may only end the sentence
            log_probs[:, torch.arange(vocab, device=log_probs.device) != EOS] = float("-inf")
        candidates = (scores.view(-1, 1) + log_probs).view(sentences, width * vocab)
        top_scores, top_index = candidates.topk(min(2 * width, width * vocab), dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        ends = top_token == EOS

        # finished: EOS among the first `width` candidates, with a finite score
        top_rows = top_beam + torch.arange(sentences, device=source.device).unsqueeze(1) * width
        for sentence, rank in (ends[:, :width] & torch.isfinite(top_scores[:, :width])).nonzero().tolist():
            if len(finished[sentence]) < width:
                log_prob = top_scores[sentence, rank].item()
                finished[sentence].append(Hypothesis(history[top_rows[sentence, rank]].tolist(), log_prob,
                                                     log_prob / step ** length_penalty))
        if all(len(done) >= width for done in finished) or step == max_length:
            break

        # alive: the best `width` candidates that do not end (a stable sort keeps their score order)
        keep = torch.sort(ends.to(torch.int8), dim=1, stable=True).indices[:, :width]
        scores = top_scores.gather(1, keep)
        chosen_rows = top_rows.gather(1, keep).view(-1)
        tokens = top_token.gather(1, keep).view(-1)
        history = torch.cat([history[chosen_rows], tokens.unsqueeze(1)], dim=1)
        state = (state[0][:, chosen_rows], state[1][:, chosen_rows])
    return [max(done, key=lambda h: h.score) for done in finished]
