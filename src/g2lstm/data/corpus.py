"""Word- and character-level language-model corpora: a vocabulary and three streams of token ids.

Tokenisation follows AWD-LSTM's ``data.py`` (the code the G2-LSTM paper builds on): every line, empty or
not, becomes its whitespace-separated words (or its characters) followed by ``<eos>``, and the vocabulary
lists the training tokens in order of first appearance, so Penn Treebank gets the same ids as there.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from g2lstm.data.locate import cache_dir
from g2lstm.errors import DataError

__all__ = ["EOS", "UNK", "UNITS", "Corpus", "CorpusError", "Vocabulary", "batchify"]

EOS = "<eos>"
UNK = "<unk>"
UNITS = ("word", "char")
SPLITS = ("train", "valid", "test")
# Split file names that Corpus.from_folder recognises, tried in this order.
_LAYOUTS = (
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ("train.txt", "valid.txt", "test.txt"),
)
# Bump when the tokenisation or the cached file's contents change, so that old cache entries are ignored.
_CACHE_FORMAT = 1


class CorpusError(DataError):
    """A corpus file that is missing, empty or not UTF-8; the message names the file."""


class Vocabulary:
    """An ordered list of tokens and the ``index`` mapping each token to its id; ``<eos>`` is always present.

    ``Vocabulary(tokens)`` keeps the first appearance of each token in order and appends ``<eos>`` if it
    was not among them. ``to_list`` / ``from_list`` store it as plain data (e.g. in a checkpoint).
    """

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._tokens = list(dict.fromkeys(tokens))
        for token in self._tokens:
            if not isinstance(token, str):
                raise TypeError(f"tokens must be str, got {type(token).__name__}: {token!r}")
        if EOS not in self._tokens:
            self._tokens.append(EOS)
        self.index = {token: i for i, token in enumerate(self._tokens)}

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def add(self, token: str) -> int:
        """The id of ``token``, appended at the end if it is new."""
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        if token not in self.index:
            self.index[token] = len(self._tokens)
            self._tokens.append(token)
        return self.index[token]

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """The ids of ``tokens`` as a 1-D LongTensor; unknown tokens become ``<unk>`` if it is present.

        Raises ValueError naming the first unknown token when the vocabulary has no ``<unk>``.
        """
        tokens = tokens if isinstance(tokens, list) else list(tokens)
        unk = self.index.get(UNK, -1)
        ids = [self.index.get(token, unk) for token in tokens]
        if unk < 0 and -1 in ids:
            unknown = tokens[ids.index(-1)]
            raise ValueError(f"token {unknown!r} is not in the vocabulary, which has no {UNK} to stand in")
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Tensor | Iterable[int]) -> list[str]:
        """The tokens of ``ids`` (a 1-D tensor or any iterable of ints)."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        for i in values:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"ids must be ints, got {type(i).__name__}: {i!r}")
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"id {i} is outside the vocabulary [0, {len(self._tokens)})")
        return [self._tokens[i] for i in values]

    def to_list(self) -> list[str]:
        """The tokens in id order, as a plain list (what :meth:`from_list` takes back)."""
        return list(self._tokens)

    @classmethod
    def from_list(cls, tokens: list[str]) -> Vocabulary:
        """The vocabulary whose id ``i`` is ``tokens[i]``, exactly (a list from :meth:`to_list`)."""
        if not isinstance(tokens, (list, tuple)):
            raise TypeError(f"tokens must be a list of str, got {type(tokens).__name__}")
        seen: set[str] = set()
        for token in tokens:
            if token in seen:
                raise ValueError(f"tokens must be distinct, got {token!r} more than once")
            seen.add(token)
        if EOS not in tokens:
            raise ValueError(f"tokens must include {EOS!r}, got a list of {len(tokens)} without it")
        return cls(tokens)


