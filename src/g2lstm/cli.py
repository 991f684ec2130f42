"""The ``g2lstm`` command: argument parsing only; every subcommand calls a library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

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
    """The final numbers, printed by one process only (rank 0 under torchrun)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
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

    metrics = finetune(args.run_dir, args.data, epochs=args.epochs, out=args.out,
                       overrides=_overrides(args, ()), show_progress=not args.quiet)
    _print_metrics(metrics, args.json)


def _lm_eval(args: argparse.Namespace) -> None:
    from g2lstm.lm.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        cache_pointer_options=_cache_pointer_options(args),
        eval_gate=args.eval_gate,
        batch_size=args.batch_size,
        device=args.device,
    )
    _print_metrics(metrics, args.json)


def _export(args: argparse.Namespace) -> None:
    from g2lstm.lm.export import export_language_model

    written = export_language_model(args.checkpoint, args.out, eval_gate=args.eval_gate, dynamo=args.dynamo)
    _print_metrics(written, args.json)


def _cache_pointer_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--cache-pointer`` and the flags that replace the checkpoint's cache settings; None without it."""
    if not args.cache_pointer:
        return None
    flags = {"window": args.window, "theta": args.theta, "lambdah": args.lambdah}
    return {name: value for name, value in flags.items() if value is not None}


def _demo(args: argparse.Namespace) -> None:
    from g2lstm.lm.demo import QUICK_STEPS, format_demo_table, run_demo

    overrides = _overrides(args, ("max_steps", "epochs"))
    if not (args.full or {"max_steps", "epochs"} & set(overrides)):
        overrides["max_steps"] = QUICK_STEPS
    start = time.monotonic()
    results = run_demo(args.out, args.data, args.preset, overrides, show_progress=not args.quiet)
    print(format_demo_table(results))
    print(f"\ngate histograms: {results['figure']}")
    print(f"done in {(time.monotonic() - start) / 60:.1f} minutes"
          + ("" if args.full else "; `g2lstm demo --full` trains each model for the preset's epochs"))


def _compress(args: argparse.Namespace) -> None:
    from g2lstm.train.compression import compress_checkpoint

    sweep = args.targets[0] == "sweep"
    checkpoints = args.targets[1:] if sweep else args.targets
    if not checkpoints:
        raise ConfigError(
            "compress sweep needs at least one checkpoint: g2lstm compress sweep CKPT... --data DIR"
        )
    translation = _translation_checkpoints(checkpoints)
    if sweep:
        _compression_sweep(args, checkpoints, translation)
        return
    if len(checkpoints) != 1:
        raise ConfigError(f"compress takes one checkpoint (or 'sweep' and several), got {len(checkpoints)}")
    if args.out is None:
        raise ConfigError("compress needs --out FILE for the compressed checkpoint")
    from g2lstm.lm import evaluate as language_model
    from g2lstm.mt import evaluate as translation_model
    from g2lstm.mt.compression import authors_blocks

    recipe: Any = translation_model if translation else language_model
    report = compress_checkpoint(checkpoints[0], args.out, recipe.load_model, recipe.MODEL_ENTRIES,
                                 round=args.round, clip=args.clip, rank=args.rank, gates=args.gates,
                                 matrices=authors_blocks if translation else None)
    print(report.summary())
    print(f"saved {args.out}")


def _compression_sweep(args: argparse.Namespace, checkpoints: Sequence[str], translation: bool) -> None:
    """The paper's Table 3 (language models: perplexity) or Table 4 (translation: BLEU) of ``checkpoints``."""
    out = args.out or "compression"
    if translation:
        from g2lstm.mt.compression import translation_compression_sweep

        results = translation_compression_sweep(checkpoints, out, args.data, round_step=args.round or 0.5,
                                                clip=args.clip or 1.0, ranks=args.ranks)
        print(results["table_markdown"])
        return
    from g2lstm.lm.compression import compression_sweep

    results = compression_sweep(
        checkpoints,
        out,
        args.data,
        round_step=args.round or 0.2,
        clip=args.clip or 0.4,
        ranks=args.ranks,
        cache_pointer_options=_cache_pointer_options(args),
        batch_size=args.batch_size,
        curves=not args.no_curves,
    )
    print(results["table_markdown"])
    if not args.no_curves:
        print(f"\nfigure: {results['figure']}")


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
    _print_metrics(
        train_translation_model(config, args.out, args.data, show_progress=not args.quiet), args.json
    )


