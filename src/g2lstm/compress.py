"""Post-training compression of the input- and forget-gate weights of LSTM layers, as in the paper.

Each gate block, the ``H`` rows of one gate in ``weight_ih_l{k}`` or ``weight_hh_l{k}`` of one layer and
direction, is compressed on its own by one of the paper's two methods:

- **low precision**: ``round_r(x) = round(x / r) * r`` (half to even, as ``torch.round``), optionally
  followed by ``clip_c(x) = clamp(x, -c, c)``. The block is stored as the integer codes ``round(x / r)``
  (int8 when they fit, else int16) and the layer's step ``r``; codes are fixed, so these blocks take no
  further training.
- **low rank**: the truncated SVD ``U_k S_k V_k^T``, the best rank-``k`` approximation. The block is stored as
  the factors ``u = U_k S_k^{1/2}`` ``(H, k)`` and ``v = S_k^{1/2} V_k^T`` ``(k, in)``, Parameters that a
  finetune can train.

Compression works in place and really shrinks the model: the dense ``weight_ih_l{k}`` / ``weight_hh_l{k}``
Parameters of a layer are removed and a :class:`CompressedLSTMWeights` holding the blocks is attached as the
layer's ``compressed`` child; the gate blocks left uncompressed become dense Parameters of their own and the
biases are not touched. Each forward pass rebuilds the dense ``(4H, in)`` matrices from the blocks (gate order
i, f, g, o), so training and evaluation run as before while ``state_dict()``, and so a checkpoint, holds only
the compact tensors. A checkpoint records :func:`compression_config` beside the state dict;
:func:`restore_compressed` gives a freshly built model the same layout before ``load_state_dict``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from g2lstm.errors import ConfigError
from g2lstm.gates import set_eval_gate
from g2lstm.lstm import G2LSTM

__all__ = [
    "GATES",
    "PAPER_GATES",
    "CompressedLSTMWeights",
    "CompressionReport",
    "compress",
    "compressed_copy",
    "compression_config",
    "count_parameters_and_bytes",
    "restore_compressed",
    "table_settings",
]

GATES = ("input", "forget", "cell", "output")  # torch's row order i, f, g, o
PAPER_GATES = ("input", "forget")
_CODE_DTYPES = {"int8": torch.int8, "int16": torch.int16}
ModuleT = TypeVar("ModuleT", bound=nn.Module)
_SETTING_KEYS = ("round", "clip", "rank", "gates", "codes", "converted")


class _GateBlock(nn.Module):
    """One gate's rows of a weight matrix, stored in some form; :meth:`dense` gives them back as a matrix."""

    def dense(self, step: Tensor | None) -> Tensor:
        raise NotImplementedError


class _DenseBlock(_GateBlock):
    """A gate block left uncompressed: the Parameter ``weight`` of shape ``(H, in)``."""

    def __init__(self, weight: Tensor, requires_grad: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=requires_grad)

    def dense(self, step: Tensor | None) -> Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}"


