"""The CUDA path's logic without a GPU: which loop runs where, the Triton import only where it is used,
G2LSTM's calls into the Triton loop (mocked), autocast, and ``flatten_parameters`` with cuDNN mocked.

The Triton loop's numerics are in test_triton_kernel.py; what needs a GPU (speed, cuDNN's real buffer, the
kernels on hardware) is in ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM
from g2lstm.benchmark import kernel_description
from g2lstm.functional import gate_bits, noise_from_bits
from g2lstm.kernels import compiled, cudnn, fused, ops, triton_loop
from g2lstm.kernels.ops import sequence_loop

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def triton_importable(monkeypatch):
    """The Triton loop's module counts as importable (whether or not Triton is installed here)."""
    monkeypatch.setattr(triton_loop, "_loaded", {triton_loop._STEPS_MODULE: object()})


@pytest.fixture
def triton_missing(monkeypatch):
    """Importing the Triton loop's module fails, as where Triton is not installed."""
    monkeypatch.setattr(triton_loop, "_loaded", {})
    monkeypatch.setattr(triton_loop, "_STEPS_MODULE", "g2lstm.kernels._no_such_module")


# ---------------------------------------------------------------------------------------- dispatch


def test_cuda_tensors_run_the_triton_loop_by_default(triton_importable, monkeypatch):
    monkeypatch.delenv(triton_loop.CUDA_KERNEL_ENV, raising=False)
    assert sequence_loop(CUDA, torch.float32) == "triton"
    assert sequence_loop(CUDA, torch.float64, "auto") == "triton"
    assert sequence_loop(CUDA, torch.bfloat16) == "python"  # half precision: the Python loop
    assert sequence_loop(CUDA, torch.float32, "python") == "python"
    monkeypatch.setenv(triton_loop.CUDA_KERNEL_ENV, "python")
    assert sequence_loop(CUDA, torch.float32) == "python"
    assert sequence_loop(CUDA, torch.float32, "triton") == "triton"


