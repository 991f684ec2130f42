"""Parallel corpora: the ``{split}.{lang}`` file pairs of a folder, read, checked and batched by length.

Two layouts are recognised in a data folder:

* the official Multi30k repository: ``tok/{split}.lc.norm.tok.{lang}`` (lowercased, Moses-tokenized: what
  the model reads and writes) with ``raw/{split}.{lang}`` beside it (untokenized references for sacreBLEU);
  splits ``train``, ``val``, ``test_2016_flickr``;
* plain pairs ``{split}.{lang}``: the fairseq IWSLT'14 layout (``train``, ``valid``, ``test``, tokenized and
  lowercased by its prepare script) or Multi30k's names; files with subword-nmt ``@@`` markers (fairseq's
  BPE'd copies) are read with the markers removed, since the recipe learns its own BPE.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from g2lstm.data import find_dataset
from g2lstm.errors import ConfigError, DataError, MissingFileError
from g2lstm.mt.bpe import BOS, EOS, PAD, SubwordVocabulary

__all__ = [
    "SPLITS",
    "Batch",
    "ParallelCorpusError",
    "ParallelSplit",
    "SplitFiles",
    "batch_indices",
    "collate",
    "split_lines",
    "find_corpus_folder",
    "find_split",
    "load_split",
    "read_parallel",
    "read_references",
]

SPLITS = ("train", "valid", "test")
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test", "test_2016_flickr")}


class ParallelCorpusError(DataError):
    """A parallel corpus that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split: source and target text, and untokenized target references when the layout
    has them (else ``None``: sacreBLEU then scores detokenized references)."""

    source: Path
    target: Path
    raw_target: Path | None


def find_corpus_folder(data: str | Path | None, dataset: str) -> Path:
    """The folder of the corpus: ``data`` (or its ``dataset/`` subfolder) when given, else ``dataset`` looked
    up under ``$G2LSTM_DATA``, the cache, then downloaded (:func:`g2lstm.data.find_dataset`)."""
    if data is None:
        return find_dataset(dataset)
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise MissingFileError(f"data folder {folder} does not exist (or is not a folder); pass the folder "
                                f"holding the {{split}}.{{lang}} files")
    nested = folder / dataset
    return nested if nested.is_dir() and not _has_train(folder) else folder


def _has_train(folder: Path) -> bool:
    return any(folder.glob("train.*")) or (folder / "tok").is_dir()


def find_split(folder: Path, split: str, src: str, tgt: str) -> SplitFiles:
    """The files of ``split`` (``"train"``, ``"valid"``, ``"test"``) for the pair ``src`` -> ``tgt``."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    tried = []
    for name in SPLIT_NAMES[split]:
        candidates = [(folder / "tok", f"{name}.lc.norm.tok"), (folder, name)]
        for directory, stem in candidates:
            source, target = directory / f"{stem}.{src}", directory / f"{stem}.{tgt}"
            tried.append(str(source))
            if source.is_file() and target.is_file():
                raw = folder / "raw" / f"{name}.{tgt}" if directory.name == "tok" else None
                return SplitFiles(source, target, raw if raw is not None and raw.is_file() else None)
            if source.is_file() != target.is_file():
                missing = target if source.is_file() else source
                raise MissingFileError(f"{missing} is missing: the {split} split needs both "
                                        f"{source.name} and {target.name}")
    raise MissingFileError(
        f"no {split} split for {src}->{tgt} in {folder}: looked for {', '.join(tried)} (and the same for "
        f".{tgt}); pass --data with a folder of {{split}}.{{lang}} files, or check --src/--tgt"
    )


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ParallelCorpusError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                                  f"convert it to UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        raise ParallelCorpusError(f"{path} is empty; a split needs one sentence per line")
    return [line.replace("@@ ", "").removesuffix("@@").strip() for line in lines]


