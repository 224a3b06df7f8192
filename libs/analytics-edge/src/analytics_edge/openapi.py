"""The OpenAPI 3.1 document of the HTTP API, derived from the descriptor set's google.api.http rules.

Every http rule of every RPC, additional_bindings and custom kinds such as HEAD included, is one
operation (tagged by service); RPCs without a rule are internal and left out. Path variables (`{id}`,
`{a.b}`, `{name=shelves/*}`) are required path parameters. As Envoy's gRPC-JSON transcoder maps them,
`body: "*"` is the request message less its path fields, `body: "field"` is that field's JSON (an
array for a repeated field), and the fields neither bound by the path nor carried by the body are
query parameters (scalars, enums, repeated scalars; nested messages as dotted names). Schemas follow
the transcoder's JSON printing: proto field names, 64-bit integers as strings, enums as names,
well-known types in their JSON forms; requests may also send numbers for those. Errors are
google.rpc.Status, read from the same descriptor set; descriptions are the proto comments.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.resources
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Importing annotations_pb2 registers the google.api.http extension, so parsed options carry it.
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

__all__ = [
    "DEFAULT_OUT",
    "DEFAULT_TITLE",
    "add_cli",
    "build_openapi",
    "default_descriptor_set",
    "load_descriptor_set",
]

Json = dict[str, Any]
_F = descriptor_pb2.FieldDescriptorProto

DEFAULT_TITLE = "Analytics HTTP API"
DEFAULT_OUT = Path("build/edge/openapi.json")
_STATUS = "google.rpc.Status"
_HTTP_BODY = "google.api.HttpBody"
_OPENAPI_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# How the comments say that an operation (or every operation of a service) needs the admin token.
# "Needs the admin token or a key of that site" is not admin-only: an alternative after it says so.
_ADMIN_NOTE = re.compile(
    r"\b(?:needs?|requires?)\s+(?:the\s+|an\s+)?admin\s+(?:token|credential)(?!\s+or\b)", re.I
)
_VARIABLE = re.compile(r"\{([^{}=]*)(?:=([^{}]*))?\}")
_FIELD_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")

_API_DESCRIPTION = """\
JSON over HTTP, transcoded to the gRPC services. Responses use the proto field names (snake_case)
and print every scalar field, unset ones with their zero value; message fields that are not set are
left out. 64-bit integers are printed as strings, enums as their value names, timestamps as RFC 3339
strings. Requests accept both the proto names and the lowerCamelCase JSON names, and numbers for
64-bit integers and enums.

Credentials go in `x-api-key: <key>` or `Authorization: Bearer <key>`; the admin token is sent the
same way. Each tag says which of its operations need the admin token.