def test_cpu_tensors_never_pick_the_triton_loop_by_themselves(triton_importable, monkeypatch):
    monkeypatch.setenv(triton_loop.CUDA_KERNEL_ENV, "triton")  # a CUDA setting: not read for CPU tensors
    monkeypatch.setenv(compiled.KERNEL_ENV, "python")
    assert sequence_loop(CPU, torch.float32) == "python"
    assert sequence_loop(torch.device("meta"), torch.float32) == "python"
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="Triton loop runs on float32 and float64 CUDA tensors"):
        sequence_loop(CPU, torch.float32, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sequence_loop(CPU, torch.float32, "triton") == "triton"  # the interpreter, as the tests use it


def test_choices_are_checked_and_named(triton_importable, monkeypatch):
    with pytest.raises(
        ValueError, match=r"kernel must be one of \('auto', 'compiled', 'triton', 'python'\), got 'cuda'"
    ):
        sequence_loop(CUDA, torch.float32, "cuda")
    with pytest.raises(ValueError, match="kernel='compiled' runs on float32 and float64 CPU tensors only"):
        sequence_loop(CUDA, torch.float32, "compiled")
    with pytest.raises(
        ValueError, match="Triton loop runs on float32 and float64 CUDA tensors.* got torch.float16"
    ):
        sequence_loop(CUDA, torch.float16, "triton")
    monkeypatch.setenv(triton_loop.CUDA_KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="G2LSTM_CUDA_KERNEL must be one of .* got 'fast'"):
        sequence_loop(CUDA, torch.float32)


def test_missing_triton_falls_back_with_one_warning(triton_missing, monkeypatch):
    monkeypatch.delenv(triton_loop.CUDA_KERNEL_ENV, raising=False)
    with pytest.warns(RuntimeWarning, match="could not import Triton.*g2lstm\\[cuda\\]"):
        assert sequence_loop(CUDA, torch.float32) == "python"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sequence_loop(CUDA, torch.float32) == "python"


def test_missing_triton_is_an_error_when_asked_for(triton_missing, monkeypatch):
    monkeypatch.setenv(triton_loop.CUDA_KERNEL_ENV, "triton")
    with pytest.raises(RuntimeError, match="Triton loop was asked for, but Triton could not be imported"):
        sequence_loop(CUDA, torch.float32)


def test_tiles_fit_the_batch():
    assert triton_loop.default_blocks(1).rows == 16  # tl.dot's smallest tile
    assert triton_loop.default_blocks(20).rows == 32
    assert triton_loop.default_blocks(64).rows == 64
    assert triton_loop.default_blocks(300).rows == 64  # then several row tiles
    assert triton_loop._grid(300, 1150, triton_loop.default_blocks(300)) == (72, 5)


def test_float32_products_follow_torchs_matmul_precision():
    default = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert triton_loop._precision() == "ieee"
        torch.set_float32_matmul_precision("high")
        assert triton_loop._precision() == "tf32"
    finally:
        torch.set_float32_matmul_precision(default)


@pytest.mark.parametrize("triton_present", [True, False], ids=["triton-installed", "triton-broken"])
def test_cpu_use_never_imports_the_triton_loop(triton_present):
    """Training and evaluating on the CPU (every gate mode, the CPU kernel switch left alone) never imports
    the step kernels' module, and works where Triton cannot be imported. (torch itself may import Triton:
    the registered operators run through torch._dynamo, which checks for it.)"""
    script = textwrap.dedent(
        f"""
        import sys
        if not {triton_present}:
            sys.modules["triton"] = None  # importing it raises ImportError
        import torch
        from g2lstm import G2LSTM, G2LSTMCell
        for gate in ("g2", "sharpened", "lstm"):
            module = G2LSTM(3, 4, num_layers=2, bidirectional=True, gate=gate)
            module(torch.randn(5, 2, 3))[0].sum().backward()
            module.eval()(torch.randn(5, 2, 3))
            G2LSTMCell(3, 4, gate=gate)(torch.randn(2, 3))[0].sum().backward()
        print(sorted(name for name in sys.modules if "triton_steps" in name))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------- G2LSTM on the CUDA path


@pytest.fixture
def spy(monkeypatch):
    """G2LSTM's sequences sent to the Triton loop as on CUDA, the loop's forward and backward replaced by
    recorders around the Python loop: ``spy`` lists the keyword settings and tensor dtypes of each call."""
    calls = []

    def forward(
        gate_inputs, h0, c0, weight_hh, batch_sizes, reverse, scale, hard, noise_seed, noise_p, noise_eps
    ):
        calls.append(
            {
                "dtype": gate_inputs.dtype,
                "batch_sizes": list(batch_sizes),
                "reverse": reverse,
                "scale": scale,
                "hard": hard,
                "noise_seed": noise_seed,
                "noise_p": noise_p,
                "noise_eps": noise_eps,
            }
        )
        noise = None
        if noise_seed is not None:
            rows, hidden = gate_inputs.shape[0], c0.shape[1]
            bits = gate_bits(noise_seed, rows, hidden, gate_inputs.dtype, gate_inputs.device)
            noise = noise_from_bits(bits, gate_inputs.dtype, noise_p, noise_eps)
        output, h_n, c_n, gates, cells, _ = fused.sequence_forward(
            gate_inputs, h0, c0, weight_hh, None, batch_sizes, reverse, scale, hard, "auto", noise
        )
        return output, h_n, c_n, gates, cells, fused.previous_rows(output, h0, batch_sizes, reverse)

    def backward(
        grad_output, grad_h_n, grad_c_n, gates, cells, c0, weight_hh, batch_sizes, reverse, scale, hard
    ):
        # The Triton backward leaves the weight gradient to its caller: no output rows needed (the cells
        # stand in for them, for their shape only).
        return fused.sequence_backward(
            grad_output, grad_h_n, grad_c_n, gates, cells, cells.tanh(), cells, c0, c0, weight_hh, None,
            batch_sizes, reverse, scale, hard, "auto", (False, False),
        )[:3]

    monkeypatch.setattr(ops, "sequence_loop", lambda device, dtype, kernel=None: kernel or "triton")
    monkeypatch.setattr(ops, "triton_forward", forward)
    monkeypatch.setattr(ops, "triton_backward", backward)
    return calls


def test_training_sends_each_layer_direction_to_the_triton_loop(spy):
    module = G2LSTM(3, 4, num_layers=2, bidirectional=True, temperature=0.8, noise_p=0.3, noise_eps=0.01)
    inputs = pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([5, 3, 2]))
    torch.manual_seed(7)
    output, _ = module(inputs)
    output.data.sum().backward()
    assert [call["reverse"] for call in spy] == [False, True, False, True]
    assert all(call["batch_sizes"] == [3, 3, 2, 1, 1] for call in spy)
    assert all(call["scale"] == pytest.approx(1 / 0.8) and not call["hard"] for call in spy)
    assert all((call["noise_p"], call["noise_eps"]) == (0.3, 0.01) for call in spy)
    seeds = [call["noise_seed"] for call in spy]
    assert len(set(seeds)) == 4  # one key per layer direction
    torch.manual_seed(7)
    module(inputs)
    assert [call["noise_seed"] for call in spy[4:]] == seeds  # torch.manual_seed repeats the keys
    module.eval()(inputs)
    assert len(spy) == 8  # evaluation with sigmoid gates runs torch's LSTM kernel, not the loop


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_autocast_runs_the_recurrence_in_float32(spy, half):
    """Under autocast the loop gets float32 inputs and the module returns float32, as on CPU; the result is
    the one without autocast."""
    module = G2LSTM(3, 4, num_layers=2)
    inputs = torch.randn(5, 2, 3)
    torch.manual_seed(1)
    expected, _ = module(inputs)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=half):
        actual, (h, c) = module(inputs.to(half))
    assert {call["dtype"] for call in spy} == {torch.float32}
    assert actual.dtype == h.dtype == c.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=0.02, rtol=0)  # inputs rounded to half precision
    actual.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())


# ---------------------------------------------------------------------------------------- flatten_parameters


@pytest.fixture
def fake_cudnn(monkeypatch):
    """cuDNN's weight flattening, stood in for on the CPU: the weights are moved into one buffer as views,
    as ``torch._cudnn_rnn_flatten_weight`` does; ``fake_cudnn`` lists each call's arguments."""
    calls = []

    def flatten(
        weights, stride0, input_size, mode, hidden_size, proj_size, num_layers, batch_first, bidirectional
    ):
        calls.append(
            {
                "names": len(weights),
                "stride0": stride0,
                "input_size": input_size,
                "mode": mode,
                "hidden_size": hidden_size,
                "proj_size": proj_size,
                "num_layers": num_layers,
                "batch_first": batch_first,
                "bidirectional": bidirectional,
                "weights": list(weights),
            }
        )
        buffer = torch.cat([w.detach().reshape(-1) for w in weights])
        offset = 0
        for weight in weights:
            weight.set_(buffer.untyped_storage(), offset, weight.shape, weight.stride())
            offset += weight.numel()
        return buffer

    monkeypatch.setattr(cudnn, "cudnn_can_hold", lambda weights: True)
    monkeypatch.setattr(torch, "_use_cudnn_rnn_flatten_weight", lambda: True)
    monkeypatch.setattr(torch, "_cudnn_rnn_flatten_weight", flatten)
    monkeypatch.setattr(torch.backends.cudnn.rnn, "get_cudnn_mode", lambda mode: {"LSTM": 2}[mode])
    return calls


def one_storage(module: nn.Module) -> bool:
    return len({p.untyped_storage().data_ptr() for p in module.parameters()}) == 1


@pytest.mark.parametrize("bias", [True, False])
def test_flatten_parameters_moves_the_weights_into_one_buffer(fake_cudnn, bias):
    module = G2LSTM(3, 4, num_layers=2, bias=bias, batch_first=True, bidirectional=True)
    assert len(fake_cudnn) == 1  # on construction, as nn.LSTM
    call = fake_cudnn[0]
    assert call == {
        **call,
        "names": 16 if bias else 8,
        "stride0": 4 if bias else 2,
        "input_size": 3,
        "mode": 2,
        "hidden_size": 4,
        "proj_size": 0,
        "num_layers": 2,
        "batch_first": True,
        "bidirectional": True,
    }
    assert [w is p for w, p in zip(call["weights"], module.parameters())] == [True] * call["names"]
    assert one_storage(module)
    reference = nn.LSTM(3, 4, num_layers=2, bias=bias, batch_first=True, bidirectional=True)
    assert module._flat_weights_names == reference._flat_weights_names  # cuDNN's order


def test_flatten_keeps_parameters_values_and_results(fake_cudnn):
    torch.manual_seed(0)
    separate = G2LSTM(3, 4, num_layers=2)
    parameters = list(separate.parameters())
    values = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.SGD(separate.parameters(), lr=0.1)
    separate.flatten_parameters()
    assert list(separate.parameters()) == parameters  # the same Parameter objects: the optimizer keeps them
    assert all(torch.equal(p, v) for p, v in zip(separate.parameters(), values))
    separate.eval()
    inputs = torch.randn(5, 2, 3)
    output, _ = separate(inputs)
    torch.testing.assert_close(output, separate.to_lstm()(inputs)[0], rtol=0, atol=1e-6)
    output.sum().backward()
    optimizer.step()
    assert one_storage(separate)  # updated in place, still one buffer
    assert not torch.equal(separate.weight_hh_l0, values[1])


def test_flatten_again_after_moving_the_module(fake_cudnn):
    module = G2LSTM(3, 4)
    module.to(torch.float64)
    assert len(fake_cudnn) == 2 and one_storage(module)
    assert all(w.dtype == torch.float64 for w in fake_cudnn[-1]["weights"])
    module.load_state_dict(G2LSTM(3, 4, dtype=torch.float64).state_dict())  # copies in place
    assert one_storage(module)


def test_flatten_is_a_no_op_without_cudnn():
    module = G2LSTM(3, 4, num_layers=2)
    pointers = [p.data_ptr() for p in module.parameters()]
    module.flatten_parameters()
    assert [p.data_ptr() for p in module.parameters()] == pointers
    assert not cudnn.cudnn_can_hold(list(module.parameters()))  # CPU tensors
    assert not cudnn.flatten_lstm_weights(
        list(module.parameters()),
        input_size=3,
        hidden_size=4,
        num_layers=2,
        bias=True,
        batch_first=False,
        bidirectional=False,
    )


def test_flatten_skips_missing_weights(fake_cudnn):
    module = G2LSTM(3, 4)
    calls = len(fake_cudnn)
    del module._parameters["weight_ih_l0"]  # e.g. a block kept in compressed form
    module.flatten_parameters()
    assert len(fake_cudnn) == calls


def test_bench_names_the_loop_that_runs(triton_importable, monkeypatch):
    monkeypatch.delenv(triton_loop.CUDA_KERNEL_ENV, raising=False)
    triton = pytest.importorskip("triton")
    assert kernel_description("cuda") == f"Triton loop, triton {triton.__version__}"
    monkeypatch.setenv(triton_loop.CUDA_KERNEL_ENV, "python")
    assert kernel_description("cuda") == "Python loop"
