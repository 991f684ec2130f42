"""g2lstm.compress: the paper's low-precision and low-rank compression of the gate weights.

Each compressed block is checked against the direct formula applied to the dense weights, everything else
against the weights before compression, bit for bit. A compressed layer must compute what a dense layer
holding the compressed values computes, in training and in evaluation, pass gradients on, survive a
checkpoint and take less space.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from g2lstm import G2LSTM
from g2lstm.compress import (
    GATES,
    CompressedGates,
    compress,
    compressed_gates,
    compression_config,
    count_parameters_and_bytes,
    restore_compressed,
    stored_gates,
)
from g2lstm.lm.model import AWDLSTM, LanguageModelSpec
from g2lstm.train import load_checkpoint, save_checkpoint

ROUND, CLIP = 0.2, 0.4


class Tagger(nn.Module):
    """A plain nn.LSTM inside a container, as users hold one."""

    def __init__(self, input_size: int = 5, hidden: int = 6, num_layers: int = 2) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden, num_layers)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0])


def matrix_names(lstm: G2LSTM | nn.LSTM) -> list[str]:
    suffixes = ("", "_reverse") if lstm.bidirectional else ("",)
    return [
        f"{kind}_l{layer}{suffix}"
        for layer in range(lstm.num_layers)
        for suffix in suffixes
        for kind in ("weight_ih", "weight_hh")
    ]


def wide_lstm(dtype: torch.dtype = torch.float32, **options) -> G2LSTM:
    """A G2LSTM (input 5, hidden 6) with weights spread over about ±1, so rounding by 0.2 changes them."""
    lstm = G2LSTM(5, 6, dtype=dtype, **options)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.uniform_(-1.0, 1.0)
    return lstm


def dense_with_compressed_values(original: G2LSTM, compressed: G2LSTM) -> G2LSTM:
    """A copy of the uncompressed ``original`` whose weight matrices hold the compressed layer's values."""
    dense = copy.deepcopy(original)
    with torch.no_grad():
        for name in matrix_names(dense):
            getattr(dense, name).copy_(getattr(compressed, name))
    return dense


def expected_block(block: Tensor, gate: str, gates: tuple[str, ...], **settings) -> Tensor:
    """The direct formula for one gate block: round / round & clip / truncated SVD, or the block itself."""
    if gate not in gates:
        return block
    if "rank" in settings:
        u, s, vh = torch.linalg.svd(block, full_matrices=False)
        k = settings["rank"]
        return u[:, :k] @ torch.diag(s[:k]) @ vh[:k]
    rounded = torch.round(block / settings["round"]) * settings["round"]
    clip = settings.get("clip")
    return rounded if clip is None else rounded.clamp(-clip, clip)


SETTINGS = {
    "round": dict(round=ROUND),
    "round-clip": dict(round=ROUND, clip=CLIP),
    "rank": dict(rank=2),
}
ARCHITECTURES = {
    "2-layer": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "2-layer-bidirectional-no-bias": dict(num_layers=2, bidirectional=True, bias=False),
    "2-layer-projection": dict(num_layers=2, proj_size=3),
}


