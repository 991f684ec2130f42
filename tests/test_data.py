"""Data loading: vocabulary, corpora in every layout and unit, batchify, finding and downloading data sets."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from g2lstm.data import (
    DATASETS,
    ChecksumError,
    Corpus,
    CorpusError,
    DatasetInfo,
    DownloadError,
    FileMirror,
    TarMirror,
    Vocabulary,
    batchify,
    cache_dir,
    find_dataset,
    verify_checksums,
)

PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
LAYOUTS = {
    "ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "wikitext": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    "plain": ("train.txt", "valid.txt", "test.txt"),
}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the caller's G2LSTM_DATA (the Makefile sets it) or writes into the real cache."""
    monkeypatch.delenv("G2LSTM_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("G2LSTM_CACHE", str(tmp_path / "cache"))


def write_splits(folder: Path, train: str, valid: str, test: str, layout: str = "plain") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(LAYOUTS[layout], (train, valid, test)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------- Vocabulary


def test_vocabulary_keeps_first_appearance_order_and_always_has_eos() -> None:
    vocab = Vocabulary(["b", "a", "b", "c"])
    assert vocab.to_list() == ["b", "a", "c", "<eos>"]
    assert vocab.index == {"b": 0, "a": 1, "c": 2, "<eos>": 3}
    assert len(vocab) == 4 and "a" in vocab and "z" not in vocab
    ids = vocab.encode(["c", "a", "<eos>"])
    assert ids.dtype == torch.long and ids.tolist() == [2, 1, 3]
    assert vocab.decode(ids) == ["c", "a", "<eos>"]
    assert vocab.decode([0]) == ["b"]


def test_vocabulary_unknown_tokens() -> None:
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        Vocabulary(["a"]).encode(["a", "z"])
    vocab = Vocabulary(["a", "<unk>"])
    assert vocab.encode(["z", "a"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"id 3 is outside the vocabulary \[0, 3\)"):
        vocab.decode([3])
    with pytest.raises(ValueError, match="id -1"):
        vocab.decode(torch.tensor([-1]))


def test_vocabulary_round_trips_as_plain_list() -> None:
    vocab = Vocabulary(["<eos>", "x", "<unk>", " "])
    stored = vocab.to_list()
    assert all(type(token) is str for token in stored)
    assert Vocabulary.from_list(stored).index == vocab.index
    with pytest.raises(ValueError, match="'x' more than once"):
        Vocabulary.from_list(["x", "<eos>", "x"])
    with pytest.raises(ValueError, match="must include '<eos>'"):
        Vocabulary.from_list(["x"])
    with pytest.raises(TypeError, match="list of str, got str"):
        Vocabulary.from_list("abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tokens must be str, got int"):
        Vocabulary.from_list(["<eos>", 3])  # type: ignore[list-item]


# ---------------------------------------------------------------- Corpus: layouts and units


@pytest.mark.parametrize("layout", LAYOUTS)
def test_word_corpus_in_every_layout(tmp_path: Path, layout: str) -> None:
    folder = write_splits(tmp_path / "data", "the cat\n\n  sat  on\n", "the sat\n", "cat on the\n", layout)
    corpus = Corpus.from_folder(folder)
    assert corpus.unit == "word"
    # Every line, the empty one too, ends in <eos>; the vocabulary is the training tokens in order.
    assert corpus.vocab.to_list() == ["the", "cat", "<eos>", "sat", "on"]
    assert corpus.vocab.decode(corpus.train) == ["the", "cat", "<eos>", "<eos>", "sat", "on", "<eos>"]
    assert corpus.valid.tolist() == [0, 3, 2]
    assert corpus.test.tolist() == [1, 4, 0, 2]
    assert corpus.summary() == (
        f"word-level corpus {folder}: train 7 / valid 3 / test 4 tokens, vocabulary 5"
    )


def test_char_corpus_keeps_spaces_and_ends_lines_with_eos(tmp_path: Path) -> None:
    folder = write_splits(tmp_path, "ab a\nb\n", "a b\n", "ba")  # the last line needs no line end
    corpus = Corpus.from_folder(folder, unit="char")
    assert corpus.vocab.to_list() == ["a", "b", " ", "<eos>"]
    assert corpus.vocab.decode(corpus.train) == ["a", "b", " ", "a", "<eos>", "b", "<eos>"]
    assert corpus.vocab.decode(corpus.valid) == ["a", " ", "b", "<eos>"]
    assert corpus.vocab.decode(corpus.test) == ["b", "a", "<eos>"]


def test_windows_line_ends_are_line_ends(tmp_path: Path) -> None:
    corpus = Corpus.from_folder(write_splits(tmp_path, "a b\r\nc\r\n", "a\r\n", "c\r\n"), unit="char")
    assert corpus.vocab.decode(corpus.train) == ["a", " ", "b", "<eos>", "c", "<eos>"]


def test_unk_added_only_when_valid_or_test_need_it(tmp_path: Path) -> None:
    seen = Corpus.from_folder(write_splits(tmp_path / "seen", "a b\n", "b\n", "a\n"))
    assert "<unk>" not in seen.vocab
    unseen = Corpus.from_folder(write_splits(tmp_path / "unseen", "a b\n", "b z\n", "y a\n"))
    assert unseen.vocab.to_list() == ["a", "b", "<eos>", "<unk>"]
    assert unseen.vocab.decode(unseen.valid) == ["b", "<unk>", "<eos>"]
    assert unseen.vocab.decode(unseen.test) == ["<unk>", "a", "<eos>"]


def test_existing_unk_is_reused_like_ptb(tmp_path: Path) -> None:
    corpus = Corpus.from_folder(write_splits(tmp_path, "a <unk> b\n", "<unk> z\n", "a\n"))
    assert corpus.vocab.to_list() == ["a", "<unk>", "b", "<eos>"]
    assert corpus.valid.tolist() == [1, 1, 3]


def test_vocabulary_comes_from_train_only(tmp_path: Path) -> None:
    corpus = Corpus.from_folder(write_splits(tmp_path, "a\n", "only_in_valid\n", "only_in_test\n"))
    assert corpus.vocab.to_list() == ["a", "<eos>", "<unk>"]


def test_given_vocabulary_is_used_as_is(tmp_path: Path) -> None:
    folder = write_splits(tmp_path, "b a\n", "a\n", "z\n")
    vocab = Vocabulary.from_list(["<eos>", "<unk>", "a", "b"])
    corpus = Corpus.from_folder(folder, vocab=vocab)
    assert corpus.vocab is vocab
    assert corpus.train.tolist() == [3, 2, 0] and corpus.test.tolist() == [1, 0]
    with pytest.raises(CorpusError, match=r"test\.txt: token 'z' is not in the vocabulary"):
        Corpus.from_folder(folder, vocab=Vocabulary(["a", "b"]))


def test_text_file_is_split_by_contiguous_lines(tmp_path: Path) -> None:
    file = tmp_path / "book.txt"
    file.write_text("".join(f"{i}\n" for i in range(10)), encoding="utf-8")
    corpus = Corpus.from_text_file(file, split=(0.6, 0.2, 0.2))
    assert corpus.unit == "char"
    assert corpus.vocab.decode(corpus.train) == [t for i in range(6) for t in (str(i), "<eos>")]
    assert corpus.vocab.decode(corpus.valid) == ["<unk>", "<eos>", "<unk>", "<eos>"]
    assert corpus.vocab.decode(corpus.test) == ["<unk>", "<eos>", "<unk>", "<eos>"]
    words = Corpus.from_text_file(file, unit="word", split=[0.5, 0.3, 0.2])
    assert (len(words.train), len(words.valid), len(words.test)) == (10, 6, 4)


def test_text_file_errors(tmp_path: Path) -> None:
    file = tmp_path / "short.txt"
    file.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="2 lines are too few"):
        Corpus.from_text_file(file)
    with pytest.raises(ValueError, match="summing to 1"):
        Corpus.from_text_file(file, split=(0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="three positive shares"):
        Corpus.from_text_file(file, split=(1.0, 0.0, 0.0))
    with pytest.raises(TypeError, match="split must be a tuple of three floats"):
        Corpus.from_text_file(file, split="0.9")  # type: ignore[arg-type]
    with pytest.raises(CorpusError, match="missing.txt does not exist"):
        Corpus.from_text_file(tmp_path / "missing.txt")


# ---------------------------------------------------------------- Corpus: bad input


def test_missing_split_and_unknown_layout(tmp_path: Path) -> None:
    folder = write_splits(tmp_path, "a\n", "a\n", "a\n", "wikitext")
    (folder / "wiki.test.tokens").unlink()
    with pytest.raises(CorpusError, match=r"wiki\.train\.tokens, wiki\.valid\.tokens but lacks wiki\.test"):
        Corpus.from_folder(folder)
    (tmp_path / "other").mkdir()
    with pytest.raises(CorpusError, match="holds none of the recognised split files: ptb.train.txt"):
        Corpus.from_folder(tmp_path / "other")
    with pytest.raises(CorpusError, match="nowhere does not exist or is not a folder"):
        Corpus.from_folder(tmp_path / "nowhere")


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    folder = write_splits(tmp_path, "a\n", text, "a\n")
    with pytest.raises(CorpusError, match=r"valid\.txt contains no tokens"):
        Corpus.from_folder(folder)


def test_invalid_utf8_names_file_line_and_offset(tmp_path: Path) -> None:
    folder = write_splits(tmp_path, "a\n", "a\n", "a\n")
    (folder / "train.txt").write_bytes(b"good line\nbad \xff byte\n")
    with pytest.raises(CorpusError, match=r"train\.txt is not valid UTF-8: byte offset 14 \(line 2\)"):
        Corpus.from_folder(folder)


def test_argument_types(tmp_path: Path) -> None:
    folder = write_splits(tmp_path, "a\n", "a\n", "a\n")
    with pytest.raises(ValueError, match="unit must be one of \\('word', 'char'\\), got 'byte'"):
        Corpus.from_folder(folder, unit="byte")
    with pytest.raises(TypeError, match="vocab must be a Vocabulary or None, got list"):
        Corpus.from_folder(folder, vocab=["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        Corpus.from_folder(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Corpus: cache


def test_cache_is_written_outside_the_data_folder_and_reused(tmp_path: Path) -> None:
    folder = write_splits(tmp_path / "data", "a b\n", "b c\n", "a\n")
    before = snapshot(folder)
    first = Corpus.from_folder(folder, cache=True)
    entries = list((cache_dir() / "corpora").glob("*.pt"))
    assert len(entries) == 1 and snapshot(folder) == before
    stored = torch.load(entries[0], weights_only=True)
    assert stored["vocab"] == first.vocab.to_list() and torch.equal(stored["valid"], first.valid)

    again = Corpus.from_folder(folder, cache=True)
    assert again.vocab.to_list() == first.vocab.to_list() and again.source == str(folder)
    assert all(torch.equal(getattr(again, s), getattr(first, s)) for s in ("train", "valid", "test"))
    # Another unit, or changed contents, is another entry.
    Corpus.from_folder(folder, unit="char", cache=True)
    (folder / "test.txt").write_text("b\n", encoding="utf-8")
    assert Corpus.from_folder(folder, cache=True).test.tolist() == [1, 2]
    assert len(list((cache_dir() / "corpora").glob("*.pt"))) == 3


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    folder = write_splits(tmp_path / "data", "a b\n", "b\n", "a\n")
    Corpus.from_folder(folder, cache=True)
    (entry,) = (cache_dir() / "corpora").glob("*.pt")
    entry.write_bytes(b"not a checkpoint")
    assert Corpus.from_folder(folder, cache=True).train.tolist() == [0, 1, 2]
    assert torch.load(entry, weights_only=True)["unit"] == "word"


# ---------------------------------------------------------------- batchify


def test_batchify_makes_column_streams() -> None:
    data = torch.arange(11)
    batches = batchify(data, 3)
    assert batches.shape == (3, 3) and batches.is_contiguous()
    assert batches[:, 0].tolist() == [0, 1, 2] and batches[:, 2].tolist() == [6, 7, 8]
    assert batchify(data, 1).shape == (11, 1)
    with pytest.raises(ValueError, match=r"batch_size must lie in \[1, 11\].*got 12"):
        batchify(data, 12)
    with pytest.raises(TypeError, match="batch_size must be an int, got float"):
        batchify(data, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data must be 1-D"):
        batchify(data.view(1, 11), 1)


# ---------------------------------------------------------------- find_dataset

TINY_FILES = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n"}


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> DatasetInfo:
    """Registers a data set ``tiny`` with two files (and no mirrors; download tests set their own)."""
    info = DatasetInfo({name: md5(data) for name, data in TINY_FILES.items()}, mirrors=())
    monkeypatch.setitem(DATASETS, "tiny", info)
    return info


def write_tiny(folder: Path) -> Path:
    for name, data in TINY_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_explicit_path_in_both_layouts(tmp_path: Path, tiny: DatasetInfo) -> None:
    direct = write_tiny(tmp_path / "direct")
    assert find_dataset("tiny", direct) == direct
    nested = write_tiny(tmp_path / "root" / "tiny")
    assert find_dataset("tiny", str(tmp_path / "root")) == nested


def test_bad_explicit_path_raises_and_never_falls_back(
    tmp_path: Path, tiny: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny(cache_dir() / "tiny")  # would be found without the explicit path
    monkeypatch.setenv("G2LSTM_DATA", str(write_tiny(tmp_path / "env")))
    with pytest.raises(FileNotFoundError, match="nowhere .*does not exist"):
        find_dataset("tiny", tmp_path / "nowhere")
    partial = tmp_path / "partial"
    (partial / "a.txt").parent.mkdir()
    (partial / "a.txt").write_bytes(b"alpha\n")
    with pytest.raises(FileNotFoundError, match=r"partial lacks files of data set 'tiny': sub/b\.txt"):
        find_dataset("tiny", partial)


def test_unknown_name_with_explicit_path_is_a_user_corpus(tmp_path: Path) -> None:
    assert find_dataset("my_corpus", tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="'my_corpus' is not a known data set"):
        find_dataset("my_corpus")


def test_search_order_env_then_cache(
    tmp_path: Path, tiny: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = write_tiny(cache_dir() / "tiny")
    env_root = tmp_path / "env"
    env_root.mkdir()
    monkeypatch.setenv("G2LSTM_DATA", str(env_root))
    assert find_dataset("tiny", download=False) == cached  # $G2LSTM_DATA lacks it
    write_tiny(env_root / "tiny")
    assert find_dataset("tiny", download=False) == env_root / "tiny"  # $G2LSTM_DATA/name comes first
    write_tiny(env_root)
    assert find_dataset("tiny", download=False) == env_root  # the files right in $G2LSTM_DATA
    monkeypatch.setenv("G2LSTM_CACHE", str(tmp_path / "other_cache"))
    monkeypatch.setenv("G2LSTM_DATA", "")
    with pytest.raises(FileNotFoundError) as error:
        find_dataset("tiny", download=False)
    assert str(tmp_path / "other_cache" / "tiny") in str(error.value)
    assert "--data FOLDER" in str(error.value) and "G2LSTM_DATA" in str(error.value)


def test_download_false_lists_every_place(
    tmp_path: Path, tiny: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("G2LSTM_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=r"searched: \$G2LSTM_DATA=.*env.*; the cache .*cache.*tiny"):
        find_dataset("tiny", download=False)


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("G2LSTM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "g2lstm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "g2lstm"


def test_argument_checks_of_find_dataset() -> None:
    with pytest.raises(TypeError, match="name must be a str, got int"):
        find_dataset(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a path"):
        find_dataset("ptb", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="download must be a bool"):
        find_dataset("ptb", download="no")  # type: ignore[arg-type]


# ---------------------------------------------------------------- downloads


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a fresh folder: yields (base URL, folder)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_download_files_gunzipped_verified_into_cache(
    server: tuple[str, Path], tiny: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    (root / "a.txt").write_bytes(TINY_FILES["a.txt"])
    (root / "b.txt.gz").write_bytes(gzip.compress(TINY_FILES["sub/b.txt"]))
    mirror = FileMirror({"a.txt": f"{url}/a.txt", "sub/b.txt": f"{url}/b.txt.gz"})
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo(tiny.files, (mirror,)))
    folder = find_dataset("tiny")
    assert folder == cache_dir() / "tiny"
    assert {name: (folder / name).read_bytes() for name in TINY_FILES} == TINY_FILES
    assert leftovers(folder) == ["a.txt", "b.txt"]  # no temporary files
    assert find_dataset("tiny", download=False) == folder


def test_download_from_archive_after_a_dead_mirror(
    server: tuple[str, Path], tiny: DatasetInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    source = write_tiny(tmp_path / "source")
    with tarfile.open(root / "bundle.tgz", "w:gz") as tar:
        for name in TINY_FILES:
            tar.add(source / name, arcname=f"./bundle/{name}")
    mirrors = (
        FileMirror({name: f"{url}/gone/{name}" for name in TINY_FILES}),
        TarMirror(f"{url}/bundle.tgz", {name: f"./bundle/{name}" for name in TINY_FILES}),
    )
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo(tiny.files, mirrors))
    folder = find_dataset("tiny")
    assert leftovers(folder) == ["a.txt", "b.txt"]  # nor the archive
    verify_checksums(folder, "tiny")


def test_download_with_wrong_checksum_raises_and_leaves_nothing(
    tmp_path: Path, tiny: DatasetInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = write_tiny(tmp_path / "served")
    (served / "a.txt").write_bytes(b"tampered\n")
    mirror = FileMirror({name: (served / name).as_uri() for name in TINY_FILES})  # file:// URLs
    monkeypatch.setitem(DATASETS, "tiny", DatasetInfo(tiny.files, (mirror,)))
    with pytest.raises(DownloadError) as error:
        find_dataset("tiny")
    message = str(error.value)
    actual, expected = md5(b"tampered\n"), md5(TINY_FILES["a.txt"])
    assert f"a.txt: md5 of the download is {actual}, expected {expected}" in message
    assert "could not download a.txt of data set 'tiny'" in message
    assert leftovers(cache_dir() / "tiny") == ["b.txt"]  # the verified file stays, the bad one is gone


def test_verify_checksums(tmp_path: Path, tiny: DatasetInfo) -> None:
    folder = write_tiny(tmp_path)
    verify_checksums(folder, "tiny")
    (folder / "sub" / "b.txt").unlink()
    verify_checksums(folder, "tiny")  # missing files are not its business
    (folder / "a.txt").write_bytes(b"other\n")
    actual, expected = md5(b"other\n"), md5(TINY_FILES["a.txt"])
    with pytest.raises(ChecksumError, match=rf"a\.txt: md5 is {actual}, expected {expected}"):
        verify_checksums(folder, "tiny")
    with pytest.raises(ValueError, match="known data set"):
        verify_checksums(folder, "nope")


def test_registry_matches_the_shared_checksum_files() -> None:
    for name in ("ptb", "multi30k"):
        sums = PTB.parent / name / "MD5SUMS"
        if not sums.is_file():
            pytest.skip(f"{sums} not present")
        listed = [line.split() for line in sums.read_text().splitlines()]
        expected = {path.removeprefix("./"): digest for digest, path in listed if path != "./README"}
        assert dict(DATASETS[name].files) == expected


# ---------------------------------------------------------------- the real Penn Treebank


@pytest.mark.skipif(not (PTB / "ptb.train.txt").is_file(), reason=f"Penn Treebank not at {PTB}")
def test_real_penn_treebank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G2LSTM_DATA", str(PTB.parent))
    folder = find_dataset("ptb", download=False)
    assert folder == PTB
    corpus = Corpus.from_folder(folder)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929_589, 73_760, 82_430)
    assert len(corpus.vocab) == 10_000 and "<unk>" in corpus.vocab
    assert corpus.vocab.decode(corpus.train[:3]) == ["aer", "banknote", "berlitz"]
    assert batchify(corpus.test, 1).shape == (82_430, 1)