def _mt_translate(args: argparse.Namespace) -> None:
    from g2lstm.gates import set_eval_gate
    from g2lstm.mt.data import split_lines
    from g2lstm.mt.evaluate import load_model, translate_lines
    from g2lstm.train import load_checkpoint

    model, config, vocab = load_model(load_checkpoint(args.checkpoint), args.device, source=args.checkpoint)
    if args.eval_gate:
        set_eval_gate(model, args.eval_gate)
    lines = split_lines(sys.stdin.buffer.read(), "standard input")
    for line in translate_lines(
        model, config, vocab, lines, beam_size=args.beam, raw=args.raw, device=args.device
    ):
        print(line)


def _mt_eval(args: argparse.Namespace) -> None:
    from g2lstm.mt.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, beam_size=args.beam,
                                  eval_gate=args.eval_gate, output=args.output, device=args.device)
    _print_metrics(metrics, args.json)


def _mt_analyze(args: argparse.Namespace) -> None:
    from g2lstm.mt.analyze import analyze_translation_models

    analyze_translation_models(args.checkpoints, args.out, args.data, max_pairs=args.max_pairs,
                               pairs=args.pair or (0, 1), eval_gate=args.eval_gate)
    print(f"wrote decoder gate histograms and per-word gate maps to {args.out}")


def _bench_speed(args: argparse.Namespace) -> None:
    from g2lstm.benchmark import (
        AWD_SHAPES,
        format_speed_table,
        kernel_description,
        machine_description,
        measure_speed,
    )

    shapes = [tuple(shape) for shape in args.shape] if args.shape else AWD_SHAPES
    rows = measure_speed(shapes, args.repeats, args.reference_repeats, args.device)
    kernel = kernel_description(args.device)
    print(f"machine: {machine_description()}; device {args.device}; fused kernel: {kernel}; "
          f"medians of {args.repeats} repeats")
    print(format_speed_table(rows))
    if args.json:
        from g2lstm.train import write_file

        write_file(
            args.json,
            json.dumps(
                {"machine": machine_description(), "kernel": kernel, "rows": [row.as_dict() for row in rows]},
                indent=2,
            ),
        )