class Corpus:
    """A language-model corpus: ``train``, ``valid`` and ``test`` as 1-D LongTensors of ids into ``vocab``.

    Build one with :meth:`from_folder` (three split files) or :meth:`from_text_file` (one file split by
    lines). ``unit`` is ``"word"`` or ``"char"``; ``source`` says where it was read from.
    """

    def __init__(
        self, train: Tensor, valid: Tensor, test: Tensor, vocab: Vocabulary, unit: str, source: str = ""
    ) -> None:
        _check_unit(unit)
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")
        for name, ids in zip(SPLITS, (train, valid, test)):
            if not isinstance(ids, Tensor) or ids.dtype != torch.long:
                raise TypeError(f"{name} must be a LongTensor, got {_describe(ids)}")
            if ids.dim() != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
        self.train, self.valid, self.test = train, valid, test
        self.vocab = vocab
        self.unit = unit
        self.source = source

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike[str],
        unit: str = "word",
        vocab: Vocabulary | None = None,
        *,
        cache: bool = False,
    ) -> Corpus:
        """Read the three splits of a folder: ``ptb.{train,valid,test}.txt`` (Penn Treebank),
        ``wiki.{train,valid,test}.tokens`` (WikiText) or ``{train,valid,test}.txt``.

        Args:
            path: the folder; it is only read, never written.
            unit: ``"word"`` (whitespace-separated tokens) or ``"char"`` (every character, spaces
                included); ``<eos>`` ends every line either way. Default: ``"word"``.
            vocab: the vocabulary to use (e.g. from a checkpoint); tokens it lacks become ``<unk>``.
                Default: built from the training split, with ``<unk>`` added only if valid or test need it.
            cache: keep the encoded corpus in ``cache_dir()/corpora``, keyed by the md5 of the files and
                the options, and load it from there next time. Default: False.

        Raises:
            CorpusError: the folder holds no recognised layout, a split file is missing or empty, a file
                is not UTF-8, or a token is unknown to a ``vocab`` without ``<unk>``.
        """
        folder = Path(_check_path(path))
        _check_options(unit, vocab, cache)
        if not folder.is_dir():
            raise CorpusError(f"corpus folder {folder} does not exist or is not a folder")
        for names in _LAYOUTS:
            present = [name for name in names if (folder / name).is_file()]
            if present:
                missing = [name for name in names if name not in present]
                if missing:
                    raise CorpusError(
                        f"corpus folder {folder} has {', '.join(present)} but lacks {', '.join(missing)}"
                    )
                break
        else:
            raise CorpusError(
                f"corpus folder {folder} holds none of the recognised split files: "
                + "; ".join(", ".join(names) for names in _LAYOUTS)
            )
        files = [folder / name for name in names]
        contents = [_read_bytes(file) for file in files]

        def build() -> Corpus:
            parts = {s: (str(f), _decode_lines(f, data)) for s, f, data in zip(SPLITS, files, contents)}
            return _build(parts, unit, vocab, str(folder))

        return _cached(build, cache, contents, ["folder", unit], vocab, str(folder))

    @classmethod
    def from_text_file(
        cls,
        path: str | os.PathLike[str],
        unit: str = "char",
        split: Sequence[float] = (0.9, 0.05, 0.05),
        vocab: Vocabulary | None = None,
        *,
        cache: bool = False,
    ) -> Corpus:
        """Read one raw text file and cut its lines into contiguous train / valid / test parts.

        ``split`` gives the three shares of the lines (positive, summing to 1); the other arguments are as
        in :meth:`from_folder`. Raises CorpusError if the file is missing, not UTF-8, or has too few lines
        for every part to get one with tokens.
        """
        file = Path(_check_path(path))
        _check_options(unit, vocab, cache)
        shares = _check_split(split)
        data = _read_bytes(file)

        def build() -> Corpus:
            lines = _decode_lines(file, data)
            first = round(len(lines) * shares[0])
            second = round(len(lines) * (shares[0] + shares[1]))
            bounds = {"train": (0, first), "valid": (first, second), "test": (second, len(lines))}
            parts = {}
            for name, (start, stop) in bounds.items():
                if start == stop:
                    raise CorpusError(
                        f"{file}: {len(lines)} lines are too few to give each split of {tuple(shares)} a line"
                    )
                parts[name] = (f"{file} ({name} split, lines {start + 1}-{stop})", lines[start:stop])
            return _build(parts, unit, vocab, str(file))

        return _cached(build, cache, [data], ["text_file", unit, list(shares)], vocab, str(file))

    def summary(self) -> str:
        """One line: unit, source, tokens per split (``<eos>`` included) and vocabulary size."""
        return (
            f"{self.unit}-level corpus {self.source}: train {len(self.train):,} / "
            f"valid {len(self.valid):,} / test {len(self.test):,} tokens, vocabulary {len(self.vocab):,}"
        )


