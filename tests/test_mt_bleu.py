"""BLEU on sentence pairs whose n-gram counts are worked out by hand, and detokenization."""

from __future__ import annotations

import math

import pytest

from g2lstm.mt.bleu import corpus_bleu, detokenize


def test_identical_output_scores_100_both_ways() -> None:
    lines = ["a man runs .", "two dogs play in the park ."]
    scores = corpus_bleu(lines, lines, lang="en")
    assert scores.bleu == pytest.approx(100.0) and scores.sacrebleu == pytest.approx(100.0)


def test_tokenized_bleu_matches_a_hand_count() -> None:
    # hyp "the cat sat on the mat ." vs ref "the cat sat on a mat .": clipped n-gram matches
    # 6/7 (the: once), 4/6 (the cat, cat sat, sat on, mat .), 2/5, 1/4; equal lengths, so no brevity penalty
    scores = corpus_bleu(["The cat sat on the mat ."], ["the cat sat on a mat ."], lang="en")
    expected = 100 * (6 / 7 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert scores.bleu == pytest.approx(expected, abs=1e-6)  # case-insensitive: "The" matches "the"
    assert "tok:none" in scores.bleu_signature and "case:lc" in scores.bleu_signature


def test_brevity_penalty_over_the_corpus() -> None:
    # hypotheses 3 + 4 = 7 words against references 4 + 5 = 9: BP = exp(1 - 9/7)
    hypotheses = ["a b c", "d e f g"]
    references = ["a b c x", "d e f g y"]
    precisions = [7 / 7, 5 / 5, 3 / 3, 1 / 1]
    expected = 100 * math.exp(1 - 9 / 7) * math.prod(precisions) ** 0.25
    assert corpus_bleu(hypotheses, references, lang="en").bleu == pytest.approx(expected, abs=1e-6)


def test_tokenized_bleu_splits_on_spaces_only_while_sacrebleu_tokenizes() -> None:
    # "mat." is one token for the tokenized score but "mat" "." for sacreBLEU's 13a tokenizer
    scores = corpus_bleu(["a man sits on a mat."], ["a man sits on a mat ."], lang="en")
    assert scores.bleu < 80 and scores.sacrebleu == pytest.approx(100.0)
    assert "tok:13a" in scores.sacrebleu_signature


def test_sacrebleu_uses_raw_references_when_given() -> None:
    scores = corpus_bleu(
        ["it &apos;s a dog ."], ["it &apos;s a dog ."], lang="en", raw_references=["It's a cat."]
    )
    assert scores.bleu == pytest.approx(100.0) and scores.sacrebleu < 60


def test_detokenize_undoes_moses_tokenization() -> None:
    assert detokenize(["it &apos;s a dog , isn &apos;t it ?"], "en") == ["it's a dog, isn't it?"]


def test_line_counts_must_match() -> None:
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        corpus_bleu(["a", "b"], ["a"], lang="en")
