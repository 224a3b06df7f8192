"""The OpenAPI document the edge serves describes the live edge: every documented operation answers,
requests shaped as documented are taken, and every answer matches its documented schema."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import pytest

from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # References in the document point into its components: resolve them against the document.
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def _response_schema(document: dict[str, Any], operation: dict[str, Any], status: int) -> dict[str, Any]:
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"status {status} is not documented"
    if "$ref" in documented:
        documented = document["components"]["responses"][documented["$ref"].rsplit("/", 1)[-1]]
    (schema,) = (content["schema"] for content in documented["content"].values())
    found: dict[str, Any] = schema
    return found


async def test_every_documented_operation_answers_as_documented(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    async with http.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    jsonschema.Draft202012Validator.check_schema({"components": document["components"]})
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    async with http.post("/v1/sites", json={"name": "Documented"}, headers=admin) as response:
        site = await response.json()
    event = {"site_id": site["site_id"], "event_type": "pageview", "path": "/documented"}
    # A valid body for the operations whose empty body would only test validation; the rest get {}.
    bodies: dict[str, Any] = {
        "/v1/sites": {"name": "Another"},
        "/api/site/create": {"name": "Another"},
        "/v1/events": event,
        "/api/event": event,
        "/event": event,
        "/v1/events:batch": {"events": [event]},
        "/api/events/batch": [event],
        "/api/v1/events": [{"userId": "documented-user", "eventName": "signup"}],
        "/api/events": {
            "site_id": site["site_id"],
            "type": "pageview",
            "page": "/documented",
            "session_id": "s1",
        },
    }
    # Query parameters a valid request needs besides the site.
    queries: dict[str, dict[str, str]] = {
        "/api/v1/metrics": {"event": "pageview", "interval": "daily"},
        "/v1/sites/{site_id}/users/{user_id}/timeline": {"date_range.period": "7d"},
    }
    answered: dict[str, int] = {}
    for template, item in document["paths"].items():
        for method, operation in item.items():
            async with http.post(
                "/v1/sites/{}/keys".format(site["site_id"]), json={}, headers=admin
            ) as response:
                spare_key = (await response.json())["key"]["key_id"]
            site_id = site["site_id"]
            if method == "delete" and template == "/v1/sites/{site_id}":
                # deleting the suite's site would leave the rest nothing to ask about
                async with http.post("/v1/sites", json={"name": "Deleted"}, headers=admin) as response:
                    site_id = (await response.json())["site_id"]
            # A goal and a funnel of their own, for the operations that read or change one.
            async with http.post(
                "/v1/sites/{}/goals".format(site["site_id"]),
                json={"goal": {"event_name": f"e{len(answered)}-{method}"}},
                headers=admin,
            ) as response:
                goal_id = (await response.json())["goal"]["goal_id"]
            async with http.post(
                "/v1/sites/{}/funnels".format(site["site_id"]),
                json={"name": "f", "steps": [{"event_name": "a"}, {"event_name": "b"}]},
                headers=admin,
            ) as response:
                funnel_id = (await response.json())["funnel"]["funnel_id"]
            path = (
                template.replace("{site_id}", site_id)
                .replace("{key_id}", spare_key)
                .replace("{goal_id}", goal_id)
                .replace("{funnel_id}", funnel_id)
                .replace("{user_id}", "documented-user")
            )
            assert "{" not in path, f"no value for a parameter of {template}"
            query = (
                {"site_id": site["site_id"]}
                if "site_id" in {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
                else {}
            )
            kwargs: dict[str, Any] = {"params": query | queries.get(template, {}), "headers": admin}
            if "requestBody" in operation:
                body = bodies.get(template, {})
                request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
                _validator(document, request_schema).validate(body)
                kwargs["json"] = body
            async with http.request(method.upper(), path, **kwargs) as response:
                status = response.status
                documented = operation["responses"].get(str(status), {}).get("content", {})
                kind = next(iter(documented), "application/json")
                if status == 200 and kind == "*/*":
                    # A raw body (an export, a bare number): whatever the method sends, not JSON.
                    await response.read()
                    answered[f"{method.upper()} {template}"] = status
                    continue
                assert response.content_type == kind, (template, status)
                if kind == "text/event-stream":
                    # A stream never ends: its first event is what is documented.
                    line = b""
                    while not line.startswith(b"data:"):
                        line = await response.content.readline()
                    payload = json.loads(line.removeprefix(b"data:"))
                else:
                    payload = await response.json()
            # Routed to its service: never the edge's "no such method" answer.
            assert not str(payload.get("message", "") if isinstance(payload, dict) else "").startswith(
                "Could not resolve"
            ), (method, template, payload)
            errors = sorted(
                _validator(document, _response_schema(document, operation, status)).iter_errors(payload),
                key=str,
            )
            assert not errors, (method, template, status, payload, [e.message for e in errors])
            answered[f"{method.upper()} {template}"] = status
    # The calls above that should succeed did: the document and the edge agree on what a good
    # request is, not only on error shapes.
    good = [
        name
        for name in answered
        if name.startswith(("POST /v1/events", "POST /api/event", "POST /api/v1/events", "GET /"))
    ]
    assert {name: answered[name] for name in good if answered[name] != 200} == {}
    assert answered["POST /v1/sites"] == 200 and answered["POST /v1/keys/{key_id}:revoke"] == 200, answered
