"""Typed dataclass configs read from TOML presets, with command-line overrides checked against field types.

A recipe declares its settings once, as a dataclass with annotated fields and defaults; a preset is a flat
TOML file that sets some of them, and ``--set key=value`` overrides set others. Every key is checked against
the dataclass (unknown keys are rejected with the list of valid ones) and every value against its field's
annotation, so a typo fails before training starts instead of being silently ignored.

Supported annotations: ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``Literal[...]``,
``tuple[X, ...]``, fixed-length ``tuple[X, Y]``, ``list[X]`` and ``X | None`` of these. TOML has no null:
an optional field is ``None`` when the preset leaves it out, or when an override says ``none``.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from g2lstm.errors import ConfigError, MissingFileError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_config",
    "parse_overrides",
    "preset_descriptions",
]

T = TypeVar("T")


def load_config(
    cls: type[T],
    preset: str | Path,
    overrides: Mapping[str, str | object] | None = None,
    *,
    preset_dir: Path | None = None,
) -> T:
    """Build a ``cls`` from a TOML preset and overrides, every key and value checked.

    Args:
        cls: A dataclass; its field annotations say which keys exist and what type each value has.
        preset: A preset name, looked up as ``<preset_dir>/<name>.toml``, or the path of a ``.toml`` file.
        overrides: ``{key: value}`` applied over the preset. String values are parsed to the field's type
            (``"true"``/``"false"`` for bools, comma-separated items for tuples and lists, ``"none"`` for an
            optional field); other values are checked as they are.
        preset_dir: The folder holding the named presets of a recipe.

    After construction, ``config.validate()`` is called when the class defines it, for checks that span
    several fields; a ``ValueError`` it (or ``__post_init__``) raises becomes a :class:`ConfigError`.

    Raises:
        ConfigError: an unknown preset name, invalid TOML, an unknown key, a value of the wrong type or out
            of its choices, a missing required key, or a failed ``validate``.
        MissingFileError: ``preset`` is a path and the file does not exist.
    """
    _check_dataclass(cls)
    path = _preset_path(preset, preset_dir)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise MissingFileError(f"preset file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"preset file {path} is not valid TOML: {error}; fix its syntax") from None
    except (OSError, UnicodeDecodeError) as error:  # a folder, unreadable, or not text
        raise ConfigError(f"preset file {path} cannot be read ({error}); give a .toml file") from None
    values = _convert_all(cls, data, f"preset {path}", parse=False)
    values.update(_convert_all(cls, overrides or {}, "overrides", parse=True))
    return _build(cls, values, f"preset {path}")


def apply_overrides(config: T, overrides: Mapping[str, str | object]) -> T:
    """A copy of ``config`` with ``overrides`` applied, parsed and checked as in :func:`load_config`."""
    _check_dataclass(config, instance=True)
    fields = dataclasses.fields(config)  # type: ignore[arg-type]  # checked to be a dataclass just above
    values = {field.name: getattr(config, field.name) for field in fields if field.init}
    values.update(_convert_all(type(config), overrides, "overrides", parse=True))
    return _build(type(config), values, "overrides")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass as plain, JSON-able values (tuples become lists)."""
    _check_dataclass(config, instance=True)
    return {field.name: _plain(getattr(config, field.name)) for field in dataclasses.fields(config)}


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "the config dict") -> T:
    """Rebuild a ``cls`` from :func:`config_to_dict` output (e.g. read back from JSON or a checkpoint).

    Keys and values are checked as for a preset; ``source`` names where ``data`` came from in messages.
    """
    _check_dataclass(cls)
    if not isinstance(data, Mapping):
        raise TypeError(f"config_from_dict expects a mapping, got {type(data).__name__}")
    return _build(cls, _convert_all(cls, data, source, parse=False), source)


def list_presets(preset_dir: Path | str) -> list[str]:
    """The preset names in ``preset_dir`` (its ``*.toml`` files without the suffix), sorted."""
    directory = Path(preset_dir)
    if not directory.is_dir():
        raise MissingFileError(f"preset folder {directory} does not exist")
    return sorted(path.stem for path in directory.glob("*.toml"))


def preset_descriptions(preset_dir: Path | str) -> dict[str, str]:
    """Each preset of ``preset_dir`` with a one-line description: the first sentence of the comment that
    opens its file (up to a colon, when that sentence is long)."""
    descriptions = {}
    for name in list_presets(preset_dir):
        lines = (Path(preset_dir) / f"{name}.toml").read_text(encoding="utf-8").splitlines()
        comment = []
        for line in lines:
            if not line.startswith("#") or not line.strip("# "):
                break
            comment.append(line.lstrip("# ").strip())
        sentence = " ".join(comment).split(". ")[0].rstrip(".")
        descriptions[name] = sentence.split(": ")[0] if len(sentence) > 100 else sentence
    return descriptions


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["lr=30", "gate=g2"]`` (the ``--set`` arguments of the command line) as ``{"lr": "30", ...}``."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"an override must look like key=value, got {item!r}; e.g. --set lr=30")
        overrides[key.strip()] = value.strip()
    return overrides


