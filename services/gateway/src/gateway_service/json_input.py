"""Proto3 JSON to messages through field tables compiled once, with errors that name the field."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from .scalars import FLOAT_TEXT, INT_TEXT, SPECIAL_FLOATS, float_in_range, integer_range

__all__ = ["JsonInputError", "JsonParser"]

# json_format.ParseDict is general but costs several times more per field than these tables;
# well-known types (Timestamp, Struct, Any, wrappers ...) still go through it.

_Convert = Callable[[Any], Any]

_SCALAR, _MESSAGE, _WKT, _MAP, _DELEGATED_MAP = range(5)


class JsonInputError(ValueError):
    """A JSON value does not fit the field at path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _integer(bits: int, signed: bool) -> _Convert:
    low, high, kind = integer_range(bits, signed)

    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {kind}, got a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and INT_TEXT.match(value):
            number = int(value)  # proto3 JSON allows (and prints 64-bit) integers as strings
        else:
            raise ValueError(f"expected {kind}, got {value!r}")
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range for {kind}")
        return number

    return convert


def _floating(single: bool) -> _Convert:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a number, got {_type_name(value)}")
        if isinstance(value, str):
            special = SPECIAL_FLOATS.get(value)
            if special is not None:
                return special
            if not FLOAT_TEXT.match(value):
                raise ValueError(f"expected a number, got {value!r}")
        number = float(value)
        if not float_in_range(number, single):
            raise ValueError(f"{value} is out of range")
        return number

    return convert


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_type_name(value)}")
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected base64 text, got {_type_name(value)}")
    padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64 text") from None


_SCALARS: dict[int, _Convert] = {
    FieldDescriptor.TYPE_STRING: _string,
    FieldDescriptor.TYPE_BYTES: _bytes,
    FieldDescriptor.TYPE_BOOL: _boolean,
    FieldDescriptor.TYPE_DOUBLE: _floating(single=False),
    FieldDescriptor.TYPE_FLOAT: _floating(single=True),
    FieldDescriptor.TYPE_INT32: _integer(32, signed=True),
    FieldDescriptor.TYPE_SINT32: _integer(32, signed=True),
    FieldDescriptor.TYPE_SFIXED32: _integer(32, signed=True),
    FieldDescriptor.TYPE_INT64: _integer(64, signed=True),
    FieldDescriptor.TYPE_SINT64: _integer(64, signed=True),
    FieldDescriptor.TYPE_SFIXED64: _integer(64, signed=True),
    FieldDescriptor.TYPE_UINT32: _integer(32, signed=False),
    FieldDescriptor.TYPE_FIXED32: _integer(32, signed=False),
    FieldDescriptor.TYPE_UINT64: _integer(64, signed=False),
    FieldDescriptor.TYPE_FIXED64: _integer(64, signed=False),
}


def _enum(field: FieldDescriptor) -> _Convert:
    enum = field.enum_type
    assert enum is not None  # the caller checked the field's type
    by_name = {value.name: value.number for value in enum.values}
    as_int = _integer(32, signed=True)

    def convert(value: Any) -> int:
        if isinstance(value, str):
            number = by_name.get(value)
            if number is None:
                raise ValueError(f"{value!r} is not a value of {enum.full_name}")
            return number
        return int(as_int(value))  # proto3 enums are open: unknown numbers are kept

    return convert


def _map_key(field: FieldDescriptor) -> _Convert:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string
    if field.type == FieldDescriptor.TYPE_BOOL:
        return lambda key: {"true": True, "false": False}[key]
    return _SCALARS[field.type]  # integer keys arrive as JSON strings, which these accept


@dataclass(slots=True)
class _Field:
    name: str
    number: int
    kind: int
    repeated: bool
    oneof: str | None
    convert: _Convert | None = None  # scalars, and map values when they are scalars
    plan: _Plan | None = None  # messages, and map values when they are messages
    key: _Convert | None = None  # map keys
    keeps_null: bool = False  # google.protobuf.Value takes null as a value


