"""HTTP route table built from the google.api.http rules of the descriptor set."""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

__all__ = [
    "PathTemplate",
    "Route",
    "RouteError",
    "RouteTable",
    "TemplateError",
    "Variable",
    "http_routes",
    "load_descriptor_set",
    "parse_template",
]

T = TypeVar("T")

_RULE_METHODS = ("get", "put", "post", "delete", "patch")
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()+,;=@%-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_VERB = re.compile(r"^[A-Za-z0-9._~-]+$")
# Segment kinds, ordered so that a smaller sort key means a more specific template.
_KIND_LITERAL, _KIND_STAR, _KIND_DOUBLE_STAR = 0, 1, 2


class TemplateError(ValueError):
    """A path template does not follow the google.api.http grammar."""


class RouteError(ValueError):
    """The http rules of the descriptor set cannot form one unambiguous route table."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A `{field.path=pattern}` capture of a template."""

    field_path: tuple[str, ...]
    # Multi-segment captures keep reserved characters percent-encoded (Envoy's default
    # url_unescape_spec ALL_CHARACTERS_EXCEPT_RESERVED); single segments are fully decoded.
    multi_segment: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed and compiled google.api.http path template."""

    text: str
    kinds: tuple[int, ...]
    variables: tuple[Variable, ...]
    verb: str | None
    regex: re.Pattern[str] | None  # None for purely literal templates, matched by string equality

    @property
    def is_literal(self) -> bool:
        return self.regex is None

    @property
    def sort_key(self) -> tuple[tuple[int, ...], bool, str]:
        """Earlier literal segments first, then templates with a verb, then text: deterministic."""
        return (self.kinds, self.verb is None, self.text)

    def match(self, path: str) -> tuple[str, ...] | None:
        """The raw (still percent-encoded) captured values in variable order, or None."""
        if self.regex is None:
            return () if path == self.text else None
        found = self.regex.match(path)
        return None if found is None else found.groups()


def parse_template(text: str) -> PathTemplate:
    """Parses `/literal/{field=*}/{other=**}:verb` per the google.api.http grammar."""
    if not text.startswith("/"):
        raise TemplateError(f"template {text!r} must start with '/'")
    path, verb = _split_verb(text)
    segments = _split_segments(path[1:], text)
    kinds: list[int] = []
    variables: list[Variable] = []
    pieces: list[str] = []
    for segment in segments:
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise TemplateError(f"template {text!r}: unterminated variable {segment!r}")
            field, _, pattern = segment[1:-1].partition("=")
            if not _FIELD_PATH.match(field):
                raise TemplateError(f"template {text!r}: bad field path {field!r}")
            sub_kinds, sub_regex = _compile_pattern(pattern or "*", text)
            kinds.extend(sub_kinds)
            multi = len(sub_kinds) > 1 or _KIND_DOUBLE_STAR in sub_kinds
            variables.append(Variable(tuple(field.split(".")), multi))
            pieces.append(f"({sub_regex})")
        else:
            sub_kinds, sub_regex = _compile_pattern(segment, text)
            kinds.extend(sub_kinds)
            pieces.append(sub_regex)
    if _KIND_DOUBLE_STAR in kinds[:-1]:
        raise TemplateError(f"template {text!r}: '**' must be the last segment")
    suffix = f":{re.escape(verb)}" if verb else ""
    literal = not variables and all(kind == _KIND_LITERAL for kind in kinds)
    regex = None if literal else re.compile("^/" + "/".join(pieces) + suffix + "$")
    return PathTemplate(text, tuple(kinds), tuple(variables), verb, regex)


def _split_verb(text: str) -> tuple[str, str | None]:
    depth, last_slash, last_colon = 0, -1, -1
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and char == "/":
            last_slash = index
        elif depth == 0 and char == ":":
            last_colon = index
    if depth != 0:
        raise TemplateError(f"template {text!r}: unbalanced braces")
    if last_colon <= last_slash:
        return text, None
    verb = text[last_colon + 1 :]
    if not _VERB.match(verb):
        raise TemplateError(f"template {text!r}: bad verb {verb!r}")
    return text[:last_colon], verb


def _split_segments(path: str, text: str) -> list[str]:
    segments: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(path):
        if char == "{":
            depth += 1
            if depth > 1:
                raise TemplateError(f"template {text!r}: nested variables")
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            segments.append(path[start:index])
            start = index + 1
    segments.append(path[start:])
    if any(segment == "" for segment in segments):
        raise TemplateError(f"template {text!r}: empty segment")
    return segments


def _compile_pattern(pattern: str, text: str) -> tuple[list[int], str]:
    kinds: list[int] = []
    parts: list[str] = []
    for part in pattern.split("/"):
        if part == "*":
            kinds.append(_KIND_STAR)
            parts.append("[^/]+")
        elif part == "**":
            kinds.append(_KIND_DOUBLE_STAR)
            parts.append(".*")
        elif _LITERAL.match(part):
            kinds.append(_KIND_LITERAL)
            parts.append(re.escape(part))
        else:
            raise TemplateError(f"template {text!r}: bad segment {part!r}")
    return kinds, "/".join(parts)


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of an RPC: a method and path template, and where the body goes."""

    http_method: str
    template: PathTemplate
    body: str  # "" (no body), "*" (whole message) or a top-level field name
    method: MethodDescriptor

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.method.name}"


