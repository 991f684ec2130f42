"""The translation recipe: attention encoder-decoder over G2LSTM layers, beam search, BLEU (SPEC §3.2).

``data`` finds and reads parallel corpora, ``bpe`` learns the joint sub-word vocabulary, ``model`` is the
encoder-decoder, ``beam`` the batched beam search, ``bleu`` the two BLEU scores, ``train`` the training
loop, ``evaluate`` translation and scoring of a checkpoint, ``compression`` and ``analyze`` the paper's
Table 4 and gate figures for translation models.
"""
