"""Request parsing and authorization, shared by every RPC: who may read which site, and turning a
QueryRequest into a validated StatsQuery. Every refusal names the field and shows the value."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import cast
from zoneinfo import ZoneInfo

from analytics.v1 import auth_pb2, query_pb2
from analytics_grpc.auth_client import AuthClient, SiteAccess
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from query_service import timerange
from query_service.spec import (
    ALL_METRICS,
    CONVERSION_RATE,
    GOAL,
    OPERATORS,
    PERCENTAGE,
    PROPS_PREFIX,
    WHOLE_VISIT_METRICS,
    AllOf,
    AnyOf,
    Bucket,
    Condition,
    Filter,
    Goal,
    Negation,
    Operator,
    OrderKey,
    StatsQuery,
    TimeRange,
    is_event_dimension,
    is_time_dimension,
    is_visit_dimension,
)

MAX_LIMIT = 10_000
MAX_DIMENSIONS = 8
MAX_CONDITIONS = 64
MAX_DEPTH = 8
MAX_VALUES = 100
MAX_VALUE_LENGTH = 1024
MAX_LABELS = 20_000
COMPARISON_MODES = ("previous_period", "year_over_year", "custom")
GOAL_OPERATORS = ("is", "is_not", "contains", "contains_not")
_BUCKETS: dict[str, Bucket] = {
    "time:hour": "hour",
    "time:day": "day",
    "time:week": "week",
    "time:month": "month",
}

FirstDay = Callable[[], Awaitable[date | None]]


def shown(value: str, limit: int = 80) -> str:
    """A value quoted for an error message, cut to a readable length."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def parse_site_uuid(value: str, field: str = "site_id") -> str:
    if not value:
        raise ServiceError.field(field, "is required")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ServiceError.field(field, f"must be a UUID, got {shown(value)}") from None


async def authorize(
    auth: AuthClient,
    context: Context,
    *,
    site_id: str = "",
    domain: str = "",
    scope: int = auth_pb2.SCOPE_READ,
) -> SiteAccess:
    """The caller may read the site (a key of it with the read scope, or the admin token); or, with
    ``scope`` SCOPE_ADMIN, change the site's definitions."""
    api_key = credential(context)
    if not api_key:
        raise unauthenticated()
    access = await auth.site_access(api_key, site_id=site_id, domain=domain)
    access.principal.require(scope)
    return access


async def authorize_site(
    auth: AuthClient, context: Context, site_id: str, scope: int = auth_pb2.SCOPE_READ
) -> SiteAccess:
    """authorize() for routes whose site is optional: a key's own site when none is named."""
    if not site_id:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        principal = await auth.authenticate(api_key, "")
        if principal.is_admin:
            raise ServiceError.field("site_id", "is required with the admin token")
        site_id = principal.site_id
    return await authorize(auth, context, site_id=parse_site_uuid(site_id), scope=scope)


class _Checker:
    def __init__(self, goals: tuple[Goal, ...] = ()) -> None:
        self.violations: list[FieldViolation] = []
        self.conditions = 0
        self.patterns: list[tuple[str, str]] = []
        self.goals = goals

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))


def _dimension_problem(name: str) -> str | None:
    if (
        is_time_dimension(name)
        or is_visit_dimension(name)
        or name in ("event:page", "event:name", "event:hostname", GOAL)
    ):
        return None
    if name.startswith(PROPS_PREFIX):
        key = name.removeprefix(PROPS_PREFIX)
        if not key or len(key) > 128:
            return f"must name a property of 1..128 characters, got {shown(name)}"
        return None
    return f"is not a supported dimension: {shown(name)}"