class RouteTable(Generic[T]):
    """Matches (HTTP method, raw path) to a value; literal templates win over templated ones."""

    def __init__(self, entries: Iterable[tuple[str, PathTemplate, T]]) -> None:
        literal: dict[str, tuple[PathTemplate, dict[str, T]]] = {}
        templated: dict[str, tuple[PathTemplate, dict[str, T]]] = {}
        for http_method, template, value in entries:
            group = literal if template.is_literal else templated
            by_method = group.setdefault(template.text, (template, {}))[1]
            if http_method in by_method:
                raise RouteError(f"two rules bind {http_method} {template.text}")
            by_method[http_method] = value
        self._literal = literal
        self._templated = tuple(sorted(templated.values(), key=lambda item: item[0].sort_key))

    def lookup(self, http_method: str, path: str) -> tuple[T, PathTemplate, tuple[str, ...]] | None:
        """The bound value, its template and the raw captured values, or None."""
        exact = self._literal.get(path)
        if exact is not None:
            value = exact[1].get(http_method)
            if value is not None:
                return value, exact[0], ()
        for template, methods in self._templated:
            value = methods.get(http_method)
            if value is None:
                continue
            captured = template.match(path)
            if captured is not None:
                return value, template, captured
        return None

    def allowed_methods(self, path: str) -> tuple[str, ...]:
        """HTTP methods bound to templates that match path; empty when the path is unknown."""
        exact = self._literal.get(path)
        allowed = set(exact[1]) if exact is not None else set()
        for template, methods in self._templated:
            if template.match(path) is not None:
                allowed.update(methods)
        return tuple(sorted(allowed))


def load_descriptor_set(
    data: bytes | None = None,
) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorSet]:
    """Parses the descriptor set (the packaged one unless given) into a fresh pool."""
    if data is None:
        data = (importlib.resources.files("analytics.v1") / "descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool, files


def http_routes(pool: descriptor_pool.DescriptorPool, files: descriptor_pb2.FileDescriptorSet) -> list[Route]:
    """Every binding (incl. additional_bindings) of every method that has a google.api.http rule."""
    routes: list[Route] = []
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue  # no rule: internal RPC, deliberately unreachable over HTTP
                rule = method.options.Extensions[annotations_pb2.http]
                descriptor = pool.FindMethodByName(f"{file.package}.{service.name}.{method.name}")
                for binding in (rule, *rule.additional_bindings):
                    routes.append(_route(binding, descriptor))
    return routes


def _route(rule: http_pb2.HttpRule, method: MethodDescriptor) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{method.full_name}: http rule without a pattern")
    if kind == "custom":
        http_method, text = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, text = kind.upper(), getattr(rule, kind)
    try:
        template = parse_template(text)
    except TemplateError as exc:
        raise RouteError(f"{method.full_name}: {exc}") from None
    body = rule.body
    if body not in ("", "*") and body not in method.input_type.fields_by_name:
        raise RouteError(f"{method.full_name}: body field {body!r} is not a top-level request field")
    return Route(http_method, template, body, method)
