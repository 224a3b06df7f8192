"""Plausible Stats API v2 shapes ↔ QueryRequest and the answer: the second front door to Query.

Plausible's JSON arrives as google.protobuf.Value fields; this module checks its shapes (naming
the field as Plausible clients see it, e.g. ``filters[0][2]``), builds the typed request, and
prints the answer as Plausible does.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format, struct_pb2

from analytics.v1 import query_pb2
from analytics_grpc.errors import FieldViolation, ServiceError
from query_service.answer import Answer
from query_service.request import shown
from query_service.spec import OPERATORS, StatsQuery

_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?")
_LOGICAL = ("and", "or", "not")
_UNSUPPORTED_OPERATORS = ("has_done", "has_not_done", "matches_wildcard", "matches_wildcard_not")
_INCLUDE_KEYS = ("time_labels", "total_rows", "comparisons", "imports")
_COMPARISON_KEYS = ("mode", "date_range", "match_day_of_week")
_PAGINATION_KEYS = ("limit", "offset")


def _json(value: struct_pb2.Value, present: bool) -> Any:
    return json_format.MessageToDict(value) if present else None


def _fail(field: str, description: str) -> ServiceError:
    return ServiceError.field(field, description)


def _strings(value: Any, field: str, *, allow_empty: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(field, f"must be a list of strings, got {shown(str(value))}")
    if not allow_empty and not value:
        raise _fail(field, "must not be empty")
    return value


def _range(value: Any, field: str, into: query_pb2.DateRange) -> None:
    if isinstance(value, str):
        into.period = value
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        into.start, into.end = value
    else:
        raise _fail(
            field, f"must be a period name or a list [start, end] of two strings, got {shown(str(value))}"
        )


def _filter(value: Any, field: str) -> query_pb2.Filter:
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise _fail(field, f"must be a list starting with an operator, got {shown(str(value))}")
    operator = value[0]
    if operator in _LOGICAL:
        if len(value) != 2:
            raise _fail(field, f"{operator} takes exactly one argument, got {len(value) - 1}")
        if operator == "not":
            return query_pb2.Filter(negation=_filter(value[1], f"{field}[1]"))
        children = value[1]
        if not isinstance(children, list) or not children:
            raise _fail(f"{field}[1]", f"must be a non-empty list of filters, got {shown(str(children))}")
        group = query_pb2.FilterList(filters=[_filter(c, f"{field}[1][{i}]") for i, c in enumerate(children)])
        return query_pb2.Filter(all_of=group) if operator == "and" else query_pb2.Filter(any_of=group)
    if operator in _UNSUPPORTED_OPERATORS:
        raise _fail(f"{field}[0]", f"operator {operator} is not supported")
    if operator not in OPERATORS:
        raise _fail(
            f"{field}[0]", f"must be one of {', '.join((*OPERATORS, *_LOGICAL))}, got {shown(operator)}"
        )
    if len(value) not in (3, 4):
        raise _fail(field, f"{operator} takes a dimension and a list of values, got {shown(str(value))}")
    if len(value) == 4 and value[3] not in ({}, None):
        raise _fail(f"{field}[3]", f"filter modifiers are not supported, got {shown(str(value[3]))}")
    if not isinstance(value[1], str):
        raise _fail(f"{field}[1]", f"must be a dimension name, got {shown(str(value[1]))}")
    values = _strings(value[2], f"{field}[2]")
    return query_pb2.Filter(
        condition=query_pb2.Condition(operator=operator, dimension=value[1], values=values)
    )


def _object(value: Any, field: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(field, f"must be an object, got {shown(str(value))}")
    for key in value:
        if key not in keys:
            raise _fail(f"{field}.{key}", f"is not supported (supported: {', '.join(keys)})")
    return value


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(field, f"must be true or false, got {shown(str(value))}")
    return value


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise _fail(field, f"must be a whole number of at least 0, got {shown(str(value))}")
    if value > 2**32 - 1:
        raise _fail(field, f"is too large: {int(value)}")
    return int(value)


def site_reference(request: query_pb2.QueryPlausibleRequest) -> tuple[str, str]:
    """(site UUID, "") or ("", domain): Plausible's site_id is a domain; a UUID works too."""
    given = request.site_id.strip()
    if not given:
        raise _fail("site_id", "is required")
    try:
        return str(uuid.UUID(given)), ""
    except ValueError:
        pass
    if len(given) > 253 or not _DOMAIN.fullmatch(given):
        raise _fail("site_id", f"must be a site's domain or UUID, got {shown(given)}")
    return "", given


def _include(value: Any, typed: query_pb2.QueryRequest) -> bool:
    """Fills typed.include; returns whether imported data was asked for."""
    include = _object(value, "include", _INCLUDE_KEYS)
    typed.include.time_labels = _flag(include.get("time_labels", False), "include.time_labels")
    typed.include.total_rows = _flag(include.get("total_rows", False), "include.total_rows")
    comparisons = include.get("comparisons")
    if comparisons is not None:
        options = _object(comparisons, "include.comparisons", _COMPARISON_KEYS)
        if options.get("match_day_of_week"):
            raise _fail("include.comparisons.match_day_of_week", "is not supported")
        mode = options.get("mode")
        if not isinstance(mode, str):
            raise _fail("include.comparisons.mode", f"must be a string, got {shown(str(mode))}")
        typed.include.comparison.mode = mode
        if "date_range" in options:
            _range(
                options["date_range"], "include.comparisons.date_range", typed.include.comparison.date_range
            )
    return _flag(include.get("imports", False), "include.imports")


