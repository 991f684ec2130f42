"""Sequence kernels: pure tensor functions that never see a module, a config or a data set.

``lstm_sequence`` is the fused kernel used by :class:`g2lstm.G2LSTM` on every device, a registered operator
(:mod:`g2lstm.kernels.ops`) running a loop written in torch operations (:mod:`g2lstm.kernels.fused`; CPU and
CUDA tensors run the same code) or, on CPU by default, the same loop compiled from ``cpu_step.cpp`` (see
:mod:`g2lstm.kernels.compiled`); ``lstm_sequence_reference`` is the step-by-step oracle with the same
signature.
"""

from g2lstm.kernels.ops import lstm_sequence
from g2lstm.kernels.reference import lstm_sequence_reference, lstm_step

__all__ = ["lstm_sequence", "lstm_sequence_reference", "lstm_step"]
