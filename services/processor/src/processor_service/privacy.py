"""PrivacyService servicer: erasure of one person's data, for the admin token or a site admin key."""

from __future__ import annotations

import dataclasses
import re
import uuid

import structlog
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import auth_pb2, privacy_pb2, privacy_pb2_grpc
from analytics_grpc.auth_client import AuthClient, Principal
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated, unavailable
from analytics_grpc.metadata import Context, credential
from processor_service import erasure

log = structlog.get_logger("analytics.processor")

MAX_USER_ID = 256
_VISITOR_ID = re.compile(r"-?[0-9]{1,20}")
_INT64 = (-(2**63), 2**63 - 1)


def parse_site(value: str) -> str:
    if not value:
        raise ServiceError.field("site_id", "is required")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ServiceError.field("site_id", f"must be a UUID, got {value[:80]!r}") from None


def parse_subject(request: privacy_pb2.EraseVisitorRequest) -> tuple[str, int]:
    """(user_id, visitor_id): exactly one is given."""
    if bool(request.user_id) == bool(request.visitor_id):
        raise ServiceError.field("user_id", "give exactly one of user_id and visitor_id")
    if request.user_id:
        if len(request.user_id) > MAX_USER_ID:
            raise ServiceError.field("user_id", f"must be at most {MAX_USER_ID} characters")
        return request.user_id, 0
    text = request.visitor_id.strip()
    if not _VISITOR_ID.fullmatch(text) or not _INT64[0] <= int(text) <= _INT64[1] or int(text) == 0:
        raise ServiceError.invalid(
            [FieldViolation("visitor_id", f"must be a non-zero 64-bit integer, got {text[:40]!r}")]
        )
    return "", int(text)


async def authorize_admin(auth: AuthClient, context: Context, site_id: str) -> Principal:
    """The admin token, or a key of the site with the admin scope."""
    api_key = credential(context)
    if not api_key:
        raise unauthenticated()
    access = await auth.site_access(api_key, site_id=site_id)
    access.principal.require(auth_pb2.SCOPE_ADMIN)
    return access.principal


class PrivacyServicer(privacy_pb2_grpc.PrivacyServiceServicer):
    def __init__(self, auth: AuthClient) -> None:
        self._auth = auth
        self._pool: AsyncConnectionPool | None = None

    def attach(self, pool: AsyncConnectionPool) -> None:
        """Called once the schema is migrated; until then every call answers UNAVAILABLE."""
        self._pool = pool

    async def EraseVisitor(
        self, request: privacy_pb2.EraseVisitorRequest, context: Context
    ) -> privacy_pb2.EraseVisitorResponse:
        site_id = parse_site(request.site_id)
        user_id, visitor_id = parse_subject(request)
        principal = await authorize_admin(self._auth, context, site_id)
        if self._pool is None:
            raise unavailable("the processor is not connected to the database yet, retry later")
        async with self._pool.connection() as conn:
            erased = await erasure.erase(conn, site_id, user_id=user_id, visitor_id=visitor_id)
        counts = dataclasses.asdict(erased)
        # The audit line: who asked, which site, by what kind of id and what went; never the id.
        log.info(
            "erasure",
            site_id=site_id,
            by="user_id" if user_id else "visitor_id",
            caller="admin" if principal.is_admin else f"key:{principal.key_id}",
            **counts,
        )
        return privacy_pb2.EraseVisitorResponse(**counts)