class _QuantizedBlock(_GateBlock):
    """A low-precision gate block: integer ``codes`` of shape ``(H, in)``; the block is ``codes * step``."""

    codes: Tensor

    def __init__(self, codes: Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes)

    def dense(self, step: Tensor | None) -> Tensor:
        if step is None:
            raise ValueError("a low-precision block needs its layer's rounding step")
        return self.codes.to(step.dtype) * step

    def extra_repr(self) -> str:
        return f"codes={str(self.codes.dtype).removeprefix('torch.')}{list(self.codes.shape)}"

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # load_state_dict would copy int16 codes into an int8 buffer and silently wrap them around.
        incoming = state_dict.get(prefix + "codes")
        if isinstance(incoming, Tensor) and incoming.dtype != self.codes.dtype:
            error_msgs.append(
                f"{prefix}codes: the checkpoint holds {incoming.dtype} codes, this module "
                f"{self.codes.dtype}; rebuild it with the checkpoint's compression config "
                f"(restore_compressed)"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _LowRankBlock(_GateBlock):
    """A low-rank gate block: Parameters ``u`` ``(H, k)`` and ``v`` ``(k, in)``; the block is ``u @ v``."""

    def __init__(self, u: Tensor, v: Tensor, requires_grad: bool) -> None:
        super().__init__()
        self.u = nn.Parameter(u, requires_grad=requires_grad)
        self.v = nn.Parameter(v, requires_grad=requires_grad)

    def dense(self, step: Tensor | None) -> Tensor:
        return self.u @ self.v

    def extra_repr(self) -> str:
        return f"rank={self.u.shape[1]}, shape={(self.u.shape[0], self.v.shape[1])}"


class CompressedLSTMWeights(nn.ModuleDict):
    """The compact weights of one compressed G2LSTM, attached by :func:`compress` as its ``compressed`` child.

    Maps the name of each dense matrix it replaces (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...) to that
    matrix's four gate blocks, keyed ``input``, ``forget``, ``cell``, ``output``. A block holds a dense
    Parameter ``weight`` (not compressed), int8/int16 ``codes`` (low precision: the block is ``codes * step``)
    or Parameters ``u`` and ``v`` (low rank: the block is ``u @ v``). The buffer ``step`` holds the rounding
    step ``r`` in the layer's dtype (``None`` for low rank); ``settings`` is the plain dict that
    :func:`compression_config` records for the layer.
    """

    step: Tensor | None

    def __init__(self, settings: dict[str, Any], step: Tensor | None) -> None:
        super().__init__()
        self.settings = settings
        self.register_buffer("step", step)

    @property
    def reference(self) -> Tensor:
        """A floating-point tensor with the layer's dtype and device, for G2LSTM's checks of its inputs."""
        return self.step if self.step is not None else next(self.parameters())

    def dense(self, name: str) -> Tensor:
        """The dense ``(4H, in)`` matrix ``name``: its gate blocks concatenated in the order i, f, g, o."""
        blocks = cast(nn.ModuleDict, self[name])
        return torch.cat([cast(_GateBlock, block).dense(self.step) for block in blocks.values()])

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.settings.items() if value is not None)


@dataclass
class CompressionReport:
    """What :func:`compress` did: its settings, the module's size before and after, each block's error.

    Sizes are those of :func:`count_parameters_and_bytes` for the whole module. ``errors`` maps each
    compressed block, e.g. ``"layers.0.weight_hh_l0.forget"``, to its relative Frobenius error
    ``||W - W'||_F / ||W||_F``.
    """

    settings: dict[str, Any]
    layers: list[str]
    converted: list[str]
    parameters_before: int
    parameters_after: int
    bytes_before: int
    bytes_after: int
    errors: dict[str, float]

    @property
    def method(self) -> str:
        """The compression in the paper's words, e.g. ``"round 0.2 & clip 0.4"`` or ``"rank 64"``."""
        settings = self.settings
        if settings["rank"] is not None:
            return f"rank {settings['rank']}"
        text = f"round {settings['round']:g}"
        return text if settings["clip"] is None else f"{text} & clip {settings['clip']:g}"

    def summary(self) -> str:
        """Three lines: what was compressed, the sizes before and after, the errors of the blocks."""
        worst = max(self.errors, key=self.errors.__getitem__)
        mean = sum(self.errors.values()) / len(self.errors)
        converted = f", {len(self.converted)} converted from nn.LSTM" if self.converted else ""
        return "\n".join(
            [
                f"{self.method} on the {', '.join(self.settings['gates'])} gate blocks of "
                f"{len(self.layers)} LSTM module(s){converted}: {len(self.errors)} blocks",
                f"parameters {self.parameters_before:,} -> {self.parameters_after:,}; bytes "
                f"{_format_bytes(self.bytes_before)} -> {_format_bytes(self.bytes_after)} "
                f"({self.bytes_after / self.bytes_before:.1%})",
                f"relative Frobenius error per block: mean {mean:.4f}, "
                f"max {self.errors[worst]:.4f} ({worst})",
            ]
        )


