"""g2lstm.record_gates: what it records, in which layout, and that it leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import g2lstm
from g2lstm import G2LSTM, G2LSTMCell
from g2lstm.functional import gate_bits, noise_from_bits, noise_seed
from g2lstm.kernels import lstm_sequence_reference

INPUT_SIZE, HIDDEN, STEPS, BATCH = 3, 4, 5, 2


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_gate_shapes_are_time_batch_directions_times_hidden(training, bidirectional):
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2, bidirectional=bidirectional).train(training)
    directions = 2 if bidirectional else 1
    with g2lstm.record_gates(module) as recording:
        output, _ = module(torch.randn(STEPS, BATCH, INPUT_SIZE))
    assert recording.num_layers == 2
    for layer in range(2):
        for gate in ("input", "forget"):
            (values,) = recording.gates(layer, gate)
            assert values.shape == (STEPS, BATCH, directions * HIDDEN) == output.shape
            assert ((values > 0) & (values < 1)).all()


def test_batch_first_layout_follows_the_output():
    module = G2LSTM(INPUT_SIZE, HIDDEN, batch_first=True, gate="lstm")
    x = torch.randn(BATCH, STEPS, INPUT_SIZE)
    with g2lstm.record_gates(module) as recording:
        module(x)
    (batch_first,) = recording.gates(0, "input")
    assert batch_first.shape == (BATCH, STEPS, HIDDEN)
    time_major = G2LSTM(INPUT_SIZE, HIDDEN, gate="lstm")
    time_major.load_state_dict(module.state_dict())
    with g2lstm.record_gates(time_major) as recording:
        time_major(x.transpose(0, 1))
    assert torch.equal(batch_first.transpose(0, 1), recording.gates(0, "input")[0])


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_records_unbatched_gates(batch_first):
    module = G2LSTM(INPUT_SIZE, HIDDEN, bidirectional=True, batch_first=batch_first, gate="lstm")
    x = torch.randn(STEPS, INPUT_SIZE)
    with g2lstm.record_gates(module) as recording:
        module(x)
        module(x.unsqueeze(0 if batch_first else 1))
    unbatched, batched = recording.gates(0, "forget")
    assert unbatched.shape == (STEPS, 2 * HIDDEN)
    assert torch.equal(unbatched, batched.squeeze(0 if batch_first else 1))


def test_packed_input_records_packed_sequences_matching_the_output():
    module = G2LSTM(INPUT_SIZE, HIDDEN, bidirectional=True, gate="lstm")
    x = torch.randn(STEPS, 3, INPUT_SIZE)
    lengths = torch.tensor([3, 5, 2])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    with g2lstm.record_gates(module) as recording:
        output, _ = module(packed)
    (gates,) = recording.gates(0, "input")
    assert isinstance(gates, PackedSequence)
    assert gates.data.shape == (int(lengths.sum()), 2 * HIDDEN)
    assert torch.equal(gates.batch_sizes, output.batch_sizes)
    assert torch.equal(gates.sorted_indices, output.sorted_indices)
    assert torch.equal(gates.unsorted_indices, output.unsorted_indices)
    # sequence k's gates equal those of running sequence k alone
    for k, length in enumerate(lengths.tolist()):
        with g2lstm.record_gates(module) as alone:
            module(x[:length, k])
        padded, _ = nn.utils.rnn.pad_packed_sequence(gates)
        torch.testing.assert_close(padded[:length, k], alone.gates(0, "input")[0], rtol=0, atol=1e-6)


def test_each_forward_call_adds_an_entry_and_clear_forgets_them():
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2).eval()
    with g2lstm.record_gates(module) as recording:
        for steps in (2, 3, 4):
            module(torch.randn(steps, BATCH, INPUT_SIZE))
        assert [v.shape[0] for v in recording.gates(1, "input")] == [2, 3, 4]
        assert len(recording.gates(0, "forget")) == 3
        recording.clear()
        assert recording.gates(0, "input") == []
        module(torch.randn(6, BATCH, INPUT_SIZE))
        assert [v.shape[0] for v in recording.gates(0, "input")] == [6]


def test_layers_are_numbered_across_modules_in_a_container():
    modules = nn.ModuleList([G2LSTM(INPUT_SIZE, HIDDEN), G2LSTM(HIDDEN, 5), G2LSTM(5, 6)]).eval()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE)
    with g2lstm.record_gates(modules) as recording:
        for module in modules:
            x, _ = module(x)
    assert recording.num_layers == 3
    assert [recording.gates(k, "input")[0].shape[-1] for k in range(3)] == [HIDDEN, 5, 6]
    with pytest.raises(ValueError, match="layer"):
        recording.gates(3, "input")


def test_multi_layer_modules_take_consecutive_numbers():
    container = nn.ModuleList([G2LSTM(INPUT_SIZE, HIDDEN, 2), G2LSTMCell(HIDDEN, 5), G2LSTM(5, 6, 2)]).eval()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE)
    with g2lstm.record_gates(container) as recording:
        out, _ = container[0](x)
        h, _ = container[1](out[-1])
        container[2](h.unsqueeze(0))
    assert recording.num_layers == 5
    widths = [recording.gates(k, "forget")[0].shape[-1] for k in range(5)]
    assert widths == [HIDDEN, HIDDEN, 5, 6, 6]
    assert recording.gates(2, "input")[0].shape == (BATCH, 5)


def test_cell_records_its_gates_every_step():
    cell = G2LSTMCell(INPUT_SIZE, HIDDEN, gate="lstm")
    x = torch.randn(BATCH, INPUT_SIZE)
    with g2lstm.record_gates(cell) as recording:
        h, c = cell(x)
        cell(x, (h, c))
        cell(x[0])
    values = recording.gates(0, "input")
    assert [tuple(v.shape) for v in values] == [(BATCH, HIDDEN), (BATCH, HIDDEN), (HIDDEN,)]
    pre = F.linear(x, cell.weight_ih, cell.bias_ih) + cell.bias_hh
    torch.testing.assert_close(values[0], torch.sigmoid(pre[:, :HIDDEN]).detach(), rtol=0, atol=1e-6)


def test_recorded_values_are_detached_cpu_copies():
    module = G2LSTM(INPUT_SIZE, HIDDEN, noise_p=1.0).train()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, requires_grad=True)
    with g2lstm.record_gates(module) as recording:
        output, _ = module(x)
        output.sum().backward()  # recording does not get in the way of training
        snapshot = recording.gates(0, "input")[0].clone()
        module(x)
    first, second = recording.gates(0, "input")
    for values in (first, second):
        assert not values.requires_grad and values.grad_fn is None
        assert values.device.type == "cpu"
    assert torch.equal(first, snapshot), "a later forward pass changed an earlier recording"
    assert not torch.equal(first, second)
    # the list handed out is a copy: changing it does not change the recording
    recording.gates(0, "input").clear()
    assert len(recording.gates(0, "input")) == 2


@pytest.mark.parametrize("noise_p", [1.0, 0.2])
def test_training_gates_are_the_ones_the_cell_used(noise_p):
    """Replay the forward pass with the reference kernel, drawing the same noise from the same seed."""
    module = G2LSTM(INPUT_SIZE, HIDDEN, dtype=torch.float64, temperature=0.9, noise_p=noise_p).train()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    torch.manual_seed(5)
    with g2lstm.record_gates(module) as recording:
        output, (h_n, c_n) = module(x)

    torch.manual_seed(5)
    with torch.no_grad():
        rows = x.reshape(-1, INPUT_SIZE)
        gate_inputs = F.linear(rows, module.weight_ih_l0, module.bias_ih_l0 + module.bias_hh_l0)
        bits = gate_bits(noise_seed(), rows.shape[0], HIDDEN, torch.float64)
        noise = noise_from_bits(bits, torch.float64, noise_p, 1e-3)
        gate_inputs[:, : 2 * HIDDEN] += noise
        zeros = torch.zeros(BATCH, HIDDEN, dtype=torch.float64)
        ref_out, ref_h, ref_c, ref_gates = lstm_sequence_reference(
            gate_inputs, zeros, zeros, module.weight_hh_l0, [BATCH] * STEPS, scale=1 / 0.9
        )
    ref_gates = ref_gates.view(STEPS, BATCH, 4 * HIDDEN)
    input_gates, forget_gates = ref_gates[..., :HIDDEN], ref_gates[..., HIDDEN : 2 * HIDDEN]
    torch.testing.assert_close(recording.gates(0, "input")[0], input_gates, rtol=0, atol=1e-12)
    torch.testing.assert_close(recording.gates(0, "forget")[0], forget_gates, rtol=0, atol=1e-12)
    torch.testing.assert_close(output, ref_out.view(STEPS, BATCH, HIDDEN), rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n[0], ref_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_n[0], ref_c, rtol=0, atol=1e-12)


def test_training_gates_reproduce_the_output_step_by_step():
    """Independent of how the noise is drawn: the recorded i, f with the noise-free g, o give h_t."""
    module = G2LSTM(INPUT_SIZE, HIDDEN, dtype=torch.float64, noise_p=1.0).train()
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    with g2lstm.record_gates(module) as recording, torch.no_grad():
        output, _ = module(x)
    i, f = recording.gates(0, "input")[0], recording.gates(0, "forget")[0]
    h = c = torch.zeros(BATCH, HIDDEN, dtype=torch.float64)
    with torch.no_grad():
        for t in range(STEPS):
            pre = F.linear(x[t], module.weight_ih_l0, module.bias_ih_l0)
            pre = pre + F.linear(h, module.weight_hh_l0, module.bias_hh_l0)
            g, o = torch.tanh(pre[:, 2 * HIDDEN : 3 * HIDDEN]), torch.sigmoid(pre[:, 3 * HIDDEN :])
            c = f[t] * c + i[t] * g
            h = o * torch.tanh(c)
            torch.testing.assert_close(output[t], h, rtol=0, atol=1e-12)
    # and the noise was really there
    assert not torch.allclose(i, torch.sigmoid(pre[:, :HIDDEN]))


def test_nothing_is_recorded_outside_the_block():
    module = G2LSTM(INPUT_SIZE, HIDDEN)
    assert module._gate_sink is None
    with g2lstm.record_gates(module) as recording:
        assert module._gate_sink is not None
        module(torch.randn(STEPS, BATCH, INPUT_SIZE))
    assert module._gate_sink is None
    module(torch.randn(STEPS, BATCH, INPUT_SIZE))
    assert len(recording.gates(0, "input")) == 1


def test_sinks_are_removed_after_an_exception_in_the_block():
    container = nn.Sequential(nn.Linear(2, 2), nn.ModuleList([G2LSTM(INPUT_SIZE, HIDDEN), G2LSTMCell(2, 3)]))
    with pytest.raises(KeyError, match="boom"):
        with g2lstm.record_gates(container):
            raise KeyError("boom")
    assert all(m._gate_sink is None for m in container.modules() if isinstance(m, (G2LSTM, G2LSTMCell)))
    with g2lstm.record_gates(container):  # and recording can start again
        pass


def test_bad_layer_and_gate_names_raise():
    module = G2LSTM(INPUT_SIZE, HIDDEN, 2)
    with g2lstm.record_gates(module) as recording:
        module(torch.randn(STEPS, BATCH, INPUT_SIZE))
    with pytest.raises(ValueError, match=r"gate must be one of.*'output'"):
        recording.gates(0, "output")
    for layer in (2, -1, 1.0, True, "0"):
        with pytest.raises(ValueError, match=r"layer must be an int in \[0, 2\)"):
            recording.gates(layer, "input")


def test_module_without_g2lstm_raises():
    with pytest.raises(ValueError, match="LSTM.*contains no G2LSTM"):
        with g2lstm.record_gates(nn.LSTM(INPUT_SIZE, HIDDEN)):
            pass
    with pytest.raises(TypeError, match="nn.Module.*Tensor"):
        with g2lstm.record_gates(torch.zeros(3)):
            pass


def test_nested_recording_raises_and_keeps_the_outer_one():
    module = G2LSTM(INPUT_SIZE, HIDDEN)
    with g2lstm.record_gates(module) as outer:
        with pytest.raises(RuntimeError, match="already being recorded"):
            with g2lstm.record_gates(nn.ModuleList([module])):
                pass
        module(torch.randn(STEPS, BATCH, INPUT_SIZE))
    assert len(outer.gates(0, "input")) == 1
