"""Goals and funnel definitions: validation and their rows in schema ``query`` (migrations in
query_service/migrations). Every row is keyed by its site first; a site's definitions are removed
with ``delete_site_definitions``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
from psycopg import AsyncConnection, sql

from analytics.v1 import product_pb2
from analytics_grpc.errors import FieldViolation, ServiceError
from query_service.live.alerts import ALERT_RULES
from query_service.product import patterns
from query_service.request import shown
from query_service.spec import Goal

SCHEMA = "query"
GOALS = sql.Identifier(SCHEMA, "goals")
FUNNELS = sql.Identifier(SCHEMA, "funnels")

MAX_EVENT_NAME = 100
MAX_DISPLAY_NAME = 120
MAX_FUNNEL_NAME = 200
MIN_STEPS, MAX_STEPS = 2, 8
MAX_STEP_FILTERS = 16
MAX_PROPERTY_KEY, MAX_PROPERTY_VALUE = 128, 1024
DEFAULT_WINDOW_S = 7 * 86_400
MAX_WINDOW_S = 90 * 86_400
# Seed 002 names page views page_view; they are stored as pageview.
PAGEVIEW_NAMES = ("page_view", "pageview")
STORED_PAGEVIEW = "pageview"


@dataclass(frozen=True, slots=True)
class GoalRow:
    goal_id: str
    site_id: str
    event_name: str
    page_path: str
    display_name: str
    created_at: datetime

    def as_goal(self) -> Goal:
        if self.event_name:
            return Goal(self.display_name, event_name=self.event_name)
        return Goal(self.display_name, page_path=self.page_path, page_regex=patterns.to_regex(self.page_path))

    def to_proto(self) -> product_pb2.Goal:
        return product_pb2.Goal(
            goal_id=self.goal_id,
            site_id=self.site_id,
            event_name=self.event_name,
            page_path=self.page_path,
            display_name=self.display_name,
            created_at=rfc3339(self.created_at),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One funnel step: an event name (page views as ``pageview``) or a page path pattern,
    property values the event must carry, and the most seconds it may come after the previous
    step (None: no bound of its own)."""

    event_name: str = ""
    page_path: str = ""
    filters: tuple[tuple[str, str], ...] = ()
    time_window_seconds: int | None = None

    @property
    def label(self) -> str:
        return self.event_name or f"Visit {self.page_path}"

    def to_proto(self) -> product_pb2.FunnelStep:
        return product_pb2.FunnelStep(
            event_name=self.event_name,
            page_path=self.page_path,
            filters=dict(self.filters),
            time_window_seconds=self.time_window_seconds,
        )


@dataclass(frozen=True, slots=True)
class FunnelRow:
    funnel_id: str
    site_id: str
    name: str
    steps: tuple[Step, ...]
    window_seconds: int
    created_at: datetime

    def to_proto(self) -> product_pb2.Funnel:
        return product_pb2.Funnel(
            funnel_id=self.funnel_id,
            site_id=self.site_id,
            name=self.name,
            steps=[step.to_proto() for step in self.steps],
            window_seconds=self.window_seconds,
            created_at=rfc3339(self.created_at),
        )


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _not_found(what: str, ident: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, f"no {what} {ident} on this site")


def funnel_not_found(funnel_id: str) -> ServiceError:
    return _not_found("funnel", funnel_id)