def _pagination(value: Any, typed: query_pb2.QueryRequest) -> None:
    pagination = _object(value, "pagination", _PAGINATION_KEYS)
    if "limit" in pagination:
        typed.pagination.limit = _count(pagination["limit"], "pagination.limit")
        if typed.pagination.limit == 0:
            raise _fail("pagination.limit", "must be between 1 and 10000, got 0")
    if "offset" in pagination:
        typed.pagination.offset = _count(pagination["offset"], "pagination.offset")


def _order_by(value: Any, typed: query_pb2.QueryRequest) -> None:
    if not isinstance(value, list):
        raise _fail("order_by", f"must be a list of [field, direction] pairs, got {shown(str(value))}")
    for index, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _fail(f"order_by[{index}]", f"must be a pair [field, direction], got {shown(str(pair))}")
        typed.order_by.add(field=pair[0], direction=pair[1])


def to_query(request: query_pb2.QueryPlausibleRequest, site_id: str) -> tuple[query_pb2.QueryRequest, bool]:
    """The typed request, and whether imported data was asked for (there never is any)."""
    typed = query_pb2.QueryRequest(site_id=site_id)
    if not request.HasField("date_range"):
        raise _fail("date_range", "is required")
    _range(_json(request.date_range, True), "date_range", typed.date_range)
    if request.HasField("date"):
        date = _json(request.date, True)
        if not isinstance(date, str):
            raise _fail("date", f"must be a date as YYYY-MM-DD, got {shown(str(date))}")
        typed.date_range.relative_to = date
    if not request.HasField("metrics"):
        raise _fail("metrics", "is required")
    typed.metrics.extend(_strings(_json(request.metrics, True), "metrics", allow_empty=False))
    if request.HasField("dimensions"):
        typed.dimensions.extend(_strings(_json(request.dimensions, True), "dimensions"))
    if request.HasField("filters"):
        filters = _json(request.filters, True)
        if not isinstance(filters, list):
            raise _fail("filters", f"must be a list of filters, got {shown(str(filters))}")
        typed.filters.extend(_filter(item, f"filters[{i}]") for i, item in enumerate(filters))
    if request.HasField("order_by"):
        _order_by(_json(request.order_by, True), typed)
    imports = _include(_json(request.include, True), typed) if request.HasField("include") else False
    if request.HasField("pagination"):
        _pagination(_json(request.pagination, True), typed)
    return typed, imports


# Typed field paths → Plausible's: filters are positional lists there.
_PATHS = (
    (re.compile(r"\.(?:all_of|any_of)\.filters\["), "[1]["),
    (re.compile(r"\.negation"), "[1]"),
    (re.compile(r"\.condition\.operator"), "[0]"),
    (re.compile(r"\.condition\.dimension"), "[1]"),
    (re.compile(r"\.condition\.values"), "[2]"),
    (re.compile(r"^order_by\[(\d+)\]\.field"), r"order_by[\1][0]"),
    (re.compile(r"^order_by\[(\d+)\]\.direction"), r"order_by[\1][1]"),
    (re.compile(r"^include\.comparison\b"), "include.comparisons"),
    (re.compile(r"^date_range\.relative_to"), "date"),
    (re.compile(r"^date_range\.\w+"), "date_range"),
)


def plausible_path(path: str) -> str:
    for pattern, replacement in _PATHS:
        path = pattern.sub(replacement, path)
    return path


def translate(error: ServiceError) -> ServiceError:
    """The same refusal with the fields named as in Plausible's request."""
    if not error.violations:
        return error
    return ServiceError.invalid(
        [FieldViolation(plausible_path(v.field), v.description) for v in error.violations]
    )


def _iso(at: Any) -> str:
    return str(at.isoformat(timespec="seconds"))


def to_response(
    answer: Answer, query: StatsQuery, request: query_pb2.QueryPlausibleRequest, imports: bool
) -> query_pb2.QueryPlausibleResponse:
    zone = ZoneInfo(query.timezone)
    response = query_pb2.QueryPlausibleResponse()
    for row in answer.rows:
        item: dict[str, Any] = {"dimensions": list(row.dimensions), "metrics": _numbers(row.metrics)}
        if row.comparison is not None:
            item["comparison"] = {
                "dimensions": list(row.comparison.dimensions),
                "metrics": _numbers(row.comparison.metrics),
                "change": _numbers(row.comparison.change),
            }
        response.results.add().update(item)
    meta: dict[str, Any] = {}
    if answer.time_labels is not None:
        meta["time_labels"] = answer.time_labels
    if query.total_rows:
        meta["total_rows"] = answer.total_rows
    if imports:
        meta["imports_included"] = False
    # Plausible always answers a meta object, empty when nothing was asked for.
    response.meta.SetInParent()
    response.meta.update(meta)
    last = answer.range.end - timedelta(microseconds=1)
    echoed: dict[str, Any] = {
        "site_id": request.site_id,
        "metrics": list(query.metrics),
        "date_range": [_iso(answer.range.start.astimezone(zone)), _iso(last.astimezone(zone))],
        "dimensions": list(query.dimensions),
        "filters": _json(request.filters, request.HasField("filters")) or [],
        "order_by": [[key.field, key.direction] for key in query.order_by],
        "include": {"time_labels": query.time_labels, "total_rows": query.total_rows, "imports": imports},
        "pagination": {"limit": query.limit, "offset": query.offset},
    }
    if answer.comparison_range is not None:
        end = answer.comparison_range.end - timedelta(microseconds=1)
        echoed["comparison_date_range"] = [
            _iso(answer.comparison_range.start.astimezone(zone)),
            _iso(end.astimezone(zone)),
        ]
    response.query.update(echoed)
    return response


def _numbers(values: list[float] | list[float | None]) -> list[Any]:
    return [int(v) if v is not None and float(v).is_integer() else v for v in values]