def split_lines(data: bytes, source: str) -> list[str]:
    """The lines of UTF-8 text ``data`` (read from ``source``, e.g. standard input): split on ``\\n`` only, a
    ``\\r`` before it dropped, no empty last line after a final newline. Form feeds, NEL, U+2028 and the like
    stay inside their line, so that N lines in give N translations out, in line with their sources.

    Raises:
        DataError: a line is not valid UTF-8; the message gives its number.
    """
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DataError(
                f"{source} line {number} is not valid UTF-8 ({error.reason} at byte {error.start + 1} "
                f"of the line); convert the text to UTF-8"
            ) from None
    return decoded


def read_parallel(files: SplitFiles) -> tuple[list[str], list[str]]:
    """The source and target lines of a split, which must pair up line by line."""
    source, target = _read_lines(files.source), _read_lines(files.target)
    if len(source) != len(target):
        raise ParallelCorpusError(
            f"{files.source} has {len(source)} lines but {files.target} has {len(target)}; the files of a "
            f"split must pair up line by line (one sentence and its translation per line)"
        )
    return source, target


def read_references(files: SplitFiles, count: int) -> list[str] | None:
    """The untokenized target references of a split, if its layout has them (checked to pair up)."""
    if files.raw_target is None:
        return None
    references = _read_lines(files.raw_target)
    if len(references) != count:
        raise ParallelCorpusError(f"{files.raw_target} has {len(references)} lines but {files.target} has "
                                  f"{count}; the raw and tokenized references must pair up")
    return references


@dataclass
class Batch:
    """Sentence pairs as padded ``(time, batch)`` id tensors: the source ends with EOS, the decoder reads
    BOS y_1 .. y_n and predicts y_1 .. y_n EOS."""

    source: Tensor  # (S, B)
    source_lengths: Tensor  # (B,) on the CPU, as pack_padded_sequence wants
    target_input: Tensor  # (T, B)
    target_output: Tensor  # (T, B), PAD where there is nothing to predict
    indices: list[int]  # the pairs' positions in their split

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.source.to(device), self.source_lengths, self.target_input.to(device),
                     self.target_output.to(device), self.indices)


def _pad(sequences: Sequence[list[int]]) -> Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([s + [PAD] * (width - len(s)) for s in sequences], dtype=torch.long).t().contiguous()


def collate(
    sources: Sequence[list[int]], targets: Sequence[list[int]] | None, indices: Sequence[int]
) -> Batch:
    """The :class:`Batch` of the pairs at ``indices`` (``targets`` None: source only, empty targets)."""
    source = [sources[i] + [EOS] for i in indices]
    target = [targets[i] for i in indices] if targets is not None else [[] for _ in indices]
    return Batch(
        source=_pad(source),
        source_lengths=torch.tensor([len(s) for s in source]),
        target_input=_pad([[BOS] + t for t in target]),
        target_output=_pad([t + [EOS] for t in target]),
        indices=list(indices),
    )


def batch_indices(
    lengths: Sequence[tuple[int, int]], batch_size: int, seed: int | None = None
) -> list[list[int]]:
    """Groups of ``batch_size`` pair indices of similar (source, target) length, so little is padding.

    With ``seed``, pairs of equal lengths are ordered at random (the same for every epoch of one seed);
    without, batches follow the sorted order (for translation and evaluation).
    """
    order = list(range(len(lengths)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    order.sort(key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@dataclass
class ParallelSplit:
    """One split as text and as sub-word ids (source and target), with its files."""

    name: str
    files: SplitFiles
    source_lines: list[str]
    target_lines: list[str]
    raw_references: list[str] | None
    source_ids: list[list[int]]
    target_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.source_lines)


def load_split(folder: Path, split: str, src: str, tgt: str, vocab: SubwordVocabulary) -> ParallelSplit:
    """Find, read, check and encode one split of the corpus in ``folder``."""
    files = find_split(folder, split, src, tgt)
    source, target = read_parallel(files)
    return ParallelSplit(split, files, source, target, read_references(files, len(target)),
                         vocab.encode(source), vocab.encode(target))
