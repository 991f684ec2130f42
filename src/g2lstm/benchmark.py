"""Speed of G2LSTM against torch.nn.LSTM and a per-step reference loop, measured in one run; and the paired
statistics of seeded runs that the results drivers share."""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from g2lstm.lstm import G2LSTM, G2LSTMCell

__all__ = ["SpeedRow", "AWD_SHAPES", "PairedDifference", "machine_description", "kernel_description",
           "measure_speed", "format_speed_table", "mean_sd", "paired_verdict"]

# (time, batch, input, hidden): the AWD-LSTM layer of the paper, and two smaller common sizes.
AWD_SHAPES = ((70, 20, 400, 1150), (35, 20, 200, 200), (35, 64, 256, 256))


@dataclass
class SpeedRow:
    """Median seconds of one shape; ``None`` where an implementation was skipped."""

    shape: tuple[int, int, int, int]
    train_g2: float
    train_lstm: float
    train_reference: float | None
    eval_g2: float
    eval_lstm: float
    eval_reference: float | None

    @property
    def train_ratio(self) -> float:
        return self.train_g2 / self.train_lstm

    @property
    def eval_ratio(self) -> float:
        return self.eval_g2 / self.eval_lstm

    def as_dict(self) -> dict:
        return {**asdict(self), "train_ratio": self.train_ratio, "eval_ratio": self.eval_ratio}


def machine_description(threads: bool = True) -> str:
    """CPU model, this process's thread count (unless ``threads`` is False: a report of runs made by other
    processes) and torch build, for the signature of a measurement."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    count = torch.get_num_threads()
    thread_part = f"{count} thread{'' if count == 1 else 's'}, " if threads else ""
    return (f"{cpu}, {thread_part}torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")


def kernel_description(device: str | torch.device = "cpu") -> str:
    """Which fused-kernel loop a float32 training pass on ``device`` runs, and for the compiled loop, which
    instruction-set build (for the Triton loop, which Triton)."""
    from g2lstm.kernels.compiled import variant_in_use
    from g2lstm.kernels.ops import sequence_loop

    loop = sequence_loop(torch.device(device), torch.float32)
    if loop == "compiled":
        return f"compiled loop, {variant_in_use()} build"
    if loop == "triton":
        import triton  # type: ignore[import-untyped]

        return f"Triton loop, triton {triton.__version__}"
    return "Python loop"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n - 1; NaN for a single value) of ``values``."""
    if not values:
        raise ValueError("mean_sd needs at least one value, got none")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


@dataclass(frozen=True)
class PairedDifference:
    """Differences ``b_s - a_s`` of two models over the same seeds ``s``, as the decision rules of
    ``results/*/DECISION.md`` use them: their mean, sd (n - 1) and standard error ``sd / sqrt(n)``."""

    differences: tuple[float, ...]

    @classmethod
    def of(cls, first: Sequence[float], second: Sequence[float]) -> PairedDifference:
        """``second - first``, seed by seed (both in the same seed order, at least two seeds)."""
        if len(first) != len(second) or len(first) < 2:
            raise ValueError(f"paired values need the same seeds, at least two; got {len(first)} and "
                             f"{len(second)}")
        return cls(tuple(b - a for a, b in zip(first, second)))

    @property
    def mean(self) -> float:
        return statistics.mean(self.differences)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.differences)

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(len(self.differences))


def paired_verdict(paired: PairedDifference, margin: float | None = None) -> str:
    """The decision rule on differences where a positive one favours the second model: ``"better"`` when every
    difference is > 0 and the mean > se; ``"worse"`` when every one is < 0 and the mean < -se; else, when a
    ``margin`` is given and ``mean - 2 se > -margin``, ``"no worse"``; otherwise ``"not resolved"``."""
    values, mean, se = paired.differences, paired.mean, paired.se
    if all(d > 0 for d in values) and mean > se:
        return "better"
    if all(d < 0 for d in values) and mean < -se:
        return "worse"
    if margin is not None and mean - 2 * se > -margin:
        return "no worse"
    return "not resolved"


