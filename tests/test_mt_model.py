"""The encoder-decoder with every gate type, and beam search against exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch

from g2lstm import G2LSTM, record_gates
from g2lstm.mt.beam import beam_search
from g2lstm.mt.bpe import BOS, EOS, PAD
from g2lstm.mt.config import MTConfig
from g2lstm.mt.data import collate
from g2lstm.mt.model import DECODERS, AttentionSeq2Seq, ConditionalDecoder, Encoded, TranslationModelSpec

SOURCES = [[4, 5, 6, 7], [8, 9], [5, 5, 5, 6, 7, 8]]
TARGETS = [[6, 7], [9, 9, 10], [4]]


def small_model(gate: str = "g2", **options: object) -> AttentionSeq2Seq:
    spec = TranslationModelSpec(vocab_size=12, **{"emb_size": 8, "hidden_size": 6, **options}, gate=gate)
    return AttentionSeq2Seq(spec)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("gate", ["lstm", "sharpened", "g2"])
@pytest.mark.parametrize("layers", [1, 2])
def test_shapes_and_a_training_step_with_each_gate_type(gate: str, layers: int, decoder: str) -> None:
    model = small_model(gate, encoder_layers=layers, decoder_layers=layers, decoder=decoder)
    batch = collate(SOURCES, TARGETS, [0, 1, 2])
    encoded = model.encode(batch.source, batch.source_lengths)
    width = 6 if layers > 1 else 12  # a lone bidirectional layer gives both directions
    assert encoded.states.shape == (3, 7, width) and encoded.keys.shape == (3, 7, 6)
    assert encoded.mask.sum(1).tolist() == [5, 3, 7]
    h, c = model.initial_state(encoded)
    assert h.shape == c.shape == (layers, 3, 6)
    logits = model(batch.source, batch.source_lengths, batch.target_input)
    assert logits.shape == (4, 3, 12)
    assert all(layer.gate == gate for layer in model.recurrent_layers())
    assert model.bidirectional.bidirectional
    assert isinstance(model.decoder, ConditionalDecoder if decoder == "conditional" else G2LSTM)
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), batch.target_output.flatten(), ignore_index=PAD
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("decoder", DECODERS)
def test_padding_changes_nothing_for_a_sentence(decoder: str) -> None:
    model = small_model(decoder=decoder).eval()
    alone = collate(SOURCES, TARGETS, [1])
    batched = collate(SOURCES, TARGETS, [0, 1, 2])
    expected = model(alone.source, alone.source_lengths, alone.target_input)[:, 0]
    got = model(batched.source, batched.source_lengths, batched.target_input)[: expected.shape[0], 1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_step_by_step_decoding_equals_teacher_forcing(decoder: str) -> None:
    model = small_model(decoder=decoder).eval()
    batch = collate(SOURCES, TARGETS, [0, 1, 2])
    encoded = model.encode(batch.source, batch.source_lengths)
    state = model.initial_state(encoded)
    steps = []
    for t in range(batch.target_input.shape[0]):
        logits, state = model.decode(batch.target_input[t : t + 1], encoded, state)
        steps.append(logits)
    torch.testing.assert_close(
        torch.cat(steps), model(batch.source, batch.source_lengths, batch.target_input)
    )


def test_training_mode_is_noisy_and_eval_mode_deterministic() -> None:
    model = small_model("g2", dropout=0.0)
    batch = collate(SOURCES, TARGETS, [0, 1, 2])
    run = lambda: model(batch.source, batch.source_lengths, batch.target_input)  # noqa: E731
    assert not torch.equal(run(), run())
    model.eval()
    assert torch.equal(run(), run())


def test_tied_embeddings_share_one_matrix() -> None:
    model = small_model(emb_size=6, tie_embeddings=True)
    assert model.source_embedding is model.target_embedding
    assert model.output.weight is model.target_embedding.weight
    with pytest.raises(ValueError, match="emb_size == hidden_size"):
        small_model(emb_size=8, tie_embeddings=True)


def sequence_log_prob(model: AttentionSeq2Seq, source: list[int], tokens: list[int]) -> float:
    """log p(tokens + EOS | source) by teacher forcing."""
    batch = collate([source], [tokens], [0])
    log_probs = torch.log_softmax(model(batch.source, batch.source_lengths, batch.target_input)[:, 0], dim=-1)
    return sum(log_probs[t, y].item() for t, y in enumerate(batch.target_output[:, 0].tolist()))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(length_penalty: float) -> None:
    torch.manual_seed(3)
    model = AttentionSeq2Seq(TranslationModelSpec(vocab_size=6, emb_size=5, hidden_size=4, gate="g2")).eval()
    with torch.no_grad():
        model.output.weight.mul_(6.0)  # peaked, uneven next-word distributions
        model.output.bias.copy_(torch.tensor([0.0, 0.5, 0.0, -2.5, 1.0, -1.0]))
    sources, max_length, words = (
        [[4, 5, 1], [5], [4, 4, 5, 5, 1]],
        4,
        [1, 4, 5],
    )  # words: all but PAD, BOS, EOS
    batch = collate(sources, None, [0, 1, 2])
    # 128 beams hold every live prefix (at most 27) and 2 x 128 candidates cover every extension
    found = beam_search(model, batch.source, batch.source_lengths, beam_size=128, max_length=max_length,
                        length_penalty=length_penalty)
    candidates = [list(prefix) for n in range(max_length) for prefix in itertools.product(words, repeat=n)]
    for source, hypothesis in zip(sources, found):
        scored = [
            (sequence_log_prob(model, source, c) / (len(c) + 1) ** length_penalty, c) for c in candidates
        ]
        best_score, best = max(scored)
        assert hypothesis.tokens == best
        assert hypothesis.score == pytest.approx(best_score, abs=1e-4)
        assert hypothesis.log_prob == pytest.approx(sequence_log_prob(model, source, best), abs=1e-4)
    if length_penalty == 1.0:  # without normalisation the empty translation wins, as it should here
        assert min(len(h.tokens) for h in found) >= 2


@pytest.mark.parametrize("decoder", DECODERS)
def test_beam_of_one_is_greedy_and_batching_changes_nothing(decoder: str) -> None:
    torch.manual_seed(3)
    model = small_model(decoder=decoder).eval()
    with torch.no_grad():  # large weights: varied translations, whose best is not always the top beam's
        for parameter in model.parameters():
            parameter.mul_(5.0)
    batch = collate(SOURCES, None, [0, 1, 2])
    together = beam_search(model, batch.source, batch.source_lengths, beam_size=5, max_length=8)
    for index in range(3):
        alone = collate(SOURCES, None, [index])
        single = beam_search(model, alone.source, alone.source_lengths, beam_size=5, max_length=8)[0]
        assert single.tokens == together[index].tokens
        assert single.score == pytest.approx(together[index].score, abs=1e-5)
        # the tokens returned are those whose probability was scored
        assert single.log_prob == pytest.approx(
            sequence_log_prob(model, SOURCES[index], single.tokens), abs=1e-4
        )
        # greedy by hand
        encoded = model.encode(alone.source, alone.source_lengths)
        state, token, greedy = model.initial_state(encoded), BOS, []
        for _ in range(8):
            logits, state = model.decode(torch.tensor([[token]]), encoded, state)
            log_probs = torch.log_softmax(logits[0, 0], -1)
            log_probs[[PAD, BOS]] = float("-inf")
            token = int(log_probs.argmax())
            if token == EOS:
                break
            greedy.append(token)
        first = beam_search(
            model, alone.source, alone.source_lengths, beam_size=1, max_length=len(greedy) + 1
        )[0]
        assert first.tokens == greedy


def test_output_length_follows_the_source_up_to_an_absolute_cap() -> None:
    config = MTConfig(max_output_ratio=2.0, max_output_tokens=50)
    assert config.max_output_length(5) == 20
    assert config.max_output_length(10**5) == 50  # a runaway source cannot make decoding run for hours
    with pytest.raises(ValueError, match="max_output_tokens must be >= 1"):
        MTConfig(max_output_tokens=0).validate()


def first_layer_gates(model: AttentionSeq2Seq, target_input: torch.Tensor, encoded: Encoded,
                      state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The recorded input and forget gates of the first decoder layer, ``(T, B, gates * H)``: every gate
    layer whose name starts with 0, joined on the last dimension."""
    first = [k for k, name in enumerate(model.decoder_gate_layers()) if name.split()[0] == "0"]
    with record_gates(model.decoder) as recording:
        model.decode(target_input, encoded, state)
        gates = [torch.cat(recording.gates(layer, gate)) for layer in first for gate in ("input", "forget")]
        return torch.cat(gates, dim=-1)


