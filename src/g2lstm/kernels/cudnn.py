"""cuDNN's single weight buffer for the evaluation path (torch's LSTM kernel on the module's own weights).

cuDNN's LSTM reads all layers' weights from one contiguous buffer. Given weights that are separate tensors,
torch copies them into a new buffer on every call (and warns that they are "not part of single contiguous
chunk of memory"); ``nn.LSTM.flatten_parameters`` avoids that by moving its parameters into such a buffer
once, as views, with torch's own ``torch._cudnn_rnn_flatten_weight``. :func:`flatten_lstm_weights` does the
same for a G2LSTM's parameters: the Parameter objects stay the same (an optimizer made earlier keeps
working), only their storage moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["cudnn_can_hold", "flatten_lstm_weights"]


def cudnn_can_hold(weights: Sequence[Tensor]) -> bool:
    """Whether cuDNN takes ``weights`` as they are: CUDA tensors of one dtype that cuDNN accepts, none of
    them sharing memory with another."""
    if not weights:
        return False
    dtype = weights[0].dtype
    if not all(w.dtype == dtype and w.is_cuda and torch.backends.cudnn.is_acceptable(w) for w in weights):
        return False
    return len({w.data_ptr() for w in weights}) == len(weights)


def flatten_lstm_weights(
    weights: Sequence[Tensor],
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bias: bool,
    batch_first: bool,
    bidirectional: bool,
) -> bool:
    """Move ``weights`` (``nn.LSTM``'s order: per layer and direction ``weight_ih, weight_hh[, bias_ih,
    bias_hh]``) into one cuDNN weight buffer, in place; True if done, False where cuDNN does not apply (CPU
    tensors, cuDNN disabled or unavailable, mixed dtypes, shared memory): a no-op there, as in ``nn.LSTM``."""
    if not cudnn_can_hold(weights):
        return False
    from torch.backends.cudnn import rnn

    with torch.cuda.device_of(weights[0]), torch.no_grad():
        if not torch._use_cudnn_rnn_flatten_weight():
            return False
        torch._cudnn_rnn_flatten_weight(
            list(weights),
            4 if bias else 2,
            input_size,
            rnn.get_cudnn_mode("LSTM"),
            hidden_size,
            0,
            num_layers,
            batch_first,
            bidirectional,
        )
    return True
