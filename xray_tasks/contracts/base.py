"""The machinery every contract shares: frozen dataclasses that read and write plain JSON-able dicts.

A contract field is declared with :func:`doc` (its meaning, shown in ``docs/CONTRACTS.md``).  ``from_dict``
checks every field's presence and type and names the file and the field when one is wrong; keys it does not know
are ignored, so a newer writer's additions do not break an older reader.  Documents (files a stage writes) carry a
``schema`` number; ``upgrade`` turns an older schema's dict into the current one before it is read.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Self

from xray_tasks.errors import IntegrityError


class ContractError(IntegrityError, ValueError):
    """A file or summary does not match its contract; the message names the file, the field and what is wrong."""


def doc(text: str, *, key: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its meaning attached; ``key`` is its JSON name when that is no Python name (e.g.
    ``at_0.5``); ``kwargs`` as for ``dataclasses.field`` (e.g. ``default``)."""
    return dataclasses.field(metadata={"doc": text, "key": key}, **kwargs)


def json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


@dataclasses.dataclass(frozen=True)
class Contract:
    """Base of every contract: ``to_dict`` / ``from_dict`` with validation."""

    SCHEMA: ClassVar[int | None] = None
    """The current schema number of a document; ``None`` for a part nested in one."""
    OLDEST_SCHEMA: ClassVar[int | None] = None
    """The oldest schema ``upgrade`` can still read (default: only the current one)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict (tuples become lists); a document's ``schema`` comes first."""
        out: dict[str, Any] = {"schema": self.SCHEMA} if self.SCHEMA is not None else {}
        for f in dataclasses.fields(self):
            out[json_key(f)] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Self:
        """Read ``data`` (a parsed JSON object); ``where`` names its file or origin in error messages.

        Raises:
            ContractError: wrong schema, a missing field or a value of the wrong type.
        """
        where = where or cls.__name__
        if cls.SCHEMA is not None:
            if not isinstance(data, dict):
                raise ContractError(f"{where}: expected a JSON object, got {type(data).__name__}")
            schema = data.get("schema", 0)  # 0: written before the document had a schema number
            oldest = cls.SCHEMA if cls.OLDEST_SCHEMA is None else cls.OLDEST_SCHEMA
            if not isinstance(schema, int) or not oldest <= schema <= cls.SCHEMA:
                allowed = cls.SCHEMA if oldest == cls.SCHEMA else f"{oldest}..{cls.SCHEMA}"
                raise ContractError(
                    f"{where}: expected {cls.__name__} schema {allowed}, got {data.get('schema')!r}"
                )
            if schema != cls.SCHEMA:
                data = cls.upgrade(dict(data), schema)
        return _build(cls, data, where, "")

    @classmethod
    def upgrade(cls, data: dict[str, Any], schema: int) -> dict[str, Any]:
        """Turn a dict of an older ``schema`` into the current one (override where ``OLDEST_SCHEMA`` is older)."""
        return data

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


def describe(cls: type[Contract]) -> list[tuple[str, str, str]]:
    """``(field, type, meaning)`` rows of a contract, as ``docs/CONTRACTS.md`` lists them."""
    hints = typing.get_type_hints(cls)
    return [
        (json_key(f), type_name(hints[f.name]), f.metadata.get("doc", "")) for f in dataclasses.fields(cls)
    ]


def type_name(hint: Any) -> str:
    """A short, stable spelling of a field type: ``int``, ``float | null``, ``[ShardEntry]``, ``{str: int}``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        return f"[{type_name(args[0])}]"
    if origin is dict:
        return f"{{{type_name(args[0])}: {type_name(args[1])}}}"
    if hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint))


def _plain(value: Any) -> Any:
    if isinstance(value, Contract):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(cls: type[Contract], data: Any, where: str, path: str) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: field {path or cls.__name__!r} must be an object, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = json_key(f)
        name = f"{path}.{key}" if path else key
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ContractError(f"{where}: missing field {name!r}")
            continue
        kwargs[f.name] = _convert(data[key], hints[f.name], where, name)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, where: str, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Contract):
        return _build(hint, value, where, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where, path)
            except ContractError:
                continue
        raise ContractError(f"{where}: field {path!r} must be {type_name(hint)}, got {_shown(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ContractError(f"{where}: field {path!r} must be a list, got {_shown(value)}")
        return tuple(_convert(v, args[0], where, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{where}: field {path!r} must be an object, got {_shown(value)}")
        return {str(k): _convert(v, args[1], where, f"{path}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ContractError(f"{where}: field {path!r} must be {type_name(hint)}, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