async def _site_rows(
    conn: AsyncConnection[Any], table: sql.Identifier, columns: sql.Composable, key: str, site_id: str
) -> list[Any]:
    """A site's rows of a definitions table, oldest first."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE site_id = %s ORDER BY created_at, {}").format(
            columns, table, sql.Identifier(key)
        ),
        (site_id,),
    )
    return await cur.fetchall()


async def _delete_one(
    conn: AsyncConnection[Any], table: sql.Identifier, key: tuple[str, str], site_id: str, ident: str
) -> None:
    """Deletes one definition; NOT_FOUND when the site has none of that id. ``key``: its id
    column and what it is called in the message."""
    column, what = key
    cur = await conn.execute(
        sql.SQL("DELETE FROM {} WHERE site_id = %s AND {} = %s").format(table, sql.Identifier(column)),
        (site_id, ident),
    )
    if cur.rowcount == 0:
        raise _not_found(what, ident)


# Goals.


def check_goal(definition: product_pb2.GoalDefinition, field: str = "goal") -> tuple[str, str, str]:
    """(event_name, page_path, display_name), validated; the display name defaulted."""
    event_name = nul_free(definition.event_name, f"{field}.event_name").strip()
    page_path = definition.page_path
    nul_free(definition.display_name, f"{field}.display_name")
    violations: list[FieldViolation] = []
    if bool(event_name) == bool(page_path):
        violations.append(FieldViolation(field, "needs exactly one of event_name and page_path"))
    elif event_name and len(event_name) > MAX_EVENT_NAME:
        violations.append(
            FieldViolation(f"{field}.event_name", f"must be at most {MAX_EVENT_NAME} characters")
        )
    elif page_path and (problem := patterns.problem(page_path)) is not None:
        violations.append(FieldViolation(f"{field}.page_path", problem))
    display = definition.display_name.strip() or event_name or f"Visit {page_path}"
    if len(display) > MAX_DISPLAY_NAME:
        violations.append(
            FieldViolation(f"{field}.display_name", f"must be at most {MAX_DISPLAY_NAME} characters")
        )
    if violations:
        raise ServiceError.invalid(violations)
    return event_name, page_path, display


def nul_free(value: str, field: str) -> str:
    """The value, refused when it holds a NUL character (PostgreSQL text cannot)."""
    if "\x00" in value:
        raise ServiceError.field(field, "must not contain NUL characters")
    return value


def _goal(row: Any) -> GoalRow:
    goal_id, site_id, event_name, page_path, display_name, created_at = row
    return GoalRow(str(goal_id), str(site_id), event_name, page_path, display_name, created_at)


_GOAL_COLUMNS = sql.SQL("goal_id, site_id, event_name, page_path, display_name, created_at")


def _taken(display: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.ALREADY_EXISTS,
        f"goal.display_name: the site already has a goal named {shown(display)}",
        violations=(
            FieldViolation("goal.display_name", f"the site already has a goal named {shown(display)}"),
        ),
    )


async def _write_goal(
    conn: AsyncConnection[Any], statement: sql.Composed, params: tuple[object, ...], display: str
) -> GoalRow | None:
    """Runs an INSERT or UPDATE … RETURNING of a goal; a display name the site has is a 409."""
    try:
        async with conn.transaction():
            cur = await conn.execute(statement, params)
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise _taken(display) from None
    return _goal(row) if row is not None else None


async def create_goal(
    conn: AsyncConnection[Any], site_id: str, definition: product_pb2.GoalDefinition
) -> GoalRow:
    event_name, page_path, display = check_goal(definition)
    statement = sql.SQL(
        "INSERT INTO {} (site_id, goal_id, event_name, page_path, display_name)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING {}"
    ).format(GOALS, _GOAL_COLUMNS)
    goal = await _write_goal(
        conn, statement, (site_id, uuid.uuid4(), event_name, page_path, display), display
    )
    assert goal is not None
    return goal


async def update_goal(
    conn: AsyncConnection[Any], site_id: str, goal_id: str, definition: product_pb2.GoalDefinition
) -> GoalRow:
    event_name, page_path, display = check_goal(definition)
    statement = sql.SQL(
        "UPDATE {} SET event_name = %s, page_path = %s, display_name = %s"
        " WHERE site_id = %s AND goal_id = %s RETURNING {}"
    ).format(GOALS, _GOAL_COLUMNS)
    goal = await _write_goal(conn, statement, (event_name, page_path, display, site_id, goal_id), display)
    if goal is None:
        raise _not_found("goal", goal_id)
    return goal


async def list_goals(conn: AsyncConnection[Any], site_id: str) -> list[GoalRow]:
    return [_goal(row) for row in await _site_rows(conn, GOALS, _GOAL_COLUMNS, "goal_id", site_id)]


async def delete_goal(conn: AsyncConnection[Any], site_id: str, goal_id: str) -> None:
    await _delete_one(conn, GOALS, ("goal_id", "goal"), site_id, goal_id)


async def site_goals(conn: AsyncConnection[Any], site_id: str) -> tuple[Goal, ...]:
    """The site's goals as event:goal reads them."""
    return tuple(row.as_goal() for row in await list_goals(conn, site_id))


