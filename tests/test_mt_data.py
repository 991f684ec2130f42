"""Parallel corpora and the joint BPE vocabulary: layouts, bad files, batching by length, sentencepiece."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from g2lstm.mt.bpe import BOS, EOS, PAD, UNK, SubwordVocabulary
from g2lstm.mt.data import (
    ParallelCorpusError,
    batch_indices,
    collate,
    find_corpus_folder,
    find_split,
    load_split,
    read_parallel,
)

GERMAN = ["ein mann läuft .", "zwei hunde spielen im park .", "eine frau liest ein buch ."]
ENGLISH = ["a man runs .", "two dogs play in the park .", "a woman reads a book ."]
MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def write_pair(folder: Path, stem: str, source: list[str], target: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.de").write_text("".join(line + "\n" for line in source), encoding="utf-8")
    (folder / f"{stem}.en").write_text("".join(line + "\n" for line in target), encoding="utf-8")


def test_fairseq_layout_is_found_with_its_split_names(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        write_pair(tmp_path, split, GERMAN, ENGLISH)
    files = find_split(tmp_path, "valid", "de", "en")
    assert files.source == tmp_path / "valid.de" and files.target == tmp_path / "valid.en"
    assert files.raw_target is None
    assert read_parallel(files) == (GERMAN, ENGLISH)


def test_multi30k_layout_reads_tokenized_text_with_raw_references(tmp_path: Path) -> None:
    write_pair(tmp_path / "tok", "test_2016_flickr.lc.norm.tok", GERMAN, ENGLISH)
    write_pair(tmp_path / "raw", "test_2016_flickr", ["Ein Mann läuft."] * 3, ["A man runs."] * 3)
    files = find_split(tmp_path, "test", "de", "en")
    assert files.source == tmp_path / "tok" / "test_2016_flickr.lc.norm.tok.de"
    assert files.raw_target == tmp_path / "raw" / "test_2016_flickr.en"
    vocab = SubwordVocabulary.learn(GERMAN + ENGLISH, 40)
    split = load_split(tmp_path, "test", "de", "en", vocab)
    assert split.raw_references == ["A man runs."] * 3 and split.target_lines == ENGLISH


def test_data_folder_may_hold_the_corpus_in_a_subfolder(tmp_path: Path) -> None:
    write_pair(tmp_path / "multi30k", "train", GERMAN, ENGLISH)
    assert find_corpus_folder(tmp_path, "multi30k") == tmp_path / "multi30k"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_corpus_folder(tmp_path / "missing", "multi30k")


def test_subword_nmt_markers_are_removed(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", ["ein man@@ n läuft ."], ["a man ru@@ ns@@"])
    assert read_parallel(find_split(tmp_path, "train", "de", "en")) == (["ein mann läuft ."], ["a man runs"])


def test_mismatched_line_counts_name_both_files(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", GERMAN, ENGLISH[:2])
    with pytest.raises(ParallelCorpusError, match=r"train\.de has 3 lines but .*train\.en has 2"):
        read_parallel(find_split(tmp_path, "train", "de", "en"))


def test_empty_file_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", GERMAN, ENGLISH)
    (tmp_path / "train.en").write_text("\n\n")
    with pytest.raises(ParallelCorpusError, match=r"train\.en is empty"):
        read_parallel(find_split(tmp_path, "train", "de", "en"))


def test_missing_half_of_a_pair_and_missing_split_are_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", GERMAN, ENGLISH)
    (tmp_path / "train.en").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.en is missing"):
        find_split(tmp_path, "train", "de", "en")
    with pytest.raises(FileNotFoundError, match=r"no test split for de->en"):
        find_split(tmp_path, "test", "de", "en")


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path, "train", GERMAN, ENGLISH)
    (tmp_path / "train.de").write_bytes("ein mann läuft .\n".encode("latin-1") * 3)
    with pytest.raises(ParallelCorpusError, match=r"train\.de is not UTF-8"):
        read_parallel(find_split(tmp_path, "train", "de", "en"))


def test_bpe_round_trips_text_and_reserves_the_special_ids() -> None:
    vocab = SubwordVocabulary.learn(GERMAN * 5 + ENGLISH * 5, 60)
    assert 8 < len(vocab) <= 60
    ids = vocab.encode(GERMAN + ENGLISH)
    assert all(min(sentence) > EOS for sentence in ids)  # no special id inside a sentence
    assert [vocab.decode(sentence) for sentence in ids] == GERMAN + ENGLISH
    assert vocab.decode([BOS, *ids[0], EOS, PAD]) == GERMAN[0]
    assert vocab.encode(["ein ☃ ."])[0].count(UNK) == 1  # a character never seen in training
    restored = SubwordVocabulary.from_tensor(vocab.to_tensor())
    assert restored.encode(GERMAN) == vocab.encode(GERMAN)


def test_bpe_merges_frequent_words_into_single_pieces() -> None:
    vocab = SubwordVocabulary.learn(["the the the dog", "the cat the"] * 50, 40)
    assert vocab.pieces(vocab.encode(["the"])[0]) == ["▁the"]


def test_batches_group_similar_lengths_and_cover_every_pair() -> None:
    lengths = [(n % 17, (3 * n) % 11) for n in range(100)]
    groups = batch_indices(lengths, 8, seed=3)
    assert sorted(i for group in groups for i in group) == list(range(100))
    assert all(len(group) <= 8 for group in groups)
    spread = max(max(lengths[i][0] for i in g) - min(lengths[i][0] for i in g) for g in groups)
    assert spread <= 2  # each source length occurs 5 or 6 times, so 8 sorted pairs span at most 3 lengths
    assert batch_indices(lengths, 8, seed=3) == groups
    ties = [(n % 5, 2) for n in range(100)]  # pairs of equal lengths are grouped at random, by seed
    assert batch_indices(ties, 8, seed=3) != batch_indices(ties, 8, seed=4)


def test_collate_pads_and_marks_sentence_boundaries() -> None:
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]], [0, 1])
    assert batch.source.t().tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]
    assert batch.source_lengths.tolist() == [4, 2]
    assert batch.target_input.t().tolist() == [[BOS, 9, PAD], [BOS, 10, 11]]
    assert batch.target_output.t().tolist() == [[9, EOS, PAD], [10, 11, EOS]]
    assert batch.source.dtype == torch.long


@pytest.mark.skipif(not (MULTI30K / "tok").is_dir(), reason="Multi30k is not in ../shared/data")
def test_real_multi30k_splits_pair_up() -> None:
    for split, count in (("valid", 1014), ("test", 1000)):
        files = find_split(MULTI30K, split, "de", "en")
        source, target = read_parallel(files)
        assert len(source) == len(target) == count and files.raw_target is not None
        assert target[0] == target[0].lower()
