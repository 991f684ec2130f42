"""Training-step and eval-forward speed of G2LSTM against nn.LSTM and a per-step loop, same run.

    python benchmarks/speed.py                          # the three shapes of the issue, CPU
    python benchmarks/speed.py --device cuda --json speed.json
    python benchmarks/speed.py --shape 70 20 400 1150 --repeats 11

Same as ``g2lstm bench``; see ``g2lstm.benchmark.measure_speed`` for the method.
"""

import sys

from g2lstm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