def compress(
    module: nn.Module,
    *,
    round: float | None = None,
    clip: float | None = None,
    rank: int | None = None,
    gates: Iterable[str] = PAPER_GATES,
) -> CompressionReport:
    """Compress the gate weights of every G2LSTM and ``nn.LSTM`` layer in ``module``, in place.

    Args:
        module: A G2LSTM, or any module holding G2LSTM or ``nn.LSTM`` layers. Each ``nn.LSTM`` is first
            replaced in its parent by ``G2LSTM.from_lstm(lstm, gate="lstm")``, which computes exactly what
            it did; a bare ``nn.LSTM`` has no parent, so convert it yourself.
        round: The step ``r`` of low precision, ``round(x / r) * r``.
        clip: With ``round``, the bound ``c`` of ``clamp(., -c, c)``: a whole multiple of ``r``, so that
            the clipped values are ``k * r`` for integers ``|k| <= c / r``. Default: no clipping
        rank: The rank ``k`` of the truncated SVD, at most the smaller side of every gate block.
        gates: Which gate blocks to compress. Default: ``("input", "forget")``, as the paper; any of
            ``"input"``, ``"forget"``, ``"cell"``, ``"output"`` widen it.

    Exactly one of ``round`` and ``rank`` must be given. The paper's settings: language model ``round=0.2``,
    ``clip=0.4`` or ``rank=128`` / ``64``; translation ``round=0.5``, ``clip=1.0`` or ``rank=32`` / ``16``.

    Everything is checked and computed before the module changes. Afterwards the compressed layers have no
    ``weight_ih_l{k}`` / ``weight_hh_l{k}`` Parameters (so no ``to_lstm`` or ``all_weights``) but a
    ``compressed`` child (:class:`CompressedLSTMWeights`); make an optimizer for finetuning after this call.

    Returns:
        A :class:`CompressionReport`; ``report.summary()`` prints it.

    Raises:
        TypeError: an argument of the wrong type, or a bare ``nn.LSTM`` as ``module``.
        ValueError: neither or both of ``round`` and ``rank``, ``clip`` without ``round``, a value out of
            range, a ``rank`` above a block's smaller side, codes beyond int16, a module without LSTM
            layers or one already compressed.

    Example::

        model = AWDLSTM(spec)  # trained
        print(compress(model, round=0.2, clip=0.4).summary())
        save_checkpoint(path, {"compression": compression_config(model), "model": model.state_dict()})
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    settings = _check_settings(round, clip, rank, gates)
    targets = [
        (path, layer, layer if isinstance(layer, G2LSTM) else G2LSTM.from_lstm(layer, gate="lstm"))
        for path, layer in _find_layers(module)
    ]
    if rank is not None:
        for path, _, lstm in targets:
            _check_rank(path, lstm, rank)
    parameters_before, bytes_before = count_parameters_and_bytes(module)
    errors: dict[str, float] = {}
    stores = []
    for path, layer, lstm in targets:
        store, layer_errors = _compress_layer(path, lstm, settings, converted=lstm is not layer)
        stores.append(store)
        errors.update({_qualified(path, name): error for name, error in layer_errors.items()})
    for (path, layer, lstm), store in zip(targets, stores):
        _attach(lstm, store)
        if lstm is not layer:
            _replace(module, path, lstm)
    parameters_after, bytes_after = count_parameters_and_bytes(module)
    return CompressionReport(
        settings=settings,
        layers=[path for path, _, _ in targets],
        converted=[path for path, layer, lstm in targets if lstm is not layer],
        parameters_before=parameters_before,
        parameters_after=parameters_after,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        errors=errors,
    )


def table_settings(round_step: float, clip: float, ranks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The columns of the paper's compression tables (Table 3, language model; Table 4, translation), each
    a setting for :func:`compressed_copy`: as trained, Round, Round & clip, each rank, hard 0/1 gates."""
    return {
        "original": {},
        f"round {round_step:g}": {"round": round_step},
        f"round {round_step:g} & clip {clip:g}": {"round": round_step, "clip": clip},
        **{f"rank {rank}": {"rank": rank} for rank in ranks},
        "hard gates": {"eval_gate": "hard"},
    }


def compressed_copy(module: ModuleT, settings: Mapping[str, Any]) -> ModuleT:
    """A deep copy of ``module`` for a sweep: ``{}`` leaves it as it is, ``{"eval_gate": "hard"}`` gives every
    G2LSTM layer that inference gate, other settings are the keyword arguments of :func:`compress`."""
    variant = copy.deepcopy(module)
    if "eval_gate" in settings:
        set_eval_gate(variant, settings["eval_gate"])
    elif settings:
        compress(variant, **settings)
    return variant


def compression_config(module: nn.Module) -> dict[str, dict[str, Any]] | None:
    """The compression of each compressed layer in ``module``, as plain values for a checkpoint.

    Maps each layer's path in ``module`` (``""`` for ``module`` itself) to its settings: ``round``, ``clip``,
    ``rank``, ``gates``, ``codes`` (``"int8"`` / ``"int16"``, or ``None`` for low rank) and ``converted``
    (whether it was an ``nn.LSTM``). ``None`` when nothing in ``module`` is compressed.
    """
    config = {}
    for path, layer in module.named_modules():
        store = getattr(layer, "compressed", None) if isinstance(layer, G2LSTM) else None
        if isinstance(store, CompressedLSTMWeights):
            config[path] = {**store.settings, "gates": list(store.settings["gates"])}
    return config or None


