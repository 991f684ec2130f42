"""Perplexity and evaluation speed of a language model, float against dynamic int8 (QuantizedG2LSTM).

    python benchmarks/quantize_lm.py runs/cpu/best.pt --markdown results/quantization.md

Quantizes the checkpoint's model with ``torch.ao.quantization.quantize_dynamic(model, {G2LSTM,
nn.Linear})`` (every G2LSTM becomes a ``g2lstm.QuantizedG2LSTM`` keeping its evaluation gate, the decoder a
quantized ``Linear``; the embedding stays float) and evaluates both on the validation and test splits
(``--batch-size`` streams, BPTT 70, as ``g2lstm lm eval``), timing each evaluation ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from g2lstm import G2LSTM, __version__
from g2lstm.data.corpus import batchify
from g2lstm.lm.evaluate import evaluate, load_corpus, load_model
from g2lstm.train.checkpoint import load_checkpoint


def measure(model: nn.Module, data: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Perplexity of ``model`` on ``data`` and the median seconds of ``repeats`` evaluations."""
    seconds, loss = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            loss = evaluate(model, data, bptt=70).loss
        seconds.append(time.perf_counter() - start)
    return float(torch.tensor(loss).exp()), statistics.median(seconds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", help="data folder (default: $G2LSTM_DATA, the cache, then download)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--markdown", help="write the table to this file (and the raw numbers beside it as JSON)"
    )
    args = parser.parse_args(argv)

    model, config, vocab = load_model(load_checkpoint(args.checkpoint), source=args.checkpoint)
    model.eval()
    corpus = load_corpus(args.data, config.unit, vocab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {G2LSTM, nn.Linear}, dtype=torch.qint8)
    rows = []
    for split in ("valid", "test"):
        data = batchify(getattr(corpus, split), args.batch_size)
        float_ppl, float_s = measure(model, data, args.repeats)
        int8_ppl, int8_s = measure(quantized, data, args.repeats)
        rows.append(
            {
                "split": split,
                "float_ppl": float_ppl,
                "int8_ppl": int8_ppl,
                "float_s": float_s,
                "int8_s": int8_s,
                "speedup": float_s / int8_s,
            }
        )
    header = (
        f"checkpoint {args.checkpoint} (gate {config.gate}, eval gate {model.layers[0].eval_gate}), "
        f"g2lstm {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"batch {args.batch_size}, BPTT 70, median of {args.repeats}"
    )
    lines = [
        header,
        "",
        "| split | float ppl | int8 ppl | float s | int8 s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['split']} | {r['float_ppl']:.2f} | {r['int8_ppl']:.2f} | {r['float_s']:.2f} | "
        f"{r['int8_s']:.2f} | {r['speedup']:.2f}× |"
        for r in rows
    ]
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines) + "\n")
        Path(args.markdown).with_suffix(".json").write_text(
            json.dumps({"header": header, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