def batchify(data: Tensor, batch_size: int) -> Tensor:
    """Cut a 1-D stream into ``batch_size`` contiguous streams side by side: a ``(T, batch_size)`` tensor.

    The last ``len(data) % batch_size`` tokens are dropped; column ``b`` is the ``b``-th contiguous slice of
    ``data``, so each column reads on across consecutive BPTT windows (as AWD-LSTM's ``batchify``).
    """
    if not isinstance(data, Tensor):
        raise TypeError(f"data must be a Tensor, got {type(data).__name__}")
    if data.dim() != 1:
        raise ValueError(f"data must be 1-D, got shape {tuple(data.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= len(data):
        raise ValueError(f"batch_size must lie in [1, {len(data)}] (the length of data), got {batch_size}")
    steps = len(data) // batch_size
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


def _describe(value: Any) -> str:
    return f"a tensor of {value.dtype}" if isinstance(value, Tensor) else type(value).__name__


def _check_unit(unit: Any) -> None:
    if not isinstance(unit, str):
        raise TypeError(f"unit must be a str, got {type(unit).__name__}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


def _check_options(unit: Any, vocab: Any, cache: Any) -> None:
    _check_unit(unit)
    if vocab is not None and not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a Vocabulary or None, got {type(vocab).__name__}")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be a bool, got {type(cache).__name__}")


def _check_path(path: Any) -> str | os.PathLike[str]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return path


def _check_split(split: Any) -> list[float]:
    if not isinstance(split, (list, tuple)) or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) for s in split
    ):
        raise TypeError(f"split must be a tuple of three floats, got {split!r}")
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
        raise ValueError(f"split must be three positive shares summing to 1, got {split}")
    return [float(s) for s in split]


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"corpus file {file} does not exist") from None
    except OSError as error:
        raise CorpusError(f"corpus file {file} cannot be read: {error}") from None


def _decode_lines(file: Path, data: bytes) -> list[str]:
    """The lines of ``data`` without their line ends, as iterating a text file (universal newlines) gives."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CorpusError(
            f"{file} is not valid UTF-8: byte offset {error.start} (line {line}): {error.reason}"
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _tokenize(lines: list[str], unit: str) -> list[str]:
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split() if unit == "word" else line)
        tokens.append(EOS)
    return tokens


def _build(
    parts: dict[str, tuple[str, list[str]]], unit: str, vocab: Vocabulary | None, source: str
) -> Corpus:
    """Tokenise and encode the ``(label, lines)`` of each split; ``label`` names the file in errors."""
    tokens = {}
    for split, (label, lines) in parts.items():
        tokens[split] = _tokenize(lines, unit)
        if len(tokens[split]) == len(lines):  # nothing but the <eos> of each line
            raise CorpusError(f"{label} contains no tokens")
    if vocab is None:
        vocab = Vocabulary(tokens["train"])
        if UNK not in vocab and any(t not in vocab.index for s in ("valid", "test") for t in tokens[s]):
            vocab.add(UNK)
    encoded = {}
    for split, (label, _) in parts.items():
        try:
            encoded[split] = vocab.encode(tokens[split])
        except ValueError as error:
            raise CorpusError(f"{label}: {error}") from None
    return Corpus(encoded["train"], encoded["valid"], encoded["test"], vocab, unit, source)


def _cached(
    build: Callable[[], Corpus],
    cache: bool,
    contents: list[bytes],
    options: list[Any],
    vocab: Vocabulary | None,
    source: str,
) -> Corpus:
    """``build()``, or its result stored in ``cache_dir()/corpora`` by an earlier call with equal inputs."""
    if not cache:
        return build()
    key = hashlib.md5(json.dumps([_CACHE_FORMAT, options, vocab and vocab.to_list()]).encode())
    for data in contents:
        key.update(hashlib.md5(data).digest())
    file = cache_dir() / "corpora" / f"{key.hexdigest()}.pt"
    if file.is_file():
        try:
            stored = torch.load(file, weights_only=True)
            vocabulary = Vocabulary.from_list(stored["vocab"])
            splits = (stored["train"], stored["valid"], stored["test"])
            return Corpus(*splits, vocabulary, stored["unit"], source)
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
            pass  # a damaged entry: rebuild it below
    corpus = build()
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.part")
    stored = {s: getattr(corpus, s) for s in SPLITS}
    torch.save({**stored, "vocab": corpus.vocab.to_list(), "unit": corpus.unit}, temporary)
    os.replace(temporary, file)
    return corpus
