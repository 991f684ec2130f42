"""The compiled CPU loop (``kernels/cpu_step.cpp``) against the Python loop and the step-by-step reference.

Kernel level, for every instruction-set build this machine can run (AVX-512, AVX2, portable): outputs,
final states, gate activations and every gradient, float64 to 1e-10 and float32 to 1e-5 (relative as well
in float32: the compiled loop sums its recurrent products in another order than a library GEMM), for packed
and full batches, both directions, scaled and hard gates, hidden sizes that are not multiples of the vector
width, row counts that are not multiples of the register block, and sizes that split a step across threads.
Module level: the same G2LSTM run under ``G2LSTM_CPU_KERNEL=python`` and ``=compiled`` with the same seed (so
the same noise) for every gate mode, packed and bidirectional input, several layers, ``hx`` given or not. Then
finite differences through the compiled loop, and the switch with its fallback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import shutil
import warnings

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import g2lstm
from g2lstm import G2LSTM
from g2lstm.functional import gate_bits, noise_from_uniform, uniform_from_bits
from g2lstm.kernels import compiled, lstm_sequence, lstm_sequence_reference
from g2lstm.kernels.backends import onednn_available

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
RELATIVE = {torch.float64: 0.0, torch.float32: 1e-5}


def assert_close(actual, expected, dtype, label, scale=1):
    torch.testing.assert_close(
        actual,
        expected,
        rtol=scale * RELATIVE[dtype],
        atol=scale * TOLERANCE[dtype],
        msg=lambda m: f"{label}: {m}",
    )


@pytest.fixture(params=compiled.supported_variants())
def variant(request, monkeypatch) -> str:
    """Each build this CPU can run, selected through ``$G2LSTM_CPU_ISA``."""
    monkeypatch.setenv(compiled.VARIANT_ENV, request.param)
    compiled.compiled_module(required=True)
    return request.param


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    """Build the extension once for the session (cached on disk afterwards); skip without a compiler."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on PATH: the compiled loop cannot be built here")
    compiled.compiled_module(required=True)


# ---------------------------------------------------------------------------------------- kernel level

KERNEL_CASES = [("torch", torch.float64), ("torch", torch.float32)]
if onednn_available():
    KERNEL_CASES.append(("onednn", torch.float32))


def kernel_run(kernel: str, leaves: list[torch.Tensor], batch_sizes, reverse, scale, hard, backend):
    """Outputs, gates and the gradients of all four inputs under fixed random upstream gradients."""
    inputs = [t.clone().requires_grad_() for t in leaves]
    if kernel == "reference":
        results = lstm_sequence_reference(*inputs, batch_sizes, reverse=reverse, scale=scale, hard=hard)
    else:
        results = lstm_sequence(
            *inputs, batch_sizes, reverse=reverse, scale=scale, hard=hard, backend=backend, kernel=kernel
        )
    output, h_n, c_n, gates = results
    generator = torch.Generator().manual_seed(5)
    upstream = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in (output, h_n, c_n)]
    grads = torch.autograd.grad([output, h_n, c_n], inputs, upstream)
    return [output, h_n, c_n, gates, *grads]


LABELS = ["output", "h_n", "c_n", "gates", "grad gate_inputs", "grad h0", "grad c0", "grad weight_hh"]