@dataclass(slots=True)
class _Plan:
    full_name: str
    fields: dict[str, _Field] = field(default_factory=dict)


class JsonParser:
    """Merges decoded JSON into messages; plans are compiled per message type and reused."""

    def __init__(self, pool: DescriptorPool | None = None, *, ignore_unknown_fields: bool = True) -> None:
        self._pool = pool
        self._ignore_unknown = ignore_unknown_fields
        self._plans: dict[str, _Plan] = {}

    def compile(self, descriptor: Descriptor) -> None:
        """Builds the tables for a message type and everything it contains, ahead of requests."""
        self._plan(descriptor)

    def parse(self, value: Any, message: Message) -> None:
        """Merges a JSON object into message; raises JsonInputError naming the field."""
        plan = self._plan(cast(Descriptor, message.DESCRIPTOR))
        if not isinstance(value, dict):
            raise JsonInputError("", f"expected an object, got {_type_name(value)}")
        self._object(value, message, plan, "")

    def parse_field(self, value: Any, message: Message, name: str) -> None:
        """Merges a JSON value into one field of message; paths in errors start below the field."""
        compiled = self._plan(cast(Descriptor, message.DESCRIPTOR)).fields[name]
        if value is None and not compiled.keeps_null:
            message.ClearField(compiled.name)
            return
        self._value(compiled, value, message, "")

    def _plan(self, descriptor: Descriptor) -> _Plan:
        plan = self._plans.get(descriptor.full_name)
        if plan is not None:
            return plan
        plan = self._plans[descriptor.full_name] = _Plan(descriptor.full_name)
        for field_descriptor in descriptor.fields:
            compiled = self._field(field_descriptor)
            plan.fields[field_descriptor.name] = compiled
            plan.fields.setdefault(field_descriptor.json_name, compiled)
        return plan

    def _field(self, field_descriptor: FieldDescriptor) -> _Field:
        oneof = field_descriptor.containing_oneof
        # proto3 optional fields sit in a synthetic oneof of one member; that is not a conflict.
        oneof_name = oneof.name if oneof is not None and len(oneof.fields) > 1 else None
        compiled = _Field(
            field_descriptor.name,
            field_descriptor.number,
            _SCALAR,
            field_descriptor.is_repeated,
            oneof_name,
        )
        message_type = field_descriptor.message_type
        if message_type is None:
            compiled.convert = (
                _enum(field_descriptor)
                if field_descriptor.type == FieldDescriptor.TYPE_ENUM
                else _SCALARS[field_descriptor.type]
            )
        elif message_type.GetOptions().map_entry:
            compiled.kind, compiled.repeated = _MAP, False
            key_field = message_type.fields_by_name["key"]
            value_field = message_type.fields_by_name["value"]
            compiled.key = _map_key(key_field)
            if value_field.message_type is not None and value_field.message_type.full_name.startswith(
                "google.protobuf."
            ):
                compiled.kind = _DELEGATED_MAP  # rare enough to leave to json_format
            elif value_field.message_type is not None:
                compiled.plan = self._plan(value_field.message_type)
            else:
                compiled.convert = self._field(value_field).convert
        elif message_type.full_name.startswith("google.protobuf."):
            compiled.kind = _WKT
            compiled.keeps_null = message_type.full_name == "google.protobuf.Value"
        else:
            compiled.kind = _MESSAGE
            compiled.plan = self._plan(message_type)
        return compiled

    def _object(self, value: dict[str, Any], message: Message, plan: _Plan, path: str) -> None:
        seen: set[int] = set()
        oneofs: dict[str, str] = {}
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            compiled = plan.fields.get(key)
            if compiled is None:
                if self._ignore_unknown:
                    continue
                raise JsonInputError(here, "unknown field")
            if compiled.number in seen:
                raise JsonInputError(here, "field given twice (proto and JSON names)")
            seen.add(compiled.number)
            if item is None and not compiled.keeps_null:
                message.ClearField(compiled.name)  # JSON null means the default value
                continue
            if compiled.oneof is not None:
                other = oneofs.setdefault(compiled.oneof, key)
                if other != key:
                    raise JsonInputError(here, f"only one of the oneof {compiled.oneof!r} may be set")
            self._value(compiled, item, message, here)

    def _value(self, compiled: _Field, item: Any, message: Message, path: str) -> None:
        if compiled.kind == _DELEGATED_MAP:
            try:
                json_format.ParseDict(
                    {compiled.name: item},
                    message,
                    ignore_unknown_fields=self._ignore_unknown,
                    descriptor_pool=self._pool,
                )
            except (json_format.ParseError, TypeError, ValueError) as exc:
                raise JsonInputError(path, str(exc).split("\n", 1)[0]) from None
        elif compiled.kind == _MAP:
            self._map(compiled, item, message, path)
        elif compiled.repeated:
            if not isinstance(item, list):
                raise JsonInputError(path, f"expected an array, got {_type_name(item)}")
            container: Any = getattr(message, compiled.name)
            if compiled.kind == _SCALAR:
                assert compiled.convert is not None
                values = [
                    self._scalar(compiled.convert, element, f"{path}[{i}]") for i, element in enumerate(item)
                ]
                container.extend(values)
                return
            for index, element in enumerate(item):
                here = f"{path}[{index}]"
                if element is None:
                    raise JsonInputError(here, "null is not allowed in an array")
                self._message(compiled, element, container.add(), here)
        elif compiled.kind == _SCALAR:
            assert compiled.convert is not None
            converted = self._scalar(compiled.convert, item, path)
            try:
                setattr(message, compiled.name, converted)
            except (TypeError, ValueError) as exc:
                raise JsonInputError(path, _set_error(exc)) from None
        else:
            target: Any = getattr(message, compiled.name)
            self._message(compiled, item, target, path)

    def _message(self, compiled: _Field, item: Any, target: Any, path: str) -> None:
        if compiled.kind == _WKT:
            try:
                json_format.ParseDict(
                    item, target, ignore_unknown_fields=self._ignore_unknown, descriptor_pool=self._pool
                )
            except (json_format.ParseError, TypeError, ValueError) as exc:
                raise JsonInputError(path, str(exc).split("\n", 1)[0]) from None
            return
        if not isinstance(item, dict):
            raise JsonInputError(path, f"expected an object, got {_type_name(item)}")
        assert compiled.plan is not None
        target.SetInParent()  # {} still marks the field present
        self._object(item, target, compiled.plan, path)

    def _map(self, compiled: _Field, item: Any, message: Message, path: str) -> None:
        if not isinstance(item, dict):
            raise JsonInputError(path, f"expected an object, got {_type_name(item)}")
        container: Any = getattr(message, compiled.name)
        assert compiled.key is not None
        for raw_key, raw_value in item.items():
            here = f"{path}.{raw_key}"
            key = self._scalar(compiled.key, raw_key, here)
            if raw_value is None:
                raise JsonInputError(here, "null is not allowed as a map value")
            if compiled.plan is not None:
                if not isinstance(raw_value, dict):
                    raise JsonInputError(here, f"expected an object, got {_type_name(raw_value)}")
                self._object(raw_value, container[key], compiled.plan, here)
            else:
                assert compiled.convert is not None
                converted = self._scalar(compiled.convert, raw_value, here)
                try:
                    container[key] = converted
                except (TypeError, ValueError) as exc:
                    raise JsonInputError(here, _set_error(exc)) from None

    @staticmethod
    def _scalar(convert: _Convert, value: Any, path: str) -> Any:
        try:
            return convert(value)
        except (KeyError, TypeError, ValueError) as exc:
            reason = str(exc) if not isinstance(exc, KeyError) else f"{value!r} is not true or false"
            raise JsonInputError(path, reason) from None


def _set_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "text is not valid Unicode (unpaired surrogate)"
    return str(exc)