# Funnels.


def check_steps(steps: Sequence[product_pb2.FunnelStep], field: str = "steps") -> tuple[Step, ...]:
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        raise ServiceError.field(field, f"must hold {MIN_STEPS} to {MAX_STEPS} steps, got {len(steps)}")
    violations: list[FieldViolation] = []
    checked: list[Step] = []
    for index, step in enumerate(steps):
        path = f"{field}[{index}]"
        event_name, page_path = nul_free(step.event_name, f"{path}.event_name").strip(), step.page_path
        for key, value in step.filters.items():
            nul_free(key + value, f"{path}.filters")
        if bool(event_name) == bool(page_path):
            violations.append(FieldViolation(path, "needs exactly one of event_name and page_path"))
        elif event_name and len(event_name) > MAX_EVENT_NAME:
            violations.append(
                FieldViolation(f"{path}.event_name", f"must be at most {MAX_EVENT_NAME} characters")
            )
        elif page_path and (problem := patterns.problem(page_path)) is not None:
            violations.append(FieldViolation(f"{path}.page_path", problem))
        if len(step.filters) > MAX_STEP_FILTERS:
            violations.append(
                FieldViolation(f"{path}.filters", f"must hold at most {MAX_STEP_FILTERS} properties")
            )
        for key, value in sorted(step.filters.items()):
            if not key or len(key) > MAX_PROPERTY_KEY:
                violations.append(
                    FieldViolation(f"{path}.filters", f"keys must be 1..{MAX_PROPERTY_KEY} characters")
                )
            elif len(value) > MAX_PROPERTY_VALUE:
                violations.append(
                    FieldViolation(
                        f"{path}.filters[{key}]", f"must be at most {MAX_PROPERTY_VALUE} characters"
                    )
                )
        gap = _step_window(step, index, path, violations)
        if event_name.lower() in PAGEVIEW_NAMES:
            event_name = STORED_PAGEVIEW
        checked.append(Step(event_name, page_path, tuple(sorted(step.filters.items())), gap))
    if violations:
        raise ServiceError.invalid(violations)
    return tuple(checked)


def _step_window(
    step: product_pb2.FunnelStep, index: int, path: str, violations: list[FieldViolation]
) -> int | None:
    """A step's own window (None when not given); a refusal is added to ``violations``."""
    if not step.HasField("time_window_seconds"):
        return None
    field, value = f"{path}.time_window_seconds", step.time_window_seconds
    if index == 0:
        violations.append(FieldViolation(field, "the first step has no previous step to be timed from"))
    elif not 0 < value <= MAX_WINDOW_S:
        violations.append(
            FieldViolation(field, f"must be between 1 and {MAX_WINDOW_S} seconds (90 days), got {value}")
        )
    return value


def check_window(value: int, given: bool, field: str = "window_seconds") -> int:
    """The conversion window: DEFAULT_WINDOW_S when not given, else 1..MAX_WINDOW_S."""
    if not given:
        return DEFAULT_WINDOW_S
    if not 0 < value <= MAX_WINDOW_S:
        raise ServiceError.field(
            field, f"must be between 1 and {MAX_WINDOW_S} seconds (90 days), got {value}"
        )
    return value