def _filter(check: _Checker, node: query_pb2.Filter, path: str, depth: int) -> Filter | None:
    if depth > MAX_DEPTH:
        check.bad(path, f"nests deeper than {MAX_DEPTH} levels")
        return None
    kind = node.WhichOneof("kind")
    if kind is None:
        check.bad(path, "must set condition, all_of, any_of or negation")
        return None
    if kind == "negation":
        inner = _filter(check, node.negation, f"{path}.negation", depth + 1)
        return Negation(inner) if inner is not None else None
    if kind in ("all_of", "any_of"):
        children = getattr(node, kind).filters
        if not children:
            check.bad(f"{path}.{kind}.filters", "must hold at least one filter")
            return None
        parsed = [
            _filter(check, child, f"{path}.{kind}.filters[{i}]", depth + 1)
            for i, child in enumerate(children)
        ]
        if any(child is None for child in parsed):
            return None
        items = tuple(child for child in parsed if child is not None)
        return AllOf(items) if kind == "all_of" else AnyOf(items)
    return _condition(check, node.condition, f"{path}.condition")


def _condition(check: _Checker, condition: query_pb2.Condition, path: str) -> Condition | None:
    check.conditions += 1
    if check.conditions == MAX_CONDITIONS + 1:
        check.bad(path, f"filters may hold at most {MAX_CONDITIONS} conditions")
    ok = True
    operator = condition.operator
    if operator not in OPERATORS:
        check.bad(f"{path}.operator", f"must be one of {', '.join(OPERATORS)}, got {shown(operator)}")
        ok = False
    dimension = condition.dimension
    problem = _dimension_problem(dimension) if dimension else "is required"
    if problem is None and is_time_dimension(dimension):
        problem = f"cannot filter on a time dimension ({dimension}): set date_range instead"
    if problem is not None:
        check.bad(f"{path}.dimension", problem)
        ok = False
    values = list(condition.values)
    if not values:
        check.bad(f"{path}.values", "must hold at least one value")
        ok = False
    elif len(values) > MAX_VALUES:
        check.bad(f"{path}.values", f"must hold at most {MAX_VALUES} values")
        ok = False
    if dimension == GOAL and ok and operator not in GOAL_OPERATORS:
        check.bad(f"{path}.operator", f"event:goal takes {', '.join(GOAL_OPERATORS)}, got {shown(operator)}")
        ok = False
    for index, text in enumerate(values):
        if dimension == GOAL and operator in ("is", "is_not") and text not in {g.name for g in check.goals}:
            check.bad(f"{path}.values[{index}]", f"the goal {shown(text)} is not configured for this site")
            ok = False
        elif len(text) > MAX_VALUE_LENGTH:
            check.bad(f"{path}.values[{index}]", f"must be at most {MAX_VALUE_LENGTH} characters")
            ok = False
        elif operator in ("matches", "matches_not"):
            check.patterns.append((f"{path}.values[{index}]", text))
    if not ok:
        return None
    return Condition(cast(Operator, operator), dimension, tuple(values))


def _range(
    check: _Checker, given: query_pb2.DateRange, field: str, zone: ZoneInfo, first: date | None
) -> TimeRange | None:
    try:
        if given.relative_to:
            today = timerange.parse_day(given.relative_to)
        else:
            today = datetime.now(UTC).astimezone(zone).date()
    except timerange.RangeError as error:
        check.bad(f"{field}.relative_to", str(error))
        return None
    if given.period:
        if given.start or given.end:
            check.bad(f"{field}.period", "must not be set together with start and end")
            return None
        try:
            return timerange.period(given.period, today, zone, first)
        except timerange.RangeError as error:
            check.bad(f"{field}.period", str(error))
            return None
    if not given.start or not given.end:
        check.bad(field, "needs a period, or both start and end")
        return None
    try:
        return timerange.bounds(given.start, given.end, zone)
    except timerange.RangeError as error:
        check.bad(field, f"{error} (start {shown(given.start, 40)}, end {shown(given.end, 40)})")
        return None


