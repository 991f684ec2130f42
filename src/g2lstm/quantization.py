"""Dynamic int8 quantization of G2LSTM for inference: :class:`QuantizedG2LSTM`.

Importing :mod:`g2lstm` registers it in torch's default dynamic-quantization mapping, so that::

    torch.ao.quantization.quantize_dynamic(model, {G2LSTM, nn.Linear}, dtype=torch.qint8)

swaps every G2LSTM for a :class:`QuantizedG2LSTM` that keeps its evaluation gate. ``quantize_dynamic``
picks modules by exact type, so a spec naming only ``nn.LSTM`` (or none) would leave a G2LSTM in float;
the G2LSTM then warns (see :attr:`g2lstm.G2LSTM.qconfig`) rather than stay float silently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import LSTM as DynamicQuantizedLSTM
from torch.ao.quantization import default_dynamic_qconfig
from torch.ao.quantization.quantization_mappings import DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS

from g2lstm.kernels.export import GATE_POSITIONS, eval_step
from g2lstm.lstm import G2LSTM, State

__all__ = ["QuantizedG2LSTM"]


def _packed_linear(weight: Tensor, bias: Tensor | None, observer: Any) -> Any:
    """``weight`` quantized as ``observer`` (a qconfig's weight observer) prescribes, prepacked with ``bias``
    for ``torch.ops.quantized.linear_dynamic``."""
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    if observer.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        quantized = torch.quantize_per_channel(
            weight, scale, zero_point.long(), observer.ch_axis, observer.dtype
        )
    else:
        quantized = torch.quantize_per_tensor(weight, float(scale), int(zero_point), observer.dtype)
    return torch.ops.quantized.linear_prepack(quantized, bias)


class QuantizedG2LSTM(nn.Module):
    r"""A G2LSTM for inference with int8 weights, as ``torch.ao.nn.quantized.dynamic.LSTM`` is for
    ``nn.LSTM``: weights quantized once, activations quantized on the fly per product, float outputs.

    It computes the evaluation-mode G2LSTM of the module it was made from, with that module's ``eval_gate``:
    σ and tempered gates (``sigmoid(a / τ)``, the gate rows of the weights scaled by 1/τ before
    quantization) run torch's own quantized LSTM kernel; hard gates ``1[a >= 0]`` and projections
    (``proj_size``) run a loop of quantized products (:func:`torch.ops.quantized.linear_dynamic`).

    Made by :meth:`from_float` (which ``quantize_dynamic`` calls). Inputs and outputs as
    :class:`g2lstm.G2LSTM`'s, for batched or unbatched tensors (no PackedSequence on the loop path).
    """

    _FLOAT_MODULE = G2LSTM

    def __init__(self, module: G2LSTM, observer: Any) -> None:
        super().__init__()
        plan = module._gate_config.plan(training=False)
        self.eval_gate = module.eval_gate
        self.input_size, self.hidden_size, self.proj_size = (
            module.input_size,
            module.hidden_size,
            module.proj_size,
        )
        self.num_layers, self.bidirectional, self.batch_first = (
            module.num_layers,
            module.bidirectional,
            module.batch_first,
        )
        self._scale, self._hard = plan.scale, plan.hard
        self.native: DynamicQuantizedLSTM | None = None
        self._packed: list[list[Any]] = []
        if not plan.hard and not module.proj_size:
            lstm = module.to_lstm().eval()
            with torch.no_grad():
                for name, weight in lstm.named_parameters():
                    if not name.startswith("weight_hr"):
                        weight[: 2 * module.hidden_size] *= plan.scale  # σ(scale · a): scaled gate rows
            lstm.qconfig = default_dynamic_qconfig._replace(weight=observer)
            self.native = DynamicQuantizedLSTM.from_float(lstm)
            return
        for layer in range(module.num_layers):
            for direction in range(module.num_directions):
                weight_ih, weight_hh, *rest = (w.detach() for w in module._layer_weights(layer, direction))
                weight_hr = rest.pop() if module.proj_size else None
                bias = rest[0] + rest[1] if rest else None
                packed = [
                    _packed_linear(weight_ih, bias, observer()),
                    _packed_linear(weight_hh, None, observer()),
                ]
                if weight_hr is not None:
                    packed.append(_packed_linear(weight_hr, None, observer()))
                self._packed.append(packed)

    @classmethod
    def from_float(cls, module: G2LSTM, use_precomputed_fake_quant: bool = False) -> QuantizedG2LSTM:
        """The quantized counterpart of ``module`` with the weight observer of its ``qconfig`` (int8
        weights; torch's default dynamic qconfig when it has none)."""
        if not isinstance(module, G2LSTM):
            raise TypeError(f"from_float expects a g2lstm.G2LSTM, got {type(module).__name__}")
        qconfig = getattr(module, "qconfig", None) or default_dynamic_qconfig
        observer = qconfig.weight
        if observer().dtype != torch.qint8:
            raise ValueError(
                f"QuantizedG2LSTM quantizes weights to torch.qint8, got a qconfig for {observer().dtype}"
            )
        return cls(module, observer)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        text += f", eval_gate={self.eval_gate!r}"
        return text + (f", proj_size={self.proj_size}" if self.proj_size else "")

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        if self.native is not None:
            return self.native(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(
                f"input must be a Tensor (QuantizedG2LSTM with hard gates or a projection), got "
                f"{type(input).__name__}"
            )
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        x = x.transpose(0, 1) if self.batch_first else x
        directions = 2 if self.bidirectional else 1
        steps, batch = x.shape[0], x.shape[1]
        if hx is None:
            h0 = x.new_zeros(self.num_layers * directions, batch, self.proj_size or self.hidden_size)
            c0 = x.new_zeros(self.num_layers * directions, batch, self.hidden_size)
        else:
            h0, c0 = (state if batched else state.unsqueeze(1) for state in hx)
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                state = layer * directions + direction
                packed_ih, packed_hh, *projection = self._packed[state]
                gate_inputs = torch.ops.quantized.linear_dynamic(
                    x.reshape(steps * batch, -1), packed_ih, True
                )
                gate_inputs = gate_inputs.view(steps, batch, -1)
                h, c = h0[state], c0[state]
                rows = []
                for t in range(steps - 1, -1, -1) if direction == 1 else range(steps):
                    pre = gate_inputs[t] + torch.ops.quantized.linear_dynamic(h, packed_hh, True)
                    h, c = eval_step(pre, c, None, self._scale, self._hard, GATE_POSITIONS)
                    if projection:
                        h = torch.ops.quantized.linear_dynamic(h, projection[0], True)
                    rows.append(h)
                outputs.append(torch.stack(rows[::-1] if direction == 1 else rows))
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        output = x.transpose(0, 1) if self.batch_first else x
        h_out, c_out = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_out, c_out = h_out.squeeze(1), c_out.squeeze(1)
        return output, (h_out, c_out)


DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS[G2LSTM] = QuantizedG2LSTM