def _cell_loop(cell: G2LSTMCell, inputs: Tensor) -> Tensor:
    """The plain way to write a G2-LSTM: a Python loop over G2LSTMCell, autograd through every step."""
    state = None
    outputs = []
    for x in inputs:
        state = cell(x, state)
        outputs.append(state[0])
    return torch.stack(outputs)


def _timed(run: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_speed(
    shapes: Sequence[tuple[int, int, int, int]] = AWD_SHAPES,
    repeats: int = 7,
    reference_repeats: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[SpeedRow]:
    """Time a training step (forward + backward) and an eval forward for each shape.

    The implementations share weights and alternate within every repeat, so slow drifts of the machine
    affect all of them alike; each figure is the median over ``repeats`` (``reference_repeats`` for the
    slow per-step loop, 0 to skip it) after one warm-up.
    """
    device = torch.device(device)
    return [_time_shape(shape, repeats, reference_repeats, device, seed) for shape in shapes]


def _time_shape(
    shape: tuple[int, int, int, int], repeats: int, reference_repeats: int, device: torch.device, seed: int
) -> SpeedRow:
    """The medians of :func:`measure_speed` for one shape."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(seed)
    lstm = nn.LSTM(input_size, hidden, device=device)
    g2 = G2LSTM.from_lstm(lstm, gate="g2")
    cell = G2LSTMCell(input_size, hidden, gate="g2", device=device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(lstm, f"{name}_l0"))
    inputs = torch.randn(steps, batch, input_size, device=device, requires_grad=True)

    def train(forward: Callable[[Tensor], Tensor]) -> Callable[[], None]:
        def run() -> None:
            forward(inputs).sum().backward()

        return run

    def evaluate(forward: Callable[[Tensor], Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                forward(inputs)

        return run

    implementations = {
        "train_g2": (g2, train(lambda x: g2(x)[0])),
        "train_lstm": (lstm, train(lambda x: lstm(x)[0])),
        "eval_g2": (g2, evaluate(lambda x: g2(x)[0])),
        "eval_lstm": (lstm, evaluate(lambda x: lstm(x)[0])),
    }
    slow = {
        "train_reference": (cell, train(lambda x: _cell_loop(cell, x))),
        "eval_reference": (cell, evaluate(lambda x: _cell_loop(cell, x))),
    }
    if reference_repeats > 0:
        implementations.update(slow)
    times: dict[str, list[float]] = {name: [] for name in implementations}
    for repeat in range(max(repeats, reference_repeats) + 1):
        for name, (module, run) in implementations.items():
            if repeat > (reference_repeats if name in slow else repeats):
                continue
            module.train(name.startswith("train"))
            elapsed = _timed(run, device)
            if repeat > 0:  # the first round is the warm-up
                times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return SpeedRow(
        shape=shape,
        train_g2=medians["train_g2"],
        train_lstm=medians["train_lstm"],
        train_reference=medians.get("train_reference"),
        eval_g2=medians["eval_g2"],
        eval_lstm=medians["eval_lstm"],
        eval_reference=medians.get("eval_reference"),
    )


def format_speed_table(rows: Sequence[SpeedRow]) -> str:
    """A Markdown table: milliseconds per call and the ratios to nn.LSTM of the same run."""

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value * 1e3:.1f}"

    def ratio(value: float | None, base: float) -> str:
        return "—" if value is None else f"{value / base:.2f}×"

    lines = [
        "| shape (T, B, in, H) | train: nn.LSTM ms | G2LSTM ms | ratio | ref. loop ms | ratio "
        "| eval: nn.LSTM ms | G2LSTM ms | ratio | ref. loop ms | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.shape} | {ms(row.train_lstm)} | {ms(row.train_g2)} | "
            f"{ratio(row.train_g2, row.train_lstm)} "
            f"| {ms(row.train_reference)} | {ratio(row.train_reference, row.train_lstm)} "
            f"| {ms(row.eval_lstm)} | {ms(row.eval_g2)} | {ratio(row.eval_g2, row.eval_lstm)} "
            f"| {ms(row.eval_reference)} | {ratio(row.eval_reference, row.eval_lstm)} |"
        )
    return "\n".join(lines)
