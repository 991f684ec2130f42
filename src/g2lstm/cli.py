"""The ``g2lstm`` command: argument parsing only; every subcommand calls a library function."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence

from g2lstm.errors import ConfigError, G2LSTMError, KernelBuildError, OutOfMemory

__all__ = ["main"]

def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    """Options given on the command line, plus ``--set key=value`` pairs, as preset overrides."""
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        values[key.strip().replace("-", "_")] = value.strip()
    return values


def _print_metrics(metrics: dict, as_json: bool) -> None:
    for key, value in metrics.items():
        if not as_json:
            print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    if as_json:
        print(json.dumps(metrics))


def _lm_train(args: argparse.Namespace) -> None:
    from g2lstm.lm.config import PRESET_DIR, LMConfig
    from g2lstm.lm.train import train_language_model
    from g2lstm.train import load_config

    names = ("gate", "epochs", "max_steps", "seed", "unit", "noise_p", "temperature", "device")
    config = load_config(LMConfig, args.preset, _overrides(args, names), preset_dir=PRESET_DIR)
    _print_metrics(train_language_model(config, args.out, args.data, show_progress=not args.quiet), args.json)


def _lm_finetune(args: argparse.Namespace) -> None:
    from g2lstm.lm.train import finetune

    _print_metrics(finetune(args.run_dir, args.data, epochs=args.epochs, show_progress=not args.quiet), args.json)


def _lm_eval(args: argparse.Namespace) -> None:
    from g2lstm.lm.evaluate import CachePointer
    from g2lstm.lm.train import evaluate_checkpoint

    cache = CachePointer(args.window, args.theta, args.lambdah) if args.cache_pointer else None
    metrics = evaluate_checkpoint(args.checkpoint, args.data, cache=cache, eval_gate=args.eval_gate,
                                  batch_size=args.batch_size, device=args.device)
    _print_metrics(metrics, args.json)


def _demo(args: argparse.Namespace) -> None:
    from g2lstm.lm.demo import format_demo_table, run_demo

    results = run_demo(args.out, args.data, args.preset, _overrides(args, ("max_steps", "epochs")),
                       show_progress=not args.quiet)
    print(format_demo_table(results))
    print(f"\ngate histograms: {results['figure']}")


def _compress(args: argparse.Namespace) -> None:
    from g2lstm.lm.compression import compress_checkpoint, compression_sweep
    from g2lstm.lm.evaluate import CachePointer

    if _translation_checkpoints(args.targets[1:] if args.targets[0] == "sweep" else args.targets):
        _mt_compress(args)
        return
    if args.targets[0] == "sweep":
        if len(args.targets) < 2:
            raise ConfigError("compress sweep needs at least one checkpoint: g2lstm compress sweep CKPT... --data DIR")
        cache = CachePointer(args.window, args.theta, args.lambdah) if args.cache_pointer else None
        results = compression_sweep(args.targets[1:], args.out or "compression", args.data,
                                    round_step=args.round or 0.2, clip=args.clip or 0.4, ranks=args.ranks,
                                    cache=cache, batch_size=args.batch_size, curves=not args.no_curves)
        print(results["table_markdown"])
        if not args.no_curves:
            print(f"\nfigure: {results['figure']}")
        return
    if len(args.targets) != 1:
        raise ConfigError(f"compress takes one checkpoint (or 'sweep' and several), got {len(args.targets)}")
    if args.out is None:
        raise ConfigError("compress needs --out FILE for the compressed checkpoint")
    report = compress_checkpoint(args.targets[0], args.out, round=args.round, clip=args.clip, rank=args.rank,
                                 gates=args.gates)
    print(report.summary())
    print(f"saved {args.out}")


def _analyze(args: argparse.Namespace) -> None:
    from g2lstm.lm.analyze import analyze_language_models

    if _translation_checkpoints(args.checkpoints):
        _mt_analyze(args)
        return
    options = {"split": args.split, "max_tokens": args.max_tokens, "eval_gate": args.eval_gate}
    if args.sentence:
        options["sentences"] = args.sentence
    analyze_language_models(args.checkpoints, args.out, args.data, **options)
    print(f"wrote gate histograms, per-word gate maps and sensitivity tables to {args.out}")


def _translation_checkpoints(paths: Sequence[str]) -> bool:
    """Whether ``paths`` are translation checkpoints (all of them) rather than language models (none)."""
    from g2lstm.mt.evaluate import is_translation_checkpoint
    from g2lstm.train import load_checkpoint

    kinds = {is_translation_checkpoint(load_checkpoint(path)) for path in paths}
    if len(kinds) > 1:
        raise ConfigError("the checkpoints mix translation and language models; give one kind at a time")
    return kinds == {True}


def _mt_train(args: argparse.Namespace) -> None:
    from g2lstm.mt.config import PRESET_DIR, MTConfig
    from g2lstm.mt.train import train_translation_model
    from g2lstm.train import load_config

    names = ("src", "tgt", "gate", "epochs", "max_steps", "seed", "noise_p", "temperature", "device")
    config = load_config(MTConfig, args.preset, _overrides(args, names), preset_dir=PRESET_DIR)
    _print_metrics(train_translation_model(config, args.out, args.data, show_progress=not args.quiet), args.json)


def _mt_translate(args: argparse.Namespace) -> None:
    from g2lstm.mt.data import split_lines
    from g2lstm.mt.evaluate import load_model, translate_lines
    from g2lstm.train import load_checkpoint

    model, config, vocab = load_model(load_checkpoint(args.checkpoint), args.device, source=args.checkpoint)
    if args.eval_gate:
        model.set_eval_gate(args.eval_gate)
    lines = split_lines(sys.stdin.buffer.read(), "standard input")
    for line in translate_lines(model, config, vocab, lines, beam_size=args.beam, raw=args.raw, device=args.device):
        print(line)


def _mt_eval(args: argparse.Namespace) -> None:
    from g2lstm.mt.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, beam_size=args.beam,
                                  eval_gate=args.eval_gate, output=args.output, device=args.device)
    _print_metrics(metrics, args.json)


def _mt_compress(args: argparse.Namespace) -> None:
    from g2lstm.mt.compression import compress_translation_checkpoint, translation_compression_sweep

    if args.targets[0] == "sweep":
        results = translation_compression_sweep(args.targets[1:], args.out or "compression", args.data,
                                                round_step=args.round or 0.5, clip=args.clip or 1.0,
                                                ranks=args.ranks)
        print(results["table_markdown"])
        return
    if len(args.targets) != 1:
        raise ConfigError(f"compress takes one checkpoint (or 'sweep' and several), got {len(args.targets)}")
    if args.out is None:
        raise ConfigError("compress needs --out FILE for the compressed checkpoint")
    report = compress_translation_checkpoint(args.targets[0], args.out, round=args.round, clip=args.clip,
                                             rank=args.rank, gates=args.gates)
    print(report.summary())
    print(f"saved {args.out}")


def _mt_analyze(args: argparse.Namespace) -> None:
    from g2lstm.mt.analyze import analyze_translation_models

    analyze_translation_models(args.checkpoints, args.out, args.data, max_pairs=args.max_pairs,
                               pairs=args.pair or (0, 1), eval_gate=args.eval_gate)
    print(f"wrote decoder gate histograms and per-word gate maps to {args.out}")


def _bench_speed(args: argparse.Namespace) -> None:
    from g2lstm.benchmark import AWD_SHAPES, format_speed_table, machine_description, measure_speed

    shapes = [tuple(shape) for shape in args.shape] if args.shape else AWD_SHAPES
    rows = measure_speed(shapes, args.repeats, args.reference_repeats, args.device)
    print(f"machine: {machine_description()}; device {args.device}; medians of {args.repeats} repeats")
    print(format_speed_table(rows))
    if args.json:
        from g2lstm.train import write_file

        write_file(args.json, json.dumps({"machine": machine_description(), "rows": [row.as_dict() for row in rows]},
                                         indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g2lstm", description="G2-LSTM: LSTMs with nearly binary gates.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error, not only of bugs")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data", help="data folder or file (default: $G2LSTM_DATA, the cache, then download)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument("--json", action="store_true", help="print the final metrics as one JSON line")

    demo = commands.add_parser("demo", help="short LSTM vs G2-LSTM run on PTB with gate histograms")
    demo.add_argument("--out", required=True, help="run folder")
    demo.add_argument("--preset", default="tiny")
    demo.add_argument("--max-steps", type=int)
    demo.add_argument("--epochs", type=int)
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any preset key")
    common(demo)
    demo.set_defaults(run=_demo)

    lm = commands.add_parser("lm", help="language modelling (AWD-LSTM recipe)").add_subparsers(
        dest="lm_command", required=True
    )
    train = lm.add_parser("train", help="train a language model")
    train.add_argument("--out", required=True, help="run folder (resumes when it holds last.pt)")
    train.add_argument("--preset", default="cpu", help="tiny, cpu, paper, or a .toml file")
    train.add_argument("--gate", choices=("g2", "lstm", "sharpened"))
    train.add_argument("--epochs", type=int)
    train.add_argument("--max-steps", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--unit", choices=("word", "char"))
    train.add_argument("--noise-p", type=float)
    train.add_argument("--temperature", type=float)
    train.add_argument("--device")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any preset key")
    common(train)
    train.set_defaults(run=_lm_train)

    tune = lm.add_parser("finetune", help="finetune a trained run with averaged SGD")
    tune.add_argument("run_dir")
    tune.add_argument("--epochs", type=int)
    common(tune)
    tune.set_defaults(run=_lm_finetune)

    evaluate = lm.add_parser("eval", help="perplexity of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--cache-pointer", action="store_true", help="add the continuous cache pointer")
    evaluate.add_argument("--window", type=int, default=500)
    evaluate.add_argument("--theta", type=float, default=1.0)
    evaluate.add_argument("--lambda", dest="lambdah", type=float, default=0.1)
    evaluate.add_argument("--eval-gate", choices=("sigmoid", "tempered", "hard"))
    evaluate.add_argument("--batch-size", type=int, help="streams evaluated in parallel (cache pointer: 1)")
    evaluate.add_argument("--device", default="cpu")
    common(evaluate)
    evaluate.set_defaults(run=_lm_eval)

    mt = commands.add_parser("mt", help="machine translation (attention encoder-decoder recipe)").add_subparsers(
        dest="mt_command", required=True
    )
    mt_train = mt.add_parser("train", help="train a translation model (best.pt in the run folder)")
    mt_train.add_argument("--out", required=True, help="run folder (resumes when it holds last.pt)")
    mt_train.add_argument("--preset", default="multi30k-cpu", help="tiny, multi30k-cpu, iwslt14, or a .toml file")
    mt_train.add_argument("--src", help="source language suffix of the files (preset: de)")
    mt_train.add_argument("--tgt", help="target language suffix of the files (preset: en)")
    mt_train.add_argument("--gate", choices=("g2", "lstm", "sharpened"))
    mt_train.add_argument("--epochs", type=int)
    mt_train.add_argument("--max-steps", type=int)
    mt_train.add_argument("--seed", type=int)
    mt_train.add_argument("--noise-p", type=float)
    mt_train.add_argument("--temperature", type=float)
    mt_train.add_argument("--device")
    mt_train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any preset key")
    common(mt_train)
    mt_train.set_defaults(run=_mt_train)

    mt_translate = mt.add_parser("translate", help="translate standard input, one sentence per line")
    mt_translate.add_argument("checkpoint")
    mt_translate.add_argument("--raw", action="store_true",
                              help="plain text in and out: tokenize and lowercase the input, detokenize the output")
    mt_translate.add_argument("--beam", type=int, help="beam size (default: the checkpoint's, 5)")
    mt_translate.add_argument("--eval-gate", choices=("sigmoid", "tempered", "hard"))
    mt_translate.add_argument("--device", default="cpu")
    mt_translate.set_defaults(run=_mt_translate)

    mt_eval = mt.add_parser("eval", help="BLEU (tokenized) and sacreBLEU of a checkpoint on a split")
    mt_eval.add_argument("checkpoint")
    mt_eval.add_argument("--split", default="test", choices=("train", "valid", "test"))
    mt_eval.add_argument("--beam", type=int, help="beam size (default: the checkpoint's, 5)")
    mt_eval.add_argument("--eval-gate", choices=("sigmoid", "tempered", "hard"))
    mt_eval.add_argument("--output", help="also write the translations to this file")
    mt_eval.add_argument("--device", default="cpu")
    common(mt_eval)
    mt_eval.set_defaults(run=_mt_eval)

    squeeze = commands.add_parser(
        "compress", help="compress gate weights of a checkpoint, or 'sweep' several under the paper's settings",
        description="g2lstm compress CKPT (--round R [--clip C] | --rank K) --out OUT\n"
                    "g2lstm compress sweep CKPT... [--data DIR] [--out DIR]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    squeeze.add_argument("targets", nargs="+", metavar="CHECKPOINT", help="a checkpoint, or 'sweep' and checkpoints")
    squeeze.add_argument("--round", type=float, help="rounding step r (sweep default 0.2; translation 0.5)")
    squeeze.add_argument("--clip", type=float, help="clip to [-c, c] after rounding (sweep default 0.4; translation 1.0)")
    squeeze.add_argument("--rank", type=int, help="truncated-SVD rank k")
    squeeze.add_argument("--ranks", type=int, nargs=2,
                         help="sweep: the two ranks (default hidden/9, hidden/18; translation: hidden/8, hidden/16)")
    squeeze.add_argument("--gates", nargs="+", default=["input", "forget"],
                         choices=("input", "forget", "cell", "output"), help="blocks to compress")
    squeeze.add_argument("--out", help="compressed checkpoint file, or the sweep's output folder")
    squeeze.add_argument("--cache-pointer", action="store_true", help="sweep: evaluate with the cache pointer")
    squeeze.add_argument("--window", type=int, default=500)
    squeeze.add_argument("--theta", type=float, default=1.0)
    squeeze.add_argument("--lambda", dest="lambdah", type=float, default=0.1)
    squeeze.add_argument("--batch-size", type=int)
    squeeze.add_argument("--no-curves", action="store_true", help="sweep: skip the perplexity curves")
    squeeze.add_argument("--data", help="data folder or file (default: $G2LSTM_DATA, the cache, then download)")
    squeeze.set_defaults(run=_compress)

    analyze = commands.add_parser("analyze", help="gate histograms, per-word gate maps, sensitivity")
    analyze.add_argument("checkpoints", nargs="+")
    analyze.add_argument("--out", required=True, help="output folder")
    analyze.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    analyze.add_argument("--max-tokens", type=int, default=20000)
    analyze.add_argument("--sentence", action="append", help="a sentence for the per-word gate map (repeatable)")
    analyze.add_argument("--eval-gate", choices=("sigmoid", "tempered", "hard"))
    analyze.add_argument("--max-pairs", type=int, default=10_000,
                         help="translation: training pairs read for the decoder histograms")
    analyze.add_argument("--pair", type=int, action="append",
                         help="translation: a test pair (line number from 0) for the per-word gate map (default 0, 1)")
    analyze.add_argument("--data", help="data folder or file (default: $G2LSTM_DATA, the cache, then download)")
    analyze.set_defaults(run=_analyze)

    bench = commands.add_parser("bench", help="speed against torch.nn.LSTM")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=7)
    bench.add_argument("--reference-repeats", type=int, default=2)
    bench.add_argument("--shape", type=int, nargs=4, action="append", metavar=("T", "B", "IN", "H"))
    bench.add_argument("--json", help="also write the measurements to this JSON file")
    bench.set_defaults(run=_bench_speed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``g2lstm`` command; the exit code: 0, 2 for a :class:`~g2lstm.errors.G2LSTMError` (1 for a
    diverged run), 130/143 after Ctrl-C/SIGTERM, 1 for a bug (its traceback is shown)."""
    args = build_parser().parse_args(argv)
    from g2lstm.train.signals import TrainingInterrupted

    try:
        _check_cpu_kernel()
        _run(args)
    except G2LSTMError as error:
        if args.debug:
            traceback.print_exc()
        print(f"g2lstm: error: {_one_line(error)}", file=sys.stderr)
        return error.exit_code
    except TrainingInterrupted as stopped:
        print(f"g2lstm: {stopped}", file=sys.stderr)
        return 143 if stopped.signal_name == "SIGTERM" else 130
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("g2lstm: interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug in g2lstm, not a mistake of the user
        traceback.print_exc()
        print(f"g2lstm: internal error: this is a bug in g2lstm {_version()}; please report it with the "
              f"command and the traceback above", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> None:
    """The command, with an allocation the machine cannot satisfy turned into :class:`OutOfMemory`."""
    try:
        args.run(args)
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OutOfMemory(f"out of memory ({reason}); lower the model or batch size with --set") from error


def _check_cpu_kernel() -> None:
    """Refuse a bad ``G2LSTM_CPU_KERNEL`` before any work, and build the kernel now when it is required, so
    that a failed build is one clear error instead of a failure in the middle of a run."""
    from g2lstm.kernels.compiled import KERNEL_ENV, compiled_module, kernel_choice

    try:
        choice = kernel_choice()
    except ValueError as error:
        raise ConfigError(f"{error}; fix or unset the environment variable {KERNEL_ENV}") from None
    if choice != "compiled":
        return
    try:
        compiled_module(required=True)
    except RuntimeError as error:
        lines = str(error.__cause__ or error).strip().splitlines() or [type(error.__cause__ or error).__name__]
        raise KernelBuildError(
            f"{KERNEL_ENV}=compiled, but g2lstm's CPU kernel cannot be built here ({lines[0]}); install a C++ "
            f"compiler and ninja, or set {KERNEL_ENV}=auto (or python) for the Python loop"
        ) from error


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a compiler's or a file's multi-line text joined)."""
    return " ".join(str(error).split()) or type(error).__name__


def _version() -> str:
    from g2lstm import __version__

    return __version__


def _out_of_memory(error: BaseException) -> bool:
    """An allocation that failed because the sizes asked for more memory than the machine has."""
    import torch

    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or any(
        text in str(error) for text in ("can't allocate memory", "std::bad_alloc")
    )


if __name__ == "__main__":
    sys.exit(main())
