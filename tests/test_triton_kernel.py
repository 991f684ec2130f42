"""The Triton loop (``kernels/triton_loop.py`` + ``kernels/triton_steps.py``) on the CPU, under Triton's
interpreter (``TRITON_INTERPRET=1``, set in conftest.py): the same kernel source that runs on CUDA.

Kernel level: outputs, final states, gate activations and every gradient against the step-by-step reference
and the Python loop, float64 to 1e-10 and float32 to 1e-5, for packed and full batches, both directions,
scaled and hard gates, tiles that split rows, hidden units and the reduction; the in-kernel gate noise against
the Python loop's noise from :func:`g2lstm.functional.gate_bits` with the same key. Module level: G2LSTM with
its dispatcher sending sequences to the Triton loop, as on CUDA, against the Python loop with the same seed.
Then the launches the loop makes are compiled for Hopper (sm_90a) with Triton's own ptxas, in a process
without the interpreter. Skipped where Triton is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, record_gates
from g2lstm.kernels import lstm_sequence, lstm_sequence_reference, ops
from g2lstm.kernels.triton_loop import Blocks, triton_sequence

pytest.importorskip("triton")

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
RELATIVE = {torch.float64: 0.0, torch.float32: 1e-5}
SMALL = Blocks(16, 16, 16, 4)  # several programs and reduction chunks already at small sizes
LABELS = ["output", "h_n", "c_n", "gates", "grad gate_inputs", "grad h0", "grad c0", "grad weight_hh"]


def leaves(batch_sizes, hidden, dtype):
    rows, batch = sum(batch_sizes), batch_sizes[0]
    return [
        torch.randn(rows, 4 * hidden, dtype=dtype),
        torch.randn(batch, hidden, dtype=dtype),
        torch.randn(batch, hidden, dtype=dtype),
        torch.randn(4 * hidden, hidden, dtype=dtype) * 0.5,
    ]


def run(sequence, inputs, *args, **options):
    """Outputs, gates and the gradients of all four inputs under fixed random upstream gradients."""
    inputs = [t.clone().requires_grad_() for t in inputs]
    output, h_n, c_n, gates = sequence(*inputs, *args, **options)
    generator = torch.Generator().manual_seed(5)
    upstream = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in (output, h_n, c_n)]
    return [output, h_n, c_n, gates, *torch.autograd.grad([output, h_n, c_n], inputs, upstream)]


def assert_close(actual, expected, dtype, label):
    torch.testing.assert_close(
        actual, expected, rtol=RELATIVE[dtype], atol=TOLERANCE[dtype], msg=lambda m: f"{label}: {m}"
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    "batch_sizes, hidden, reverse, scale, hard",
    [
        ([5, 5, 4, 2, 2, 1], 3, False, 1 / 0.9, False),
        ([5, 5, 4, 2, 2, 1], 3, True, 1 / 0.9, False),
        ([6, 4, 1], 19, True, 1.0, True),
        ([3, 3, 3, 3], 13, False, 1.0, False),
        ([20, 20, 20], 40, True, 1 / 0.9, False),
    ],
    ids=["packed-H3", "packed-H3-reverse", "packed-H19-reverse-hard", "full-H13", "full-B20-H40-reverse"],
)
def test_triton_loop_matches_reference_and_python_loop(batch_sizes, hidden, reverse, scale, hard, dtype):
    inputs = leaves(batch_sizes, hidden, dtype)
    flags = {"reverse": reverse, "scale": scale, "hard": hard}
    expected = run(lstm_sequence_reference, inputs, batch_sizes, **flags)
    python = run(lstm_sequence, inputs, batch_sizes, kernel="python", **flags)
    actual = run(triton_sequence, inputs, batch_sizes, blocks=SMALL, **flags)
    for label, a, p, e in zip(LABELS, actual, python, expected):
        assert a.dtype == dtype and a.shape == e.shape, label
        assert_close(a, e, dtype, label)
        assert_close(a, p, dtype, label)
    if hard:
        assert set(actual[3][:, : 2 * hidden].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("noise_p", [0.2, 1.0])
@pytest.mark.parametrize(
    "seed", [12345, 2**31 + 7, 2**61 + 12345], ids=["seed-below-2^31", "seed-below-2^32", "seed-above-2^32"]
)
def test_in_kernel_noise_is_the_python_loops_noise(seed, noise_p, dtype):
    """The same key gives the same gates and gradients: the kernel's Philox bits are gate_bits' bits (a
    differing bit would move a gate by far more than the tolerance); the high key word matters too."""
    batch_sizes, hidden = [6, 6, 5, 3], 21
    inputs = leaves(batch_sizes, hidden, dtype)
    noise = {"noise_seed": seed, "noise_p": noise_p, "noise_eps": 1e-3}
    python = run(lstm_sequence, inputs, batch_sizes, scale=1 / 0.9, kernel="python", **noise)
    actual = run(lstm_sequence, inputs, batch_sizes, scale=1 / 0.9, kernel="triton", **noise)
    for label, a, p in zip(LABELS, actual, python):
        assert_close(a, p, dtype, label)
    plain = run(lstm_sequence, inputs, batch_sizes, scale=1 / 0.9, kernel="python")
    assert (actual[3] - plain[3]).abs().max() > 0.01  # the noise is there


def test_default_tiles_on_a_larger_batch():
    """Default tiles (one program for 40 rows: 64-row tiles) give the Python loop's result."""
    batch_sizes, hidden = [40, 40, 33], 24
    inputs = leaves(batch_sizes, hidden, torch.float32)
    python = run(lstm_sequence, inputs, batch_sizes, kernel="python", noise_seed=99, noise_p=0.5)
    actual = run(lstm_sequence, inputs, batch_sizes, kernel="triton", noise_seed=99, noise_p=0.5)
    for label, a, p in zip(LABELS, actual, python):
        assert_close(a, p, torch.float32, label)