def check_name(value: str, field: str = "name") -> str:
    name = nul_free(value, field).strip()
    if not name:
        raise ServiceError.field(field, "is required")
    if len(name) > MAX_FUNNEL_NAME:
        raise ServiceError.field(field, f"must be at most {MAX_FUNNEL_NAME} characters")
    return name


def _steps_json(steps: tuple[Step, ...]) -> str:
    stored: list[dict[str, object]] = []
    for s in steps:
        step: dict[str, object] = {
            "event_name": s.event_name,
            "page_path": s.page_path,
            "filters": dict(s.filters),
        }
        # Rows written before steps had windows have no such key; neither do steps without one.
        if s.time_window_seconds is not None:
            step["time_window_seconds"] = s.time_window_seconds
        stored.append(step)
    return json.dumps(stored)


def _funnel(row: Any) -> FunnelRow:
    funnel_id, site_id, name, steps, window_seconds, created_at = row
    return FunnelRow(
        str(funnel_id),
        str(site_id),
        name,
        tuple(
            Step(
                s["event_name"],
                s["page_path"],
                tuple(sorted(s["filters"].items())),
                s.get("time_window_seconds"),
            )
            for s in steps
        ),
        int(window_seconds),
        created_at,
    )


_FUNNEL_COLUMNS = sql.SQL("funnel_id, site_id, name, steps, window_seconds, created_at")


async def create_funnel(
    conn: AsyncConnection[Any], site_id: str, name: str, steps: tuple[Step, ...], window_seconds: int
) -> FunnelRow:
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {} (site_id, funnel_id, name, steps, window_seconds)"
            " VALUES (%s, %s, %s, %s::jsonb, %s) RETURNING {}"
        ).format(FUNNELS, _FUNNEL_COLUMNS),
        (site_id, uuid.uuid4(), name, _steps_json(steps), window_seconds),
    )
    row = await cur.fetchone()
    assert row is not None
    return _funnel(row)


async def update_funnel(
    conn: AsyncConnection[Any],
    site_id: str,
    funnel_id: str,
    *,
    name: str,
    steps: tuple[Step, ...],
    window_seconds: int,
) -> FunnelRow:
    cur = await conn.execute(
        sql.SQL(
            "UPDATE {} SET name = %s, steps = %s::jsonb, window_seconds = %s"
            " WHERE site_id = %s AND funnel_id = %s RETURNING {}"
        ).format(FUNNELS, _FUNNEL_COLUMNS),
        (name, _steps_json(steps), window_seconds, site_id, funnel_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise funnel_not_found(funnel_id)
    return _funnel(row)


async def list_funnels(conn: AsyncConnection[Any], site_id: str) -> list[FunnelRow]:
    return [_funnel(row) for row in await _site_rows(conn, FUNNELS, _FUNNEL_COLUMNS, "funnel_id", site_id)]


async def get_funnel(conn: AsyncConnection[Any], site_id: str, funnel_id: str) -> FunnelRow | None:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE site_id = %s AND funnel_id = %s").format(_FUNNEL_COLUMNS, FUNNELS),
        (site_id, funnel_id),
    )
    row = await cur.fetchone()
    return _funnel(row) if row is not None else None


async def delete_funnel(conn: AsyncConnection[Any], site_id: str, funnel_id: str) -> None:
    await _delete_one(conn, FUNNELS, ("funnel_id", "funnel"), site_id, funnel_id)


async def delete_site_definitions(conn: AsyncConnection[Any], site_id: str) -> int:
    """Removes every goal and funnel of a site and its alert rule (for site deletion); returns how
    many rows went."""
    removed = 0
    for table in (GOALS, FUNNELS, ALERT_RULES):
        cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE site_id = %s").format(table), (site_id,))
        removed += cur.rowcount
    return removed