Errors are a JSON `google.rpc.Status` whose `details` carry typed messages such as
`google.rpc.BadRequest` (field violations), `google.rpc.RetryInfo` or `google.rpc.ErrorInfo`, each
with its type URL in `@type`. The HTTP status follows the gRPC code."""

_SECURITY_SCHEMES: Json = {
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A site's API key.",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <credential>`: a site's API key or the admin token.",
    },
}

# (HTTP status, component name, what it means); 413 is only listed where a request has a body.
_ERRORS: tuple[tuple[str, str, str], ...] = (
    (
        "400",
        "InvalidArgument",
        "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE; `google.rpc.BadRequest` "
        "details name the offending fields.",
    ),
    ("401", "Unauthenticated", "UNAUTHENTICATED: the credential is missing or not valid."),
    ("403", "PermissionDenied", "PERMISSION_DENIED: the credential may not do this."),
    ("404", "NotFound", "NOT_FOUND."),
    ("409", "Conflict", "ALREADY_EXISTS or ABORTED."),
    ("413", "PayloadTooLarge", "The request body is larger than the edge accepts."),
    (
        "429",
        "ResourceExhausted",
        "RESOURCE_EXHAUSTED: over the rate limit; retry after `Retry-After` seconds "
        "(also in `google.rpc.RetryInfo`).",
    ),
    ("500", "Internal", "INTERNAL, UNKNOWN or DATA_LOSS."),
    ("501", "Unimplemented", "UNIMPLEMENTED."),
    ("503", "Unavailable", "UNAVAILABLE: nothing was done; the request may be retried."),
    ("504", "DeadlineExceeded", "DEADLINE_EXCEEDED: the outcome is unknown."),
    ("default", "Error", "Any other error, e.g. 499 CANCELLED when the client went away."),
)

_SIGNED_INT64: Json = {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"}
_UNSIGNED_INT64: Json = {
    "type": ["string", "integer"],
    "format": "uint64",
    "pattern": "^[0-9]+$",
    "minimum": 0,
}
_SCALARS: dict[int, Json] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    _F.TYPE_INT64: _SIGNED_INT64,
    _F.TYPE_SINT64: _SIGNED_INT64,
    _F.TYPE_SFIXED64: _SIGNED_INT64,
    _F.TYPE_UINT64: _UNSIGNED_INT64,
    _F.TYPE_FIXED64: _UNSIGNED_INT64,
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WRAPPED = {
    "DoubleValue": _F.TYPE_DOUBLE,
    "FloatValue": _F.TYPE_FLOAT,
    "Int64Value": _F.TYPE_INT64,
    "UInt64Value": _F.TYPE_UINT64,
    "Int32Value": _F.TYPE_INT32,
    "UInt32Value": _F.TYPE_UINT32,
    "BoolValue": _F.TYPE_BOOL,
    "StringValue": _F.TYPE_STRING,
    "BytesValue": _F.TYPE_BYTES,
}


def _nullable(schema: Json) -> Json:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*types, "null"]}


# Well-known types print as their JSON forms, not as objects of their fields; wrappers may be null.
_WELL_KNOWN: dict[str, Json] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with an `s` suffix, e.g. `1.5s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths.",
    },
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "`type.googleapis.com/<message name>`."}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    **{f"google.protobuf.{name}": _nullable(_SCALARS[kind]) for name, kind in _WRAPPED.items()},
}
# Well-known message types a query parameter can carry: their JSON form is one string or scalar.
_QUERY_WELL_KNOWN = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
    | {f"google.protobuf.{name}" for name in _WRAPPED}
)


def load_descriptor_set(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    """Parses a serialized FileDescriptorSet, its google.api.http options included."""
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as error:
        raise ValueError(f"not a FileDescriptorSet: {error}") from error


def default_descriptor_set() -> bytes:
    """The descriptor set that `make proto` packages with analytics.v1."""
    return importlib.resources.files("analytics.v1").joinpath("descriptor_set.binpb").read_bytes()


def _comment(location: descriptor_pb2.SourceCodeInfo.Location | None) -> str:
    if location is None:
        return ""
    text = location.leading_comments or location.trailing_comments
    # protoc keeps the space after `//`; drop it so indented lines in comments stay indented.
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    # Directives to buf (`buf:lint:ignore RULE`) are no documentation.
    lines = [line for line in lines if not line.startswith("buf:")]
    return "\n".join(line.rstrip() for line in lines).strip()


class _Index:
    """Messages, enums, services and their comments by full proto name (no leading dot)."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        self.packages: dict[str, str] = {}
        # Keys are full names; a field's is its message's name and the field name, a method's likewise.
        self.comments: dict[str, str] = {}
        self._locations: dict[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location] = {}
        fdp = descriptor_pb2.FileDescriptorProto
        for file in files.file:
            self._locations = {tuple(loc.path): loc for loc in file.source_code_info.location}
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(
                    prefix + message.name, message, (fdp.MESSAGE_TYPE_FIELD_NUMBER, i), file.package
                )
            for i, enum in enumerate(file.enum_type):
                self._enum(prefix + enum.name, enum, (fdp.ENUM_TYPE_FIELD_NUMBER, i))
            for i, service in enumerate(file.service):
                path = (fdp.SERVICE_FIELD_NUMBER, i)
                self._note(prefix + service.name, path)
                self.services.append((prefix + service.name, service))
                for j, method in enumerate(service.method):
                    method_path = (*path, descriptor_pb2.ServiceDescriptorProto.METHOD_FIELD_NUMBER, j)
                    self._note(f"{prefix}{service.name}.{method.name}", method_path)

    def _note(self, name: str, path: tuple[int, ...]) -> None:
        text = _comment(self._locations.get(path))
        if text:
            self.comments[name] = text

    def _message(
        self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], package: str
    ) -> None:
        dp = descriptor_pb2.DescriptorProto
        self.messages[name] = message
        self.packages[name] = package
        self._note(name, path)
        for i, field in enumerate(message.field):
            self._note(f"{name}.{field.name}", (*path, dp.FIELD_FIELD_NUMBER, i))
        for i, nested in enumerate(message.nested_type):
            self._message(f"{name}.{nested.name}", nested, (*path, dp.NESTED_TYPE_FIELD_NUMBER, i), package)
        for i, enum in enumerate(message.enum_type):
            self._enum(f"{name}.{enum.name}", enum, (*path, dp.ENUM_TYPE_FIELD_NUMBER, i))

    def _enum(self, name: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...]) -> None:
        self.enums[name] = enum
        self._note(name, path)
        for i, value in enumerate(enum.value):
            self._note(
                f"{name}.{value.name}", (*path, descriptor_pb2.EnumDescriptorProto.VALUE_FIELD_NUMBER, i)
            )

    def field(self, message: str, name: str) -> descriptor_pb2.FieldDescriptorProto:
        for field in self.messages[message].field:
            if field.name == name:
                return field
        raise ValueError(f"{message} has no field {name!r}")

    def is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        entry = self.messages.get(field.type_name.lstrip("."))
        return field.type == _F.TYPE_MESSAGE and entry is not None and entry.options.map_entry


