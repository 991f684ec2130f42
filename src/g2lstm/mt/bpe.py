"""The joint sub-word vocabulary of source and target: BPE learned by sentencepiece on the training split.

The model travels inside checkpoints as a uint8 tensor (loadable with ``weights_only=True``) and is also
written to the run folder as ``bpe.model`` for use with sentencepiece's own tools; nothing is ever written
into a data folder.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["BOS", "EOS", "PAD", "UNK", "SubwordVocabulary"]

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # the ids every vocabulary reserves: padding, unknown, begin, end


class SubwordVocabulary:
    """A sentencepiece BPE model with the ids PAD=0, UNK=1, BOS=2, EOS=3, over text as the corpus holds it
    (no normalisation, so decoding gives back exactly the text that was encoded)."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        reserved = (self._processor.pad_id(), self._processor.unk_id(), self._processor.bos_id(),
                    self._processor.eos_id())
        if reserved != (PAD, UNK, BOS, EOS):
            raise ValueError(f"the sentencepiece model reserves the ids {reserved} for pad, unk, bos, eos; "
                             f"g2lstm needs {(PAD, UNK, BOS, EOS)}: learn it with SubwordVocabulary.learn")

    @classmethod
    def learn(cls, lines: Iterable[str], size: int, *, seed_sentences: int = 2_000_000) -> SubwordVocabulary:
        """Learn a BPE vocabulary of at most ``size`` pieces from ``lines`` (both languages' training text).

        ``size`` is an upper bound: on a small corpus sentencepiece stops when no merge is left. Every
        character of the lines is covered, so only characters unseen in training become UNK.
        """
        import sentencepiece

        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"bpe_size must be an int >= 8, got {size!r}")
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter([line for line in lines if line.strip()]),
            model_writer=model,
            vocab_size=size,
            hard_vocab_limit=False,
            model_type="bpe",
            character_coverage=1.0,
            normalization_rule_name="identity",
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            input_sentence_size=seed_sentences,
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
        return cls(model.getvalue())

    @classmethod
    def from_tensor(cls, tensor: Tensor) -> SubwordVocabulary:
        """The vocabulary stored by :meth:`to_tensor` (e.g. in a checkpoint)."""
        return cls(tensor.cpu().numpy().tobytes())

    def to_tensor(self) -> Tensor:
        """The sentencepiece model as a uint8 tensor, for checkpoints."""
        return torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8).clone()

    def save(self, path: str | Path) -> Path:
        """Write the model as a sentencepiece ``.model`` file."""
        from g2lstm.train.storage import make_output_folder, write_file

        path = Path(path)
        make_output_folder(path.parent)
        return write_file(path, self.model_proto)

    def __len__(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """The sub-word ids of each line (without BOS or EOS)."""
        return self._processor.encode(list(lines))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``: sub-words joined back into words (PAD, BOS and EOS are dropped)."""
        return self._processor.decode([int(i) for i in ids if i not in (PAD, BOS, EOS)])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The sub-word of each id, as sentencepiece writes it (``▁`` starts a word)."""
        return [self._processor.id_to_piece(int(i)) for i in ids]
