"""HTTP request parts to request messages, and response messages to JSON, per google.api.http."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from .json_input import JsonInputError, JsonParser
from .routes import PathTemplate, Variable
from .scalars import FLOAT_TEXT, INT_TEXT, SPECIAL_FLOATS, float_in_range, integer_range

__all__ = ["RequestDecoder", "ResponseEncoder", "TranscodeError", "decode_path_value"]

_Converter = Callable[[str], Any]

# Escapes of RFC 6570 reserved characters, which multi-segment captures keep encoded.
_RESERVED_ESCAPE = re.compile(r"(%(?:2[1346-9A-Ca-c]|2[Ff]|3[ABDFabdf]|40|5[BDbd]))")
# Message types whose JSON form is one string, so a query parameter can carry them.
_STRING_WKTS = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_MAX_QUERY_DEPTH = 8


class TranscodeError(Exception):
    """The HTTP request cannot be mapped onto the request message (HTTP 400)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _int_converter(bits: int, signed: bool) -> _Converter:
    low, high, kind = integer_range(bits, signed)

    def convert(raw: str) -> int:
        if not INT_TEXT.match(raw):
            raise ValueError(f"{raw!r} is not {kind}")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"{raw} is out of range for {kind}")
        return value

    return convert


def _float_converter(single: bool) -> _Converter:
    def convert(raw: str) -> float:
        special = SPECIAL_FLOATS.get(raw)
        if special is not None:
            return special
        if not FLOAT_TEXT.match(raw):
            raise ValueError(f"{raw!r} is not a number")
        value = float(raw)
        if not float_in_range(value, single):
            raise ValueError(f"{raw} is out of range")
        return value

    return convert


