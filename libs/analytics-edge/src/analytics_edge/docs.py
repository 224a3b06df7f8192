"""A self-contained HTML page (no scripts, stylesheets or fonts to fetch) documenting the OpenAPI document."""

from __future__ import annotations

import argparse
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_OPENAPI", "DEFAULT_OUT", "add_cli", "render_docs"]

Json = dict[str, Any]

DEFAULT_OPENAPI = Path("build/edge/openapi.json")
DEFAULT_OUT = Path("build/edge/docs.html")
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}code,pre{font-family:ui-monospace,monospace;font-size:90%}
pre{background:#f5f5f7;padding:.6rem;overflow:auto}table{border-collapse:collapse;width:100%;margin:.4rem 0}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}.d{white-space:pre-line}
.m{font-weight:bold;text-transform:uppercase}"""
# What an error body looks like; the Status schema's table says what each field means.
_VIOLATION = {"field": "site_id", "description": "is required"}
_DETAIL = {"@type": "type.googleapis.com/google.rpc.BadRequest", "field_violations": [_VIOLATION]}
_ERROR_EXAMPLE = {"code": 3, "message": "site_id is required", "details": [_DETAIL]}
_CODE_SPAN = re.compile(r"`([^`]+)`")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _id(kind: str, name: str) -> str:
    return _e(f"{kind}-{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}")


def _text(text: str) -> str:
    # Escaped first, so the <code> of `code` spans is the only markup that reaches the page.
    return '<div class="d">' + _CODE_SPAN.sub(r"<code>\1</code>", _e(text)) + "</div>" if text else ""


def _ref_name(schema: Json) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def _link(kind: str, name: str, label: str) -> str:
    return f'<a href="#{_id(kind, name)}">{label}</a>'


def _route(method: str, path: str) -> str:
    return f'<span class="m">{_e(method)}</span> <code>{_e(path)}</code>'


def _type(schema: Json) -> str:
    """A schema's type in one line of HTML, components linked to their section."""
    if "$ref" in schema:
        return _link("schema", _ref_name(schema), _e(_ref_name(schema)))
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(_type(s) for s in schema.get("anyOf") or schema.get("oneOf") or [])
    kinds = schema.get("type", "any")
    text = " | ".join(_e(k) for k in kinds) if isinstance(kinds, list) else _e(kinds)
    if kinds == "array" and "items" in schema:
        text = f"array of {_type(schema['items'])}"
    if isinstance(schema.get("additionalProperties"), dict):
        text = f"map of string to {_type(schema['additionalProperties'])}"
    if "enum" in schema:
        text += ": " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"])
    return text + (f" ({_e(schema['format'])})" if "format" in schema else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = ["".join(f"<th>{h}</th>" for h in header), *("".join(f"<td>{c}</td>" for c in r) for r in rows)]
    return "<table>" + "".join(f"<tr>{row}</tr>" for row in cells) + "</table>"


def _fields(document: Json, schema: Json) -> str:
    """The schema's type and, for an object, a table of its fields (nested objects are linked)."""
    resolved = schema
    while "$ref" in resolved:
        resolved = document["components"]["schemas"][_ref_name(resolved)]
    if resolved.get("type") == "array" and "properties" not in resolved:
        return f"<p>{_type(schema)}</p>" + _fields(document, resolved.get("items", {}))
    props: Json = resolved.get("properties", {})
    rows = [(f"<code>{_e(n)}</code>", _type(s), _text(s.get("description", ""))) for n, s in props.items()]
    return f"<p>{_type(schema)}</p>" + (_table(("field", "type", "description"), rows) if rows else "")


def _parameter(p: Json) -> tuple[str, ...]:
    cells = f"<code>{_e(p['name'])}</code>", _e(p["in"]), _type(p.get("schema", {}))
    return *cells, "yes" if p.get("required") else "no", _text(p.get("description", ""))


def _operation(document: Json, path: str, method: str, op: Json) -> str:
    out = [f'<section id="{_id("op", op["operationId"])}"><h3>{_route(method, path)}</h3>']
    out += [f"<p>Operation <code>{_e(op['operationId'])}</code></p>", _text(op.get("description", ""))]
    if op.get("parameters"):
        rows = [_parameter(p) for p in op["parameters"]]
        out += ["<h4>Parameters</h4>", _table(("name", "in", "type", "required", "description"), rows)]
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        schema = body["schema"]
        out += ["<h4>Request body</h4>", _text(schema.get("description", "")), _fields(document, schema)]
    responses: Json = op.get("responses", {})
    for status, response in ((s, r) for s, r in responses.items() if s.startswith("2")):
        kind, content = next(iter(response.get("content", {}).items()), ("", None))
        out += [f"<h4>Response {_e(status)}</h4>", _text(response.get("description", ""))]
        if kind == "text/event-stream":
            out.append("<p>Server-Sent Events, one <code>data:</code> event per message:</p>")
        if content is None:
            out.append("<p>No body.</p>")
        elif "$ref" in content["schema"] or "properties" in content["schema"]:
            out.append(_fields(document, content["schema"]))
        else:
            out.append(f"<p>A <code>{_e(kind)}</code> body.</p>")
    errors = ", ".join(s for s in responses if not s.startswith("2"))
    return "\n".join([*out, f"<p>Errors: {_link('errors', 'all', _e(errors))}</p></section>"])


def _errors(document: Json) -> str:
    # Error responses are shared components; each operation lists the statuses it refers to.
    operations = [op for item in document.get("paths", {}).values() for op in item.values()]
    refs = {s: _ref_name(r) for op in operations for s, r in op.get("responses", {}).items() if "$ref" in r}
    errors: Json = document.get("components", {}).get("responses", {})
    rows = [(_e(s), _text(errors.get(name, {}).get("description", ""))) for s, name in sorted(refs.items())]
    bodies = {_type(r["content"]["application/json"]["schema"]) for r in errors.values() if "content" in r}
    heading, table = f'<h2 id="{_id("errors", "all")}">Errors</h2>', _table(("HTTP status", "meaning"), rows)
    example = f"<pre>{_e(json.dumps(_ERROR_EXAMPLE, indent=2))}</pre>"
    return f"{heading}{table}<p>Every error body is {' or '.join(sorted(bodies))}, for example:</p>{example}"


def render_docs(document: Json) -> str:
    """The HTML page of an OpenAPI document: contents by tag, operations, errors and schemas."""
    info: Json = document.get("info", {})
    tags = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    operations: dict[str, list[tuple[str, str, Json]]] = {tag: [] for tag in tags}
    for path, item in document.get("paths", {}).items():
        for method in (m for m in _METHODS if m in item):
            for tag in item[method].get("tags", ["default"]):
                operations.setdefault(tag, []).append((path, method, item[method]))
    title = _e(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>']
    out += [f"<style>{_STYLE}</style></head><body><h1>{title}</h1>", _text(info.get("description", ""))]
    out.append("<nav><h2>Contents</h2>")
    for tag, ops in operations.items():
        links = [
            f"{_link('op', o['operationId'], _route(m, p))} {_e(o.get('summary', ''))}" for p, m, o in ops
        ]
        out.append(f"<h4>{_link('tag', tag, _e(tag))}</h4><ul><li>" + "</li><li>".join(links) + "</li></ul>")
    out.append(f"<p>{_link('errors', 'all', 'Errors')} · {_link('schemas', 'all', 'Schemas')}</p></nav>")
    for tag, ops in operations.items():
        out += [f'<h2 id="{_id("tag", tag)}">{_e(tag)}</h2>', _text(tags.get(tag, ""))]
        out += [_operation(document, p, m, op) for p, m, op in ops]
    out += [_errors(document), f'<h2 id="{_id("schemas", "all")}">Schemas</h2>']
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        heading = f'<h3 id="{_id("schema", name)}"><code>{_e(name)}</code></h3>'
        out += [heading, _text(schema.get("description", "")), _fields(document, schema)]
    return "\n".join([*out, "</body></html>\n"])


def add_cli(parser: argparse.ArgumentParser) -> None:
    """The `docs` subcommand: writes the HTML page of an OpenAPI document."""
    parser.add_argument("--openapi", type=Path, default=DEFAULT_OPENAPI, help=f"default: {DEFAULT_OPENAPI}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    document = json.loads(args.openapi.read_text(encoding="utf-8"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_docs(document), encoding="utf-8")
    print(f"docs: written to {args.out}")
    return 0
