"""Data sets and language-model corpora: finding (or downloading) the files, tokenising, batching."""

from g2lstm.data.corpus import EOS, UNITS, UNK, Corpus, CorpusError, Vocabulary, batchify
from g2lstm.data.locate import (
    DATASETS,
    ChecksumError,
    DatasetInfo,
    DownloadError,
    FileMirror,
    TarMirror,
    cache_dir,
    find_dataset,
    verify_checksums,
)

__all__ = [
    "DATASETS",
    "EOS",
    "UNITS",
    "UNK",
    "ChecksumError",
    "Corpus",
    "CorpusError",
    "DatasetInfo",
    "DownloadError",
    "FileMirror",
    "TarMirror",
    "Vocabulary",
    "batchify",
    "cache_dir",
    "find_dataset",
    "verify_checksums",
]