@pytest.mark.parametrize("gates", [("input", "forget"), GATES, ("cell",)], ids=["paper", "all", "cell"])
@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("architecture", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_each_gate_block_is_compressed_on_its_own_and_the_rest_is_untouched(architecture, settings, gates):
    lstm = wide_lstm(torch.float64, **architecture)
    before = {name: tensor.clone() for name, tensor in lstm.state_dict().items()}
    biases = {name: parameter for name, parameter in lstm.named_parameters() if name.startswith("bias")}
    report = compress(lstm, **settings, gates=gates)

    hidden = lstm.hidden_size
    for name in matrix_names(lstm):
        assert parametrize.is_parametrized(lstm, name) and name not in dict(lstm.named_parameters())
        rebuilt = getattr(lstm, name)
        for index, gate in enumerate(GATES):
            block = before[name][index * hidden : (index + 1) * hidden]
            expected = expected_block(block, gate, gates, **settings)
            got = rebuilt[index * hidden : (index + 1) * hidden]
            if gate in gates and "rank" in settings:
                torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
                assert torch.linalg.matrix_rank(got) == settings["rank"]
            else:
                assert torch.equal(got, expected), (name, gate)
            if gate in gates:
                error = torch.linalg.matrix_norm(block - got) / torch.linalg.matrix_norm(block)
                assert report.errors[f"{name}.{gate}"] == pytest.approx(error.item(), rel=1e-9)
    for name, parameter in biases.items():
        assert getattr(lstm, name) is parameter and torch.equal(parameter, before[name])
    for name in (name for name in before if name.startswith("weight_hr")):  # no gate blocks: left alone
        assert not parametrize.is_parametrized(lstm, name) and torch.equal(getattr(lstm, name), before[name])
    assert len(report.errors) == len(matrix_names(lstm)) * len(gates)
    assert report.layers == [""] and report.converted == []


def test_round_and_clip_leave_the_grid_of_the_paper_stored_as_int8_codes():
    lstm = wide_lstm()
    compress(lstm, round=ROUND, clip=CLIP)
    for name in matrix_names(lstm):
        for gate in ("input", "forget"):
            kind, (codes, step) = stored_gates(lstm, name)[gate]
            assert kind == "round" and codes.dtype == torch.int8 and step.item() == pytest.approx(ROUND)
            assert set(codes.unique().tolist()) <= {-2, -1, 0, 1, 2}
        values = getattr(lstm, name)[: 2 * lstm.hidden_size]
        assert values.abs().max() <= CLIP * (1 + 1e-6)
        assert torch.equal(values, torch.round(values / ROUND) * ROUND)


def test_codes_widen_to_int16_when_int8_cannot_hold_them():
    lstm = wide_lstm()
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(100.0)  # up to 100 / 0.2 = 500 steps
    original = copy.deepcopy(lstm)
    compress(lstm, round=ROUND)
    assert stored_gates(lstm, "weight_hh_l0")["input"][1][0].dtype == torch.int16
    assert stored_gates(lstm, "weight_ih_l0")["input"][1][0].dtype == torch.int16  # one dtype per layer
    assert compression_config(lstm)[""]["codes"] == "int16"
    expected = torch.round(original.weight_hh_l0 / ROUND) * ROUND
    assert torch.equal(lstm.weight_hh_l0[:12], expected[:12])


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_an_nn_lstm_in_a_container_is_converted_and_compressed(settings):
    model = Tagger()
    original = copy.deepcopy(model.rnn)
    report = compress(model, **settings)
    assert isinstance(model.rnn, G2LSTM) and model.rnn.gate == "lstm"
    assert report.layers == ["rnn"] and report.converted == ["rnn"]
    assert compression_config(model)["rnn"]["converted"] is True
    reference = nn.LSTM(5, 6, 2)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            compressed = name.startswith("weight")
            parameter.copy_(getattr(model.rnn, name) if compressed else getattr(original, name))
    x = torch.randn(4, 3, 5)
    for training in (False, True):
        model.train(training)
        reference.train(training)
        torch.testing.assert_close(model.rnn(x)[0], reference(x)[0], rtol=0, atol=1e-6)


def test_a_bare_nn_lstm_cannot_be_replaced_in_place():
    with pytest.raises(TypeError, match="from_lstm"):
        compress(nn.LSTM(3, 4), round=ROUND)


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_compressed_layer_computes_what_a_dense_layer_with_its_values_computes(settings):
    options = dict(num_layers=2, bidirectional=True, dropout=0.3, weight_dropout=0.4, noise_p=0.5)
    original = wide_lstm(**options)
    lstm = copy.deepcopy(original)
    compress(lstm, **settings)
    dense = dense_with_compressed_values(original, lstm)
    x = torch.randn(6, 3, 5)
    for training in (True, False):  # training: the fused kernel with noise, DropConnect and dropout
        lstm.train(training)
        dense.train(training)
        torch.manual_seed(7)
        output, (h, c) = lstm(x)
        torch.manual_seed(7)
        expected, (expected_h, expected_c) = dense(x)
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close((h, c), (expected_h, expected_c), rtol=0, atol=1e-6)


@pytest.mark.parametrize("settings", [dict(round=ROUND), dict(rank=2)], ids=["round", "rank"])
def test_gradients_reach_dense_blocks_biases_and_factors(settings):
    original = wide_lstm(torch.float64)
    lstm = copy.deepcopy(original)
    compress(lstm, **settings)
    dense = dense_with_compressed_values(original, lstm)
    x = torch.randn(5, 2, 5, dtype=torch.float64)
    lstm.train()
    dense.train()
    for module in (lstm, dense):
        torch.manual_seed(3)
        module(x)[0].square().sum().backward()

    hidden = lstm.hidden_size
    torch.testing.assert_close(lstm.bias_hh_l0.grad, dense.bias_hh_l0.grad)
    for name in matrix_names(lstm):
        dense_grad = getattr(dense, name).grad.split(hidden)
        for gate, expected in zip(GATES, dense_grad):
            kind, tensors = stored_gates(lstm, name)[gate]
            if gate in ("cell", "output"):
                torch.testing.assert_close(tensors[0].grad, expected)
            elif "rank" in settings:  # d(u v) = du v + u dv
                u, v = tensors
                torch.testing.assert_close(u.grad, expected @ v.detach().T)
                torch.testing.assert_close(v.grad, u.detach().T @ expected)
            else:
                assert kind == "round" and not tensors[0].requires_grad
    trainable = {name for name, parameter in lstm.named_parameters() if parameter.grad is not None}
    assert trainable == {name for name, _ in lstm.named_parameters()}


def test_state_dict_holds_only_the_compact_tensors():
    lstm = wide_lstm()
    compress(lstm, rank=3)
    state = lstm.state_dict()
    assert not any(key.startswith("weight_") for key in state)
    # originals: the factors of the input and forget blocks, then the dense cell and output blocks
    shapes = [(6, 3), (3, 5), (6, 3), (3, 5), (6, 5), (6, 5)]
    for index, shape in enumerate(shapes):
        assert state[f"parametrizations.weight_ih_l0.original{index}"].shape == shape
    assert state["parametrizations.weight_hh_l0.original5"].shape == (6, 6)
    assert not any(key.endswith(("step", "codes")) for key in state)
    assert isinstance(compressed_gates(lstm, "weight_ih_l0"), CompressedGates)


def test_counts_are_exact_for_a_small_layer():
    # input 3, hidden 2: weight_ih (8, 3), weight_hh (8, 2), two biases (8,): 24 + 16 + 16 = 56 float32.
    assert count_parameters_and_bytes(G2LSTM(3, 2)) == (56, 224)
    lstm = G2LSTM(3, 2)
    report = compress(lstm, round=ROUND)
    # codes: 2 blocks of (2, 3) and 2 of (2, 2) = 20 int8; a step per matrix: 2 floats;
    # dense: 12 + 8 + 16 = 36.
    assert (report.parameters_before, report.bytes_before) == (56, 224)
    assert (report.parameters_after, report.bytes_after) == (20 + 2 + 36, 20 + 8 + 4 * 36)
    assert count_parameters_and_bytes(lstm) == (58, 172)
    report = compress(G2LSTM(3, 2), rank=1)
    # factors: (2x1 + 1x3) * 2 + (2x1 + 1x2) * 2 = 18 floats; dense 36 floats.
    assert (report.parameters_after, report.bytes_after) == (54, 216)
    report = compress(G2LSTM(3, 2), round=ROUND, gates=GATES)
    assert (report.parameters_after, report.bytes_after) == (40 + 2 + 16, 40 + 8 + 64)


def test_tied_weights_count_once():
    model = AWDLSTM(LanguageModelSpec(vocab_size=10, emb_size=4, hidden_size=6, num_layers=2))
    values, size = count_parameters_and_bytes(model)
    assert values == sum(parameter.numel() for parameter in model.parameters())
    assert size == 4 * values


def test_awd_model_compresses_trains_and_reloads(tmp_path: Path):
    spec = LanguageModelSpec(vocab_size=12, emb_size=4, hidden_size=6, num_layers=3)
    model = AWDLSTM(spec)
    report = compress(model, rank=2)
    assert report.layers == ["layers.0", "layers.1", "layers.2"]
    assert len(report.errors) == 3 * 2 * 2
    assert "rank 2" in report.summary()
    words = torch.randint(0, 12, (7, 2))
    model.train()
    result = model(words, model.init_hidden(2))
    model.decode(result.output).sum().backward()
    assert stored_gates(model.layers[1], "weight_hh_l0")["forget"][1][0].grad is not None

    path = tmp_path / "model.pt"
    save_checkpoint(path, {"compression": compression_config(model), "model": model.state_dict()})
    checkpoint = load_checkpoint(path)
    restored = AWDLSTM(spec)
    restore_compressed(restored, checkpoint["compression"])
    restored.load_state_dict(checkpoint["model"])
    model.eval()
    restored.eval()
    expected = model(words, model.init_hidden(2)).output
    assert torch.equal(restored(words, restored.init_hidden(2)).output, expected)


def file_size(model: nn.Module, path: Path) -> int:
    save_checkpoint(path, {"compression": compression_config(model), "model": model.state_dict()})
    return path.stat().st_size


@pytest.mark.parametrize(
    "settings, largest_share",
    [
        (dict(round=ROUND, clip=CLIP), 0.7),
        (dict(rank=4), 0.7),
        (dict(round=ROUND, clip=CLIP, gates=GATES), 0.35),
    ],
    ids=["round-clip", "rank-4", "round-clip-all-gates"],
)
def test_checkpoint_round_trip_with_a_smaller_file(tmp_path: Path, settings, largest_share):
    torch.manual_seed(0)
    model = Tagger(input_size=64, hidden=64, num_layers=2)
    dense_size = file_size(model, tmp_path / "dense.pt")
    compress(model, **settings)
    size = file_size(model, tmp_path / "compressed.pt")
    assert size < largest_share * dense_size, (size, dense_size)

    checkpoint = load_checkpoint(tmp_path / "compressed.pt")
    restored = Tagger(input_size=64, hidden=64, num_layers=2)
    restore_compressed(restored, checkpoint["compression"])
    restored.load_state_dict(checkpoint["model"])
    assert compression_config(restored) == compression_config(model)
    x = torch.randn(5, 2, 64)
    model.eval()
    restored.eval()
    assert torch.equal(restored(x), model(x))


def test_loading_codes_of_another_width_is_refused():
    wide, narrow = wide_lstm(), wide_lstm()
    with torch.no_grad():
        wide.weight_ih_l0.mul_(100.0)
    compress(wide, round=ROUND)
    compress(narrow, round=ROUND)
    with pytest.raises(RuntimeError, match="int16 codes"):
        narrow.load_state_dict(wide.state_dict())


def test_an_uncompressed_model_has_no_config_and_restores_as_is():
    model = Tagger()
    assert compression_config(model) is None
    restore_compressed(model, None)
    assert isinstance(model.rnn, nn.LSTM)


@pytest.mark.parametrize(
    "module, settings, error, match",
    [
        (None, dict(), ValueError, "exactly one of round= .* got neither"),
        (None, dict(round=0.2, rank=2), ValueError, "got both"),
        (None, dict(rank=2, clip=0.4), ValueError, "clip= applies to low precision only"),
        (None, dict(round=0.0), ValueError, "round must be positive and finite, got 0.0"),
        (None, dict(round=float("nan")), ValueError, "round must be positive"),
        (None, dict(round="0.2"), TypeError, "round must be a number, got str"),
        (None, dict(round=True), TypeError, "round must be a number, got bool"),
        (None, dict(round=0.2, clip=-1.0), ValueError, "clip must be positive"),
        (None, dict(round=0.2, clip=0.5), ValueError, "clip must be a whole multiple of round"),
        (None, dict(round=0.2, clip=0.1), ValueError, "clip must be a whole multiple of round"),
        (None, dict(rank=0), ValueError, "rank must be positive and finite, got 0"),
        (None, dict(rank=2.0), TypeError, "rank must be an int, got float"),
        (None, dict(rank=6), ValueError, r"rank=6 exceeds the smaller side of the 6x5 gate blocks of rnn\."),
        (None, dict(round=1e-6), ValueError, "too fine .* beyond int16"),
        (None, dict(round=0.2, gates="input"), TypeError, "gates must be a sequence of gate names"),
        (None, dict(round=0.2, gates=("input", "gate")), ValueError, r"names from .* got \['gate'\]"),
        (None, dict(round=0.2, gates=()), ValueError, "at least one"),
        (None, dict(round=0.2, gates=("input", "input")), ValueError, "each gate once"),
        (nn.Sequential(nn.Linear(2, 2)), dict(round=0.2), ValueError, "holds no G2LSTM or nn.LSTM layer"),
        ("not a module", dict(round=0.2), TypeError, "module must be a torch.nn.Module, got str"),
    ],
)
def test_bad_arguments_are_refused_and_leave_the_module_unchanged(module, settings, error, match):
    model = Tagger() if module is None else module
    with pytest.raises(error, match=match):
        compress(model, **settings)
    if module is None:
        assert isinstance(model.rnn, nn.LSTM)


def test_compressing_twice_is_refused():
    lstm = wide_lstm()
    compress(lstm, round=ROUND)
    with pytest.raises(ValueError, match="already compressed"):
        compress(lstm, rank=2)


def test_restore_refuses_a_config_that_does_not_fit_the_model():
    model = Tagger()
    compress(model, round=ROUND)
    entry = compression_config(model)["rnn"]
    with pytest.raises(ValueError, match="names the layer 'lstm', which the module lacks"):
        restore_compressed(Tagger(), {"lstm": entry})
    with pytest.raises(ValueError, match="must have the keys"):
        restore_compressed(Tagger(), {"rnn": {"round": 0.2}})
    with pytest.raises(ValueError, match="layer 'rnn': round must be positive"):
        restore_compressed(Tagger(), {"rnn": {**entry, "round": -1.0}})
    with pytest.raises(ValueError, match="codes must be one of"):
        restore_compressed(Tagger(), {"rnn": {**entry, "codes": "int32"}})
    with pytest.raises(TypeError, match="expects layer 'rnn' to be a G2LSTM, got LSTM"):
        restore_compressed(Tagger(), {"rnn": {**entry, "converted": False}})
    with pytest.raises(ValueError, match="already compressed"):
        restore_compressed(model, {"rnn": entry})
    with pytest.raises(TypeError, match="must be a dict"):
        restore_compressed(Tagger(), [entry])


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_a_compressed_layer_is_still_an_lstm_to_the_module_api(settings):
    """G2LSTM knows nothing of compression: to_lstm, all_weights, reset_parameters and an optimizer work."""
    lstm = wide_lstm(num_layers=2)
    compress(lstm, **settings)
    x = torch.randn(4, 3, 5)
    lstm.eval()
    converted = lstm.to_lstm().eval()
    torch.testing.assert_close(converted(x)[0], lstm(x)[0], rtol=0, atol=1e-6)
    for group, names in zip(lstm.all_weights, ["l0", "l1"]):
        assert torch.equal(group[1], getattr(lstm, f"weight_hh_{names}"))
    torch.manual_seed(0)
    lstm.reset_parameters()
    bound = 1 / lstm.hidden_size**0.5
    for name in matrix_names(lstm):  # new uniform weights, compressed the same way
        assert compressed_gates(lstm, name) is not None
        if "rank" in settings:
            assert torch.linalg.matrix_rank(getattr(lstm, name)[: lstm.hidden_size]) <= settings["rank"]
        assert getattr(lstm, name)[2 * lstm.hidden_size :].abs().max() <= bound  # the dense blocks
    assert lstm.bias_ih_l0.abs().max() <= bound
    optimizer = torch.optim.SGD(lstm.parameters(), lr=0.1)
    lstm.train()
    before = {name: value.detach().clone() for name, value in lstm.named_parameters()}
    lstm(x)[0].square().sum().backward()
    optimizer.step()
    changed = {name for name, value in lstm.named_parameters() if not torch.equal(value, before[name])}
    assert changed == set(before)  # factors (low rank) and dense blocks train; codes are buffers


def test_a_state_dict_loads_into_a_freshly_compressed_module():
    source = wide_lstm()
    compress(source, rank=2)
    target = wide_lstm()
    compress(target, rank=2)
    target.load_state_dict(source.state_dict())
    for name in matrix_names(source):
        assert torch.equal(getattr(target, name), getattr(source, name))


def test_the_module_holds_no_compression_code():
    source = (Path(__file__).parent.parent / "src" / "g2lstm" / "lstm.py").read_text()
    assert "compress" not in source


def two_lstms() -> nn.ModuleDict:
    """Two G2LSTMs in a container, as an encoder and a decoder are held."""
    return nn.ModuleDict({"first": wide_lstm(num_layers=2), "second": wide_lstm()})


def run_both(model: nn.ModuleDict, x: Tensor) -> Tensor:
    return torch.cat([model["first"](x)[0], model["second"](x)[0]])


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_matrices_choose_which_weights_are_compressed_and_survive_a_checkpoint(tmp_path: Path, settings):
    model = two_lstms().eval()
    chosen = ["first.weight_hh_l1", "second.weight_ih_l0"]
    untouched = {name: p for name, p in model.named_parameters() if name not in chosen}
    before = {name: p.detach().clone() for name, p in untouched.items()}
    report = compress(model, **settings, matrices=chosen)
    assert parametrize.is_parametrized(model["first"], "weight_hh_l1")
    assert parametrize.is_parametrized(model["second"], "weight_ih_l0")
    assert not parametrize.is_parametrized(model["first"], "weight_hh_l0")
    for name, parameter in untouched.items():  # the same Parameter objects, with the same values
        assert model.get_parameter(name) is parameter and torch.equal(parameter, before[name])
    assert sorted(report.errors) == [f"first.weight_hh_l1.{gate}" for gate in ("forget", "input")] + [
        f"second.weight_ih_l0.{gate}" for gate in ("forget", "input")
    ]
    config = compression_config(model)
    assert (config["first"]["matrices"], config["second"]["matrices"]) == (["weight_hh_l1"], ["weight_ih_l0"])

    save_checkpoint(tmp_path / "model.pt", {"compression": config, "model": model.state_dict()})
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    restored = two_lstms().eval()
    restore_compressed(restored, checkpoint["compression"])
    restored.load_state_dict(checkpoint["model"])
    x = torch.randn(4, 3, 5)
    assert torch.equal(run_both(restored, x), run_both(model, x))


def test_layers_without_a_chosen_matrix_are_left_alone():
    model = Tagger()
    model.extra = nn.LSTM(5, 6)
    compress(model, round=ROUND, matrices=["rnn.weight_hh_l1"])
    assert isinstance(model.rnn, G2LSTM) and isinstance(model.extra, nn.LSTM)  # only the chosen one converted
    assert list(compression_config(model)) == ["rnn"]
    assert [name for name, _ in model.rnn.named_parameters(recurse=False) if name.startswith("weight")] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "weight_ih_l1",
    ]