@pytest.mark.parametrize("backend, dtype", KERNEL_CASES, ids=[f"{b}-{str(d)[6:]}" for b, d in KERNEL_CASES])
@pytest.mark.parametrize("hard", [False, True], ids=["sigmoid", "hard"])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.9], ids=["scale1", "scale1/0.9"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    "batch_sizes, hidden",
    [([5, 5, 4, 2, 2, 1], 3), ([3, 3, 3, 3], 13), ([6, 4, 1], 19)],
    ids=["packed-H3", "full-H13", "packed-H19"],
)
def test_compiled_matches_python_loop_and_reference(
    batch_sizes, hidden, reverse, scale, hard, backend, dtype, variant
):
    batch, rows = batch_sizes[0], sum(batch_sizes)
    leaves = [
        torch.randn(rows, 4 * hidden, dtype=dtype),
        torch.randn(batch, hidden, dtype=dtype),
        torch.randn(batch, hidden, dtype=dtype),
        torch.randn(4 * hidden, hidden, dtype=dtype) * 0.5,
    ]
    args = (leaves, batch_sizes, reverse, scale, hard, backend)
    expected = kernel_run("reference", *args)
    python = kernel_run("python", *args)
    actual = kernel_run("compiled", *args)
    for label, a, p, e in zip(LABELS, actual, python, expected):
        assert a.dtype == dtype and a.shape == e.shape, label
        assert_close(a, e, dtype, label)
        assert_close(a, p, dtype, label)
    if hard:
        assert set(actual[3][:, : 2 * hidden].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_matches_python_loop_when_steps_split_across_threads(dtype, threads, variant):
    """Hidden units shared out among 1-3 threads (a share need not be whole register blocks), 40 rows cut
    into register blocks with a remainder, packed steps that shrink."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    hidden, batch_sizes = 300, [40, 40, 33, 20, 7]
    leaves = [
        torch.randn(sum(batch_sizes), 4 * hidden, dtype=dtype),
        torch.randn(40, hidden, dtype=dtype),
        torch.randn(40, hidden, dtype=dtype),
        torch.randn(4 * hidden, hidden, dtype=dtype) / hidden**0.5,
    ]
    for reverse in (False, True):
        args = (leaves, batch_sizes, reverse, 1 / 0.9, False, "auto")
        try:
            compiled_results = kernel_run("compiled", *args)
        finally:
            torch.set_num_threads(default_threads)
        for label, a, p in zip(LABELS, compiled_results, kernel_run("python", *args)):
            assert_close(a, p, dtype, label)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("noise_p", [0.2, 1.0])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_noise_drawn_inside_matches_noise_added_up_front(reverse, noise_p, dtype, variant):
    """A noise key gives, in both loops, what the reference gives with the noise of its bits added to its
    input: the compiled loop makes the same Philox bits inside its pass."""
    hidden, batch_sizes = 11, [4, 4, 3, 1]
    rows = sum(batch_sizes)
    leaves = [
        torch.randn(rows, 4 * hidden, dtype=dtype),
        torch.randn(4, hidden, dtype=dtype),
        torch.randn(4, hidden, dtype=dtype),
        torch.randn(4 * hidden, hidden, dtype=dtype) * 0.5,
    ]
    seed = 2**61 + 12345
    noise = noise_from_uniform(uniform_from_bits(gate_bits(seed, rows, hidden, dtype), dtype), noise_p, 1e-3)
    assert 0 < (noise == 0).sum() < noise.numel() if noise_p < 1 else (noise != 0).all()
    noisy = [leaves[0].clone(), *leaves[1:]]
    noisy[0][:, : 2 * hidden] += noise
    expected = kernel_run("reference", noisy, batch_sizes, reverse, 1 / 0.9, False, "auto")
    for kernel in ("reference", "python", "compiled"):  # the reference keyed, as the others
        inputs = [t.clone().requires_grad_() for t in leaves]
        run = lstm_sequence_reference
        if kernel != "reference":
            run = functools.partial(lstm_sequence, kernel=kernel)
        output, h_n, c_n, gates = run(
            *inputs,
            batch_sizes,
            reverse=reverse,
            scale=1 / 0.9,
            noise_seed=seed,
            noise_p=noise_p,
            noise_eps=1e-3,
        )
        generator = torch.Generator().manual_seed(5)
        upstream = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in (output, h_n, c_n)]
        actual = [output, h_n, c_n, gates, *torch.autograd.grad([output, h_n, c_n], inputs, upstream)]
        for label, a, e in zip(LABELS, actual, expected):
            assert_close(a, e, dtype, f"{kernel} {label}", scale=10)


def test_reference_takes_the_arguments_of_the_fused_kernel():
    """The oracle is called as lstm_sequence is, less the choice of loop, and its flags are keyword-only."""

    def described(function):
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters if p.name not in ("kernel", "backend")]

    assert described(lstm_sequence_reference) == described(lstm_sequence)
    assert [name for name, kind, _ in described(lstm_sequence) if kind != inspect.Parameter.KEYWORD_ONLY] == [
        "gate_inputs", "h0", "c0", "weight_hh", "batch_sizes"
    ]


@pytest.mark.parametrize("kernel", ["python", "compiled"])
@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "7"])
def test_noise_keys_that_are_not_63_bit_integers_are_refused(kernel, seed):
    with pytest.raises(ValueError, match=r"noise_seed must be an int in \[0, 2\*\*63\)"):
        lstm_sequence(*small_sequence(), kernel=kernel, noise_seed=seed)


def test_compiled_backward_with_only_some_outputs_used(variant):
    """Unused outputs reach the compiled backward pass as None: h_n alone, output alone, c_n alone."""
    hidden, batch_sizes = 5, [3, 2, 2, 1]
    leaves = [
        torch.randn(8, 4 * hidden, dtype=torch.float64),
        torch.randn(3, hidden, dtype=torch.float64),
        torch.randn(3, hidden, dtype=torch.float64),
        torch.randn(4 * hidden, hidden, dtype=torch.float64),
    ]
    for pick in range(3):
        grads = {}
        for kernel in ("python", "compiled"):
            inputs = [t.clone().requires_grad_() for t in leaves]
            result = lstm_sequence(*inputs, batch_sizes, kernel=kernel)[pick]
            grads[kernel] = torch.autograd.grad(result.sum(), inputs)
        for a, p in zip(grads["compiled"], grads["python"]):
            torch.testing.assert_close(a, p, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------- module level

# name: (architecture, gate options, training mode, run inside record_gates)
MODULES = {
    "g2-p1": (dict(), dict(gate="g2", noise_p=1.0), True, False),
    "g2-p0.2-2layer-bidirectional": (dict(num_layers=2, bidirectional=True), dict(noise_p=0.2), True, False),
    "g2-3layer-dropout-dropconnect": (dict(num_layers=3, dropout=0.2), dict(weight_dropout=0.3), True, False),
    "sharpened-train-recorded": (dict(bidirectional=True), dict(gate="sharpened"), True, True),
    "hard-eval": (dict(num_layers=2), dict(eval_gate="hard"), False, False),
}
LENGTHS = [5, 2, 4]


def module_run(kernel: str, name: str, packed: bool, with_state: bool, dtype: torch.dtype, monkeypatch):
    """Output, states and every gradient of one seeded forward and backward pass under ``kernel``."""
    monkeypatch.setenv(compiled.KERNEL_ENV, kernel)
    architecture, options, training, record = MODULES[name]
    torch.manual_seed(0)
    module = G2LSTM(4, 6, dtype=dtype, **architecture, **options).train(training)
    x = torch.randn(5, 3, 4, dtype=dtype, requires_grad=True)
    states = module.num_layers * module.num_directions
    hx = None
    if with_state:
        hx = tuple(torch.randn(states, 3, 6, dtype=dtype, requires_grad=True) for _ in "hc")
    data = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False) if packed else x
    torch.manual_seed(1)  # the same noise, masks and dropout under both kernels
    with g2lstm.record_gates(module) if record else contextlib.nullcontext():
        output, (h_n, c_n) = module(data, hx)
    output = output.data if isinstance(output, PackedSequence) else output
    wrt = {"input": x, **dict(module.named_parameters())}
    if hx is not None:
        wrt.update(h_0=hx[0], c_0=hx[1])
    generator = torch.Generator().manual_seed(2)
    upstream = [torch.randn(t.shape, dtype=dtype, generator=generator) for t in (output, h_n, c_n)]
    grads = torch.autograd.grad([output, h_n, c_n], list(wrt.values()), upstream)
    return {"output": output, "h_n": h_n, "c_n": c_n, **{f"grad of {n}": g for n, g in zip(wrt, grads)}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no-hx"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", list(MODULES))
def test_module_compiled_matches_python_loop(name, packed, with_state, dtype, monkeypatch):
    python = module_run("python", name, packed, with_state, dtype, monkeypatch)
    actual = module_run("compiled", name, packed, with_state, dtype, monkeypatch)
    assert actual.keys() == python.keys()
    for label, value in actual.items():
        assert_close(value, python[label], dtype, label)


# ---------------------------------------------------------------------------------------- finite differences


def test_gradcheck_module_with_fixed_noise(monkeypatch, variant):
    monkeypatch.setenv(compiled.KERNEL_ENV, "compiled")
    module = G2LSTM(3, 4, 2, bidirectional=True, dtype=torch.float64, noise_p=0.5).train()
    names = [name for name, _ in module.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in module.parameters()]
    lengths = torch.tensor([4, 2])

    def function(x, h0, c0, *weights):
        torch.manual_seed(7)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, (h_n, c_n) = torch.func.functional_call(module, dict(zip(names, weights)), (packed, (h0, c0)))
        return output.data, h_n, c_n

    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True) for _ in "hc")
    assert gradcheck(function, (x, h0, c0, *leaves), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


# ---------------------------------------------------------------------------------------- the switch


@pytest.fixture
def failed_build(monkeypatch):
    """A process in which building the extension fails (as without a compiler)."""

    def fail(variant: str) -> None:
        raise OSError("no compiler")

    monkeypatch.setattr(compiled, "_builds", {})
    monkeypatch.setattr(compiled, "_compile", fail)


def small_sequence() -> tuple:
    return (torch.randn(6, 8), torch.randn(3, 2), torch.randn(3, 2), torch.randn(8, 2), [3, 2, 1])


def test_auto_uses_the_compiled_loop_on_cpu(monkeypatch):
    monkeypatch.delenv(compiled.KERNEL_ENV, raising=False)
    assert compiled.kernel_choice() == "auto"
    assert compiled.use_compiled(torch.device("cpu"), torch.float32)
    monkeypatch.setenv(compiled.KERNEL_ENV, "python")
    assert not compiled.use_compiled(torch.device("cpu"), torch.float32)
    assert compiled.use_compiled(torch.device("cpu"), torch.float32, kernel="compiled")


def test_failed_build_falls_back_to_the_python_loop_with_one_warning(failed_build, monkeypatch):
    monkeypatch.setenv(compiled.KERNEL_ENV, "auto")
    args = small_sequence()
    with pytest.warns(RuntimeWarning, match="could not compile its CPU kernel"):
        first = lstm_sequence(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = lstm_sequence(*args)
    expected = lstm_sequence(*args, kernel="python")
    for a, b, e in zip(first, second, expected):
        assert torch.equal(a, e) and torch.equal(b, e)


def test_failed_build_is_an_error_when_the_compiled_loop_is_required(failed_build, monkeypatch):
    monkeypatch.setenv(compiled.KERNEL_ENV, "compiled")
    with pytest.raises(RuntimeError, match="G2LSTM_CPU_KERNEL=compiled.*no compiler"):
        lstm_sequence(*small_sequence())


def test_python_choice_never_builds(failed_build, monkeypatch):
    monkeypatch.setenv(compiled.KERNEL_ENV, "python")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lstm_sequence(*small_sequence())
    assert compiled._builds == {}


def test_invalid_choices_name_the_setting(monkeypatch):
    monkeypatch.setenv(compiled.KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="G2LSTM_CPU_KERNEL must be one of .* got 'fast'"):
        lstm_sequence(*small_sequence())
    with pytest.raises(ValueError, match="kernel must be one of .* got 'cuda'"):
        lstm_sequence(*small_sequence(), kernel="cuda")
    with pytest.raises(ValueError, match="runs on float32 and float64 CPU tensors only"):
        compiled.use_compiled(torch.device("meta"), torch.float32, kernel="compiled")
    with pytest.raises(ValueError, match="runs on float32 and float64 CPU tensors only"):
        compiled.use_compiled(torch.device("cpu"), torch.bfloat16, kernel="compiled")
    monkeypatch.delenv(compiled.KERNEL_ENV)
    assert not compiled.use_compiled(torch.device("cpu"), torch.bfloat16)  # half precision: the Python loop


# ---------------------------------------------------------------------------------------- instruction sets


@pytest.mark.parametrize(
    "capability, expected",
    [("AVX512", ("avx512", "avx2", "default")), ("AVX2", ("avx2", "default")), ("DEFAULT", ("default",))],
)
def test_builds_follow_the_capability_torch_reports(capability, expected, monkeypatch):
    """A CPU (or ATEN_CPU_CAPABILITY) that torch runs at AVX2 never gets the AVX-512 build."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(compiled.platform, "machine", lambda: "x86_64")
    assert compiled.supported_variants() == expected
    monkeypatch.delenv(compiled.VARIANT_ENV, raising=False)
    assert compiled.variant_in_use() == expected[0]
    monkeypatch.setattr(compiled.platform, "machine", lambda: "aarch64")
    assert compiled.supported_variants() == ("default",)


def test_a_build_the_cpu_cannot_run_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(compiled.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv(compiled.VARIANT_ENV, "avx512")
    with pytest.raises(ValueError, match=r"G2LSTM_CPU_ISA must be one of \('avx2', 'default'\).*'avx512'"):
        compiled.variant_in_use()
    with pytest.raises(ValueError, match="cannot run the 'avx512' build"):
        compiled.compiled_module(variant="avx512")


def test_a_stale_build_lock_left_by_a_killed_build_is_removed(tmp_path, monkeypatch):
    """torch's builder waits forever on a `lock` file that a killed build left; ours clears it first."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = compiled._build_directory("g2lstm_cpu_step_default")
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    seen = {}

    def load(**options):
        seen["lock left"] = (folder / "lock").exists()
        seen["folder"] = options["build_directory"]
        return "module"

    monkeypatch.setattr(cpp_extension, "load", load)
    assert compiled._compile("default") == "module"
    assert seen == {"lock left": False, "folder": str(folder)}
