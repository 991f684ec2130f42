"""G2LSTM and G2LSTMCell: drop-ins for ``torch.nn.LSTM`` / ``nn.LSTMCell`` with Gumbel-sigmoid gates."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from g2lstm.functional import gate_bits, noise_from_bits, noise_seed, noise_seeds
from g2lstm.gates import GateConfig, GatePlan
from g2lstm.kernels import lstm_sequence, lstm_step
from g2lstm.kernels.cudnn import flatten_lstm_weights
from g2lstm.kernels.export import RecurrentWeight, eval_layer, ordered_projection
from g2lstm.kernels.reference import step_sizes
from g2lstm.kernels.stored import (
    dense_forms,
    gate_projection,
    lstm_sequence_stored,
    stored_forms,
    use_stored_inference,
)

__all__ = ["DtypeError", "G2LSTM", "G2LSTMCell", "ShapeError"]

State = tuple[Tensor, Tensor]
# Receives (layer, input gates, forget gates) of one forward call; set by g2lstm.record_gates.
GateSink = Callable[[int, Any, Any], None]


class ShapeError(ValueError, RuntimeError):
    """A tensor of the wrong shape: a ``ValueError``, and a ``RuntimeError`` as ``nn.LSTM`` raises for the
    same mistakes (an input's feature size, a state's shape), so handlers written for either catch it."""


class DtypeError(TypeError, ValueError):
    """A tensor of the wrong dtype: a ``TypeError``, and a ``ValueError`` as ``nn.LSTM`` raises for it."""


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_probability(name: str, value: Any, upper_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1{')' if upper_open else ']'}, got {value!r}")


def _check_tensor(name: str, tensor: Any, reference: Tensor) -> None:
    """Type, dtype and device of a user tensor against the module's parameters."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {tensor.dtype}")
    if tensor.dtype != reference.dtype:
        raise DtypeError(
            f"{name} has dtype {tensor.dtype} but the module's parameters are {reference.dtype}; "
            f"convert one of them, e.g. module.to({tensor.dtype})"
        )
    if tensor.device != reference.device:
        raise ValueError(
            f"{name} is on {tensor.device} but the module's parameters are on {reference.device}; "
            f"move one of them, e.g. module.to('{tensor.device}')"
        )


def _check_input(input: Any, reference: Tensor, input_size: int, layouts: tuple[str, str]) -> bool:
    """Check a padded ``input`` against the module (type, dtype, device, rank, feature size) and return
    whether it is batched; ``layouts`` names the axes of the unbatched and the batched form."""
    _check_tensor("input", input, reference)
    ranks = [layout.count(",") + 1 for layout in layouts]
    if input.dim() not in ranks:
        raise ShapeError(
            f"input must be {ranks[0]}-D {layouts[0]} unbatched or {ranks[1]}-D {layouts[1]} batched, got "
            f"{input.dim()}-D with shape {tuple(input.shape)}"
        )
    _check_features("input", input, input_size)
    return input.dim() == ranks[1]


def _check_features(name: str, input: Tensor, input_size: int) -> None:
    if input.shape[-1] != input_size:
        raise ShapeError(
            f"{name} has {input.shape[-1]} features in its last dimension but input_size is {input_size}"
        )


def _check_state(
    hx: Any, shapes: tuple[tuple[int, ...], tuple[int, ...]], reference: Tensor, axes: str
) -> State:
    """``hx`` as ``(h_0, c_0)``, checked to be two tensors of the module's dtype and device with the shapes
    ``shapes``; ``axes`` names the shapes' axes for the error message."""
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors, got {type(hx).__name__}")
    for name, state, shape in zip(("h_0", "c_0"), hx, shapes):
        _check_tensor(name, state, reference)
        if tuple(state.shape) != shape:
            raise ShapeError(f"{name} must have shape {shape}, got {tuple(state.shape)} (axes: {axes})")
    return hx[0], hx[1]


class _Sequences(NamedTuple):
    """A forward call's input in the form the implementations take, and the way back to the caller's form.

    ``data`` holds a PackedSequence's rows (``batch_sizes`` set) or a 3-D padded batch in the module's
    layout (an unbatched input given its batch axis); ``batch`` is the number of sequences.
    """

    data: Tensor
    batch_sizes: Tensor | None
    sorted_indices: Tensor | None
    unsorted_indices: Tensor | None
    batch: int
    batched: bool
    batch_first: bool

    def rows(self) -> Tensor:
        """The input as time-major rows ``(N, features)``, packed order, as the fused kernel takes it."""
        if self.batch_sizes is not None:
            return self.data
        time_major = self.data.transpose(0, 1) if self.batch_first else self.data
        return time_major.reshape(-1, self.data.shape[-1])

    def from_rows(self, rows: Tensor) -> Tensor | PackedSequence:
        """Time-major rows ``(N, features)`` laid out as the caller's input was."""
        if self.batch_sizes is not None:
            sorted_indices, unsorted_indices = (
                None if i is None else i.to(rows.device) for i in (self.sorted_indices, self.unsorted_indices)
            )
            return PackedSequence(rows, self.batch_sizes, sorted_indices, unsorted_indices)
        padded = rows.view(-1, self.batch, rows.shape[-1])
        return self.from_padded(padded.transpose(0, 1) if self.batch_first else padded)

    def from_padded(self, padded: Tensor) -> Tensor:
        """A padded result in the module's layout, unbatched again where the input was."""
        return padded if self.batched else padded.squeeze(0 if self.batch_first else 1)

    def sort_state(self, h: Tensor, c: Tensor) -> State:
        """Initial states in the order of the packed sequences (which sorts them by length)."""
        if self.sorted_indices is None:
            return h, c
        return h.index_select(1, self.sorted_indices), c.index_select(1, self.sorted_indices)

    def restore_state(self, h: Tensor, c: Tensor) -> State:
        """Final states in the caller's batch order and form."""
        if self.unsorted_indices is not None:
            h, c = h.index_select(1, self.unsorted_indices), c.index_select(1, self.unsorted_indices)
        return (h, c) if self.batched else (h.squeeze(1), c.squeeze(1))