@torch.no_grad()
def gates_with_other_encoder_states(model: AttentionSeq2Seq) -> tuple[torch.Tensor, torch.Tensor]:
    """The first decoder layer's gates while it reads the target prefixes from the initial state of the
    sources, first with the encoder's states, then with other (randomly shifted) ones."""
    batch = collate(SOURCES, TARGETS, [0, 1, 2])
    encoded = model.encode(batch.source, batch.source_lengths)
    state = model.initial_state(encoded)
    states = encoded.states + torch.randn(encoded.states.shape)
    other = Encoded(states, model.attention_key(states), encoded.mask)
    return (first_layer_gates(model, batch.target_input, encoded, state),
            first_layer_gates(model, batch.target_input, other, state))


@pytest.mark.parametrize("decoder", DECODERS)
def test_encoder_states_reach_the_first_decoder_layers_gates_at_every_step(decoder: str) -> None:
    """Target prefix and initial state held fixed, other encoder states change the first decoder layer's gates
    at every step of every sentence in the conditional decoder; the attention-on-top decoder (the model before
    issue 18) reads the source only through its initial state, so there they stay as they were."""
    before, after = gates_with_other_encoder_states(small_model(decoder=decoder).eval())
    changed = (before - after).abs().amax(dim=-1)  # (T, B)
    if decoder == "conditional":
        assert (changed > 1e-4).all(), changed
    else:
        assert torch.equal(before, after)