def _describe(schema: Json, *texts: str) -> Json:
    text = "\n\n".join(t for t in (schema.get("description", ""), *texts) if t)
    if text:
        schema["description"] = text
    return schema


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    found = re.match(r"(.+?\.)(?:\s|$)", flat)
    return found.group(1) if found else flat


class _Schemas:
    """components/schemas, filled on demand; a message's entry exists before its fields are mapped,
    so recursive messages end in a $ref instead of recursing forever."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.components: dict[str, Json] = {}

    def ref(self, name: str) -> Json:
        if name not in self.components:
            self.components[name] = {}
            self.components[name] = self._enum(name) if name in self.index.enums else self._message(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def component(self, name: str) -> Json:
        self.ref(name)
        return self.components[name]

    def message(self, name: str) -> Json:
        """A message's schema: the JSON form of a well-known type, otherwise a $ref to its component."""
        return copy.deepcopy(_WELL_KNOWN[name]) if name in _WELL_KNOWN else self.ref(name)

    def _message(self, name: str) -> Json:
        message = self.index.messages[name]
        properties = {field.name: self.field(name, field) for field in message.field}
        oneofs: dict[int, list[str]] = {}
        for field in message.field:
            # proto3 `optional` fields sit alone in a synthetic oneof: that is presence, not a choice.
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneofs.setdefault(field.oneof_index, []).append(f"`{field.name}`")
        notes = [f"At most one of {', '.join(names)} is set." for names in oneofs.values() if len(names) > 1]
        schema = _describe(
            {"type": "object", "properties": properties}, self.index.comments.get(name, ""), *notes
        )
        if message.options.deprecated:
            schema["deprecated"] = True
        return schema

    def _enum(self, name: str) -> Json:
        values = self.index.enums[name].value
        comments = self.index.comments
        listing = "\n".join(
            " ".join(filter(None, (f"- `{v.name}` ({v.number})", comments.get(f"{name}.{v.name}"))))
            for v in values
        )
        schema = {
            "anyOf": [
                {"type": "string", "enum": [v.name for v in values]},
                {"type": "integer", "format": "int32", "description": "The value's number (requests only)."},
            ]
        }
        return _describe(schema, comments.get(name, ""), "Responses carry the value's name.", listing)

    def value(self, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        """The JSON schema of one value of the field, ignoring `repeated`."""
        type_name = field.type_name.lstrip(".")
        if field.type == _F.TYPE_ENUM:
            return {"type": "null"} if type_name == "google.protobuf.NullValue" else self.ref(type_name)
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return self.message(type_name)
        return dict(_SCALARS[field.type])

    def field(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        if self.index.is_map(field):
            entry = self.index.messages[field.type_name.lstrip(".")]
            schema: Json = {"type": "object", "additionalProperties": self.value(entry.field[1])}
        elif field.label == _F.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value(field)}
        else:
            schema = self.value(field)
        if field.options.deprecated:
            schema["deprecated"] = True
        # The field's own comment goes first, before what a well-known type says of its JSON form.
        type_note = schema.pop("description", "")
        return _describe(schema, self.index.comments.get(f"{owner}.{field.name}", ""), type_note)


def _path_template(template: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """The OpenAPI path of a google.api.http template and its variables: (name, pattern, binds a field)."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with '/'")
    pieces: list[str] = []
    variables: list[tuple[str, str, bool]] = []

    def literal(text: str) -> str:
        if "{" in text or "}" in text:
            raise ValueError(f"path template {template!r} has unbalanced braces")
        segments = text.split("/")
        for i, segment in enumerate(segments):
            # Anonymous wildcards match like variables but bind no field; OpenAPI still needs a name.
            head, colon, verb = segment.partition(":")
            if head in ("*", "**"):
                name = f"_wildcard{sum(not bound for _, _, bound in variables) + 1}"
                variables.append((name, head, False))
                segments[i] = f"{{{name}}}{colon}{verb}"
        return "/".join(segments)

    position = 0
    for match in _VARIABLE.finditer(template):
        pieces.append(literal(template[position : match.start()]))
        name, pattern = match.group(1), match.group(2) or "*"
        if not _FIELD_PATH.match(name):
            raise ValueError(f"path template {template!r}: {name!r} is not a field path")
        if any(name == seen for seen, _, _ in variables):
            raise ValueError(f"path template {template!r} binds {name} twice")
        variables.append((name, pattern, True))
        pieces.append(f"{{{name}}}")
        position = match.end()
    pieces.append(literal(template[position:]))
    return "".join(pieces), variables


def _bindings(rule: Any) -> list[tuple[str, str, Any]]:
    """(HTTP method, path template, binding) of an http rule and its additional bindings."""
    found = []
    for binding in (rule, *rule.additional_bindings):
        kind = binding.WhichOneof("pattern")
        if kind is None:
            raise ValueError("an http rule has no path pattern")
        method, template = (
            (binding.custom.kind.lower(), binding.custom.path)
            if kind == "custom"
            else (kind, getattr(binding, kind))
        )
        if method not in _OPENAPI_METHODS:
            raise ValueError(f"HTTP method {method.upper()} of {template} cannot be described in OpenAPI 3.1")
        found.append((method, template, binding))
    return found


class _Operations:
    """The operation of one http binding of an RPC."""

    def __init__(self, index: _Index, schemas: _Schemas) -> None:
        self.index = index
        self.schemas = schemas

    def operation(
        self,
        service: str,
        method: descriptor_pb2.MethodDescriptorProto,
        http_method: str,
        template: str,
        binding: Any,
    ) -> tuple[str, Json]:
        request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
        path, variables = _path_template(template)
        bound = {name for name, _, is_field in variables if is_field}
        body: str = binding.body
        if body not in ("", "*"):
            self.index.field(request, body)
        parameters = [
            self._path_parameter(request, name, pattern, is_field) for name, pattern, is_field in variables
        ]
        if body != "*":
            parameters += self._query_parameters(request, "", bound | {body}, {request})
        operation: Json = {}
        comment = self.index.comments.get(f"{service}.{method.name}", "")
        if comment:
            operation["summary"] = _first_sentence(comment)
            operation["description"] = comment
        if method.options.deprecated:
            operation["deprecated"] = True
        if parameters:
            operation["parameters"] = parameters
        if body:
            schema = self._body(request, body, bound)
            # The transcoder takes a client stream as a JSON array of messages (and answers streams so).
            schema = {"type": "array", "items": schema} if method.client_streaming else schema
            operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        operation["responses"] = self._responses(
            method, response, binding.response_body, http_method, bool(body)
        )
        return path, operation

    def _resolve(self, message: str, field_path: str) -> tuple[str, descriptor_pb2.FieldDescriptorProto]:
        *parents, leaf = field_path.split(".")
        for name in parents:
            field = self.index.field(message, name)
            if field.type != _F.TYPE_MESSAGE or field.label == _F.LABEL_REPEATED:
                raise ValueError(f"{message}.{name} in {field_path} is not a singular message field")
            message = field.type_name.lstrip(".")
        return message, self.index.field(message, leaf)

    def _path_parameter(self, request: str, name: str, pattern: str, is_field: bool) -> Json:
        if not is_field:
            text = "Any path segment." if pattern == "*" else "Any rest of the path."
            return {
                "name": name,
                "in": "path",
                "required": True,
                "description": text,
                "schema": {"type": "string"},
            }
        owner, field = self._resolve(request, name)
        type_name = field.type_name.lstrip(".")
        if field.label == _F.LABEL_REPEATED or (
            field.type == _F.TYPE_MESSAGE and type_name not in _QUERY_WELL_KNOWN
        ):
            raise ValueError(f"path variable {name} of {request} must bind a singular scalar field")
        schema = self.schemas.field(owner, field)
        description = schema.pop("description", "")
        if pattern != "*":
            description += f"\n\nMatches `{pattern}`" + (
                ", slashes included." if "/" in pattern or "**" in pattern else "."
            )
        return _describe(
            {"name": name, "in": "path", "required": True, "schema": schema}, description.strip()
        )

    def _query_parameters(self, message: str, prefix: str, bound: set[str], seen: set[str]) -> list[Json]:
        """Fields neither path nor body binds; nested messages as dotted names, each type once per branch."""
        parameters: list[Json] = []
        for field in self.index.messages[message].field:
            name = prefix + field.name
            type_name = field.type_name.lstrip(".")
            if name in bound:
                continue
            # Singular messages open into dotted names; maps and repeated messages have no query form.
            if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP) and type_name not in _QUERY_WELL_KNOWN:
                nested = (
                    field.label != _F.LABEL_REPEATED
                    and type_name not in _WELL_KNOWN
                    and type_name not in seen
                )
                if nested:
                    parameters += self._query_parameters(type_name, f"{name}.", bound, seen | {type_name})
                continue
            schema = self.schemas.field(message, field)
            description = schema.pop("description", "")
            parameters.append(_describe({"name": name, "in": "query", "schema": schema}, description))
        return parameters

    def _body(self, request: str, body: str, bound: set[str]) -> Json:
        if body != "*":
            return self.schemas.field(request, self.index.field(request, body))
        schema = self.schemas.message(request)
        in_path = {name for name in bound if "." not in name}
        if not in_path or "$ref" not in schema:
            return schema
        # The path supplies these fields, so the body is the message without them.
        component = copy.deepcopy(self.schemas.component(request))
        component["properties"] = {k: v for k, v in component["properties"].items() if k not in in_path}
        return _describe(
            component, f"`{request}` without {', '.join(f'`{n}`' for n in sorted(in_path))} (in the path)."
        )

    def _responses(
        self,
        method: descriptor_pb2.MethodDescriptorProto,
        response: str,
        field: str,
        http_method: str,
        has_body: bool,
    ) -> Json:
        schema = (
            self.schemas.field(response, self.index.field(response, field))
            if field
            else self.schemas.message(response)
        )
        ok: Json = {"description": self.index.comments.get(response, "OK")}
        if http_method == "head":
            pass
        elif response == _HTTP_BODY and not field:
            # The transcoder sends an HttpBody's data as the body, under its content_type (a bare
            # number as text/plain, an export as NDJSON or CSV); a stream of them is one body, each
            # message's data as it comes.
            ok = {"description": "The body as the method describes it (not JSON)."}
            ok["content"] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        elif method.server_streaming:
            # The transcoder's stream_sse_style_delimited: one `data: <JSON message>` event each.
            ok["content"] = {"text/event-stream": {"schema": schema}}
        else:
            ok["content"] = {"application/json": {"schema": schema}}
        responses: Json = {"200": ok}
        for status, name, _ in _ERRORS:
            if status != "413" or has_body:
                responses[status] = {"$ref": f"#/components/responses/{name}"}
        return responses


_HTTP_BODY = "google.api.HttpBody"


def _error_responses(index: _Index, schemas: _Schemas) -> Json:
    if _STATUS not in index.messages:
        raise ValueError(f"the descriptor set lacks {_STATUS}: build it with google/rpc/status.proto")
    status = schemas.component(_STATUS)
    package = index.packages[_STATUS]
    details = [
        name
        for name in index.messages
        if index.packages[name] == package and name != _STATUS and name.count(".") == package.count(".") + 1
    ]
    for name in details:
        schemas.ref(name)
    if details:
        kinds = ", ".join(f"`{name}`" for name in details)
        _describe(
            status, f"Each entry of `details` is one of {kinds}, with `@type` `type.googleapis.com/<name>`."
        )
    responses: Json = {}
    for code, name, text in _ERRORS:
        response: Json = {
            "description": text,
            "content": {"application/json": {"schema": schemas.ref(_STATUS)}},
        }
        if code == "429":
            retry = {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 0},
            }
            response["headers"] = {"Retry-After": retry}
        responses[name] = response
    return responses


def _tag(
    index: _Index, name: str, service: str, methods: Sequence[descriptor_pb2.MethodDescriptorProto]
) -> Json:
    comment = index.comments.get(service, "")
    if _ADMIN_NOTE.search(comment):
        note = "Admin token required by every operation."
    else:
        admin = [m.name for m in methods if _ADMIN_NOTE.search(index.comments.get(f"{service}.{m.name}", ""))]
        note = (
            f"Admin token required: {', '.join(admin)}."
            if admin
            else "No operation requires the admin token."
        )
    return _describe({"name": name}, comment, note)


def build_openapi(
    files: descriptor_pb2.FileDescriptorSet,
    *,
    version: str,
    title: str = DEFAULT_TITLE,
    servers: Sequence[str] = (),
) -> Json:
    """The OpenAPI 3.1 document of every google.api.http rule in the descriptor set."""
    index = _Index(files)
    schemas = _Schemas(index)
    operations = _Operations(index, schemas)
    exposed = [
        (service, [m for m in proto.method if m.options.HasExtension(annotations_pb2.http)])
        for service, proto in index.services
    ]
    exposed = [(service, methods) for service, methods in exposed if methods]
    short = [service.rpartition(".")[2] for service, _ in exposed]
    paths: dict[str, Json] = {}
    tags: list[Json] = []
    operation_ids: set[str] = set()
    for service, methods in exposed:
        # Short service names read better; two services of one name in different packages keep full ones.
        tag = service.rpartition(".")[2] if short.count(service.rpartition(".")[2]) == 1 else service
        tags.append(_tag(index, tag, service, methods))
        for method in methods:
            for i, (http_method, template, binding) in enumerate(
                _bindings(method.options.Extensions[annotations_pb2.http])
            ):
                path, operation = operations.operation(service, method, http_method, template, binding)
                operation = {
                    "operationId": f"{tag}.{method.name}" + (f"_{i}" if i else ""),
                    "tags": [tag],
                    **operation,
                }
                item = paths.setdefault(path, {})
                if http_method in item:
                    raise ValueError(f"{http_method.upper()} {path} is bound to two RPCs")
                if operation["operationId"] in operation_ids:
                    raise ValueError(f"two operations would be named {operation['operationId']}")
                operation_ids.add(operation["operationId"])
                item[http_method] = operation
    error_responses = _error_responses(index, schemas)
    document: Json = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": _API_DESCRIPTION},
    }
    if servers:
        document["servers"] = [{"url": url} for url in servers]
    document |= {
        "tags": tags,
        "security": [{"ApiKeyHeader": []}, {"BearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": error_responses,
            "securitySchemes": copy.deepcopy(_SECURITY_SCHEMES),
        },
    }
    return document


def add_cli(parser: argparse.ArgumentParser) -> None:
    """The `openapi` subcommand: writes the OpenAPI 3.1 document of the descriptor set as JSON."""
    parser.add_argument(
        "--descriptor", type=Path, help="descriptor set (default: the one packaged with analytics.v1)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="info.title")
    parser.add_argument("--api-version", help="info.version (default: the analytics-edge version)")
    parser.add_argument(
        "--server", action="append", default=[], metavar="URL", help="a servers[] entry; repeatable"
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    data = args.descriptor.read_bytes() if args.descriptor else default_descriptor_set()
    version = args.api_version or importlib.metadata.version("analytics-edge")
    document = build_openapi(
        load_descriptor_set(data), version=version, title=args.title, servers=args.server
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"openapi: {len(document['paths'])} paths written to {args.out}")
    return 0
