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

``matrices`` narrows compression to some of the dense matrices (e.g. only the hidden-to-hidden ones, as
the authors compress their translation model); by default every one is compressed.

A compressed matrix is a torch parametrization (:mod:`torch.nn.utils.parametrize`), :class:`CompressedGates`:
the layer keeps its attribute ``weight_hh_l0`` (the dense matrix, computed from the blocks when read), while
its state dict holds only the compact tensors, so a checkpoint is small. ``G2LSTM`` knows nothing of it:
``to_lstm()``, ``all_weights``, ``reset_parameters()`` and gradients work as for any parametrized module,
and the fused kernel asks a parametrization for its blocks (:meth:`CompressedGates.blocks`) to multiply by the
factors or the codes directly at inference. A checkpoint records :func:`compression_config` beside the state
dict; :func:`restore_compressed` gives a freshly built model the same layout before ``load_state_dict``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from g2lstm.errors import ConfigError
from g2lstm.gates import set_eval_gate
from g2lstm.kernels.stored import dense_block
from g2lstm.lstm import G2LSTM

__all__ = [
    "GATES",
    "PAPER_GATES",
    "CompressedGates",
    "CompressionReport",
    "compress",
    "compressed_copy",
    "compression_config",
    "count_parameters_and_bytes",
    "compressed_gates",
    "restore_compressed",
    "stored_gates",
    "table_settings",
]

GATES = ("input", "forget", "cell", "output")  # torch's row order i, f, g, o
PAPER_GATES = ("input", "forget")
_CODE_DTYPES = {"int8": torch.int8, "int16": torch.int16}
_SETTING_KEYS = ("round", "clip", "rank", "gates", "codes", "converted")
ModuleT = TypeVar("ModuleT", bound=nn.Module)
_OPTIONAL_SETTING_KEYS = ("matrices",)  # absent in configs saved before it existed: every matrix


