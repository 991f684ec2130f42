"""Sequence kernels: pure tensor functions that never see a module, a config or a data set.

``lstm_sequence`` is the fused kernel used by :class:`g2lstm.G2LSTM` on every device, a registered operator
(:mod:`g2lstm.kernels.ops`) that runs one of three loops, chosen by device and dtype: a loop written in torch
operations (:mod:`g2lstm.kernels.fused`; any device), on CPU by default the same loop compiled from
``cpu_step.cpp`` (see :mod:`g2lstm.kernels.compiled`), and on CUDA by default Triton step kernels (see
:mod:`g2lstm.kernels.triton_loop`; Triton is imported only there); ``lstm_sequence_reference`` is the
step-by-step oracle with the same signature. :mod:`g2lstm.kernels.stored` runs inference from compressed
weights in their stored forms, and :mod:`g2lstm.kernels.cudnn` keeps a module's weights in cuDNN's single
buffer for the evaluation path.
"""

from g2lstm.kernels.ops import lstm_sequence
from g2lstm.kernels.reference import lstm_sequence_reference, lstm_step

__all__ = ["lstm_sequence", "lstm_sequence_reference", "lstm_step"]
