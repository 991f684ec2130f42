"""What each PyTorch tool does with nn.LSTM and with G2LSTM, in training and in evaluation mode.

    python benchmarks/compat.py --markdown results/compat.md

Every cell runs the tool on a small model (``rnn(x)`` with ``x`` of shape (T, B, 8), a 2-layer LSTM of 16
units) and records the exact outcome: ``works`` (with what was checked, e.g. that the result equals eager
under the same seed) or the exception type and the first line of its message.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import g2lstm
from g2lstm import G2LSTM

SIZE, HIDDEN = 8, 16


def make(kind: str, training: bool, **options: object) -> nn.Module:
    torch.manual_seed(0)
    module = nn.LSTM(SIZE, HIDDEN, 2, **options) if kind == "nn.LSTM" else G2LSTM(SIZE, HIDDEN, 2, **options)
    return module.train(training)


def x(steps: int = 6, batch: int = 3) -> torch.Tensor:
    return torch.randn(steps, batch, SIZE, generator=torch.Generator().manual_seed(steps * 100 + batch))


def same(a: torch.Tensor, b: torch.Tensor) -> str:
    return (
        "works, equals eager"
        if torch.allclose(a, b, atol=1e-5)
        else f"works, differs from eager by {(a - b).abs().max():.2g}"
    )


def seeded(function: Callable[[], torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(7)
    return function()


# ------------------------------------------------------------------------------------------ the checks


def compile_lengths(kind: str, training: bool) -> str:
    module = make(kind, training)
    compiled = torch.compile(module)
    results = [
        same(seeded(lambda t=t: compiled(x(t))[0]), seeded(lambda t=t: module(x(t))[0])) for t in (6, 9, 4)
    ]
    return results[-1] if len(set(results)) == 1 else "; ".join(results)


def compile_fullgraph(kind: str, training: bool) -> str:
    module = make(kind, training)
    compiled = torch.compile(module, fullgraph=True)
    outcome = same(seeded(lambda: compiled(x(6))[0]), seeded(lambda: module(x(6))[0]))
    if training:
        seeded(lambda: compiled(x(9, 2))[0]).sum().backward()
    return outcome + (", backward runs" if training else "")


def export(kind: str, training: bool) -> str:
    module = make(kind, training)
    program = torch.export.export(module, (x(6),), dynamic_shapes=({0: torch.export.Dim("T", min=2)},))
    return (
        same(seeded(lambda: program.module()(x(9))[0]), seeded(lambda: module(x(9))[0]))
        + " at another length"
    )


def onnx(kind: str, training: bool, dynamo: bool, eval_gate: str = "sigmoid") -> str:
    import numpy as np
    import onnxruntime

    options = {} if kind == "nn.LSTM" else {"eval_gate": eval_gate}
    module = make(kind, training, **options)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        if dynamo:
            shapes = ({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},)
            torch.onnx.export(module, (x(6),), path, dynamo=True, input_names=["x"], dynamic_shapes=shapes)
        else:
            torch.onnx.export(
                module,
                (x(6),),
                path,
                dynamo=False,
                input_names=["x"],
                training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
                dynamic_axes={"x": {0: "T", 1: "B"}},
            )
        got = onnxruntime.InferenceSession(path).run(None, {"x": x(11, 4).numpy()})[0]
    with torch.no_grad():
        want = module(x(11, 4))[0].numpy()
    error = float(np.abs(got - want).max())
    agreement = "within 1e-5" if error <= 1e-5 else f"off by {error:.2g}"
    return f"works, onnxruntime at another length and batch {agreement}"


def quantize(kind: str, training: bool) -> str:
    model = nn.Sequential(make(kind, False))
    spec = {nn.LSTM, nn.Linear} if kind == "nn.LSTM" else {G2LSTM, nn.Linear}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
        narrow = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(make(kind, False)), {nn.LSTM, nn.Linear}
        )
    warned = any("leaves this G2LSTM in float" in str(w.message) for w in caught)
    error = (quantized(x())[0] - model(x())[0]).abs().max()
    text = f"works: {type(quantized[0]).__name__} (max difference {error:.2g})"
    if kind != "nn.LSTM":
        left = type(narrow[0]).__name__
        text += f"; spec {{nn.LSTM, nn.Linear}} leaves {left}{' and warns' if warned else ' silently'}"
    return text


def proj_size(kind: str, training: bool) -> str:
    module = make(kind, training, proj_size=4)
    module.load_state_dict(nn.LSTM(SIZE, HIDDEN, 2, proj_size=4).state_dict())
    output = module(x())[0]
    return f"works, output {tuple(output.shape)}, nn.LSTM state dict loads"


def attributes(kind: str, training: bool) -> str:
    module = make(kind, training)
    names = (
        "mode",
        "proj_size",
        "_flat_weights",
        "check_forward_args",
        "permute_hidden",
        "get_expected_hidden_size",
    )
    missing = [name for name in names if not hasattr(module, name)]
    module.check_forward_args(x(), (torch.zeros(2, 3, HIDDEN), torch.zeros(2, 3, HIDDEN)), None)
    return f"missing {missing}" if missing else "works, all present"


def func_grad(kind: str, training: bool) -> str:
    module = make(kind, training)
    params = dict(module.named_parameters())
    grads = seeded(
        lambda: torch.func.grad(lambda p: torch.func.functional_call(module, p, (x(),))[0].sum())(params)
    )
    seeded(lambda: module(x())[0].sum()).backward()
    agree = all(torch.allclose(grads[name], param.grad, atol=1e-5) for name, param in params.items())
    return "works, equals backward()" if agree else "works, differs from backward()"


def double_backward(kind: str, training: bool) -> str:
    module = make(kind, training)
    out = seeded(lambda: module(x())[0].pow(2).sum())
    grads = torch.autograd.grad(out, list(module.parameters()), create_graph=True)
    sum(g.pow(2).sum() for g in grads).backward()
    return "works"


def dropout_warning(kind: str, training: bool) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (nn.LSTM if kind == "nn.LSTM" else G2LSTM)(SIZE, HIDDEN, dropout=0.5)
    return "warns" if any("dropout" in str(w.message) for w in caught) else "silent"


def jit_trace(kind: str, training: bool) -> str:
    module = make(kind, training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x(),), check_trace=False)
    return same(seeded(lambda: traced(x(9))[0]), seeded(lambda: module(x(9))[0])) + " at another length"


def jit_script(kind: str, training: bool) -> str:
    module = make(kind, training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(module)
    return same(seeded(lambda: scripted(x())[0]), seeded(lambda: module(x())[0]))


def fx_trace(kind: str, training: bool) -> str:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = make(kind, training)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.rnn(inputs)[0]

    net = Net().train(training)
    graph = torch.fx.symbolic_trace(net)
    return same(seeded(lambda: graph(x())), seeded(lambda: net(x())))


def vmap(kind: str, training: bool) -> str:
    module = make(kind, training)
    batched = x(6, 4).permute(1, 0, 2)  # 4 unbatched sequences (6, 8)
    out = seeded(lambda: torch.vmap(lambda seq: module(seq)[0], randomness="different")(batched))
    return f"works, output {tuple(out.shape)}"


def autocast(kind: str, training: bool) -> str:
    module = make(kind, training)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = seeded(lambda: module(x())[0])
    if training:
        out.float().sum().backward()
    return f"works, output {out.dtype}"


def checkpointing(kind: str, training: bool) -> str:
    from torch.utils.checkpoint import checkpoint

    module = make(kind, training)
    inputs = x().requires_grad_()
    out = seeded(lambda: checkpoint(lambda v: module(v)[0], inputs, use_reentrant=False))
    out.sum().backward()
    grad = inputs.grad.clone()
    inputs.grad = None
    seeded(lambda: module(inputs)[0]).sum().backward()
    return (
        "works, gradients equal plain backward"
        if torch.allclose(grad, inputs.grad, atol=1e-5)
        else "gradients differ"
    )


def ddp(kind: str, training: bool) -> str:
    import torch.distributed as dist

    with tempfile.NamedTemporaryFile() as store:
        dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
        try:
            model = nn.parallel.DistributedDataParallel(make(kind, training))
            out = seeded(lambda: model(x())[0])
            if training:
                out.sum().backward()
        finally:
            dist.destroy_process_group()
    return "works (gloo, one process)"


CHECKS: list[tuple[str, Callable[[str, bool], str]]] = [
    ("torch.compile, then another sequence length", compile_lengths),
    ("torch.compile(fullgraph=True)", compile_fullgraph),
    ("torch.export.export, dynamic length", export),
    ("torch.onnx.export (legacy), σ gates", lambda k, t: onnx(k, t, False)),
    (
        "torch.onnx.export (legacy), eval_gate='hard'",
        lambda k, t: onnx(k, t, False, "hard") if k != "nn.LSTM" else "—",
    ),
    ("torch.onnx.export (dynamo), σ gates", lambda k, t: onnx(k, t, True)),
    (
        "torch.onnx.export (dynamo), eval_gate='hard'",
        lambda k, t: onnx(k, t, True, "hard") if k != "nn.LSTM" else "—",
    ),
    ("quantize_dynamic (eval)", lambda k, t: quantize(k, t) if not t else "—"),
    ("proj_size=4, nn.LSTM state dict", proj_size),
    ("mode, proj_size, _flat_weights, check_forward_args, permute_hidden, ...", attributes),
    ("torch.func.grad(functional_call)", func_grad),
    ("autograd.grad(create_graph=True), then backward", double_backward),
    ("dropout=0.5 with num_layers=1", lambda k, t: dropout_warning(k, t) if t else "—"),
    ("torch.jit.trace", jit_trace),
    ("torch.jit.script", jit_script),
    ("torch.fx.symbolic_trace", fx_trace),
    ("torch.vmap over unbatched sequences", vmap),
    ("torch.autocast(cpu, bfloat16)", autocast),
    ("torch.utils.checkpoint", checkpointing),
    ("DistributedDataParallel", ddp),
]


def outcome(check: Callable[[str, bool], str], kind: str, training: bool) -> str:
    torch._dynamo.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return check(kind, training)
    except Exception as error:  # the outcome is the table's content
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # without the terminal colours some errors carry
        first = (message.strip().splitlines() or [""])[0]
        return f"fails: {type(error).__name__}: {first[:160]}".replace("|", "\\|")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="write the table to this file")
    args = parser.parse_args(argv)
    header = (
        f"g2lstm {g2lstm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        "G2LSTM with its defaults (gate='g2', noise in training, σ gates in evaluation)"
    )
    lines = [
        header,
        "",
        "| what a user does | nn.LSTM train | nn.LSTM eval | G2LSTM train | G2LSTM eval |",
        "|---|---|---|---|---|",
    ]
    for name, check in CHECKS:
        cells = [
            outcome(check, kind, training) for kind in ("nn.LSTM", "G2LSTM") for training in (True, False)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
