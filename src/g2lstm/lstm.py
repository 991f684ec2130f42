"""G2LSTM and G2LSTMCell: drop-ins for ``torch.nn.LSTM`` / ``nn.LSTMCell`` with Gumbel-sigmoid gates."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

from g2lstm.functional import gate_bits, noise_from_bits, noise_seed
from g2lstm.gates import GateConfig, GatePlan
from g2lstm.kernels import lstm_sequence, lstm_step
from g2lstm.kernels.cudnn import flatten_lstm_weights
from g2lstm.kernels.stored import gate_projection, lstm_sequence_stored, stored_forms, use_stored_inference

__all__ = ["G2LSTM", "G2LSTMCell"]

State = tuple[Tensor, Tensor]
# Receives (layer, input gates, forget gates) of one forward call; set by g2lstm.record_gates.
GateSink = Callable[[int, Any, Any], None]


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
        raise TypeError(
            f"{name} has dtype {tensor.dtype} but the module's parameters are {reference.dtype}; "
            f"convert one of them, e.g. module.to({tensor.dtype})"
        )
    if tensor.device != reference.device:
        raise ValueError(
            f"{name} is on {tensor.device} but the module's parameters are on {reference.device}; "
            f"move one of them, e.g. module.to('{tensor.device}')"
        )


def _upcast(value: Any, dtype: torch.dtype) -> Any:
    """``value`` (a tensor, a PackedSequence or a state tuple) with lower-precision float tensors cast to ``dtype``."""
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
    eval_gate = _gate_option("eval_gate", "inference_gate", "Evaluation-mode gate (``None``: the mode's default).")

    def _gate_repr(self) -> str:
        config = self._gate_config
        text = f"gate={config.mode!r}, temperature={config.tau}"
        if config.mode == "g2":
            text += f", noise_p={config.noise_p}"
        text += f", eval_gate={config.inference_gate!r}"
        if self.weight_dropout:
            text += f", weight_dropout={self.weight_dropout}"
        return text

    def _dropconnect(self, weight_hh: Tensor) -> Tensor:
        """DropConnect on hidden-to-hidden weights: one mask per forward call, in training only."""
        if self.training and self.weight_dropout > 0:
            return F.dropout(weight_hh, self.weight_dropout, training=True)
        return weight_hh

    def _noise_seed(self, plan: GatePlan) -> int | None:
        """The key of this pass's input- and forget-gate noise (see :func:`g2lstm.functional.gate_bits`),
        drawn from torch's generator, or ``None`` without noise."""
        return noise_seed() if plan.noise else None


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
    the noise held fixed. In evaluation mode the gates are deterministic, chosen by ``eval_gate``.

    Args:
        input_size: The number of expected features in the input `x`.
        hidden_size: The number of features in the hidden state `h`.
        num_layers: Number of recurrent layers. Default: 1
        bias: If ``False``, the layer does not use bias weights `b_ih` and `b_hh`. Default: ``True``
        batch_first: If ``True``, input and output tensors are `(batch, seq, feature)`. Default: ``False``
        dropout: Dropout probability on the outputs of each layer except the last. Default: 0
        bidirectional: If ``True``, becomes a bidirectional LSTM. Default: ``False``

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
        - **h_0**, **c_0**: tensors of shape :math:`(D \cdot \text{num\_layers}, N, H)`, or
          :math:`(D \cdot \text{num\_layers}, H)` for unbatched input. Default: zeros.

    Outputs: output, (h_n, c_n)
        - **output**: :math:`(L, N, D \cdot H)` (batch first if ``batch_first``), or a packed sequence
          if the input was one: the last layer's :math:`h_t` for every `t`.
        - **h_n**, **c_n**: the final hidden and cell states of every layer and direction, shaped like
          **h_0**.

        where :math:`N` is the batch size, :math:`L` the sequence length, :math:`D` = 2 if bidirectional
        else 1 and :math:`H` = ``hidden_size``.

    Attributes:
        weight_ih_l[k], weight_hh_l[k], bias_ih_l[k], bias_hh_l[k] (and ``_reverse`` for the backward
        direction): as in ``nn.LSTM``, shapes ``(4H, in)``, ``(4H, H)``, ``(4H,)``, so state dicts load in
        both directions. All are initialised from :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`.

    Training-mode forward passes with noise (or hard gates, or while :func:`g2lstm.record_gates` records)
    run the fused G2 kernel; every other pass runs torch's native LSTM kernel on the same weights.

    Example::

        >>> rnn = G2LSTM(10, 20, 2)
        >>> input = torch.randn(5, 3, 10)
        >>> output, (hn, cn) = rnn(input)
        >>> output.shape, hn.shape
        (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
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
        _check_probability("dropout", dropout)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self._init_gates(GateConfig(gate, temperature, noise_p, noise_eps, eval_gate), weight_dropout)
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._direction_suffixes:
                shapes = {
                    "weight_ih": (4 * hidden_size, layer_input),
                    "weight_hh": (4 * hidden_size, hidden_size),
                }
                if self.bias:
                    shapes.update(bias_ih=(4 * hidden_size,), bias_hh=(4 * hidden_size,))
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
    def all_weights(self) -> list[list[Tensor]]:
        """Parameters grouped per layer and direction, as ``nn.LSTM.all_weights``."""
        per_group = 4 if self.bias else 2
        flat = [getattr(self, name) for name in self._flat_weights_names]
        return [flat[k : k + per_group] for k in range(0, len(flat), per_group)]

    def reset_parameters(self) -> None:
        """Every weight and bias from U(-1/sqrt(H), 1/sqrt(H)), as ``nn.LSTM``; a parametrized one is set
        through its parametrization (which may store it in another form)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name in self._flat_weights_names:
                if parametrize.is_parametrized(self, name):
                    setattr(self, name, torch.empty_like(getattr(self, name)).uniform_(-bound, bound))
                else:
                    nn.init.uniform_(getattr(self, name), -bound, bound)

    def flatten_parameters(self) -> None:
        """Keep the weights in one cuDNN buffer (on CUDA with cuDNN; a no-op elsewhere), as ``nn.LSTM`` does,
        so that evaluation runs cuDNN on them without copying them on every call. Called on construction and
        after every ``.to()`` / ``.cuda()``; the Parameter objects stay the same."""
        weights = [self._parameters.get(name) for name in self._flat_weights_names]
        if all(isinstance(weight, Tensor) for weight in weights):
            flatten_lstm_weights(
                weights, input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                bias=self.bias, batch_first=self.batch_first, bidirectional=self.bidirectional,
            )

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> G2LSTM:
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
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

    # ------------------------------------------------------------------ conversion

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **options: Any) -> G2LSTM:
        """A G2LSTM with ``lstm``'s architecture and a copy of its weights; ``options`` set the gates."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"from_lstm expects a torch.nn.LSTM, got {type(lstm).__name__}")
        if lstm.proj_size:
            raise ValueError(f"G2LSTM has no projection; got an nn.LSTM with proj_size={lstm.proj_size}")
        reference = lstm.weight_ih_l0
        module = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.dropout,
            lstm.bidirectional,
            device=reference.device,
            dtype=reference.dtype,
            **options,
        )
        module.load_state_dict(lstm.state_dict())
        module.train(lstm.training)
        return module

    def to_lstm(self) -> nn.LSTM:
        """An ``nn.LSTM`` with this module's architecture and a copy of its weights."""
        reference = self.weight_ih_l0
        lstm = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
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
        suffix = self._direction_suffixes[direction]
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        weights = [getattr(self, f"{name}_l{layer}{suffix}") for name in names]
        weights[1] = self._dropconnect(weights[1])
        return weights

    def _reference(self) -> Tensor:
        """A tensor with the weights' dtype and device, without computing a parametrized weight."""
        return next(tensor for tensor in (*self.parameters(), *self.buffers()) if tensor.is_floating_point())

    def _check_state(self, hx: Any, batch: int, batched: bool, reference: Tensor) -> State:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors, got {type(hx).__name__}")
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if not batched:
            expected = (expected[0], expected[2])
        for name, state in zip(("h_0", "c_0"), hx):
            _check_tensor(name, state, reference)
            if tuple(state.shape) != expected:
                raise ValueError(
                    f"{name} must have shape {expected} (num_layers * num_directions, "
                    f"{'batch, ' if batched else ''}hidden_size), got {tuple(state.shape)}"
                )
        h0, c0 = hx
        return (h0, c0) if batched else (h0.unsqueeze(1), c0.unsqueeze(1))

    @_outside_autocast
    def forward(
        self, input: Tensor | PackedSequence, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        reference = self._reference()
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_tensor("input.data", data, reference)
            batched = True
            batch = int(batch_sizes[0])
            feature_axis_size = data.shape[-1]
        else:
            _check_tensor("input", input, reference)
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"input must be 2-D (seq, feature) unbatched or 3-D batched, got {input.dim()}-D "
                    f"with shape {tuple(input.shape)}"
                )
            batched = input.dim() == 3
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if input.shape[0] == 0 or input.shape[1] == 0:
                raise ValueError(f"input has an empty sequence or batch dimension: {tuple(input.shape)}")
            batch = input.shape[0 if self.batch_first else 1]
            feature_axis_size = input.shape[-1]
            sorted_indices = unsorted_indices = None
        if feature_axis_size != self.input_size:
            raise ValueError(
                f"input has {feature_axis_size} features in its last dimension but input_size is "
                f"{self.input_size}"
            )
        if hx is None:
            zeros = reference.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = self._check_state(hx, batch, batched, reference)
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)


        plan = self._gate_config.plan(self.training)
        stored = use_stored_inference(self, reference, self._flat_weights_names, plan.noise)
        if stored or plan.noise or plan.hard or self._gate_sink is not None:
            if packed:
                rows, sizes = data, batch_sizes.tolist()
            else:
                time_major = input.transpose(0, 1) if self.batch_first else input
                sizes = [batch] * time_major.shape[0]
                rows = time_major.reshape(-1, self.input_size)
            output, h_n, c_n, recorded = self._forward_fused(rows, sizes, h0, c0, plan, stored)
            if packed:
                def layout(values: Tensor) -> Any:
                    indices = [None if i is None else i.to(values.device) for i in (sorted_indices, unsorted_indices)]
                    return PackedSequence(values, batch_sizes, *indices)
            else:
                def layout(values: Tensor) -> Any:
                    values = values.view(len(sizes), batch, -1)
                    values = values.transpose(0, 1) if self.batch_first else values
                    return values if batched else values.squeeze(0 if self.batch_first else 1)
            output = layout(output)
            if self._gate_sink is not None:
                for layer, input_gates, forget_gates in recorded:
                    self._gate_sink(layer, layout(input_gates), layout(forget_gates))
        else:
            weights = self._native_weights(plan.scale)
            args = (self.bias, self.num_layers, self.dropout, self.training, self.bidirectional)
            if packed:
                output, h_n, c_n = torch.lstm(data, batch_sizes, (h0, c0), weights, *args)
                output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            else:
                output, h_n, c_n = torch.lstm(input, (h0, c0), weights, *args, self.batch_first)
                if not batched:
                    output = output.squeeze(0 if self.batch_first else 1)

        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        if not batched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _native_weights(self, scale: float) -> list[Tensor]:
        """Weights for torch's LSTM kernel; ``sigmoid(scale * a)`` gates become scaled gate rows."""
        weights = []
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                layer_weights = self._layer_weights(layer, direction)
                if scale != 1.0:
                    rows = 4 * self.hidden_size
                    row_scale = layer_weights[0].new_ones(rows)
                    row_scale[: rows // 2] = scale
                    layer_weights = [
                        w * (row_scale[:, None] if w.dim() == 2 else row_scale) for w in layer_weights
                    ]
                weights.extend(layer_weights)
        return weights

    def _forward_fused(
        self, rows: Tensor, sizes: list[int], h0: Tensor, c0: Tensor, plan: GatePlan, stored: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, list[tuple[int, Tensor, Tensor]]]:
        """All layers on packed, time-major rows ``(N, features)`` with the fused kernel; with ``stored``
        (inference only), weights that a parametrization stores in another form are used in that form
        (:mod:`g2lstm.kernels.stored`).

        Returns the last layer's output rows, ``h_n``, ``c_n`` and, while gates are recorded, each
        layer's input- and forget-gate rows (detached, on the CPU).
        """
        hidden = self.hidden_size
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        recorded: list[tuple[int, Tensor, Tensor]] = []
        layer_input = rows
        for layer in range(self.num_layers):
            outputs, input_gates, forget_gates = [], [], []
            for direction in range(self.num_directions):
                state = layer * self.num_directions + direction
                reverse = direction == 1
                suffix = f"_l{layer}{self._direction_suffixes[direction]}"
                forms_ih = stored_forms(self, f"weight_ih{suffix}") if stored else None
                forms_hh = stored_forms(self, f"weight_hh{suffix}") if stored else None
                bias = (getattr(self, f"bias_ih{suffix}") + getattr(self, f"bias_hh{suffix}")) if self.bias else None
                if forms_ih is not None:
                    gate_inputs = gate_projection(layer_input, forms_ih, bias)
                else:
                    gate_inputs = F.linear(layer_input, getattr(self, f"weight_ih{suffix}"), bias)
                if forms_hh is not None:
                    output, h, c, gates = lstm_sequence_stored(
                        gate_inputs, h0[state], c0[state], forms_hh, sizes, reverse, plan.scale, plan.hard,
                        keep_gates=self._gate_sink is not None,
                    )
                else:
                    output, h, c, gates = lstm_sequence(
                        gate_inputs, h0[state], c0[state], self._dropconnect(getattr(self, f"weight_hh{suffix}")),
                        sizes, reverse, plan.scale, plan.hard,
                        noise_seed=self._noise_seed(plan),
                        noise_p=self._gate_config.noise_p,
                        noise_eps=self._gate_config.noise_eps,
                    )
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
                if self._gate_sink is not None:
                    input_gates.append(gates[:, :hidden])
                    forget_gates.append(gates[:, hidden : 2 * hidden])
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
            if self._gate_sink is not None:
                recorded.append((layer, torch.cat(input_gates, 1).cpu(), torch.cat(forget_gates, 1).cpu()))
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n), recorded


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
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

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
            cell.input_size, cell.hidden_size, cell.bias, device=reference.device, dtype=reference.dtype, **options
        )
        module.load_state_dict(cell.state_dict())
        return module

    def _reference(self) -> Tensor:
        return self.weight_ih

    @_outside_autocast
    def forward(self, input: Tensor, hx: State | None = None) -> State:
        reference = self._reference()
        _check_tensor("input", input, reference)
        if input.dim() not in (1, 2):
            raise ValueError(
                f"input must be 1-D (feature) unbatched or 2-D (batch, feature), got {input.dim()}-D "
                f"with shape {tuple(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"input has {input.shape[-1]} features in its last dimension but input_size is "
                f"{self.input_size}"
            )
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        batch = input.shape[0]
        if hx is None:
            zeros = reference.new_zeros(batch, self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be a tuple (h_0, c_0) of two tensors, got {type(hx).__name__}")
            expected = (batch, self.hidden_size) if batched else (self.hidden_size,)
            for name, state in zip(("h_0", "c_0"), hx):
                _check_tensor(name, state, reference)
                if tuple(state.shape) != expected:
                    raise ValueError(f"{name} must have shape {expected}, got {tuple(state.shape)}")
            h0, c0 = (hx[0], hx[1]) if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        plan = self._gate_config.plan(self.training)
        preactivations = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(
            h0, self._dropconnect(self.weight_hh), self.bias_hh
        )
        seed = self._noise_seed(plan)
        if seed is not None:
            config = self._gate_config
            bits = gate_bits(seed, batch, self.hidden_size, preactivations.dtype, preactivations.device)
            noise = noise_from_bits(bits, preactivations.dtype, config.noise_p, config.noise_eps)
            preactivations = preactivations + F.pad(noise, (0, 2 * self.hidden_size))
        h, c, gates = lstm_step(preactivations, c0, plan.scale, plan.hard)
        if self._gate_sink is not None:
            hidden = self.hidden_size
            input_gates, forget_gates = gates[:, :hidden].detach().cpu(), gates[:, hidden : 2 * hidden].detach().cpu()
            if not batched:
                input_gates, forget_gates = input_gates.squeeze(0), forget_gates.squeeze(0)
            self._gate_sink(0, input_gates, forget_gates)
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
