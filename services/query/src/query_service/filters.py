"""The filter compiler: a whitelist of dimensions → SQL expressions, filters → parameterised SQL.

User text only ever becomes a query parameter: dimension names pick expressions from the table
below (a property key is a parameter too), and every value is bound, never formatted in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from query_service.spec import (
    GOAL,
    PROPS_PREFIX,
    AllOf,
    AnyOf,
    Condition,
    Filter,
    Goal,
    Negation,
    is_event_dimension,
    is_visit_dimension,
)

# The host of an absolute URL (what ingest accepts as url), as PostgreSQL and Python's re read it
# alike; the reference implementation uses the same pattern.
HOSTNAME_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]*)"
# Visit attributes kept on the session row; the others come from the visit's first event.
_SESSION_COLUMNS = {
    "visit:entry_page": "entry_path",
    "visit:exit_page": "exit_path",
    "visit:channel": "referrer_source",
    "visit:utm_source": "utm_source",
    "visit:utm_medium": "utm_medium",
    "visit:utm_campaign": "utm_campaign",
    "visit:device": "device",
    "visit:browser": "browser",
    "visit:os": "os",
    "visit:country": "country",
}
_HEAD_COLUMNS = {
    "visit:referrer": "referrer",
    "visit:utm_content": "utm_content",
    "visit:utm_term": "utm_term",
}
_EVENT_COLUMNS = {"event:page": "path", "event:name": "name"}


def needs_head(dimensions: list[str]) -> bool:
    """Whether any of these visit dimensions is read from the visit's first event."""
    return any(name in _HEAD_COLUMNS for name in dimensions)


@dataclass
class Params:
    """Collects bound values under generated names."""

    values: dict[str, object] = field(default_factory=dict)

    def add(self, value: object) -> sql.Composable:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return sql.Placeholder(name)


@dataclass(frozen=True)
class Scope:
    """The table aliases a query has: events (``e``), its visit (``s``), the visit's first event
    (``h``), the goal an event completes (``g``, grouped by event:goal); and the site's goals."""

    event: str | None = None
    session: str | None = None
    head: str | None = None
    goal: str | None = None
    goals: tuple[Goal, ...] = ()

    def expression(self, dimension: str, params: Params) -> sql.Composable:
        """The text value of a dimension (never NULL: '' when absent)."""
        if dimension == GOAL:
            if self.goal is None:
                raise ValueError(f"{dimension} needs the goals joined")
            return sql.Identifier(self.goal, "goal")
        if is_event_dimension(dimension):
            if self.event is None:
                raise ValueError(f"{dimension} needs the events of the query")
            column = _EVENT_COLUMNS.get(dimension)
            if column is not None:
                return sql.Identifier(self.event, column)
            if dimension == "event:hostname":
                return sql.SQL("lower(coalesce(substring({} from {}), ''))").format(
                    sql.Identifier(self.event, "url"), sql.Literal(HOSTNAME_PATTERN)
                )
            key = dimension.removeprefix(PROPS_PREFIX)
            return sql.SQL("coalesce({} ->> {}, '')").format(
                sql.Identifier(self.event, "properties"), params.add(key)
            )
        if is_visit_dimension(dimension):
            if dimension == "visit:source":
                if self.session is None:
                    raise ValueError(f"{dimension} needs the visits of the query")
                utm, host = (
                    sql.Identifier(self.session, "utm_source"),
                    sql.Identifier(self.session, "referrer_host"),
                )
                return sql.SQL("(CASE WHEN {} <> '' THEN {} ELSE {} END)").format(utm, utm, host)
            if dimension in _HEAD_COLUMNS:
                if self.head is None:
                    raise ValueError(f"{dimension} needs the visits' first events")
                return sql.Identifier(self.head, _HEAD_COLUMNS[dimension])
            if self.session is None:
                raise ValueError(f"{dimension} needs the visits of the query")
            return sql.Identifier(self.session, _SESSION_COLUMNS[dimension])
        raise ValueError(f"{dimension} is not a filterable dimension")


def compile_filter(node: Filter, scope: Scope, params: Params) -> sql.Composable:
    """A boolean SQL expression for a filter tree."""
    if isinstance(node, Condition):
        return _condition(node, scope, params)
    if isinstance(node, Negation):
        return sql.SQL("NOT ({})").format(compile_filter(node.filter, scope, params))
    joiner = sql.SQL(" AND ") if isinstance(node, AllOf) else sql.SQL(" OR ")
    assert isinstance(node, AllOf | AnyOf)
    return sql.SQL("({})").format(joiner.join(compile_filter(child, scope, params) for child in node.filters))


def selected_goals(condition: Condition, goals: tuple[Goal, ...]) -> list[Goal]:
    """The goals an event:goal condition names (is, is_not: by name; contains, contains_not: by
    part of the name), whatever its negation."""
    if condition.operator in ("is", "is_not"):
        return [goal for goal in goals if goal.name in condition.values]
    return [goal for goal in goals if any(v in goal.name for v in condition.values)]


def completes(event: str, goals: list[Goal], params: Params) -> sql.Composable:
    """Whether the event (alias) completes any of these goals."""
    names = [goal.event_name for goal in goals if goal.event_name]
    regexes = [goal.page_regex for goal in goals if goal.page_regex]
    tests: list[sql.Composable] = []
    if names:
        tests.append(
            sql.SQL("({e}.kind = 2 AND {e}.name = ANY({v}::text[]))").format(
                e=sql.Identifier(event), v=params.add(names)
            )
        )
    if regexes:
        tests.append(
            sql.SQL("({e}.kind = 1 AND {e}.path ~ ANY({v}::text[]))").format(
                e=sql.Identifier(event), v=params.add(regexes)
            )
        )
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests)) if tests else sql.SQL("false")


def _goal_condition(condition: Condition, scope: Scope, params: Params) -> sql.Composable:
    if scope.event is None:
        raise ValueError(f"{GOAL} needs the events of the query")
    test = completes(scope.event, selected_goals(condition, scope.goals), params)
    return sql.SQL("NOT {}").format(test) if condition.operator.endswith("_not") else test


def _condition(condition: Condition, scope: Scope, params: Params) -> sql.Composable:
    if condition.dimension == GOAL:
        return _goal_condition(condition, scope, params)
    value = scope.expression(condition.dimension, params)
    values = list(condition.values)
    if condition.operator in ("is", "is_not"):
        test = sql.SQL("{} = ANY({}::text[])").format(value, params.add(values))
    elif condition.operator in ("contains", "contains_not"):
        test = sql.SQL("({})").format(
            sql.SQL(" OR ").join(sql.SQL("strpos({}, {}) > 0").format(value, params.add(v)) for v in values)
        )
    else:
        test = sql.SQL("{} ~ ANY({}::text[])").format(value, params.add(values))
    if condition.operator.endswith("_not"):
        return sql.SQL("NOT {}").format(test)
    return test


def uses(node: Filter | None) -> list[str]:
    """The dimensions a filter tree tests."""
    if node is None:
        return []
    if isinstance(node, Condition):
        return [node.dimension]
    if isinstance(node, Negation):
        return uses(node.filter)
    return [name for child in node.filters for name in uses(child)]