def _upcast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` (a tensor, a PackedSequence or a state tuple) with lower-precision float tensors cast to
    ``dtype``."""
    if isinstance(value, PackedSequence):
        return PackedSequence(_upcast(value.data, dtype), value.batch_sizes, value.sorted_indices,
                              value.unsorted_indices)
    if isinstance(value, (tuple, list)):
        return type(value)(_upcast(item, dtype) for item in value)
    if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != dtype and (
        torch.finfo(value.dtype).bits < torch.finfo(dtype).bits
    ):
        return value.to(dtype)
    return value


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 asks per device kind
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
    except RuntimeError:  # a device type autocast does not know (e.g. meta)
        return False


def _outside_autocast(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Run a module's ``forward`` in its parameters' precision even inside ``torch.autocast``.

    The gate noise (logits of uniforms near 0 and 1) and the cell state need float32's range, and torch's CPU
    LSTM kernel has no bfloat16 form on every CPU; so under autocast the recurrence is computed in the
    parameters' dtype, inputs and states that earlier autocast regions made low-precision are cast up, and
    the outputs keep the parameters' dtype (autocast casts them down again where the next op wants it).
    """

    @functools.wraps(forward)
    def wrapper(self: Any, input: Any, hx: Any = None) -> Any:
        reference = self._reference()
        device_type = reference.device.type
        if not _autocast_enabled(device_type):
            return forward(self, input, hx)
        with torch.autocast(device_type, enabled=False):
            return forward(self, _upcast(input, reference.dtype), _upcast(hx, reference.dtype))

    return wrapper


def _gate_option(field: str, resolved: str, doc: str) -> property:
    """A module property reading the gate config's ``resolved`` value and validating ``field`` on set."""

    def read(self: _GateOptions) -> Any:
        return getattr(self._gate_config, resolved)

    def write(self: _GateOptions, value: Any) -> None:
        self._set_gate_option(**{field: value})

    return property(read, write, doc=doc)


class _GateOptions(nn.Module):
    """The gate options shared by G2LSTM and G2LSTMCell, validated whenever they are set.

    Setting ``temperature`` or ``eval_gate`` to ``None`` returns it to the gate mode's default.
    """

    _gate_config: GateConfig
    _gate_sink: GateSink | None
    hidden_size: int
    _flat_weights_names: list[str]  # every weight and bias, in nn.LSTM's order

    def _init_gates(self, config: GateConfig, weight_dropout: float) -> None:
        _check_probability("weight_dropout", weight_dropout, upper_open=True)
        self._gate_config = config
        self.weight_dropout = float(weight_dropout)
        self._gate_sink = None

    def _set_gate_option(self, **option: Any) -> None:
        self._gate_config = replace(self._gate_config, **option)

    gate = _gate_option("mode", "mode", "The gate mode: ``'g2'``, ``'sharpened'`` or ``'lstm'``.")
    temperature = _gate_option("temperature", "tau", "τ in force (``None`` sets the mode's default).")
    noise_p = _gate_option("noise_p", "noise_p", "Probability that a gate element is perturbed by noise.")
    noise_eps = _gate_option("noise_eps", "noise_eps", "Bound of the noise, ``|L| <= log((1 + eps) / eps)``.")
    eval_gate = _gate_option(
        "eval_gate", "inference_gate", "Evaluation-mode gate (``None``: the mode's default)."
    )

    def _gate_repr(self) -> str:
        config = self._gate_config
        text = f"gate={config.mode!r}, temperature={config.tau}"
        if config.mode == "g2":
            text += f", noise_p={config.noise_p}"
        text += f", eval_gate={config.inference_gate!r}"
        if self.weight_dropout:
            text += f", weight_dropout={self.weight_dropout}"
        return text

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(H), 1/sqrt(H)), as ``nn.LSTM`` and ``nn.LSTMCell``; a
        parametrized one is set through its parametrization (which may store it in another form)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name in self._flat_weights_names:
                if parametrize.is_parametrized(self, name):
                    setattr(self, name, torch.empty_like(getattr(self, name)).uniform_(-bound, bound))
                else:
                    nn.init.uniform_(getattr(self, name), -bound, bound)

    def _dropconnect(self, weight_hh: Tensor) -> Tensor:
        """DropConnect on hidden-to-hidden weights: one mask per forward call, in training only."""
        if self.training and self.weight_dropout > 0:
            return F.dropout(weight_hh, self.weight_dropout, training=True)
        return weight_hh


class G2LSTM(_GateOptions):
    r"""A multi-layer LSTM whose input and forget gates are trained towards binary values (G2-LSTM).

    For each element in the input sequence, each layer computes (torch's gate order i, f, g, o)

    .. math::
        \begin{array}{ll}
        a_t = W_{i\cdot} x_t + b_{i\cdot} + W_{h\cdot} h_{t-1} + b_{h\cdot} \\
        i_t = G(a^i_t, \tau), \quad f_t = G(a^f_t, \tau) \\
        g_t = \tanh(a^g_t), \quad o_t = \sigma(a^o_t) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    where in training :math:`G(a, \tau) = \sigma((a + m \odot L) / \tau)` with logistic noise
    :math:`L = \log(U + \epsilon) - \log(1 + \epsilon - U)`, :math:`U \sim \mathcal{U}(0, 1)`, and a
    Bernoulli(``noise_p``) mask :math:`m`, all drawn anew for every element, step and call from torch's
    random generator (``torch.manual_seed`` repeats a run exactly). Gradients flow through :math:`G` with
    the noise held fixed. In evaluation mode the gates are deterministic, chosen by ``eval_gate``. With
    ``proj_size > 0`` (LSTMP, as ``nn.LSTM``), :math:`h_t = W_{hr} (o_t \odot \tanh(c_t))`.

    Args:
        input_size: The number of expected features in the input `x`.
        hidden_size: The number of features in the hidden state `h`.
        num_layers: Number of recurrent layers. Default: 1
        bias: If ``False``, the layer does not use bias weights `b_ih` and `b_hh`. Default: ``True``
        batch_first: If ``True``, input and output tensors are `(batch, seq, feature)`. Default: ``False``
        dropout: Dropout probability on the outputs of each layer except the last. Default: 0
        bidirectional: If ``True``, becomes a bidirectional LSTM. Default: ``False``
        proj_size: If ``> 0``, an LSTM with projections of that size. Default: 0

    Keyword Args:
        gate: ``"g2"`` (Gumbel-sigmoid input and forget gates), ``"sharpened"`` (the paper's baseline
            :math:`\sigma(a/\tau)` without noise, in training and evaluation) or ``"lstm"`` (plain
            sigmoids: exactly ``nn.LSTM``). Default: ``"g2"``
        temperature: :math:`\tau`. Default: 0.9 for ``"g2"``, 0.2 for ``"sharpened"``, 1 for ``"lstm"``
        noise_p: Probability that a gate element is perturbed by noise (``1`` is the paper's formula as
            written; the authors' release used 0.2). Default: 0.2
        noise_eps: Keeps the noise finite, :math:`|L| \le \log((1 + \epsilon)/\epsilon)`. Default: 1e-3
        eval_gate: Input and forget gates in evaluation mode: ``"sigmoid"`` :math:`\sigma(a)` (the
            authors' release; exactly ``nn.LSTM``), ``"tempered"`` :math:`\sigma(a/\tau)` or ``"hard"``
            :math:`1[a \ge 0]`. Default: ``"tempered"`` for ``"sharpened"``, else ``"sigmoid"``
        weight_dropout: DropConnect probability on the hidden-to-hidden weights, one mask per forward
            call, in training only (as AWD-LSTM uses it). Default: 0
        device, dtype: Where and how the parameters are created, as for ``nn.LSTM``.

    Inputs: input, (h_0, c_0)
        - **input**: tensor of shape :math:`(L, H_{in})` unbatched, :math:`(L, N, H_{in})` or
          :math:`(N, L, H_{in})` when ``batch_first=True``, or a packed variable length sequence
          (:func:`torch.nn.utils.rnn.pack_padded_sequence`).
        - **h_0**: :math:`(D \cdot \text{num\_layers}, N, H_{out})`, or
          :math:`(D \cdot \text{num\_layers}, H_{out})` for unbatched input. Default: zeros.
        - **c_0**: :math:`(D \cdot \text{num\_layers}, N, H)`, or :math:`(D \cdot \text{num\_layers}, H)`
          for unbatched input. Default: zeros.

    Outputs: output, (h_n, c_n)
        - **output**: :math:`(L, N, D \cdot H_{out})` (batch first if ``batch_first``), or a packed
          sequence if the input was one: the last layer's :math:`h_t` for every `t`.
        - **h_n**, **c_n**: the final hidden and cell states of every layer and direction, shaped like
          **h_0** and **c_0**.

        where :math:`N` is the batch size, :math:`L` the sequence length, :math:`D` = 2 if bidirectional
        else 1, :math:`H` = ``hidden_size`` and :math:`H_{out}` = ``proj_size`` if it is > 0, else
        :math:`H`.

    Attributes:
        weight_ih_l[k], weight_hh_l[k], bias_ih_l[k], bias_hh_l[k], weight_hr_l[k] (and ``_reverse`` for
        the backward direction): as in ``nn.LSTM``, shapes ``(4H, in)``, ``(4H, H_out)``, ``(4H,)`` and
        (with ``proj_size``) ``(H_out, H)``, so state dicts load in both directions. All are initialised
        from :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`. ``mode``, ``_flat_weights``,
        ``check_forward_args``, ``permute_hidden`` and the other helpers of ``nn.LSTM`` are there too.

    Training-mode forward passes with noise (or hard gates, or while :func:`g2lstm.record_gates` records)
    run the fused G2 kernel, registered as the operators ``g2lstm::lstm_sequence`` and its backward; so do
    all passes under ``torch.compile`` and ``torch.export`` (one node for any sequence length and batch
    size; no graph break with ``fullgraph=True``). Every other pass runs torch's native LSTM kernel on the
    same weights. Under ONNX export, evaluation runs as a loop the exporters keep whole
    (:mod:`g2lstm.kernels.export`), so the exported model takes any sequence length.

    ``G2LSTM`` is not a subclass of ``nn.LSTM`` or ``nn.RNNBase``: torch treats those types specially behind
    a user's back (``torch.compile`` graph-breaks on them, ``RNNBase`` re-flattens weights on ``.to()``
    for cuDNN), and no torch tool would then run G2's gates. ``torch.ao.quantization.quantize_dynamic``
    matches modules by exact type; :mod:`g2lstm.quantization` registers G2LSTM's own counterpart.

    Example::

        >>> rnn = G2LSTM(10, 20, 2)
        >>> input = torch.randn(5, 3, 10)
        >>> output, (hn, cn) = rnn(input)
        >>> output.shape, hn.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    mode = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        gate: str = "g2",
        temperature: float | None = None,
        noise_p: float = 0.2,
        noise_eps: float = 1e-3,
        eval_gate: str | None = None,
        weight_dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("num_layers", num_layers)
        _check_positive_int("proj_size", proj_size, minimum=0)
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({hidden_size}), got {proj_size}")
        _check_probability("dropout", dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        self._init_gates(GateConfig(gate, temperature, noise_p, noise_eps, eval_gate), weight_dropout)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        real_hidden = proj_size or hidden_size
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * self.num_directions
            for suffix in self._direction_suffixes:
                shapes: dict[str, tuple[int, ...]] = {
                    "weight_ih": (4 * hidden_size, layer_input),
                    "weight_hh": (4 * hidden_size, real_hidden),
                }
                if self.bias:
                    shapes.update(bias_ih=(4 * hidden_size,), bias_hh=(4 * hidden_size,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()
        self.flatten_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _direction_suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The parameters in ``nn.LSTM``'s flat order (``None`` for one that is not there)."""
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Parameters grouped per layer and direction, as ``nn.LSTM.all_weights``."""
        per_group = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        flat = [getattr(self, name) for name in self._flat_weights_names]
        return [flat[k : k + per_group] for k in range(0, len(flat), per_group)]

    def flatten_parameters(self) -> None:
        """Keep the weights in one cuDNN buffer (on CUDA with cuDNN; a no-op elsewhere), as ``nn.LSTM`` does,
        so that evaluation runs cuDNN on them without copying them on every call. Called on construction and
        after every ``.to()`` / ``.cuda()``; the Parameter objects stay the same."""
        weights = [self._parameters.get(name) for name in self._flat_weights_names]
        present = [weight for weight in weights if isinstance(weight, Tensor)]
        if len(present) == len(weights):  # (a parametrized weight is no Parameter of the module)
            flatten_lstm_weights(
                present,
                input_size=self.input_size,
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                bias=self.bias,
                batch_first=self.batch_first,
                bidirectional=self.bidirectional,
            )

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> G2LSTM:
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return f"{text}, {self._gate_repr()}"

    @property
    def qconfig(self) -> Any:
        """The quantization config that a ``torch.ao.quantization`` pass assigned (absent until one does).

        Such passes pick modules by exact type: ``quantize_dynamic(model, {nn.LSTM, nn.Linear})`` leaves a
        G2LSTM in float. A pass that assigns it no config therefore warns, naming the fix.
        """
        try:
            return self.__dict__["_qconfig"]
        except KeyError:
            raise AttributeError("qconfig") from None

    @qconfig.setter
    def qconfig(self, value: Any) -> None:
        if value is None:
            warnings.warn(
                "a quantization pass leaves this G2LSTM in float: torch.ao.quantization picks modules by "
                "exact type, so name G2LSTM in the qconfig spec, e.g. "
                "quantize_dynamic(model, {G2LSTM, nn.Linear}), "
                "to get g2lstm.quantization.QuantizedG2LSTM",
                UserWarning,
                stacklevel=2,
            )
        self.__dict__["_qconfig"] = value

    @qconfig.deleter
    def qconfig(self) -> None:
        self.__dict__.pop("_qconfig", None)

    # ------------------------------------------------------------------ nn.LSTM's argument helpers

    def check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        """As ``nn.LSTM.check_input``: ``input``'s dtype, rank (2-D packed data, else 3-D) and feature
        size."""
        reference = self._reference()
        if input.dtype != reference.dtype and not _autocast_enabled(reference.device.type):
            raise DtypeError(
                f"input has dtype {input.dtype} but the module's parameters are {reference.dtype}"
            )
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise ShapeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.shape[-1] != self.input_size:
            raise ShapeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )

    def get_expected_hidden_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        """The shape ``h_0`` must have for ``input`` (``batch_sizes`` for packed data)."""
        batch = int(batch_sizes[0]) if batch_sizes is not None else input.shape[0 if self.batch_first else 1]
        return self.num_layers * self.num_directions, batch, self.proj_size or self.hidden_size

    def get_expected_cell_size(self, input: Tensor, batch_sizes: Tensor | None) -> tuple[int, int, int]:
        """The shape ``c_0`` must have for ``input`` (``batch_sizes`` for packed data)."""
        layers, batch, _ = self.get_expected_hidden_size(input, batch_sizes)
        return layers, batch, self.hidden_size

    def check_hidden_size(
        self, hx: Tensor, expected_hidden_size: tuple[int, ...], msg: str = "Expected hidden size {}, got {}"
    ) -> None:
        if tuple(hx.shape) != tuple(expected_hidden_size):
            raise ShapeError(msg.format(expected_hidden_size, list(hx.shape)))

    def check_forward_args(self, input: Tensor, hidden: State, batch_sizes: Tensor | None) -> None:
        """As ``nn.LSTM.check_forward_args``: ``input`` and both states against the module's sizes."""
        self.check_input(input, batch_sizes)
        self.check_hidden_size(
            hidden[0], self.get_expected_hidden_size(input, batch_sizes), "Expected hidden[0] size {}, got {}"
        )
        self.check_hidden_size(
            hidden[1], self.get_expected_cell_size(input, batch_sizes), "Expected hidden[1] size {}, got {}"
        )

    def permute_hidden(self, hx: State, permutation: Tensor | None) -> State:
        """``hx`` with its batch axis reordered by ``permutation`` (``None``: unchanged), as ``nn.LSTM``."""
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)

    # ------------------------------------------------------------------ conversion

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **options: Any) -> G2LSTM:
        """A G2LSTM with ``lstm``'s architecture and a copy of its weights; ``options`` set the gates."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"from_lstm expects a torch.nn.LSTM, got {type(lstm).__name__}")
        reference = next(lstm.parameters())  # weight_ih_l0
        with warnings.catch_warnings():  # nn.LSTM warned about its own dropout already
            warnings.simplefilter("ignore", UserWarning)
            module = cls(
                lstm.input_size,
                lstm.hidden_size,
                lstm.num_layers,
                lstm.bias,
                lstm.batch_first,
                lstm.dropout,
                lstm.bidirectional,
                lstm.proj_size,
                device=reference.device,
                dtype=reference.dtype,
                **options,
            )
        module.load_state_dict(lstm.state_dict())
        module.train(lstm.training)
        return module

    def to_lstm(self) -> nn.LSTM:
        """An ``nn.LSTM`` with this module's architecture and a copy of its weights."""
        reference = self._reference()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lstm = nn.LSTM(
                self.input_size,
                self.hidden_size,
                self.num_layers,
                self.bias,
                self.batch_first,
                self.dropout,
                self.bidirectional,
                self.proj_size,
                device=reference.device,
                dtype=reference.dtype,
            )
        with torch.no_grad():
            for name in self._flat_weights_names:
                getattr(lstm, name).copy_(getattr(self, name))
        lstm.train(self.training)
        return lstm

    # ------------------------------------------------------------------ forward

    def _layer_weights(self, layer: int, direction: int) -> list[Tensor]:
        """``[weight_ih, weight_hh, bias_ih, bias_hh, weight_hr]`` of one layer and direction, without the
        biases or the projection where the module has none; DropConnect applied."""
        suffix = self._direction_suffixes[direction]
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        names += ["weight_hr"] if self.proj_size else []
        weights = [getattr(self, f"{name}_l{layer}{suffix}") for name in names]
        weights[1] = self._dropconnect(weights[1])
        return weights

    def _reference(self) -> Tensor:
        """A tensor with the weights' dtype and device, without computing a parametrized weight."""
        return next(tensor for tensor in (*self.parameters(), *self.buffers()) if tensor.is_floating_point())

    @_outside_autocast
    def forward(
        self, input: Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        sequences, h0, c0 = self._normalise(input, hx)
        plan = self._gate_config.plan(self.training)
        output, h_n, c_n = self._implementation(plan)(sequences, h0, c0, plan)
        return output, sequences.restore_state(h_n, c_n)

    def _normalise(self, input: Tensor | PackedSequence, hx: Any) -> tuple[_Sequences, Tensor, Tensor]:
        """The checked input as :class:`_Sequences` and the initial states ``(h_0, c_0)``, batched, in its
        sequences' order (zeros for ``hx=None``)."""
        reference = self._reference()
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_tensor("input.data", data, reference)
            _check_features("input.data", data, self.input_size)
            sequences = _Sequences(
                data, batch_sizes, sorted_indices, unsorted_indices, int(batch_sizes[0]), True,
                self.batch_first,
            )
        else:
            batched = _check_input(
                input, reference, self.input_size,
                ("(L, H_in)", "(N, L, H_in)" if self.batch_first else "(L, N, H_in)"),
            )
            padded = input if batched else input.unsqueeze(0 if self.batch_first else 1)
            if padded.shape[0] == 0 or padded.shape[1] == 0:
                raise ValueError(f"input has an empty sequence or batch dimension: {tuple(padded.shape)}")
            batch = padded.shape[0 if self.batch_first else 1]
            sequences = _Sequences(padded, None, None, None, batch, batched, self.batch_first)
        layers, batch = self.num_layers * self.num_directions, sequences.batch
        output_size = self.proj_size or self.hidden_size
        if hx is None:
            h0 = reference.new_zeros(layers, batch, output_size)
            c0 = reference.new_zeros(layers, batch, self.hidden_size)
            return sequences, h0, c0
        batch_axis = (batch,) if sequences.batched else ()
        shapes = (layers, *batch_axis, output_size), (layers, *batch_axis, self.hidden_size)
        axes = f"num_layers * num_directions, {'batch, ' if sequences.batched else ''}hidden_size"
        axes += " (proj_size for h_0)" if self.proj_size else ""
        h0, c0 = _check_state(hx, shapes, reference, axes)
        if not sequences.batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return sequences, *sequences.sort_state(h0, c0)

    def _implementation(
        self, plan: GatePlan
    ) -> Callable[[_Sequences, Tensor, Tensor, GatePlan], tuple[Any, Tensor, Tensor]]:
        """The forward implementation for this call: a loop the ONNX exporters keep whole when exporting;
        the fused kernel where the gates are noisy or hard, are recorded, weights are read in their stored
        forms or a graph is compiled; else torch's own LSTM kernel (σ gates need no more)."""
        exporting = not self.training and self._gate_sink is None and torch.onnx.is_in_onnx_export()
        if exporting and (plan.hard or not torch.jit.is_tracing() or self._has_low_rank_weights()):
            return self._forward_exportable
        compiling = torch.compiler.is_compiling()  # torch.compile and torch.export: the registered operator
        # inference from the stored forms of parametrized weights runs in eager mode only (the compiled loop
        # it calls is no operator a graph can hold; traced graphs compute the parametrized weights instead)
        stored = not (exporting or compiling or torch.jit.is_tracing()) and use_stored_inference(
            self, self._reference(), self._flat_weights_names, plan.noise, plan.hard
        )
        if stored:
            return functools.partial(self._forward_fused, stored=True)
        if plan.noise or plan.hard or self._gate_sink is not None or compiling:
            return self._forward_fused
        return self._forward_native

    def _forward_native(
        self, sequences: _Sequences, h0: Tensor, c0: Tensor, plan: GatePlan
    ) -> tuple[Tensor | PackedSequence, Tensor, Tensor]:
        """torch's own LSTM kernel (cuDNN on CUDA), σ(scale · a) gates folded into the weights."""
        weights = self._native_weights(plan.scale)
        args = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
        if sequences.batch_sizes is not None:
            rows, h_n, c_n = torch.lstm(sequences.data, sequences.batch_sizes, (h0, c0), weights, *args)
            return sequences.from_rows(rows), h_n, c_n
        output, h_n, c_n = torch.lstm(sequences.data, (h0, c0), weights, *args, self.batch_first)
        return sequences.from_padded(output), h_n, c_n

    def _native_weights(self, scale: float) -> list[Tensor]:
        """Weights for torch's LSTM kernel; ``sigmoid(scale * a)`` gates become scaled gate rows."""
        weights = []
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                layer_weights = self._layer_weights(layer, direction)
                if scale != 1.0:
                    gate_weights = 4 if self.bias else 2  # the projection, last, is not scaled
                    rows = 4 * self.hidden_size
                    row_scale = layer_weights[0].new_ones(rows)
                    row_scale[: rows // 2] = scale
                    gates, projection = layer_weights[:gate_weights], layer_weights[gate_weights:]
                    layer_weights = [w * (row_scale[:, None] if w.dim() == 2 else row_scale) for w in gates]
                    layer_weights += projection
                weights.extend(layer_weights)
        return weights

    def _forward_fused(
        self, sequences: _Sequences, h0: Tensor, c0: Tensor, plan: GatePlan, stored: bool = False
    ) -> tuple[Tensor | PackedSequence, Tensor, Tensor]:
        """All layers with the fused kernel, on the input's packed, time-major rows; with ``stored``
        (inference only), weights that a parametrization stores in another form are used in that form
        (:mod:`g2lstm.kernels.stored`). While gates are recorded, each layer's input- and forget-gate
        activations go to the sink (detached, on the CPU, in the input's layout).
        """
        batch_sizes = sequences.batch_sizes
        hidden = self.hidden_size
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        layer_input = sequences.rows()
        for layer in range(self.num_layers):
            outputs, input_gates, forget_gates = [], [], []
            if stored:  # no noise at inference: every weight read in the form it is stored in
                results = [
                    self._stored_direction(layer_input, layer, direction, h0, c0, batch_sizes, plan)
                    for direction in range(self.num_directions)
                ]
            else:
                weights = [self._layer_weights(layer, direction) for direction in range(self.num_directions)]
                seeds = None
                if plan.noise:  # drawn after the layer's input and weights, as in eager order when compiled
                    seeds = noise_seeds(len(weights), [layer_input] + [w[1] for w in weights])
                results = []
                for direction, (weight_ih, weight_hh, *rest) in enumerate(weights):
                    weight_hr = rest.pop() if self.proj_size else None
                    gate_inputs = F.linear(layer_input, weight_ih, rest[0] + rest[1] if rest else None)
                    state = layer * self.num_directions + direction
                    results.append(lstm_sequence(
                        gate_inputs, h0[state], c0[state], weight_hh, batch_sizes, reverse=direction == 1,
                        scale=plan.scale, hard=plan.hard, weight_hr=weight_hr,
                        noise_seed=None if seeds is None else seeds[direction],
                        noise_p=self._gate_config.noise_p, noise_eps=self._gate_config.noise_eps,
                    ))
            for output, h, c, gates in results:
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
                if self._gate_sink is not None:
                    input_gates.append(gates[:, :hidden])
                    forget_gates.append(gates[:, hidden : 2 * hidden])
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
            if self._gate_sink is not None:
                self._gate_sink(
                    layer,
                    sequences.from_rows(torch.cat(input_gates, 1).cpu()),
                    sequences.from_rows(torch.cat(forget_gates, 1).cpu()),
                )
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return sequences.from_rows(layer_input), torch.stack(h_n), torch.stack(c_n)

    def _stored_direction(
        self,
        layer_input: Tensor,
        layer: int,
        direction: int,
        h0: Tensor,
        c0: Tensor,
        batch_sizes: Tensor | None,
        plan: GatePlan,
    ) -> tuple[Tensor, Tensor, Tensor, Any]:
        """One layer direction at inference on the compiled inference loop, which keeps nothing for a
        backward pass: parametrized weights in their stored forms (:mod:`g2lstm.kernels.stored`; the input
        projection from the factors or codes, the recurrence multiplying by them), other weights as dense
        blocks; with a projection or DropConnect, the fused kernel. Returns as :func:`lstm_sequence`
        (``gates`` only while gates are recorded)."""
        suffix = f"_l{layer}{self._direction_suffixes[direction]}"
        state = layer * self.num_directions + direction
        forms_ih = stored_forms(self, f"weight_ih{suffix}")
        # the compiled inference loop has no projection and no DropConnect (a training pass under no_grad)
        dense_hh = self.proj_size or (self.training and self.weight_dropout > 0)
        weight_hh = f"weight_hh{suffix}"
        forms_hh = None
        if not dense_hh:
            forms_hh = stored_forms(self, weight_hh) or dense_forms(getattr(self, weight_hh))
        bias = getattr(self, f"bias_ih{suffix}") + getattr(self, f"bias_hh{suffix}") if self.bias else None
        if forms_ih is not None:
            gate_inputs = gate_projection(layer_input, forms_ih, bias)
        else:
            gate_inputs = F.linear(layer_input, getattr(self, f"weight_ih{suffix}"), bias)
        if forms_hh is None:
            return lstm_sequence(
                gate_inputs, h0[state], c0[state], self._dropconnect(getattr(self, weight_hh)),
                batch_sizes, reverse=direction == 1, scale=plan.scale, hard=plan.hard,
                weight_hr=getattr(self, f"weight_hr{suffix}") if self.proj_size else None,
            )
        sizes = step_sizes(batch_sizes, layer_input.shape[0], h0.shape[1])
        return lstm_sequence_stored(
            gate_inputs, h0[state], c0[state], forms_hh, sizes, reverse=direction == 1, scale=plan.scale,
            hard=plan.hard, keep_gates=self._gate_sink is not None,
        )

    def _has_low_rank_weights(self) -> bool:
        """Whether some weight is stored with low-rank gate blocks."""
        return any(
            kind == "rank"
            for name in self._flat_weights_names
            for kind, _ in (stored_forms(self, name) or {}).values()
        )

    def _recurrent_weight(self, name: str) -> RecurrentWeight:
        """Hidden-to-hidden weight ``name`` as the exported loop multiplies by it: factored for the legacy
        (tracing) exporter; dense for the dynamo one, whose ONNX translation of the factored loop fixed the
        batch size (torch 2.13) and whose optimizer folds constant products anyway."""
        forms = stored_forms(self, name) if torch.jit.is_tracing() else None
        if forms is None:
            return RecurrentWeight.dense(getattr(self, name))
        return RecurrentWeight.of(forms)

    def _ordered_projection(self, inputs: Tensor, name: str, order: list[int]) -> Tensor:
        """``inputs @ W^T`` for input-to-hidden weight ``name``, gate blocks in ``order``, low-rank blocks
        as two skinny products (legacy exporter only, as :meth:`_recurrent_weight`)."""
        forms = stored_forms(self, name) if torch.jit.is_tracing() else None
        if forms is None and order == sorted(order):
            return F.linear(inputs, getattr(self, name))
        return ordered_projection(inputs, forms or dense_forms(getattr(self, name)), order)

    def _forward_exportable(
        self, sequences: _Sequences, h0: Tensor, c0: Tensor, plan: GatePlan
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Evaluation as loops the ONNX exporters keep whole (any sequence length):
        :func:`g2lstm.kernels.export.eval_layer` on a padded input."""
        if sequences.batch_sizes is not None:
            raise ValueError("ONNX export of G2LSTM takes padded input, not a PackedSequence")
        input = sequences.data
        layer_input = input.transpose(0, 1) if self.batch_first else input
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                suffix = f"_l{layer}{self._direction_suffixes[direction]}"
                weight_hh = self._recurrent_weight(f"weight_hh{suffix}")
                gate_inputs = self._ordered_projection(layer_input, f"weight_ih{suffix}", weight_hh.order)
                if self.bias:
                    bias = getattr(self, f"bias_ih{suffix}") + getattr(self, f"bias_hh{suffix}")
                    gate_inputs = gate_inputs + torch.cat([bias.chunk(4)[index] for index in weight_hh.order])
                weight_hr = getattr(self, f"weight_hr{suffix}") if self.proj_size else None
                state = layer * self.num_directions + direction
                output, h, c = eval_layer(
                    gate_inputs, h0[state], c0[state], weight_hh, weight_hr, direction == 1, plan.scale,
                    plan.hard,
                )
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return sequences.from_padded(output), torch.stack(h_n), torch.stack(c_n)


class G2LSTMCell(_GateOptions):
    r"""One G2-LSTM step, the counterpart of ``torch.nn.LSTMCell``.

    Computes the equations of :class:`G2LSTM` for a single time step; the gate options are the same
    keyword arguments.

    Inputs: input, (h_0, c_0)
        - **input**: :math:`(N, H_{in})` or :math:`(H_{in})`
        - **h_0**, **c_0**: :math:`(N, H)` or :math:`(H)`. Default: zeros.

    Outputs: (h_1, c_1), each :math:`(N, H)` or :math:`(H)`.

    Attributes:
        weight_ih ``(4H, in)``, weight_hh ``(4H, H)``, bias_ih, bias_hh ``(4H,)``, as ``nn.LSTMCell``.

    Example::

        >>> cell = G2LSTMCell(10, 20)
        >>> h, c = cell(torch.randn(3, 10))
        >>> h.shape
        torch.Size([3, 20])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        gate: str = "g2",
        temperature: float | None = None,
        noise_p: float = 0.2,
        noise_eps: float = 1e-3,
        eval_gate: str | None = None,
        weight_dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bool(bias)
        self._init_gates(GateConfig(gate, temperature, noise_p, noise_eps, eval_gate), weight_dropout)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self._flat_weights_names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        self.reset_parameters()

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return f"{text}, {self._gate_repr()}"

    @classmethod
    def from_lstm_cell(cls, cell: nn.LSTMCell, **options: Any) -> G2LSTMCell:
        """A G2LSTMCell with ``cell``'s sizes and a copy of its weights; ``options`` set the gates."""
        if not isinstance(cell, nn.LSTMCell):
            raise TypeError(f"from_lstm_cell expects a torch.nn.LSTMCell, got {type(cell).__name__}")
        reference = cell.weight_ih
        module = cls(
            cell.input_size,
            cell.hidden_size,
            cell.bias,
            device=reference.device,
            dtype=reference.dtype,
            **options,
        )
        module.load_state_dict(cell.state_dict())
        return module

    def _reference(self) -> Tensor:
        return self.weight_ih

    @_outside_autocast
    def forward(self, input: Tensor, hx: State | None = None) -> State:
        reference = self._reference()
        batched = _check_input(input, reference, self.input_size, ("(H_in)", "(N, H_in)"))
        if not batched:
            input = input.unsqueeze(0)
        batch = input.shape[0]
        if hx is None:
            h0 = c0 = reference.new_zeros(batch, self.hidden_size)
        else:
            shape = (batch, self.hidden_size) if batched else (self.hidden_size,)
            axes = "batch, hidden_size" if batched else "hidden_size"
            h0, c0 = _check_state(hx, (shape, shape), reference, axes)
            if not batched:
                h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
        plan = self._gate_config.plan(self.training)
        preactivations = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(
            h0, self._dropconnect(self.weight_hh), self.bias_hh
        )
        if plan.noise:
            config = self._gate_config
            bits = gate_bits(
                noise_seed(), batch, self.hidden_size, preactivations.dtype, preactivations.device
            )
            noise = noise_from_bits(bits, preactivations.dtype, config.noise_p, config.noise_eps)
            preactivations = preactivations + F.pad(noise, (0, 2 * self.hidden_size))
        h, c, gates = lstm_step(preactivations, c0, plan.scale, plan.hard)
        if self._gate_sink is not None:
            hidden = self.hidden_size
            input_gates = gates[:, :hidden].detach().cpu()
            forget_gates = gates[:, hidden : 2 * hidden].detach().cpu()
            if not batched:
                input_gates, forget_gates = input_gates.squeeze(0), forget_gates.squeeze(0)
            self._gate_sink(0, input_gates, forget_gates)
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