# ---------------------------------------------------------------------------------------------- internals


def _check_dataclass(value: Any, instance: bool = False) -> None:
    cls = type(value) if instance else value
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        shown = type(value).__name__ if instance else repr(value)
        raise TypeError(f"expected a dataclass{' instance' if instance else ''}, got {shown}")


def _preset_path(preset: str | Path, preset_dir: Path | None) -> Path:
    """The file of a preset given by name or path."""
    if isinstance(preset, Path):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a name or a path, got {type(preset).__name__}")
    if preset.endswith(".toml") or "/" in preset or "\\" in preset:
        return Path(preset)
    if preset_dir is None:
        raise ValueError(f"preset {preset!r} is a name but no preset_dir was given; pass a .toml file's path")
    path = Path(preset_dir) / f"{preset}.toml"
    if not path.is_file():
        available = ", ".join(list_presets(preset_dir)) if Path(preset_dir).is_dir() else "none"
        raise ConfigError(f"unknown preset {preset!r} (no {path}); available presets: {available}")
    return path


def _convert_all(cls: type, data: Mapping[str, Any], source: str, parse: bool) -> dict[str, Any]:
    """Check each key of ``data`` against the fields of ``cls`` and convert its value to the field's type."""
    hints = get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls) if field.init]
    values = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {source} for {cls.__name__}; {guess}valid keys: {', '.join(names)}"
            )
        values[key] = _convert(value, hints[key], key, source, parse)
    return values


def _build(cls: type[T], values: dict[str, Any], source: str) -> T:
    required = [
        field.name
        for field in dataclasses.fields(cls)  # type: ignore[arg-type]
        if field.init
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
        and field.name not in values
    ]
    if required:
        raise ConfigError(
            f"{source} lacks the required keys {', '.join(required)} of {cls.__name__}; "
            f"add them to the preset or set them, e.g. --set {required[0]}=..."
        )
    try:
        config = cls(**values)
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
    except ConfigError:
        raise
    except ValueError as error:  # from validate() or __post_init__
        raise ConfigError(f"invalid {cls.__name__} from {source}: {error}") from error
    return config


def _describe(hint: Any) -> str:
    """A type annotation in words, for messages."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        members = [_describe(arg) for arg in args if arg is not type(None)]
        return " or ".join(members) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(_describe(arg) for arg in args)})"
        return f"a list of {_describe(args[0]) if args else 'values'} (comma-separated on the command line)"
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string"}
    return names.get(hint, repr(hint))


def _convert(value: Any, hint: Any, key: str, source: str, parse: bool) -> Any:
    """``value`` as the type ``hint`` describes; strings are parsed first when ``parse`` is set."""
    origin, args = get_origin(hint), get_args(hint)

    def fail() -> ConfigError:
        return ConfigError(
            f"{key} in {source} must be {_describe(hint)}, got {value!r} ({type(value).__name__}); "
            f"fix the value in {source}"
        )

    if origin in (Union, types.UnionType):
        if type(None) in args and (
            value is None or (parse and isinstance(value, str) and value.strip().lower() in ("none", "null"))
        ):
            return None
        for member in args:
            if member is not type(None):
                try:
                    return _convert(value, member, key, source, parse)
                except ConfigError:
                    pass
        raise fail()
    if origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
            if parse and isinstance(value, str) and value.strip() == str(choice):
                return choice
        raise fail()
    if origin in (tuple, list):
        if parse and isinstance(value, str):
            value = [item.strip() for item in value.split(",")] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{key} in {source} must have {len(args)} items, got {len(value)}: {value!r}; "
                    f"fix the value in {source}"
                )
            item_hints = list(args)
        elif args:
            item_hints = [args[0]] * len(value)
        else:
            raise TypeError(
                f"config field {key} has a bare {origin.__name__} annotation; use e.g. tuple[int, ...]"
            )
        items = [
            _convert(item, item_hint, f"{key}[{index}]", source, parse)
            for index, (item, item_hint) in enumerate(zip(value, item_hints))
        ]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if parse and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is int or hint is float:
        if parse and isinstance(value, str):
            try:
                value = hint(value.strip())
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float) if hint is float else int):
            raise fail()
        if hint is int and not -(2**63) <= value < 2**63:
            raise ConfigError(f"{key} = {value} from {source} is out of range: an int must fit in 64 bits")
        return hint(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail()
    raise TypeError(f"config field {key} has an unsupported annotation {hint!r}; see g2lstm.train.config")


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value