def _bool(raw: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise ValueError(f"{raw!r} is not a boolean (true or false)")


def _bytes(raw: str) -> bytes:
    padded = raw + "=" * (-len(raw) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise ValueError(f"{raw!r} is not base64") from None


def _enum_converter(field: FieldDescriptor) -> _Converter:
    enum = field.enum_type
    assert enum is not None  # the caller checked the field's type
    by_name = {value.name: value.number for value in enum.values}

    def convert(raw: str) -> int:
        number = by_name.get(raw)
        if number is not None:
            return number
        if INT_TEXT.match(raw):
            return int(raw)
        raise ValueError(f"{raw!r} is not a value of {enum.full_name}")

    return convert


_SCALAR_CONVERTERS: dict[int, _Converter] = {
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BYTES: _bytes,
    FieldDescriptor.TYPE_BOOL: _bool,
    FieldDescriptor.TYPE_DOUBLE: _float_converter(single=False),
    FieldDescriptor.TYPE_FLOAT: _float_converter(single=True),
    FieldDescriptor.TYPE_INT32: _int_converter(32, signed=True),
    FieldDescriptor.TYPE_SINT32: _int_converter(32, signed=True),
    FieldDescriptor.TYPE_SFIXED32: _int_converter(32, signed=True),
    FieldDescriptor.TYPE_INT64: _int_converter(64, signed=True),
    FieldDescriptor.TYPE_SINT64: _int_converter(64, signed=True),
    FieldDescriptor.TYPE_SFIXED64: _int_converter(64, signed=True),
    FieldDescriptor.TYPE_UINT32: _int_converter(32, signed=False),
    FieldDescriptor.TYPE_FIXED32: _int_converter(32, signed=False),
    FieldDescriptor.TYPE_UINT64: _int_converter(64, signed=False),
    FieldDescriptor.TYPE_FIXED64: _int_converter(64, signed=False),
}


def _converter(field: FieldDescriptor) -> _Converter:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum_converter(field)
    return _SCALAR_CONVERTERS[field.type]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


@dataclass(frozen=True, slots=True)
class _FieldSetter:
    """Sets one (possibly nested) field from a string, resolved once at start-up."""

    parents: tuple[str, ...]
    leaf: str
    repeated: bool
    # Timestamp, Duration, FieldMask: parsed from their JSON string form.
    from_json: bool
    convert: _Converter

    def apply(self, message: Message, raw: str) -> None:
        target = message
        for name in self.parents:
            target = getattr(target, name)
        if self.from_json:
            container = getattr(target, self.leaf)
            # ParseDict takes any JSON value for well-known types, not only objects.
            json_value: Any = raw
            json_format.ParseDict(json_value, container.add() if self.repeated else container)
        elif self.repeated:
            getattr(target, self.leaf).append(self.convert(raw))
        else:
            setattr(target, self.leaf, self.convert(raw))


def _setter(path: Sequence[FieldDescriptor]) -> _FieldSetter | None:
    """A setter for a field path whose leaf a single string can express, else None."""
    *parents, leaf = path
    names = tuple(field.name for field in parents)
    if leaf.message_type is None:
        return _FieldSetter(names, leaf.name, leaf.is_repeated, False, _converter(leaf))
    full_name = leaf.message_type.full_name
    if full_name in _STRING_WKTS:
        return _FieldSetter(names, leaf.name, leaf.is_repeated, True, str)
    if full_name in _WRAPPERS and not leaf.is_repeated:
        value = leaf.message_type.fields_by_name["value"]
        return _FieldSetter((*names, leaf.name), "value", False, False, _converter(value))
    return None


def _resolve(descriptor: Descriptor, field_path: Sequence[str]) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in field_path:
        field = None if current is None else current.fields_by_name.get(name)
        if field is None:
            raise ValueError(f"{descriptor.full_name} has no field {'.'.join(field_path)!r}")
        fields.append(field)
        current = field.message_type
    return fields


def _query_setters(descriptor: Descriptor, excluded: frozenset[tuple[str, ...]]) -> dict[str, _FieldSetter]:
    """Every query parameter name (proto and lowerCamel spellings) that maps onto a field."""
    setters: dict[str, _FieldSetter] = {}

    def walk(message: Descriptor, path: tuple[FieldDescriptor, ...], prefixes: tuple[str, ...]) -> None:
        for field in message.fields:
            names = dict.fromkeys((field.name, field.json_name))
            spelled = tuple(f"{prefix}.{name}" if prefix else name for prefix in prefixes for name in names)
            field_path = (*path, field)
            if tuple(f.name for f in field_path) in excluded or _is_map(field):
                continue
            setter = _setter(field_path)
            if setter is not None:
                setters.update(dict.fromkeys(spelled, setter))
            elif (
                field.message_type is not None
                and not field.is_repeated
                and len(field_path) < _MAX_QUERY_DEPTH
                and field.message_type not in (f.containing_type for f in field_path)
            ):
                walk(field.message_type, field_path, spelled)

    walk(descriptor, (), ("",))
    return setters


def decode_path_value(raw: str, variable: Variable) -> str:
    """Percent-decodes a captured path value the way Envoy's default url_unescape_spec does."""
    if "%" not in raw:
        return raw
    if not variable.multi_segment:
        return unquote(raw, errors="strict")
    pieces = _RESERVED_ESCAPE.split(raw)
    # Odd pieces are reserved escapes, kept as sent; even pieces are decoded.
    return "".join(
        piece if index % 2 else unquote(piece, errors="strict") for index, piece in enumerate(pieces)
    )


class RequestDecoder:
    """Builds one RPC's request message from path captures, query string and JSON body."""

    def __init__(
        self,
        message_class: type[Message],
        template: PathTemplate,
        body: str,
        *,
        reject_unknown_fields: bool = False,
        parser: JsonParser | None = None,
    ) -> None:
        descriptor = cast(Descriptor, message_class.DESCRIPTOR)
        self._parser = parser or JsonParser(ignore_unknown_fields=not reject_unknown_fields)
        self._parser.compile(descriptor)
        self._message_class = message_class
        self._variables = template.variables
        self._path_setters: list[_FieldSetter] = []
        for variable in template.variables:
            setter = _setter(_resolve(descriptor, variable.field_path))
            if setter is None or setter.repeated:
                raise ValueError(f"{template.text}: {variable.name} cannot be bound to a path segment")
            self._path_setters.append(setter)
        self.body = body
        self._body_field = descriptor.fields_by_name[body] if body not in ("", "*") else None
        # With body "*" every field comes from the body, so no query parameter is mapped.
        excluded = frozenset(variable.field_path for variable in template.variables)
        if self._body_field is not None:
            excluded |= {(self._body_field.name,)}
        self._query_setters = {} if body == "*" else _query_setters(descriptor, excluded)

    @property
    def has_body(self) -> bool:
        return self.body != ""

    def decode(self, captured: Sequence[str], query: str, body: bytes) -> Message:
        """Raises TranscodeError naming the parameter or field that could not be mapped."""
        message = self._message_class()
        if query and self._query_setters:
            self._apply_query(message, query)
        for raw, variable, setter in zip(captured, self._variables, self._path_setters, strict=True):
            try:
                setter.apply(message, decode_path_value(raw, variable))
            except (ValueError, json_format.ParseError) as exc:
                raise TranscodeError(
                    f"invalid value for path parameter {variable.name!r}: {exc}", variable.name
                ) from None
        # Envoy weaves path and query bindings in before the body, and the body wins conflicts.
        if self.body and body.strip():
            self._apply_body(message, body)
        return message

    def _apply_query(self, message: Message, query: str) -> None:
        for pair in query.split("&"):
            if not pair:
                continue
            raw_name, _, raw_value = pair.partition("=")
            try:
                name = unquote(raw_name, errors="strict")
            except UnicodeDecodeError:
                continue  # cannot name any field, so it is an unknown parameter: ignored
            setter = self._query_setters.get(name)
            if setter is None:
                continue  # unknown parameters are ignored (Envoy's ignore_unknown_query_parameters)
            try:
                # '+' stays a plus sign, as with Envoy's default query_param_unescape_plus: false.
                setter.apply(message, unquote(raw_value, errors="strict"))
            except (ValueError, json_format.ParseError) as exc:
                raise TranscodeError(f"invalid value for query parameter {name!r}: {exc}", name) from None

    def _apply_body(self, message: Message, body: bytes) -> None:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise TranscodeError(f"request body is not valid JSON: {exc}") from None
        try:
            if self._body_field is None:
                self._parser.parse(value, message)
            else:
                self._parser.parse_field(value, message, self._body_field.name)
        except JsonInputError as exc:
            if not exc.path:
                raise TranscodeError(f"invalid request body: {exc.reason}") from None
            if exc.reason == "unknown field":
                raise TranscodeError(f"unknown field {exc.path!r}", exc.path) from None
            raise TranscodeError(f"invalid value for field {exc.path!r}: {exc.reason}", exc.path) from None


class ResponseEncoder:
    """Prints response messages as Envoy does with preserve_proto_field_names and
    always_print_primitive_fields, compactly."""

    def __init__(self, pool: DescriptorPool | None = None) -> None:
        self._pool = pool

    def encode(self, message: Message) -> bytes:
        return json.dumps(self.to_dict(message), separators=(",", ":"), ensure_ascii=False).encode()

    def to_dict(self, message: Message) -> dict[str, Any]:
        return json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            descriptor_pool=self._pool,
        )