def restore_compressed(module: nn.Module, config: dict[str, dict[str, Any]] | None) -> None:
    """Give a freshly built ``module`` the compressed layout that ``config`` records, for ``load_state_dict``.

    ``config`` comes from :func:`compression_config` of the saved model (``None``: nothing to do). Each layer
    it names is compressed with placeholder values (and converted first if it was an ``nn.LSTM``), so that
    the saved state dict loads into it.

    Example::

        model = AWDLSTM(spec)
        restore_compressed(model, checkpoint["compression"])
        model.load_state_dict(checkpoint["model"])

    Raises:
        TypeError: ``config`` is not a dict, or a layer it names has another type than at saving.
        ValueError: ``config`` names a layer that ``module`` lacks or one already compressed, or holds
            settings that :func:`compress` refuses.
    """
    if config is None:
        return
    if not isinstance(config, dict):
        raise TypeError(
            f"config must be a dict from compression_config() or None, got {type(config).__name__}"
        )
    _refuse_bare_lstm(module)
    available = [path for path, layer in module.named_modules() if isinstance(layer, (G2LSTM, nn.LSTM))]
    plans = []
    for path, entry in config.items():
        settings = _check_entry(path, entry)
        if path not in available:
            raise ConfigError(
                f"the compression config names the layer {path!r}, which the module lacks; "
                f"its LSTM layers are {available}"
            )
        layer = module.get_submodule(path)
        if isinstance(layer, nn.LSTM) and settings["converted"]:
            lstm = G2LSTM.from_lstm(layer, gate="lstm")
        elif isinstance(layer, G2LSTM):
            if isinstance(getattr(layer, "compressed", None), CompressedLSTMWeights):
                raise ConfigError(f"layer {path!r} is already compressed; restore into a freshly built model")
            lstm = layer
        else:
            raise TypeError(
                f"the compression config expects layer {path!r} to be a G2LSTM, got {type(layer).__name__}"
            )
        if settings["rank"] is not None:
            _check_rank(path, lstm, settings["rank"])
        plans.append((path, layer, lstm, _placeholder_layer(lstm, settings)))
    for path, layer, lstm, store in plans:
        _attach(lstm, store)
        if lstm is not layer:
            _replace(module, path, lstm)


def count_parameters_and_bytes(module: nn.Module) -> tuple[int, int]:
    """The number of values and of bytes in ``module.state_dict()``, each tensor counted once.

    Tied weights count once; low-precision codes count 1 byte (int8) or 2 (int16) each, and the step of a
    compressed layer counts as one value.
    """
    state = module.state_dict(keep_vars=True)
    tensors = {id(value): value for value in state.values() if isinstance(value, Tensor)}
    values = sum(tensor.numel() for tensor in tensors.values())
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    return values, size


# ---------------------------------------------------------------------------------------------- helpers


