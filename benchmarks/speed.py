"""Training-step and eval-forward speed of G2LSTM against nn.LSTM (and a per-step loop), same run.

    python benchmarks/speed.py                       # the three shapes of the issue, CPU
    python benchmarks/speed.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

from g2lstm.benchmark import AWD_SHAPES, format_speed_table, machine_description, measure_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per implementation")
    parser.add_argument("--reference-repeats", type=int, default=2, help="repeats of the slow loop; 0 skips it")
    parser.add_argument(
        "--shape", type=int, nargs=4, action="append", metavar=("T", "B", "IN", "H"), help="repeatable"
    )
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    shapes = [tuple(shape) for shape in args.shape] if args.shape else AWD_SHAPES
    rows = measure_speed(shapes, args.repeats, args.reference_repeats, args.device)
    print(f"machine: {machine_description()}; device {args.device}; medians of {args.repeats} repeats")
    print(format_speed_table(rows))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine_description(), "rows": [r.as_dict() for r in rows]}, out, indent=2)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