def test_only_final_state_gradients():
    """Upstream gradients on h_n alone (the output's arrives as None) and on nothing but c_n."""
    batch_sizes, hidden = [4, 3, 1], 5
    inputs = [t.requires_grad_() for t in leaves(batch_sizes, hidden, torch.float64)]
    for pick in (1, 2):
        expected = torch.autograd.grad(
            lstm_sequence(*inputs, batch_sizes, kernel="python")[pick].sum(), inputs
        )
        actual = torch.autograd.grad(lstm_sequence(*inputs, batch_sizes, kernel="triton")[pick].sum(), inputs)
        for a, e in zip(actual, expected):
            assert_close(a, e, torch.float64, f"grad of output {pick}")


# ---------------------------------------------------------------------------------------- module level


def module_run(monkeypatch, loop: str, dtype: torch.dtype, gate: str = "g2", record: bool = False):
    """Outputs and parameter gradients of a 2-layer bidirectional G2LSTM on packed input, every sequence
    on ``loop`` (the dispatcher forced, as on CUDA)."""
    monkeypatch.setattr(ops, "sequence_loop", lambda device, dtype, kernel=None: loop)
    torch.manual_seed(3)
    module = G2LSTM(5, 7, num_layers=2, bidirectional=True, gate=gate, noise_p=0.3, dtype=dtype)
    x = torch.randn(6, 3, 5, dtype=dtype, requires_grad=True)
    inputs = pack_padded_sequence(x, torch.tensor([6, 4, 2]))
    torch.manual_seed(11)
    if record:
        with record_gates(module) as recording:
            output, (h, c) = module(inputs)
        recorded = [recording.gates(0, "forget")[0]]
    else:
        output, (h, c) = module(inputs)
        recorded = []
    loss = (output.data.sin() * 1.7).sum() + (h * h).sum() + c.sum()
    return [output.data, h, c, *torch.autograd.grad(loss, [x, *module.parameters()]), *recorded]


@pytest.mark.parametrize(
    "gate, record", [("g2", False), ("sharpened", True)], ids=["g2-noise", "sharpened-recorded"]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_module_on_the_triton_loop_matches_the_python_loop(monkeypatch, dtype, gate, record):
    expected = module_run(monkeypatch, "python", dtype, gate, record)
    actual = module_run(monkeypatch, "triton", dtype, gate, record)
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, dtype, f"result {index}")


# ---------------------------------------------------------------------------------------- Hopper build

COMPILE_SCRIPT = textwrap.dedent(
    """
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction
    from g2lstm.kernels.triton_loop import triton_sequence

    launches = {}
    def record(self, grid):
        return lambda *args, **options: launches.setdefault(self.fn.__name__, (self, args))
    JITFunction.__getitem__ = record  # capture the launches instead of running them (no GPU here)

    for dtype, hidden, batch, noise in ((torch.float32, 1150, 20, True), (torch.float64, 13, 3, False)):
        launches.clear()
        inputs = [torch.zeros(4 * batch, 4 * hidden, dtype=dtype, requires_grad=True),
                  torch.zeros(batch, hidden, dtype=dtype), torch.zeros(batch, hidden, dtype=dtype),
                  torch.zeros(4 * hidden, hidden, dtype=dtype, requires_grad=True)]
        seed = 7 if noise else None
        output, h_n, c_n, _ = triton_sequence(
            *inputs, [batch] * 4, reverse=True, scale=1 / 0.9, noise_seed=seed, noise_p=0.2
        )
        (output.sum() + h_n.sum()).backward()
        names = {torch.float32: "fp32", torch.float64: "fp64"}
        for name, (kernel, args) in sorted(launches.items()):
            signature, constants = {}, {}
            for param, value in zip(kernel.params, args):
                if param.is_constexpr:
                    signature[param.name], constants[param.name] = "constexpr", value
                elif isinstance(value, torch.Tensor):
                    signature[param.name] = "*" + names[value.dtype]
                else:
                    signature[param.name] = param.annotation_type or "i32"
            source = ASTSource(kernel, signature, constants)
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
            print(name, str(dtype), "cubin bytes", len(compiled.asm["cubin"]))
    """
)


def test_the_loops_launches_compile_for_hopper(tmp_path):
    """What the loop launches (argument types and constants as captured from a real call) compiles to sm_90a
    machine code, float32 with noise at the AWD-LSTM size and float64 without, so type errors and
    unsupported operations show up without a GPU."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    for name in ("forward_step", "backward_step"):
        for dtype in ("torch.float32", "torch.float64"):
            assert any(line.startswith(f"{name} {dtype} cubin bytes") for line in lines), done.stdout
