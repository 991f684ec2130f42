"""Half precision: G2 gates under autocast (bfloat16 on CPU, float16 on CUDA) and in low-precision modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from g2lstm import G2LSTM, G2LSTMCell, record_gates
from g2lstm.lm.model import AWDLSTM, LanguageModelSpec

DEVICES = [("cpu", torch.bfloat16)] + ([("cuda", torch.float16)] if torch.cuda.is_available() else [])


def low_precision_input(device: str, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """What an autocast region before the LSTM hands it: a low-precision activation (here large values)."""
    generator = torch.Generator().manual_seed(1)
    x = (torch.randn(30, 6, 12, generator=generator) * scale).to(device)
    projection = torch.eye(12, device=device)
    with torch.autocast(device, dtype=dtype):
        activation = F.linear(x, projection)
    assert activation.dtype == dtype
    return activation


@pytest.mark.parametrize("device, dtype", DEVICES)
@pytest.mark.parametrize("gate", ["g2", "sharpened", "lstm"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_autocast_runs_the_recurrence_in_float32_exactly_as_without_it(
    device: str, dtype: torch.dtype, gate: str, training: bool, scale: float
) -> None:
    torch.manual_seed(0)
    module = (
        G2LSTM(12, 20, num_layers=2, gate=gate, noise_p=1.0, bidirectional=True).to(device).train(training)
    )
    activation = low_precision_input(device, dtype, scale)

    torch.manual_seed(5)
    with torch.autocast(device, dtype=dtype):
        output, (h, c) = module(activation)
        loss = output.float().square().mean()
    torch.manual_seed(5)
    expected, (expected_h, expected_c) = module(activation.float())

    assert output.dtype == h.dtype == c.dtype == torch.float32
    assert torch.equal(output, expected) and torch.equal(h, expected_h) and torch.equal(c, expected_c)
    assert torch.isfinite(output).all() and torch.isfinite(c).all()
    if training:
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize("device, dtype", DEVICES)
def test_autocast_cell_and_packed_input(device: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    cell = G2LSTMCell(12, 20).to(device)
    activation = low_precision_input(device, dtype, 10.0)
    with torch.autocast(device, dtype=dtype):
        h, c = cell(activation[0], (activation[0, :, :1].expand(6, 20), activation[0, :, :1].expand(6, 20)))
    assert h.dtype == torch.float32 and torch.isfinite(h).all() and torch.isfinite(c).all()

    module = G2LSTM(12, 20).to(device)
    packed = torch.nn.utils.rnn.pack_padded_sequence(activation, [30, 25, 20, 9, 3, 1], enforce_sorted=False)
    with torch.autocast(device, dtype=dtype):
        output, _ = module(packed)
    assert output.data.dtype == torch.float32 and torch.isfinite(output.data).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_module_keeps_gates_finite_and_in_range(dtype: torch.dtype) -> None:
    """A module converted to half precision: the noise's logits of uniforms near 0 and 1 must not overflow."""
    torch.manual_seed(0)
    module = G2LSTM(12, 20, num_layers=2, noise_p=1.0).to(dtype)
    inputs = (torch.randn(60, 8, 12) * 30).to(dtype).requires_grad_()
    with record_gates(module) as recording:
        output, (h, c) = module(inputs)
    output.float().square().mean().backward()
    assert output.dtype == dtype and torch.isfinite(output).all() and torch.isfinite(c).all()
    assert torch.isfinite(inputs.grad).all() and all(
        torch.isfinite(p.grad).all() for p in module.parameters()
    )
    for layer in range(2):
        for gate in ("input", "forget"):
            values = recording.gates(layer, gate)[0]
            assert values.dtype == dtype and values.min() >= 0 and values.max() <= 1


def test_language_model_training_step_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    model = AWDLSTM(LanguageModelSpec(vocab_size=50, emb_size=16, hidden_size=24, num_layers=2, gate="g2"))
    words = torch.randint(0, 50, (20, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = model(words[:-1], model.init_hidden(4))
        logits = model.decode(result.output)
        loss = F.cross_entropy(logits.float().flatten(0, 1), words[1:].flatten())
    loss.backward()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
