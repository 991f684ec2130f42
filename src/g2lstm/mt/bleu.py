"""BLEU as the paper reports it and as sacreBLEU does, each with sacreBLEU's signature.

* ``bleu``: tokenized, case-insensitive corpus BLEU on the text as the corpus holds it (Moses-tokenized,
  lowercased), split on spaces only (sacreBLEU with ``tokenize="none"``, ``lowercase=True``): what
  ``multi-bleu.perl -lc`` reports on tokenized text, the paper's measure.
* ``sacrebleu``: sacreBLEU's standard BLEU (its 13a tokenizer) of the detokenized output against untokenized
  references (the corpus's raw files when it has them, else the detokenized references). The tokenized
  corpora are lowercased, so this one is case-insensitive too, as its signature says (``case:lc``).

Detokenization undoes Moses tokenization with sacremoses' detokenizer for the target language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BleuScores", "corpus_bleu", "detokenize"]


@dataclass(frozen=True)
class BleuScores:
    bleu: float  # tokenized, case-insensitive (the paper's)
    sacrebleu: float  # detokenized, sacreBLEU 13a
    bleu_signature: str
    sacrebleu_signature: str
    bleu_detail: str  # sacreBLEU's one-line summary: n-gram precisions, brevity penalty, lengths

    def as_dict(self) -> dict[str, float | str]:
        return {"bleu": self.bleu, "sacrebleu": self.sacrebleu, "bleu_signature": self.bleu_signature,
                "sacrebleu_signature": self.sacrebleu_signature, "bleu_detail": self.bleu_detail}


def detokenize(lines: Sequence[str], lang: str) -> list[str]:
    """Moses-tokenized lines as plain text (``&apos;`` and the other escapes undone)."""
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang=lang)
    return [detokenizer.detokenize(line.split()) for line in lines]


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    lang: str,
    raw_references: Sequence[str] | None = None,
) -> BleuScores:
    """Both BLEU scores of tokenized ``hypotheses`` against tokenized ``references`` (one each per line).

    ``raw_references``: untokenized references for sacreBLEU; default: ``references`` detokenized.
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses for {len(references)} references; give one per line"
        )
    if raw_references is not None and len(raw_references) != len(references):
        raise ValueError(f"got {len(raw_references)} raw references for {len(references)} references")
    tokenized = BLEU(tokenize="none", lowercase=True, force=True)  # tokenized on purpose: no warning
    score = tokenized.corpus_score(list(hypotheses), [list(references)])
    standard = BLEU(lowercase=True, trg_lang=lang)
    untokenized = list(raw_references) if raw_references is not None else detokenize(references, lang)
    sacre = standard.corpus_score(detokenize(hypotheses, lang), [untokenized])
    return BleuScores(score.score, sacre.score, str(tokenized.get_signature()), str(standard.get_signature()),
                      str(score))