def _check_positive(name: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")


def _check_gates(gates: Any) -> list[str]:
    """The gate names of ``gates`` in the row order i, f, g, o."""
    if isinstance(gates, str) or not isinstance(gates, Iterable):
        raise TypeError(f"gates must be a sequence of gate names such as ('input', 'forget'), got {gates!r}")
    names = list(gates)
    unknown = [name for name in names if name not in GATES]
    if unknown:
        raise ConfigError(f"gates must be names from {GATES}, got {unknown} among {names}")
    if not names:
        raise ConfigError(f"gates must name at least one of {GATES}, got an empty sequence")
    if len(set(names)) != len(names):
        raise ConfigError(f"gates must name each gate once, got {names}")
    return [gate for gate in GATES if gate in names]


def _check_settings(round_: Any, clip: Any, rank: Any, gates: Any) -> dict[str, Any]:
    """Validated settings as plain values: ``round``, ``clip``, ``rank`` and ``gates``."""
    if (round_ is None) == (rank is None):
        given = "neither" if round_ is None else f"both (round={round_!r}, rank={rank!r})"
        raise ConfigError(f"give exactly one of round= (low precision) and rank= (low rank), got {given}")
    if round_ is not None:
        _check_positive("round", round_, integer=False)
        round_ = float(round_)
    if clip is not None:
        if round_ is None:
            raise ConfigError(
                f"clip= applies to low precision only: give it with round=, "
                f"got clip={clip!r} with rank={rank!r}"
            )
        _check_positive("clip", clip, integer=False)
        clip = float(clip)
        levels = clip / round_
        if levels < 1 or abs(levels - round(levels)) > 1e-9 * levels:
            raise ConfigError(
                f"clip must be a whole multiple of round (at least 1x), so that clipped values stay on the "
                f"grid k * round; got clip={clip!r}, round={round_!r} (ratio {levels:g})"
            )
    if rank is not None:
        _check_positive("rank", rank, integer=True)
    return {"round": round_, "clip": clip, "rank": rank, "gates": _check_gates(gates)}


def _check_entry(path: str, entry: Any) -> dict[str, Any]:
    """The settings of one layer of a compression config, checked as :func:`compress` checks its arguments."""
    if not isinstance(path, str):
        raise TypeError(f"the compression config's keys must be layer paths (str), got {path!r}")
    where = f"the compression config of layer {path!r}"
    if not isinstance(entry, dict):
        raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
    if set(entry) != set(_SETTING_KEYS):
        raise ConfigError(f"{where} must have the keys {list(_SETTING_KEYS)}, got {list(entry)}")
    try:
        settings = _check_settings(entry["round"], entry["clip"], entry["rank"], entry["gates"])
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None
    codes, converted = entry["codes"], entry["converted"]
    expected_codes = list(_CODE_DTYPES) if settings["round"] is not None else [None]
    if codes not in expected_codes:
        raise ConfigError(f"{where}: codes must be one of {expected_codes}, got {codes!r}")
    if not isinstance(converted, bool):
        raise TypeError(f"{where}: converted must be a bool, got {converted!r}")
    return {**settings, "codes": codes, "converted": converted}


def _find_layers(module: nn.Module) -> list[tuple[str, G2LSTM | nn.LSTM]]:
    """The paths and modules of the G2LSTM and nn.LSTM layers of ``module``, none of them compressed."""
    _refuse_bare_lstm(module)
    targets = [
        (path, layer) for path, layer in module.named_modules() if isinstance(layer, (G2LSTM, nn.LSTM))
    ]
    if not targets:
        raise ConfigError(f"module ({type(module).__name__}) holds no G2LSTM or nn.LSTM layer to compress")
    done = [
        path or "<module>"
        for path, layer in targets
        if isinstance(getattr(layer, "compressed", None), CompressedLSTMWeights)
    ]
    if done:
        raise ConfigError(f"layers {done} are already compressed; compress a copy of the uncompressed model")
    return targets


def _refuse_bare_lstm(module: nn.Module) -> None:
    if isinstance(module, nn.LSTM):
        raise TypeError(
            "compression works in place and cannot replace a bare nn.LSTM; convert it first with "
            "G2LSTM.from_lstm(lstm, gate='lstm') (same outputs) or pass the module that holds it"
        )


def _matrix_names(lstm: G2LSTM) -> list[str]:
    """``weight_ih_l{k}[_reverse]`` and ``weight_hh_l{k}[_reverse]`` of every layer and direction."""
    return [name for name in lstm._flat_weights_names if name.startswith("weight_")]


def _matrix(lstm: G2LSTM, name: str) -> Tensor:
    """The dense weight matrix ``name`` of an uncompressed ``lstm`` (an attribute named at run time)."""
    return cast(Tensor, getattr(lstm, name))


def _check_rank(path: str, lstm: G2LSTM, rank: int) -> None:
    for name in _matrix_names(lstm):
        columns = getattr(lstm, name).shape[1]
        smaller = min(lstm.hidden_size, columns)
        if rank > smaller:
            raise ConfigError(
                f"rank={rank} exceeds the smaller side of the {lstm.hidden_size}x{columns} gate blocks of "
                f"{_qualified(path, name)}; use rank <= {smaller}"
            )


def _qualified(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _compress_layer(
    path: str, lstm: G2LSTM, settings: dict[str, Any], converted: bool
) -> tuple[CompressedLSTMWeights, dict[str, float]]:
    """The compressed weights of ``lstm`` and the relative error of each compressed block."""
    gates = settings["gates"]
    step = None if settings["round"] is None else _matrix(lstm, "weight_ih_l0").new_tensor(settings["round"])
    store = CompressedLSTMWeights({**settings, "codes": None, "converted": converted}, step)
    errors: dict[str, float] = {}
    with torch.no_grad():
        for name in _matrix_names(lstm):
            weight = getattr(lstm, name)
            if not torch.isfinite(weight).all():
                raise ConfigError(f"{_qualified(path, name)} holds non-finite values; nothing was compressed")
            blocks = nn.ModuleDict()
            for gate, rows in zip(GATES, weight.split(lstm.hidden_size)):
                if gate not in gates:
                    blocks[gate] = _DenseBlock(rows.clone(), weight.requires_grad)
                    continue
                if step is None:
                    u, v = _low_rank_factors(rows, settings["rank"])
                    blocks[gate] = _LowRankBlock(u, v, weight.requires_grad)
                else:
                    blocks[gate] = _QuantizedBlock(_round_codes(rows, settings["round"], settings["clip"]))
                errors[f"{name}.{gate}"] = _relative_error(rows, cast(_GateBlock, blocks[gate]).dense(step))
            store[name] = blocks
    if step is not None:
        store.settings["codes"] = _narrow_codes(path, store)
    return store, errors


def _round_codes(block: Tensor, step: float, clip: float | None) -> Tensor:
    """``round(block / step)``, clamped to ``±clip / step``; floating point until :func:`_narrow_codes`."""
    codes = torch.round(block / step)
    if clip is not None:
        levels = round(clip / step)
        codes = codes.clamp_(-levels, levels)
    return codes


def _narrow_codes(path: str, store: CompressedLSTMWeights) -> str:
    """Turn the codes of ``store`` into int8 when all fit, else int16; the name of the dtype chosen."""
    quantized = [block for block in store.modules() if isinstance(block, _QuantizedBlock)]
    largest = max(int(block.codes.abs().max().item()) for block in quantized)
    name = next((name for name, dtype in _CODE_DTYPES.items() if largest <= torch.iinfo(dtype).max), None)
    if name is None:
        raise ConfigError(
            f"round={store.settings['round']!r} is too fine for the weights of {path or 'the module'}: codes "
            f"reach {largest}, beyond int16 ({torch.iinfo(torch.int16).max}); use a larger round or a clip"
        )
    for block in quantized:
        block.codes = block.codes.to(_CODE_DTYPES[name])
    return name


def _low_rank_factors(block: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Balanced factors ``(U_k S_k^{1/2}, S_k^{1/2} V_k^T)`` of the best rank-``rank`` approximation."""
    exact = block if block.dtype in (torch.float32, torch.float64) else block.float()
    u, s, vh = torch.linalg.svd(exact, full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(block.dtype), (root[:, None] * vh[:rank]).to(block.dtype)


def _relative_error(block: Tensor, approximation: Tensor) -> float:
    norm = torch.linalg.matrix_norm(block.double()).item()
    difference = torch.linalg.matrix_norm((block - approximation).double()).item()
    return difference / norm if norm > 0 else 0.0


def _placeholder_layer(lstm: G2LSTM, settings: dict[str, Any]) -> CompressedLSTMWeights:
    """Compressed weights with ``lstm``'s shapes and dtypes, filled with zeros, for a state dict to load."""
    gates, rank = settings["gates"], settings["rank"]
    step = None if settings["round"] is None else _matrix(lstm, "weight_ih_l0").new_tensor(settings["round"])
    store = CompressedLSTMWeights(settings, step)
    with torch.no_grad():
        for name in _matrix_names(lstm):
            weight = getattr(lstm, name)
            blocks = nn.ModuleDict()
            for gate, rows in zip(GATES, weight.split(lstm.hidden_size)):
                if gate not in gates:
                    blocks[gate] = _DenseBlock(rows.clone(), weight.requires_grad)
                elif step is None:
                    u, v = rows.new_zeros(rows.shape[0], rank), rows.new_zeros(rank, rows.shape[1])
                    blocks[gate] = _LowRankBlock(u, v, weight.requires_grad)
                else:
                    codes = torch.zeros_like(rows, dtype=_CODE_DTYPES[settings["codes"]])
                    blocks[gate] = _QuantizedBlock(codes)
            store[name] = blocks
    return store


def _attach(lstm: G2LSTM, store: CompressedLSTMWeights) -> None:
    """Replace ``lstm``'s dense weight matrices by ``store`` (the hook in ``G2LSTM._weight`` reads it)."""
    for name in store:
        delattr(lstm, name)
    lstm.compressed = store


def _replace(root: nn.Module, path: str, layer: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent), child, layer)


def _format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