class CompressedGates(nn.Module):
    """A parametrization holding one ``(4H, in)`` LSTM weight matrix as its four gate blocks (i, f, g, o).

    Each block is kept dense, as low-rank factors or as integer codes. The float tensors are the
    parametrization's originals (registered by torch as ``original0``, ``original1``, ...: for each gate in
    order, its dense block, or its factors ``u`` ``(H, k)`` and ``v`` ``(k, in)``); the codes of the rounded
    blocks are the buffer ``codes`` (int8 or int16, ``(gates, in, H)``: each block stored transposed, the
    layout the CPU kernel reads a block of hidden units from at inference) and their step the buffer
    ``step``.

    Args:
        hidden_size: ``H``, the rows of one gate block.
        compressed: The gates compressed, in the order of :data:`GATES`.
        round, clip: Low precision: the step ``r`` and the optional bound ``c``.
        rank: Low rank: the rank ``k``.
        codes: The integer type of the codes, ``"int8"`` or ``"int16"`` (low precision).
        converted: Whether the layer was an ``nn.LSTM`` before compression (recorded for restoring).
    """

    def __init__(
        self,
        hidden_size: int,
        compressed: Iterable[str],
        *,
        round: float | None = None,
        clip: float | None = None,
        rank: int | None = None,
        codes: str | None = None,
        converted: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.converted = converted
        self.compressed = tuple(compressed)
        self.round, self.clip, self.rank = round, clip, rank
        self.codes_dtype = _CODE_DTYPES[codes] if codes is not None else None
        self.register_buffer("codes", None)
        self.register_buffer("step", None)

    def kind(self, gate: str) -> str:
        """``"dense"``, ``"rank"`` or ``"round"``: how the block of ``gate`` is stored."""
        if gate not in self.compressed:
            return "dense"
        return "rank" if self.rank is not None else "round"

    def right_inverse(self, weight: Tensor) -> list[Tensor]:
        """Compress ``weight``: keep the codes and step, return the float originals."""
        originals, codes = [], []
        with torch.no_grad():
            for gate, rows in zip(GATES, weight.split(self.hidden_size)):
                kind = self.kind(gate)
                if kind == "dense":
                    originals.append(rows.detach().clone())
                elif kind == "rank":
                    originals.extend(_low_rank_factors(rows.detach(), cast(int, self.rank)))
                else:
                    codes.append(_round_codes(rows.detach(), cast(float, self.round), self.clip))
            if codes:
                stacked = torch.stack([block.t() for block in codes]).contiguous()
                dtype = self.codes_dtype or torch.int16
                # (a model built on the meta device, to check a checkpoint's shapes, has no values to check)
                if not stacked.is_meta and stacked.abs().max() > torch.iinfo(dtype).max:
                    raise ConfigError(
                        f"round={self.round!r} gives codes up to {int(stacked.abs().max())}, beyond "
                        f"{dtype}; use a larger round or a clip"
                    )
                self.codes = stacked.to(dtype)
                self.step = weight.new_tensor(self.round)
        return originals

    def forward(self, *originals: Tensor) -> Tensor:
        return torch.cat([dense_block(kind, tensors) for kind, tensors in self.factors(*originals).values()])

    def factors(self, *originals: Tensor) -> dict[str, tuple[str, tuple[Tensor, ...]]]:
        """Each gate's stored form without rebuilding it: ``{gate: (kind, tensors)}`` with ``(block,)`` for
        ``"dense"``, ``(u, v)`` for ``"rank"`` and ``(codes, step)`` for ``"round"``."""
        forms: dict[str, tuple[str, tuple[Tensor, ...]]] = {}
        tensors = iter(originals)
        code_rows = iter(block.t() for block in self.codes) if self.codes is not None else iter(())
        for gate in GATES:
            kind = self.kind(gate)
            if kind == "dense":
                forms[gate] = (kind, (next(tensors),))
            elif kind == "rank":
                forms[gate] = (kind, (next(tensors), next(tensors)))
            else:
                forms[gate] = (kind, (next(code_rows), self.step))
        return forms

    def settings(self) -> dict[str, Any]:
        """The plain values :func:`compression_config` records for the layer."""
        codes = None if self.codes is None else str(self.codes.dtype).removeprefix("torch.")
        return {
            "round": self.round,
            "clip": self.clip,
            "rank": self.rank,
            "gates": list(self.compressed),
            "codes": codes,
            "converted": self.converted,
        }

    def extra_repr(self) -> str:
        method = f"rank={self.rank}" if self.rank is not None else f"round={self.round}, clip={self.clip}"
        return f"{method}, gates={list(self.compressed)}"

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
        if isinstance(incoming, Tensor) and self.codes is not None and incoming.dtype != self.codes.dtype:
            error_msgs.append(
                f"{prefix}codes: the checkpoint holds {incoming.dtype} codes, this module "
                f"{self.codes.dtype}; rebuild it with the checkpoint's compression config "
                f"(restore_compressed)"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def stored_gates(module: nn.Module, name: str) -> dict[str, tuple[str, tuple[Tensor, ...]]] | None:
    """How ``module``'s compressed matrix ``name`` is stored, gate by gate: ``{gate: (kind, tensors)}`` as
    :meth:`CompressedGates.factors` (the live tensors: factors' gradients land on them); ``None`` when
    ``name`` is not compressed."""
    parametrization = compressed_gates(module, name)
    if parametrization is None:
        return None
    stored = cast(Any, module.parametrizations)[name]
    originals = (
        [stored.original]
        if stored.is_tensor
        else [getattr(stored, f"original{i}") for i in range(stored.ntensors)]
    )
    return parametrization.factors(*originals)


def compressed_gates(module: nn.Module, name: str) -> CompressedGates | None:
    """The :class:`CompressedGates` parametrization of ``module``'s tensor ``name``, if it has one."""
    if not parametrize.is_parametrized(module, name):
        return None
    found = [p for p in cast(Any, module.parametrizations)[name] if isinstance(p, CompressedGates)]
    return found[0] if found else None


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
    matrices: Iterable[str] | None = None,
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
        matrices: Which dense matrices to compress, by their names in ``module.named_parameters()``
            (e.g. ``"decoder.weight_hh_l0"``); layers with none of them are left alone. Default: all.

    Exactly one of ``round`` and ``rank`` must be given. The paper's settings: language model ``round=0.2``,
    ``clip=0.4`` or ``rank=128`` / ``64``; translation ``round=0.5``, ``clip=1.0`` or ``rank=32`` / ``16``.

    Everything is checked and computed before the module changes. Afterwards each compressed matrix is a
    :class:`CompressedGates` parametrization: the layer still reads as dense ``weight_ih_l{k}`` /
    ``weight_hh_l{k}`` (so ``to_lstm`` and ``all_weights`` work) while its state dict holds the compact
    tensors; make an optimizer for finetuning after this call (the factors are new Parameters).

    Returns:
        A :class:`CompressionReport`; ``report.summary()`` prints it.

    Raises:
        TypeError: an argument of the wrong type, or a bare ``nn.LSTM`` as ``module``.
        ValueError: neither or both of ``round`` and ``rank``, ``clip`` without ``round``, a value out of
            range, a ``rank`` above a block's smaller side, codes beyond int16, a module without LSTM
            layers or one already compressed, or ``matrices`` naming no weight matrix of such a layer.

    Example::

        model = AWDLSTM(spec)  # trained
        print(compress(model, round=0.2, clip=0.4).summary())
        save_checkpoint(path, {"compression": compression_config(model), "model": model.state_dict()})
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    settings = _check_settings(round, clip, rank, gates)
    layers = _find_layers(module)
    chosen = _choose_matrices(layers, matrices)
    targets = [
        (
            path,
            layer,
            layer if isinstance(layer, G2LSTM) else G2LSTM.from_lstm(cast(nn.LSTM, layer), gate="lstm"),
        )
        for path, layer in layers
        if path in chosen
    ]
    if rank is not None:
        for path, _, lstm in targets:
            _check_rank(path, lstm, rank, chosen[path])
    codes = {path: _codes_dtype(path, lstm, settings, chosen[path]) for path, _, lstm in targets}
    parameters_before, bytes_before = count_parameters_and_bytes(module)
    dense = {
        (path, name): getattr(lstm, name).detach().clone()
        for path, _, lstm in targets
        for name in chosen[path]
    }
    for path, layer, lstm in targets:
        _parametrize(lstm, settings, codes[path], chosen[path], converted=lstm is not layer)
        if lstm is not layer:
            _replace(module, path, lstm)
    errors = {}
    with torch.no_grad():
        for (path, name), before in dense.items():
            after = getattr(module.get_submodule(path) if path else module, name)
            for gate, rows, approximation in zip(
                GATES, before.split(after.shape[0] // 4), after.split(after.shape[0] // 4)
            ):
                if gate in settings["gates"]:
                    errors[_qualified(path, f"{name}.{gate}")] = _relative_error(rows, approximation)
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
    ``rank``, ``gates``, ``codes`` (``"int8"`` / ``"int16"``, or ``None`` for low rank), ``converted``
    (whether it was an ``nn.LSTM``) and ``matrices`` (the layer's compressed matrices, e.g.
    ``["weight_hh_l0"]``). ``None`` when nothing in ``module`` is compressed.
    """
    config = {}
    for path, layer in module.named_modules():
        if isinstance(layer, G2LSTM):
            found = {name: compressed_gates(layer, name) for name in _matrix_names(layer)}
            kept = {name: parametrization for name, parametrization in found.items() if parametrization}
            if kept:
                first = next(iter(kept.values()))
                config[path] = {**first.settings(), "matrices": list(kept)}
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
            if _is_compressed(layer):
                raise ConfigError(f"layer {path!r} is already compressed; restore into a freshly built model")
            lstm = layer
        else:
            raise TypeError(
                f"the compression config expects layer {path!r} to be a G2LSTM, got {type(layer).__name__}"
            )
        matrices = _matrix_names(lstm) if settings["matrices"] is None else settings["matrices"]
        unknown = sorted(set(matrices) - set(_matrix_names(lstm)))
        if unknown:
            raise ConfigError(
                f"the compression config of layer {path!r} names matrices it lacks: {unknown}; "
                f"it has {_matrix_names(lstm)}"
            )
        if settings["rank"] is not None:
            _check_rank(path, lstm, settings["rank"], matrices)
        plans.append((path, layer, lstm, settings, matrices))
    for path, layer, lstm, settings, matrices in plans:
        _parametrize(
            lstm, settings, settings["codes"], matrices, converted=settings["converted"], placeholder=True
        )
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
    if not set(_SETTING_KEYS) <= set(entry) <= set(_SETTING_KEYS + _OPTIONAL_SETTING_KEYS):
        raise ConfigError(
            f"{where} must have the keys {list(_SETTING_KEYS)} (and optionally "
            f"{list(_OPTIONAL_SETTING_KEYS)}), got {list(entry)}"
        )
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
    matrices = entry.get("matrices")
    if matrices is not None and not (
        isinstance(matrices, list) and matrices and all(isinstance(name, str) for name in matrices)
    ):
        raise TypeError(f"{where}: matrices must be a non-empty list of matrix names, got {matrices!r}")
    return {**settings, "codes": codes, "converted": converted, "matrices": matrices}


def _find_layers(module: nn.Module) -> list[tuple[str, G2LSTM | nn.LSTM]]:
    """The paths and modules of the G2LSTM and nn.LSTM layers of ``module``, none of them compressed."""
    _refuse_bare_lstm(module)
    targets: list[tuple[str, G2LSTM | nn.LSTM]] = [
        (path, layer) for path, layer in module.named_modules() if isinstance(layer, (G2LSTM, nn.LSTM))
    ]
    if not targets:
        raise ConfigError(f"module ({type(module).__name__}) holds no G2LSTM or nn.LSTM layer to compress")
    done = [
        path or "<module>" for path, layer in targets if isinstance(layer, G2LSTM) and _is_compressed(layer)
    ]
    if done:
        raise ConfigError(f"layers {done} are already compressed; compress a copy of the uncompressed model")
    return targets


def _choose_matrices(layers: list[tuple[str, G2LSTM | nn.LSTM]], matrices: Any) -> dict[str, list[str]]:
    """Per layer path, the names of its matrices that ``matrices`` (qualified names, or None: all) selects."""
    local = {path: _matrix_names(layer) for path, layer in layers}
    if matrices is None:
        return local
    if isinstance(matrices, str) or not isinstance(matrices, Iterable):
        raise TypeError(
            f"matrices must be a sequence of weight names such as ['decoder.weight_hh_l0'], got {matrices!r}"
        )
    wanted = list(matrices)
    available = [_qualified(path, name) for path, names in local.items() for name in names]
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ConfigError(
            f"matrices must name weight matrices of the module's LSTM layers, {available}; "
            f"got {unknown if unknown else 'none'}"
        )
    chosen = {
        path: [name for name in names if _qualified(path, name) in wanted] for path, names in local.items()
    }
    return {path: names for path, names in chosen.items() if names}


def _refuse_bare_lstm(module: nn.Module) -> None:
    if isinstance(module, nn.LSTM):
        raise TypeError(
            "compression works in place and cannot replace a bare nn.LSTM; convert it first with "
            "G2LSTM.from_lstm(lstm, gate='lstm') (same outputs) or pass the module that holds it"
        )


def _matrix_names(lstm: G2LSTM | nn.LSTM) -> list[str]:
    """``weight_ih_l{k}[_reverse]`` and ``weight_hh_l{k}[_reverse]`` of every layer and direction (not the
    projection ``weight_hr``, which has no gate blocks)."""
    return [name for name in lstm._flat_weights_names if name.startswith(("weight_ih", "weight_hh"))]


def _check_rank(path: str, lstm: G2LSTM, rank: int, matrices: list[str]) -> None:
    for name in matrices:
        columns = getattr(lstm, name).shape[1]
        smaller = min(lstm.hidden_size, columns)
        if rank > smaller:
            raise ConfigError(
                f"rank={rank} exceeds the smaller side of the {lstm.hidden_size}x{columns} gate blocks of "
                f"{_qualified(path, name)}; use rank <= {smaller}"
            )


def _qualified(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_compressed(lstm: G2LSTM) -> bool:
    return any(compressed_gates(lstm, name) is not None for name in _matrix_names(lstm))


def _codes_dtype(path: str, lstm: G2LSTM, settings: dict[str, Any], matrices: list[str]) -> str | None:
    """``"int8"`` when every code of the layer fits, else ``"int16"``; refuses codes beyond int16 and
    non-finite weights (checked before anything changes)."""
    largest = 0
    with torch.no_grad():
        for name in matrices:
            weight = getattr(lstm, name)
            if not torch.isfinite(weight).all():
                raise ConfigError(f"{_qualified(path, name)} holds non-finite values; nothing was compressed")
            if settings["round"] is None:
                continue
            for gate, rows in zip(GATES, weight.split(lstm.hidden_size)):
                if gate in settings["gates"]:
                    codes = _round_codes(rows, settings["round"], settings["clip"])
                    largest = max(largest, int(codes.abs().max().item()))
    if settings["round"] is None:
        return None
    fitting = [name for name, dtype in _CODE_DTYPES.items() if largest <= torch.iinfo(dtype).max]
    if not fitting:
        raise ConfigError(
            f"round={settings['round']!r} is too fine for the weights of {path or 'the module'}: codes reach "
            f"{largest}, beyond int16 ({torch.iinfo(torch.int16).max}); use a larger round or a clip"
        )
    return fitting[0]


def _parametrize(
    lstm: G2LSTM,
    settings: dict[str, Any],
    codes: str | None,
    matrices: list[str],
    converted: bool,
    placeholder: bool = False,
) -> None:
    """Register a :class:`CompressedGates` on the weight matrices ``matrices`` of ``lstm`` (``placeholder``:
    compress zeros, for a state dict to be loaded over them)."""
    for name in matrices:
        parametrization = CompressedGates(
            lstm.hidden_size,
            settings["gates"],
            round=settings["round"],
            clip=settings["clip"],
            rank=settings["rank"],
            codes=codes,
            converted=converted,
        )
        if placeholder:
            with torch.no_grad():
                getattr(lstm, name).zero_()
        parametrize.register_parametrization(lstm, name, parametrization)


def _round_codes(block: Tensor, step: float, clip: float | None) -> Tensor:
    """``round(block / step)``, clamped to ``±clip / step``, in floating point."""
    codes = torch.round(block / step)
    if clip is not None:
        levels = round(clip / step)
        codes = codes.clamp_(-levels, levels)
    return codes


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


def _replace(root: nn.Module, path: str, layer: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent), child, layer)


def _format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
