"""Size of the ONNX export of a compressed G2LSTM layer against the dense one, with both exporters.

    python benchmarks/onnx_size.py                              # the AWD-LSTM layer (400 -> 1150)
    python benchmarks/onnx_size.py --markdown results/onnx-size.md

A compressed layer's parametrizations compute the dense weights from the stored tensors (low-rank factors,
int8 codes) inside the exported graph, so the file holds the compact tensors. Each export is run in
onnxruntime at another sequence length and batch than exported with and compared with the module. Sizes
count the graph and, for the dynamo exporter, the weights it writes beside it (``FILE.data``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from g2lstm import G2LSTM, __version__
from g2lstm.compress import GATES, compress

SETTINGS = {
    "dense": None,
    "rank 128, input & forget": dict(rank=128),
    "round 0.2 & clip 0.4, input & forget": dict(round=0.2, clip=0.4),
    "rank 128, all gates": dict(rank=128, gates=GATES),
    "round 0.2 & clip 0.4, all gates": dict(round=0.2, clip=0.4, gates=GATES),
}


class Output(nn.Module):
    """The layer's output alone, the exported function."""

    def __init__(self, rnn: G2LSTM | nn.LSTM) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def export_size(module: G2LSTM | nn.LSTM, path: Path, dynamo: bool, compressed: bool) -> int:
    """Bytes of ``module``'s ONNX export at ``path`` (with its external data), eval mode, dynamic time and
    batch axes."""
    x = torch.randn(5, 2, module.input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("time"), 1: torch.export.Dim("batch")},)
            torch.onnx.export(Output(module).eval(), (x,), path, dynamo=True, input_names=["input"],
                              dynamic_shapes=shapes, optimize=not compressed)
        else:
            torch.onnx.export(Output(module).eval(), (x,), path, dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "time", 1: "batch"}})
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())


def max_error(module: G2LSTM, path: Path) -> float:
    import onnxruntime

    other = torch.randn(9, 3, module.input_size)
    (actual,) = onnxruntime.InferenceSession(str(path)).run(None, {"input": other.numpy()})
    with torch.no_grad():
        return float(np.abs(actual - module(other)[0].numpy()).max())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=400)
    parser.add_argument("--hidden-size", type=int, default=1150)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    dense = G2LSTM(args.input_size, args.hidden_size).eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, settings in SETTINGS.items():
            module = dense if settings is None else copy.deepcopy(dense)
            if settings is not None:
                compress(module, **settings)
            stored = sum(t.numel() * t.element_size() for t in module.state_dict().values())
            cells = [name, f"{stored / 1e6:.2f}"]
            for dynamo in (False, True):
                path = Path(folder) / f"{len(rows)}-{dynamo}.onnx"
                size = export_size(module, path, dynamo, settings is not None)
                cells += [f"{size / 1e6:.2f}", f"{max_error(module, path):.0e}"]
            rows.append(cells)
    header = (
        f"G2LSTM({args.input_size}, {args.hidden_size}), float32, eval; g2lstm {__version__}, torch "
        f"{torch.__version__}, {platform.machine()}; {datetime.date.today().isoformat()}; "
        f"`python benchmarks/onnx_size.py`"
    )
    lines = [
        header,
        "",
        "| weights | state dict MB | TorchScript export MB | max error | dynamo export MB | max error |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(cells) + " |" for cells in rows),
    ]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