def test_the_context_reaches_the_gates_through_its_own_weight() -> None:
    """W_c is a Parameter of its own: zeroed, the source no longer reaches the context update's gates."""
    model = small_model().eval()
    context_to_gate = model.decoder.context_update.weight_ih_l0
    assert context_to_gate.shape == (4 * 6, 6)  # (4H, D): D = H, the states of a 2-layer encoder
    with torch.no_grad():
        context_to_gate.zero_()
    torch.testing.assert_close(*gates_with_other_encoder_states(model))


@pytest.mark.parametrize("decoder", DECODERS)
def test_gate_matrices_split_the_weights_into_the_authors_blocks_and_the_input_blocks(decoder: str) -> None:
    model = small_model(decoder=decoder, encoder_layers=2, decoder_layers=2)
    recurrent, inputs = model.gate_matrices("recurrent"), model.gate_matrices("input")
    weights = [name for name, _ in model.named_parameters() if ".weight_ih" in name or ".weight_hh" in name]
    assert sorted(recurrent + inputs) == sorted(weights) and not set(recurrent) & set(inputs)
    context_to_gate = ["decoder.context_update.weight_ih_l0"] if decoder == "conditional" else []
    assert set(recurrent) == {name for name in weights if ".weight_hh" in name} | set(context_to_gate)
    with pytest.raises(ValueError, match="kind must be"):
        model.gate_matrices("output")


def test_unknown_decoder_is_refused() -> None:
    with pytest.raises(ValueError, match="decoder must be one of"):
        small_model(decoder="on-top")
