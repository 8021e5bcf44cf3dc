"""Typed configs from plain dicts, with errors that name the field and the file."""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from qmamba.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any], where: str, ignore: tuple[str, ...] = ()) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ConfigError`` naming ``where``.

    Keys in ``ignore`` are accepted and dropped (fields other libraries write that mean nothing here).
    Nested dataclass fields are built recursively.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields and k not in ignore]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(fields), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(hints)} for {cls.__name__}; "
            f"known fields: {', '.join(sorted(fields))}"
        )
    hints_by_name = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            continue
        ftype = _dataclass_in(hints_by_name.get(key))
        if ftype is not None and isinstance(value, dict):
            value = config_from_dict(ftype, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass in a field's type hint (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / torch scalars
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object from ``path``; missing or invalid files raise errors that say which file."""
    from qmamba.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what}: {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: {path} must hold a JSON object, got {type(data).__name__}")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
