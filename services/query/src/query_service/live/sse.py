"""StreamLive over HTTP as Server-Sent Events, served by the query process itself.

The edge proxies `GET /v1/sites/{site_id}/live` here as plain HTTP/1.1 instead of transcoding the
gRPC stream: the transcoder turns every message into JSON once per subscriber, which with a
thousand subscribers of a busy site is a core of the edge's time. Here a committed batch is encoded
once and the same bytes go to every subscriber that takes all of the site's events. What a client
reads is what the transcoder sends: one `data: <JSON>` event per StreamLiveResponse, proto field
names, every field printed, errors as google.rpc.Status JSON with the matching HTTP status.
"""

from __future__ import annotations

import time
import uuid
from typing import cast

import grpc
import orjson
import structlog
from aiohttp import web
from google.rpc import status_pb2

from analytics.v1 import auth_pb2, live_pb2
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import ServiceError, unauthenticated
from analytics_grpc.metadata import credential_in
from query_service.live.hub import Batch, LiveHub, Subscriber, proto_json
from query_service.live.servicer import filter_values

log = structlog.get_logger("analytics.query")

ROUTE = "/v1/sites/{site_id}/live"
# Most messages written at once by a stream that has fallen behind.
WRITE_MESSAGES = 64
# The HTTP status of each gRPC code, as the transcoder maps them.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    # Proxies that buffer answers (nginx) would hold the events back.
    "x-accel-buffering": "no",
}


def error_response(error: ServiceError) -> web.Response:
    """The google.rpc.Status of the error, details included, as the transcoder would answer it."""
    details = cast(bytes, dict(error.to_status().trailing_metadata)["grpc-status-details-bin"])
    body = orjson.dumps(proto_json(status_pb2.Status.FromString(details)))
    return web.Response(status=_HTTP_STATUS.get(error.code, 500), body=body, content_type="application/json")


def event(item: Batch | live_pb2.StreamLiveResponse, dropped: int) -> bytes:
    """One Server-Sent Event: the batch's shared JSON inside this subscriber's envelope."""
    if isinstance(item, Batch):
        payload = b'{"dropped_events":"%d","events":%s}' % (dropped, item.json())
    else:
        item.dropped_events = dropped
        payload = orjson.dumps(proto_json(item))
    return b"data: " + payload + b"\n\n"


class LiveEventStream:
    """The aiohttp handler of ROUTE."""

    def __init__(self, hub: LiveHub, auth: AuthClient, *, heartbeat_s: float) -> None:
        self._hub = hub
        self._auth = auth
        self._heartbeat_s = heartbeat_s

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            site_id, pages, countries = await self._authorize(request)
        except ServiceError as error:
            return error_response(error)
        response = web.StreamResponse(headers=HEADERS)
        started = time.monotonic()
        async with self._hub.subscribe(site_id, pages, countries) as subscriber:
            await response.prepare(request)
            try:
                await self._send(response, subscriber)
            except (ConnectionError, RuntimeError):
                pass  # the client left
            finally:
                log.info(
                    "live stream ended",
                    site_id=site_id,
                    seconds=round(time.monotonic() - started, 3),
                    dropped_events=subscriber.dropped_events,
                    request_id=request.headers.get("x-request-id", ""),
                )
        return response

    async def _authorize(self, request: web.Request) -> tuple[str, frozenset[str], frozenset[str]]:
        try:
            site_id = str(uuid.UUID(request.match_info["site_id"]))
        except ValueError:
            raise ServiceError.field("site_id", "must be a UUID") from None
        query = request.rel_url.query
        pages = filter_values("pages", query.getall("pages", []))
        countries = filter_values("countries", query.getall("countries", []))
        api_key = credential_in({k.lower(): v for k, v in request.headers.items()})
        if not api_key:
            raise unauthenticated()
        access = await self._auth.site_access(api_key, site_id=site_id)
        access.principal.require(auth_pb2.SCOPE_READ)
        return site_id, pages, countries

    async def _send(self, response: web.StreamResponse, subscriber: Subscriber) -> None:
        while True:
            # What queued up while the last write was under way goes out in one write.
            items = await subscriber.take(self._heartbeat_s, WRITE_MESSAGES)
            if not items:
                if subscriber.closed:
                    return
                heartbeat = live_pb2.StreamLiveResponse()
                heartbeat.heartbeat.at.GetCurrentTime()
                items = [heartbeat]
            dropped = subscriber.dropped_events
            await response.write(b"".join(event(item, dropped) for item in items))