def _metrics(check: _Checker, metrics: list[str], dimensions: list[str]) -> None:
    if not metrics:
        check.bad("metrics", "must name at least one metric")
    for index, name in enumerate(metrics):
        if name not in ALL_METRICS:
            check.bad(f"metrics[{index}]", f"must be one of {', '.join(ALL_METRICS)}, got {shown(name)}")
        elif name in metrics[:index]:
            check.bad(f"metrics[{index}]", f"repeats {name}")
        elif name in WHOLE_VISIT_METRICS and any(is_event_dimension(d) for d in dimensions):
            grouped_by = ", ".join(d for d in dimensions if is_event_dimension(d))
            check.bad(
                f"metrics[{index}]",
                f"{name} describes whole visits and cannot be grouped by an event dimension ({grouped_by})",
            )
        elif name == PERCENTAGE and not dimensions:
            check.bad(f"metrics[{index}]", "percentage needs at least one dimension")


def _conversion(check: _Checker, metrics: list[str], dimensions: list[str], tree: Filter | None) -> None:
    """conversion_rate divides by the same question without its goal: it needs an event:goal
    dimension or top-level event:goal conditions, and no other use of event:goal in the filters."""
    if CONVERSION_RATE not in metrics:
        return
    field = f"metrics[{metrics.index(CONVERSION_RATE)}]"
    top = tree.filters if isinstance(tree, AllOf) else (tree,) if tree is not None else ()
    goal_conditions = [f for f in top if isinstance(f, Condition) and f.dimension == GOAL]
    rest = [f for f in top if not (isinstance(f, Condition) and f.dimension == GOAL)]
    if GOAL not in dimensions and not goal_conditions:
        check.bad(field, "conversion_rate needs an event:goal dimension or filter")
    elif any(GOAL in _used(f) for f in rest):
        check.bad(
            field,
            "conversion_rate needs its event:goal filters at the top level, not under any_of or negation",
        )


def _used(node: Filter) -> list[str]:
    if isinstance(node, Condition):
        return [node.dimension]
    if isinstance(node, Negation):
        return _used(node.filter)
    return [name for child in node.filters for name in _used(child)]


def mentions_goals(request: query_pb2.QueryRequest) -> bool:
    """Whether the request uses event:goal (so the site's goals are needed to parse it)."""

    def in_filter(node: query_pb2.Filter) -> bool:
        kind = node.WhichOneof("kind")
        if kind == "condition":
            return node.condition.dimension == GOAL
        if kind == "negation":
            return in_filter(node.negation)
        if kind in ("all_of", "any_of"):
            return any(in_filter(child) for child in getattr(node, kind).filters)
        return False

    return GOAL in request.dimensions or any(in_filter(node) for node in request.filters)


def _dimensions(check: _Checker, dimensions: list[str]) -> list[str]:
    """Checks the dimensions; returns the time dimensions among them."""
    if len(dimensions) > MAX_DIMENSIONS:
        check.bad("dimensions", f"must hold at most {MAX_DIMENSIONS} dimensions")
    times = [d for d in dimensions if is_time_dimension(d)]
    for index, name in enumerate(dimensions):
        problem = _dimension_problem(name)
        if problem is not None:
            check.bad(f"dimensions[{index}]", problem)
        elif name in dimensions[:index]:
            check.bad(f"dimensions[{index}]", f"repeats {name}")
        elif is_time_dimension(name) and times.index(name) > 0:
            check.bad(
                f"dimensions[{index}]", f"only one time dimension may be used, got {name} after {times[0]}"
            )
    return times


def _filters(check: _Checker, nodes: list[query_pb2.Filter]) -> Filter | None:
    parsed = [_filter(check, node, f"filters[{i}]", 1) for i, node in enumerate(nodes)]
    kept = tuple(f for f in parsed if f is not None)
    if len(kept) == 1:
        return kept[0]
    return AllOf(kept) if kept else None