def test_a_config_saved_before_matrices_existed_restores_every_matrix():
    model = two_lstms().eval()
    compress(model, rank=2)
    config = compression_config(model)
    old = {
        path: {key: value for key, value in entry.items() if key != "matrices"}
        for path, entry in config.items()
    }
    restored = two_lstms().eval()
    restore_compressed(restored, old)
    restored.load_state_dict(model.state_dict())
    assert compression_config(restored) == config


@pytest.mark.parametrize(
    "matrices, error, match",
    [
        ("rnn.weight_hh_l0", TypeError, "matrices must be a sequence of weight names"),
        (
            ["rnn.weight_hh_l9"],
            ValueError,
            r"must name weight matrices .*rnn\.weight_hh_l1.* got \['rnn.weight_hh_l9'\]",
        ),
        ([], ValueError, "got none"),
    ],
)
def test_bad_matrices_are_refused_and_leave_the_module_unchanged(matrices, error, match):
    model = Tagger()
    with pytest.raises(error, match=match):
        compress(model, round=ROUND, matrices=matrices)
    assert isinstance(model.rnn, nn.LSTM)


def test_restore_refuses_matrices_the_layer_lacks():
    model = Tagger()
    compress(model, round=ROUND, matrices=["rnn.weight_hh_l0"])
    entry = compression_config(model)["rnn"]
    with pytest.raises(ValueError, match=r"names matrices it lacks: \['weight_hh_l7'\]"):
        restore_compressed(Tagger(), {"rnn": {**entry, "matrices": ["weight_hh_l7"]}})
    with pytest.raises(TypeError, match="matrices must be a non-empty list"):
        restore_compressed(Tagger(), {"rnn": {**entry, "matrices": "weight_hh_l0"}})
