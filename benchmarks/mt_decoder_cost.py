"""Cost of the conditional decoder against the attention-on-top one: results/mt-decoder-cost.

    OMP_NUM_THREADS=1 python benchmarks/mt_decoder_cost.py [--preset multi30k-cpu] [--steps 40]

Both decoders are built from one preset and seed and trained on the same real batches (the first batches
of the preset's epoch order), one step of each in turn, so that a slow spell of the machine slows both
alike. A step is what the training loop does: forward, cross-entropy, backward, clipping, optimizer step;
the first steps of each are a warm-up and not counted. Decoding: in eval mode, the decoder is called as
beam search calls it (one row per beam and test sentence, one word at a time) for a fixed number of
steps, without the search around it, so that the length of untrained translations does not matter.
Writes ``cost.json`` and ``cost.md`` (medians, threads, CPU capability).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from g2lstm.benchmark import machine_description
from g2lstm.mt import data as corpus
from g2lstm.mt.bpe import BOS, PAD, SubwordVocabulary
from g2lstm.mt.config import PRESET_DIR, MTConfig
from g2lstm.mt.data import Batch
from g2lstm.mt.model import DECODERS, AttentionSeq2Seq
from g2lstm.train import load_config

RESULTS = Path(__file__).resolve().parent.parent / "results" / "mt-decoder-cost"
DECODE_STEPS = 30  # decoder calls per decoding measurement
DECODE_REPEATS = 3


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, clip: float) -> float:
    """Seconds of one training step, as ``g2lstm mt train`` takes it."""
    start = time.perf_counter()
    logits = model(batch.source, batch.source_lengths, batch.target_input)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.target_output.flatten(), ignore_index=PAD)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def decoding_step(model: AttentionSeq2Seq, batch: Batch, beam_size: int) -> float:
    """Seconds per decoder call of a beam search over ``batch``'s sources: ``beam_size`` rows a sentence,
    :data:`DECODE_STEPS` calls, each fed the rows' most likely words."""
    model.eval()
    encoded = model.encode(batch.source, batch.source_lengths)
    rows = torch.arange(batch.source.shape[1]).repeat_interleave(beam_size)
    h, c = model.initial_state(encoded)
    encoded, state = encoded.select(rows), (h[:, rows], c[:, rows])
    tokens = torch.full((1, len(rows)), BOS)
    start = time.perf_counter()
    for _ in range(DECODE_STEPS):
        logits, state = model.decode(tokens, encoded, state)
        tokens = logits.argmax(-1)
    model.train()
    return (time.perf_counter() - start) / DECODE_STEPS


def measure(config: MTConfig, steps: int, warmup: int, sentences: int) -> dict:
    """Milliseconds per training step and per decoding step of each decoder, and their ratios."""
    folder = corpus.find_corpus_folder(None, config.dataset)
    files = corpus.find_split(folder, "train", config.src, config.tgt)
    source_lines, target_lines = corpus.read_parallel(files)
    vocab = SubwordVocabulary.learn(source_lines + target_lines, config.bpe_size)
    train = corpus.load_split(folder, "train", config.src, config.tgt, vocab)
    test = corpus.load_split(folder, "test", config.src, config.tgt, vocab)
    kept = [i for i, (s, t) in enumerate(zip(train.source_ids, train.target_ids))
            if 0 < len(s) <= config.max_len and 0 < len(t) <= config.max_len]
    lengths = [(len(train.source_ids[i]), len(train.target_ids[i])) for i in kept]
    groups = corpus.batch_indices(lengths, config.batch_size, seed=config.seed)
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(config.seed + 1))
    batches = [corpus.collate(train.source_ids, train.target_ids, [kept[i] for i in groups[k]])
               for k in order[: warmup + steps].tolist()]
    sources = corpus.collate(test.source_ids, None, list(range(sentences)))
    models = {}
    for decoder in DECODERS:
        config.decoder = decoder
        torch.manual_seed(config.seed)
        model = AttentionSeq2Seq(config.model_spec(len(vocab))).train()
        models[decoder] = (model, torch.optim.Adam(model.parameters(), lr=config.lr))
    training: dict[str, list[float]] = {decoder: [] for decoder in DECODERS}
    for index, batch in enumerate(batches):
        for decoder, (model, optimizer) in models.items():
            elapsed = training_step(model, optimizer, batch, config.clip)
            if index >= warmup:
                training[decoder].append(elapsed)
    decoding: dict[str, list[float]] = {decoder: [] for decoder in DECODERS}
    for _ in range(DECODE_REPEATS):
        for decoder, (model, _) in models.items():
            decoding[decoder].append(decoding_step(model, sources, config.beam_size))
    lengths = [b.target_output.shape[0] for b in batches[warmup:]]
    result: dict = {"mean_target_length": statistics.mean(lengths)}
    for decoder in DECODERS:
        result[decoder] = {"train_ms": 1e3 * statistics.median(training[decoder]),
                           "decode_ms": 1e3 * statistics.median(decoding[decoder])}
    for key in ("train_ms", "decode_ms"):
        result[f"{key}_ratio"] = result["conditional"][key] / result["attention-on-top"][key]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="multi30k-cpu")
    parser.add_argument("--gates", nargs="+", default=["lstm", "g2"], choices=("lstm", "sharpened", "g2"))
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per decoder")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=64, help="test sentences of the decoding batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    signature = {
        "preset": args.preset,
        "steps": args.steps,
        "warmup": args.warmup,
        "sentences": args.sentences,
        "machine": machine_description(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    rows = {}
    for gate in args.gates:
        config = load_config(MTConfig, args.preset, {"gate": gate}, preset_dir=PRESET_DIR)
        rows[gate] = measure(config, args.steps, args.warmup, args.sentences)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost.json").write_text(json.dumps({"signature": signature, "gates": rows}, indent=2) + "\n")
    lines = [
        f"# Cost of the conditional decoder against the attention-on-top one, `{args.preset}`",
        "",
        "Measured by `OMP_NUM_THREADS=1 python benchmarks/mt_decoder_cost.py`; "
        + ", ".join(f"{key}: {value}" for key, value in signature.items())
        + ".",
        "",
        "| gate | training ms/step, attention-on-top | conditional | ratio "
        "| decoding ms/step, attention-on-top | conditional | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for gate, row in rows.items():
        old, new = row["attention-on-top"], row["conditional"]
        lines.append(
            f"| {gate} | {old['train_ms']:.1f} | {new['train_ms']:.1f} "
            f"| {row['train_ms_ratio']:.2f}x | {old['decode_ms']:.2f} | {new['decode_ms']:.2f} "
            f"| {row['decode_ms_ratio']:.2f}x |"
        )
    lines += [
        "",
        f"Training: medians over {args.steps} steps of the preset's batches (batch "
        f"{config.batch_size}, after {args.warmup} warm-up steps each), the two decoders taking turns "
        f"on each batch. Decoding: one decoder call for {args.sentences} test sentences x "
        f"{config.beam_size} beam rows, the median of {DECODE_REPEATS} means over {DECODE_STEPS} "
        "calls. Other jobs shared the machine (the load average above), which slows both decoders "
        "alike but inflates the milliseconds; the ratios are the result.",
    ]
    (args.out / "cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