def _order(
    check: _Checker,
    given: list[query_pb2.OrderBy],
    metrics: list[str],
    times: list[str],
    dimensions: list[str],
) -> list[OrderKey]:
    order: list[OrderKey] = []
    for index, key in enumerate(given):
        if key.field not in metrics and key.field not in dimensions:
            check.bad(
                f"order_by[{index}].field",
                f"must be a metric or dimension of the query, got {shown(key.field)}",
            )
        elif key.field in [k.field for k in order]:
            check.bad(f"order_by[{index}].field", f"repeats {key.field}")
        if key.direction not in ("asc", "desc"):
            check.bad(f"order_by[{index}].direction", f"must be asc or desc, got {shown(key.direction)}")
        order.append(OrderKey(key.field, "desc" if key.direction == "desc" else "asc"))
    if not given:
        if times:
            order.append(OrderKey(times[0], "asc"))
        elif metrics and metrics[0] in ALL_METRICS:
            order.append(OrderKey(metrics[0], "desc"))
    return order


def _comparison(
    check: _Checker,
    include: query_pb2.QueryInclude,
    span: TimeRange | None,
    zone: ZoneInfo,
    first: date | None,
) -> TimeRange | None:
    mode = include.comparison.mode
    if not include.HasField("comparison") and not mode:
        return None
    if mode not in COMPARISON_MODES:
        check.bad(
            "include.comparison.mode", f"must be one of {', '.join(COMPARISON_MODES)}, got {shown(mode)}"
        )
        return None
    if mode == "custom":
        return _range(check, include.comparison.date_range, "include.comparison.date_range", zone, first)
    if span is None:
        return None
    try:
        if mode == "previous_period":
            return timerange.previous_period(span, zone)
        return timerange.year_over_year(span, zone)
    except timerange.RangeError as error:
        check.bad("include.comparison.mode", f"{mode} of this date_range: {error}")
        return None


async def parse_query(
    request: query_pb2.QueryRequest,
    site_id: str,
    timezone: str,
    first_day: FirstDay,
    goals: tuple[Goal, ...] = (),
) -> tuple[StatsQuery, list[tuple[str, str]]]:
    """The validated query and the regular expressions it uses (field path, pattern), which the
    caller checks against the database that runs them. ``goals``: the site's, when it uses event:goal."""
    check = _Checker(goals)
    zone = ZoneInfo(timezone)
    metrics, dimensions = list(request.metrics), list(request.dimensions)
    times = _dimensions(check, dimensions)
    _metrics(check, metrics, dimensions)
    tree = _filters(check, list(request.filters))
    _conversion(check, metrics, dimensions, tree)
    order = _order(check, list(request.order_by), metrics, times, dimensions)
    limit = request.pagination.limit or MAX_LIMIT
    if limit > MAX_LIMIT:
        check.bad("pagination.limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")

    comparison_range = request.include.comparison.date_range
    needs_first = request.date_range.period == "all" or comparison_range.period == "all"
    first = await first_day() if needs_first else None
    span = _range(check, request.date_range, "date_range", zone, first)
    comparison = _comparison(check, request.include, span, zone, first)

    bucket: Bucket | None = None
    if times and span is not None:
        bucket = timerange.auto_bucket(span) if times[0] == "time" else _BUCKETS[times[0]]
    if request.include.time_labels and not times:
        check.bad("include.time_labels", "needs a time dimension")
    # Labels are listed, and comparisons matched, bucket by bucket: their number is bounded.
    for needs_labels, field in (
        (request.include.time_labels, "include.time_labels"),
        (comparison, "include.comparison"),
    ):
        for checked in (span, comparison):
            if needs_labels and bucket and checked and timerange.bucket_count(checked, bucket) > MAX_LABELS:
                check.bad(
                    field, f"a date_range of more than {MAX_LABELS} {bucket} buckets is too long for it"
                )
                break

    if check.violations or span is None:
        raise ServiceError.invalid(check.violations)
    query = StatsQuery(
        site_id=site_id,
        timezone=timezone,
        range=span,
        metrics=tuple(metrics),
        dimensions=tuple(dimensions),
        filter=tree,
        order_by=tuple(order),
        limit=limit,
        offset=request.pagination.offset,
        bucket=bucket,
        time_labels=request.include.time_labels,
        total_rows=request.include.total_rows,
        comparison=comparison,
        goals=goals if GOAL in dimensions or (tree is not None and GOAL in _used(tree)) else (),
    )
    return query, check.patterns