def _positive_int(text: str) -> int:
    """An argparse type: an int >= 1, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _preset_option(sub: argparse.ArgumentParser, recipe: str, default: str) -> None:
    """``--preset``, with the presets of ``recipe`` listed below the options, one line each."""
    from g2lstm.train import preset_descriptions

    module = __import__(f"g2lstm.{recipe}.config", fromlist=["PRESET_DIR"])
    descriptions = preset_descriptions(module.PRESET_DIR)
    width = max(map(len, descriptions))
    sub.add_argument(
        "--preset", default=default, help=f"a preset (listed below) or a .toml file (default: {default})"
    )
    sub.epilog = "presets:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in descriptions.items())
    sub.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g2lstm", description="G2-LSTM: LSTMs with nearly binary gates.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of every error, not only of bugs"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, help: str, run: Any) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help, description=help)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of every error, not only of bugs")
        sub.set_defaults(run=run)
        return sub

    def data(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data", help="data folder or file (default: $G2LSTM_DATA, the cache, then a download)"
        )

    def progress(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
        sub.add_argument("--json", action="store_true", help="print the final metrics as one JSON line")

    def gates(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--gate", choices=("g2", "lstm", "sharpened"),
                         help="input/forget gates: G2 (Gumbel noise), the plain LSTM, or a sharpened sigmoid "
                              "(default: the preset's, g2)")
        sub.add_argument(
            "--noise-p", type=float, help="share of gate elements given noise (default: the preset's)"
        )
        sub.add_argument(
            "--temperature",
            type=float,
            help="gate temperature tau (default: the preset's, else 0.9 for g2, 0.2 for sharpened)",
        )

    def run_length(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--epochs", type=_positive_int, help="most epochs (default: the preset's)")
        sub.add_argument(
            "--max-steps", type=_positive_int, help="stop after this many steps (default: no limit)"
        )
        sub.add_argument("--seed", type=int, help="random seed (default: the preset's)")
        sub.add_argument("--device", help="torch device, e.g. cpu or cuda (default: the preset's, cpu)")
        sub.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override any preset key (repeatable; default: none); unknown keys list the valid ones",
        )

    def eval_gate(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--eval-gate", choices=("sigmoid", "tempered", "hard"),
                         help="gates at inference (default: the checkpoint's; sigmoid for g2 and lstm)")

    def device(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    demo = command(commands, "demo", "short LSTM vs G2-LSTM run on PTB with gate histograms", _demo)
    demo.add_argument("--out", required=True, help="output folder (one run folder per gate inside)")
    _preset_option(demo, "lm", "tiny")
    demo.add_argument("--full", action="store_true",
                      help="the longer demo: the preset's epochs for each model (default: 300 steps each)")
    demo.add_argument(
        "--max-steps", type=_positive_int,
        help="stop each run after this many steps (default: 300, or none with --full)"
    )
    demo.add_argument("--epochs", type=_positive_int, help="epochs of each run (default: the preset's)")
    demo.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any preset key (repeatable; default: none)",
    )
    data(demo)
    progress(demo)

    lm = commands.add_parser("lm", help="language modelling (AWD-LSTM recipe)").add_subparsers(
        dest="lm_command", required=True
    )
    train = command(lm, "train", "train a language model", _lm_train)
    train.add_argument("--out", required=True, help="run folder (the same command resumes it from last.pt)")
    _preset_option(train, "lm", "cpu")
    gates(train)
    train.add_argument("--unit", choices=("word", "char"), help="tokens: words or characters (default: word)")
    run_length(train)
    data(train)
    progress(train)

    tune = command(
        lm, "finetune", "finetune a trained run with averaged SGD (into RUN_DIR/finetune)", _lm_finetune
    )
    tune.add_argument("run_dir", help="the training run's folder (its best.pt is the start)")
    tune.add_argument(
        "--epochs", type=_positive_int, help="most finetune epochs (default: the run's preset's)"
    )
    tune.add_argument("--out", help="the finetune run's folder (default: RUN_DIR/finetune)")
    tune.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="change a setting of the run's config, e.g. a gate schedule: --set noise_p_final=1 "
             "--set schedule_epochs=2 (not the architecture; default: none)",
    )
    data(tune)
    progress(tune)

    evaluate = command(lm, "eval", "perplexity of a checkpoint on the validation and test splits", _lm_eval)
    evaluate.add_argument("checkpoint", help="a checkpoint file (best.pt, last.pt or a compressed one)")
    cache_pointer(evaluate)
    eval_gate(evaluate)
    evaluate.add_argument(
        "--batch-size",
        type=_positive_int,
        help="streams evaluated in parallel (default: the config's; 1 with the cache pointer)",
    )
    device(evaluate)
    data(evaluate)
    progress(evaluate)

    mt = commands.add_parser(
        "mt", help="machine translation (attention encoder-decoder recipe)"
    ).add_subparsers(dest="mt_command", required=True)
    mt_train = command(mt, "train", "train a translation model (best.pt in the run folder)", _mt_train)
    mt_train.add_argument(
        "--out", required=True, help="run folder (the same command resumes it from last.pt)"
    )
    _preset_option(mt_train, "mt", "multi30k-cpu")
    mt_train.add_argument("--src", help="source language suffix of the files (default: the preset's, de)")
    mt_train.add_argument("--tgt", help="target language suffix of the files (default: the preset's, en)")
    gates(mt_train)
    run_length(mt_train)
    data(mt_train)
    progress(mt_train)

    mt_translate = command(mt, "translate", "translate standard input, one sentence per line", _mt_translate)
    mt_translate.add_argument("checkpoint", help="a translation checkpoint file")
    mt_translate.add_argument(
        "--raw",
        action="store_true",
        help="plain text in and out: tokenize and lowercase the input, detokenize the output "
        "(default: tokenized text, as the training files)",
    )
    mt_translate.add_argument("--beam", type=_positive_int, help="beam size (default: the checkpoint's, 5)")
    eval_gate(mt_translate)
    device(mt_translate)

    mt_eval = command(mt, "eval", "BLEU (tokenized) and sacreBLEU of a checkpoint on a split", _mt_eval)
    mt_eval.add_argument("checkpoint", help="a translation checkpoint file")
    mt_eval.add_argument(
        "--split", default="test", choices=("train", "valid", "test"), help="(default: test)"
    )
    mt_eval.add_argument("--beam", type=_positive_int, help="beam size (default: the checkpoint's, 5)")
    eval_gate(mt_eval)
    mt_eval.add_argument("--output", help="also write the translations to this file (default: not written)")
    device(mt_eval)
    data(mt_eval)
    progress(mt_eval)

    squeeze = command(
        commands, "compress",
        "compress gate weights of a checkpoint, or 'sweep' several under the paper's settings", _compress,
    )
    squeeze.description = ("g2lstm compress CKPT (--round R [--clip C] | --rank K) --out OUT\n"
                           "g2lstm compress sweep CKPT... [--data DIR] [--out DIR]")
    squeeze.formatter_class = argparse.RawDescriptionHelpFormatter
    squeeze.add_argument(
        "targets", nargs="+", metavar="CHECKPOINT", help="a checkpoint, or 'sweep' and checkpoints"
    )
    squeeze.add_argument("--round", type=float, help="rounding step r (sweep default 0.2; translation 0.5)")
    squeeze.add_argument("--clip", type=float,
                         help="clip to [-c, c] after rounding (default: none; sweep 0.4, translation 1.0)")
    squeeze.add_argument("--rank", type=_positive_int, help="truncated-SVD rank k (default: none)")
    squeeze.add_argument(
        "--ranks",
        type=_positive_int,
        nargs=2,
        help="sweep: the two ranks (default hidden/9, hidden/18; translation: hidden/8, hidden/16)",
    )
    squeeze.add_argument("--gates", nargs="+", default=["input", "forget"],
                         choices=("input", "forget", "cell", "output"),
                         help="gate blocks to compress (default: input forget)")
    squeeze.add_argument(
        "--out", help="compressed checkpoint file, or the sweep's output folder (default: compression)"
    )
    cache_pointer(squeeze, "sweep: ")
    squeeze.add_argument("--batch-size", type=_positive_int,
                         help="sweep: streams evaluated in parallel (default: as lm eval)")
    squeeze.add_argument(
        "--no-curves", action="store_true", help="sweep: skip the perplexity curves (default: drawn)"
    )
    data(squeeze)

    analyze = command(commands, "analyze", "gate histograms, per-word gate maps, sensitivity", _analyze)
    analyze.add_argument("checkpoints", nargs="+", help="checkpoints of one recipe")
    analyze.add_argument("--out", required=True, help="output folder")
    analyze.add_argument("--split", default="valid", choices=("train", "valid", "test"),
                         help="language models: the split read (default: valid)")
    analyze.add_argument("--max-tokens", type=_positive_int, default=20000,
                         help="language models: tokens read for the histograms (default: 20000)")
    analyze.add_argument(
        "--sentence",
        action="append",
        help="language models: a sentence for the per-word gate map (repeatable; default: two built-in ones)",
    )
    eval_gate(analyze)
    analyze.add_argument("--max-pairs", type=_positive_int, default=10_000,
                         help="translation: training pairs read for the decoder histograms (default: 10000)")
    analyze.add_argument(
        "--pair",
        type=int,
        action="append",
        help="translation: a test pair (line number from 0) for the per-word gate map (default 0, 1)",
    )
    data(analyze)

    export = command(
        commands, "export", "a language-model checkpoint as ONNX (tokens in, logits and states out)", _export
    )
    export.add_argument("checkpoint", help="a language-model checkpoint file (best.pt, or a compressed one)")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    eval_gate(export)
    export.add_argument(
        "--dynamo", action="store_true", help="torch's dynamo-based exporter (default: the TorchScript one)"
    )
    export.add_argument("--json", action="store_true", help="print what was written as one JSON line")

    bench = command(commands, "bench", "speed against torch.nn.LSTM", _bench_speed)
    device(bench)
    bench.add_argument(
        "--repeats", type=_positive_int, default=7, help="timed repeats per shape (default: 7)"
    )
    bench.add_argument("--reference-repeats", type=int, default=2,
                       help="repeats of the slow per-step loop, 0 to skip it (default: 2)")
    bench.add_argument("--shape", type=_positive_int, nargs=4, action="append", metavar=("T", "B", "IN", "H"),
                       help="a shape to time (repeatable; default: the AWD-LSTM layer and two smaller ones)")
    bench.add_argument("--json", help="also write the measurements to this JSON file (default: not written)")
    return parser


def cache_pointer(sub: argparse.ArgumentParser, prefix: str = "") -> None:
    """The options of the continuous cache pointer (its settings default to the checkpoint's config)."""
    sub.add_argument("--cache-pointer", action="store_true",
                     help=f"{prefix}add the continuous cache pointer (default: off)")
    sub.add_argument("--window", type=_positive_int,
                     help="cache pointer: positions remembered (default: the checkpoint's cache_window)")
    sub.add_argument(
        "--theta",
        type=float,
        help="cache pointer: attention sharpness (default: the checkpoint's cache_theta)",
    )
    sub.add_argument("--lambda", dest="lambdah", type=float,
                     help="cache pointer: weight of the cache (default: the checkpoint's cache_lambda)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``g2lstm`` command; the exit code: 0, 2 for a :class:`~g2lstm.errors.G2LSTMError` (1 for a
    diverged run), 130/143 after Ctrl-C/SIGTERM, 1 for a bug (its traceback is shown)."""
    args = build_parser().parse_args(argv)
    from g2lstm.train.signals import TrainingInterrupted

    try:
        _check_cpu_kernel()
        if getattr(args, "device", None) is not None:
            from g2lstm.train import require_device

            require_device(args.device)
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
        lines = str(error.__cause__ or error).strip().splitlines() or [
            type(error.__cause__ or error).__name__
        ]
        raise KernelBuildError(
            f"{KERNEL_ENV}=compiled, but g2lstm's CPU kernel cannot be built here ({lines[0]}); install a "
            f"C++ compiler and ninja, or set {KERNEL_ENV}=auto (or python) for the Python loop"
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
