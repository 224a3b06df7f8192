"""The OpenAPI document against the descriptor sets it is generated from."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from analytics_edge import openapi

Json = dict[str, Any]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations(doc: Json) -> list[tuple[str, str, Json]]:
    return [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def resolve(doc: Json, schema: Json) -> Json:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].removeprefix("#/components/schemas/")]
    return schema


def body_schema(doc: Json, path: str, method: str = "post") -> Json:
    schema: Json = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return schema


def component(doc: Json, name: str) -> Json:
    schema: Json = doc["components"]["schemas"][name]
    return schema


def params(doc: Json, path: str, method: str, where: str) -> list[Json]:
    return [p for p in doc["paths"][path][method].get("parameters", []) if p["in"] == where]


def http_bindings(files: descriptor_pb2.FileDescriptorSet) -> Counter[tuple[str, str]]:
    """(template, method) of every http rule and additional binding, read straight from the descriptors."""
    found: Counter[tuple[str, str]] = Counter()
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    if kind == "custom":
                        found[binding.custom.path, binding.custom.kind.lower()] += 1
                    else:
                        found[getattr(binding, kind), kind] += 1
    return found


@pytest.mark.parametrize("name", ["real_doc", "demo_doc"])
def test_the_document_is_valid_openapi_3_1(name: str, request: pytest.FixtureRequest) -> None:
    doc = request.getfixturevalue(name)
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_every_http_rule_of_the_descriptor_set_is_one_operation(
    real_set: descriptor_pb2.FileDescriptorSet, real_doc: Json
) -> None:
    expected = http_bindings(real_set)
    # The project's templates have no `=pattern` variables, so each OpenAPI path is its template.
    assert Counter((path, method) for path, method, _ in operations(real_doc)) == expected
    assert ("/v1/keys/{key_id}:revoke", "post") in expected


def test_operation_ids_are_unique_and_tagged_by_service(real_doc: Json) -> None:
    ids = [op["operationId"] for _, _, op in operations(real_doc)]
    assert len(ids) == len(set(ids))
    assert real_doc["paths"]["/v1/events"]["post"]["operationId"] == "IngestService.Track"
    assert real_doc["paths"]["/api/event"]["post"]["operationId"] == "IngestService.Track_1"
    assert real_doc["paths"]["/event"]["post"]["operationId"] == "IngestService.Track_2"
    tags = [t["name"] for t in real_doc["tags"]]
    # One tag per service, each once (the other services' files add theirs).
    assert len(tags) == len(set(tags))
    assert {"AuthService", "IngestService", "QueryService", "ProcessorService"} <= set(tags)
    assert {
        "PeopleService",
        "PrivacyService",
        "ProductService",
        "LiveService",
        "SeedEventService",
        "EventApiService",
    } <= set(tags)
    for _, _, op in operations(real_doc):
        assert op["tags"] == [op["operationId"].split(".")[0]]


def test_path_parameters_are_declared_exactly_once_and_required(real_doc: Json, demo_doc: Json) -> None:
    for doc in (real_doc, demo_doc):
        for path, method, _ in operations(doc):
            in_template = re.findall(r"\{([^}]+)\}", path)
            declared = params(doc, path, method, "path")
            assert Counter(p["name"] for p in declared) == Counter(in_template), (path, method)
            assert all(p["required"] is True for p in declared)
    site_id = params(real_doc, "/v1/sites/{site_id}/stats/daily", "get", "path")
    assert site_id == [
        {
            "name": "site_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Site UUID.",
        }
    ]


def test_query_parameters_of_get_stats_are_the_request_fields(real_doc: Json) -> None:
    query = params(real_doc, "/api/stats", "get", "query")
    assert [(p["name"], p["schema"]["type"]) for p in query] == [
        ("site_id", "string"),
        ("date", "string"),
        ("limit", "integer"),
    ]
    assert query[2]["schema"]["minimum"] == 0
    assert "required" not in query[0]
    assert query[1]["description"] == "UTC day as YYYY-MM-DD; today (UTC) when empty."
    # Where the path carries site_id, it is no query parameter as well.
    daily = params(real_doc, "/v1/sites/{site_id}/stats/daily", "get", "query")
    assert [p["name"] for p in daily] == ["date", "limit"]
    # A body "*" leaves nothing for the query; a rule without a body and an empty request has none.
    assert "parameters" not in real_doc["paths"]["/v1/events:batch"]["post"]
    assert "parameters" not in real_doc["paths"]["/health"]["get"]


def test_request_bodies_follow_the_body_field(real_doc: Json) -> None:
    whole = resolve(real_doc, body_schema(real_doc, "/v1/events:batch"))
    assert whole["type"] == "object"
    assert whole["properties"]["events"]["type"] == "array"
    assert whole["properties"]["events"]["items"] == {"$ref": "#/components/schemas/analytics.v1.Event"}
    bare = body_schema(real_doc, "/api/events/batch")
    assert bare["type"] == "array"
    assert bare["items"] == {"$ref": "#/components/schemas/analytics.v1.Event"}
    event = body_schema(real_doc, "/api/event")
    assert event["$ref"] == "#/components/schemas/analytics.v1.Event"
    # body "*" with a path variable: the body is the message without the field the path carries.
    keys = body_schema(real_doc, "/v1/sites/{site_id}/keys")
    assert "$ref" not in keys
    assert set(keys["properties"]) == {
        "scopes",
        "rate_limit_per_second",
        "rate_limit_burst",
        "allowed_origins",
    }
    assert "requestBody" not in real_doc["paths"]["/api/stats"]["get"]


def test_rpcs_without_an_http_rule_are_left_out(real_doc: Json) -> None:
    ids = {op["operationId"].split("_")[0] for _, _, op in operations(real_doc)}
    assert {
        "AuthService.Authenticate",
        "AuthService.GetVisitorSalts",
        "AuthService.GetIdentitySecret",
        "IngestService.TrackStream",
    }.isdisjoint(ids)
    assert "AuthService.CreateSite" in ids
    schemas = real_doc["components"]["schemas"]
    assert "analytics.v1.AuthenticateRequest" not in schemas
    assert "analytics.v1.EnrichedEvent" not in schemas
    assert "analytics.v1.Event" in schemas


def test_descriptions_come_from_the_proto_comments(real_doc: Json) -> None:
    event = component(real_doc, "analytics.v1.Event")
    assert event["description"].startswith("Event is what a website or an internal service reports")
    assert (
        event["properties"]["user_id"]["description"]
        == "Identifier of a signed-in user, as the site knows them."
    )
    track = real_doc["paths"]["/v1/events"]["post"]
    assert track["summary"] == "Track accepts one event."
    ok = real_doc["paths"]["/v1/events"]["post"]["responses"]["200"]
    assert ok["description"] == "TrackResponse confirms that the event is durably queued."
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/analytics.v1.TrackResponse"
    }


def test_the_tags_say_which_operations_need_the_admin_token(real_doc: Json) -> None:
    tags = {t["name"]: t["description"] for t in real_doc["tags"]}
    assert tags["AuthService"].startswith("AuthService owns sites and API keys.")
    admin_only = "Admin token required: CreateSite, CreateApiKey, RevokeApiKey, DeleteSite."
    assert tags["AuthService"].endswith(admin_only)
    assert tags["ProcessorService"].endswith("Admin token required by every operation.")
    assert tags["QueryService"].endswith("No operation requires the admin token.")
    assert tags["IngestService"].endswith("No operation requires the admin token.")
    assert tags["PeopleService"].endswith("No operation requires the admin token.")
    assert tags["PrivacyService"].endswith("No operation requires the admin token.")


def test_enums_list_their_value_names_and_accept_numbers(real_doc: Json) -> None:
    scope = component(real_doc, "analytics.v1.Scope")
    names, numbers = scope["anyOf"]
    assert names == {
        "type": "string",
        "enum": ["SCOPE_UNSPECIFIED", "SCOPE_INGEST", "SCOPE_READ", "SCOPE_ADMIN"],
    }
    assert numbers["type"] == "integer"
    assert "- `SCOPE_READ` (2) Read statistics." in scope["description"]
    scopes = component(real_doc, "analytics.v1.ApiKey")["properties"]["scopes"]
    assert scopes["items"] == {"$ref": "#/components/schemas/analytics.v1.Scope"}


def test_scalars_use_the_transcoders_json_mapping(real_doc: Json) -> None:
    dead_letter = component(real_doc, "analytics.v1.DeadLetter")["properties"]
    assert dead_letter["sequence"]["type"] == ["string", "integer"]
    assert dead_letter["sequence"]["pattern"] == "^[0-9]+$"
    assert dead_letter["size"] == {
        "type": "integer",
        "format": "uint32",
        "minimum": 0,
        "description": "Size of the message body in bytes.",
    }
    assert dead_letter["time"]["type"] == "string"
    assert dead_letter["time"]["format"] == "date-time"
    assert dead_letter["reason"]["$ref"] == "#/components/schemas/analytics.v1.DeadLetterReason"
    replay = component(real_doc, "analytics.v1.ReplayDeadLettersRequest")["properties"]
    assert replay["sequences"]["items"]["type"] == ["string", "integer"]
    assert replay["all"]["type"] == "boolean"
    event = component(real_doc, "analytics.v1.Event")["properties"]
    assert event["properties"]["type"] == "object"
    assert event["properties"]["additionalProperties"] == {"type": "string"}


def test_errors_are_google_rpc_status_from_the_descriptor_set(real_doc: Json) -> None:
    responses = real_doc["components"]["responses"]
    status_ref = {"$ref": "#/components/schemas/google.rpc.Status"}
    for response in responses.values():
        assert response["content"]["application/json"]["schema"] == status_ref
    assert responses["ResourceExhausted"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    for path, method, op in operations(real_doc):
        codes = {code for code in op["responses"] if code != "200"}
        expected = {"400", "401", "403", "404", "409", "429", "500", "501", "503", "504", "default"}
        assert codes == expected | ({"413"} if "requestBody" in op else set()), (path, method)
        for code in codes:
            assert op["responses"][code]["$ref"].removeprefix("#/components/responses/") in responses
    assert real_doc["paths"]["/api/event"]["post"]["responses"]["429"] == {
        "$ref": "#/components/responses/ResourceExhausted"
    }
    status = component(real_doc, "google.rpc.Status")
    assert status["properties"]["code"]["type"] == "integer"
    assert status["properties"]["message"]["type"] == "string"
    detail = status["properties"]["details"]["items"]
    assert detail["required"] == ["@type"]
    assert "@type" in detail["properties"]
    assert "`google.rpc.BadRequest`" in status["description"]
    violation = component(real_doc, "google.rpc.BadRequest.FieldViolation")["properties"]
    assert {"field", "description"} <= set(violation)


def test_api_keys_and_bearer_tokens_are_alternatives_everywhere(real_doc: Json) -> None:
    schemes = real_doc["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A site's API key.",
    }
    assert schemes["BearerAuth"]["type"] == "http"
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert real_doc["security"] == [{"ApiKeyHeader": []}, {"BearerAuth": []}]
    assert real_doc["info"] == {
        "title": openapi.DEFAULT_TITLE,
        "version": "1.2.3",
        "description": real_doc["info"]["description"],
    }
    assert "servers" not in real_doc


def test_custom_head_bindings_and_field_paths_with_patterns(demo_doc: Json) -> None:
    item = demo_doc["paths"]["/v1/{shelf.name}"]
    assert set(item) == {"head", "get"}
    head = item["head"]
    assert head["operationId"] == "ShelfService.CheckShelf"
    assert "content" not in head["responses"]["200"]
    (name,) = params(demo_doc, "/v1/{shelf.name}", "head", "path")
    assert name["name"] == "shelf.name"
    assert name["required"] is True
    assert name["description"] == "shelves/{id}\n\nMatches `shelves/*`, slashes included."
    # A path variable of a nested field leaves the message's other fields to the query.
    query = [p["name"] for p in params(demo_doc, "/v1/{shelf.name}", "get", "query")]
    assert query == ["shelf.revision", "colors", "since", "limit", "tree.label"]
    lookup = [p["name"] for p in params(demo_doc, "/v1/shelves:lookup", "get", "query")]
    assert lookup == ["shelf.name", "shelf.revision", "colors", "since", "limit", "tree.label"]
    archive = params(demo_doc, "/v1/archive/{_wildcard1}/{shelf.name}", "get", "path")
    assert [p["name"] for p in archive] == ["_wildcard1", "shelf.name"]
    assert demo_doc["servers"] == [{"url": "http://127.0.0.1:8080"}]


def test_query_parameters_map_repeated_enums_timestamps_and_int64(demo_doc: Json) -> None:
    query = {p["name"]: p["schema"] for p in params(demo_doc, "/v1/shelves:lookup", "get", "query")}
    assert query["colors"] == {"type": "array", "items": {"$ref": "#/components/schemas/demo.v1.Color"}}
    assert query["since"] == {"type": "string", "format": "date-time"}
    assert query["limit"]["type"] == ["string", "integer"]
    assert query["limit"]["format"] == "int64"
    assert query["shelf.revision"]["minimum"] == 0


def test_a_repeated_body_field_is_a_json_array(demo_doc: Json) -> None:
    path = "/v1/shelves/{shelf_id}/books:add"
    body = body_schema(demo_doc, path)
    assert body["type"] == "array"
    assert body["items"] == {"$ref": "#/components/schemas/demo.v1.Book"}
    assert [p["name"] for p in params(demo_doc, path, "post", "query")] == ["dry_run"]
    assert [p["name"] for p in params(demo_doc, path, "post", "path")] == ["shelf_id"]


def test_maps_well_known_types_and_scalars(demo_doc: Json) -> None:
    shelf = component(demo_doc, "demo.v1.Shelf")["properties"]
    assert shelf["counts"]["type"] == "object"
    assert shelf["counts"]["additionalProperties"]["type"] == ["string", "integer"]
    assert shelf["by_level"]["additionalProperties"] == {"$ref": "#/components/schemas/demo.v1.Shelf.Inner"}
    assert shelf["created"]["format"] == "date-time"
    assert shelf["ttl"]["type"] == "string"
    assert shelf["ttl"]["description"].startswith("Time to live.\n\nSeconds with an `s` suffix")
    assert shelf["attributes"] == {"type": "object", "description": "Free-form attributes."}
    assert shelf["extra"] == {"description": "Any value.\n\nAny JSON value."}
    assert shelf["list"]["type"] == "array"
    assert shelf["nickname"]["type"] == ["string", "null"]
    assert shelf["size"]["type"] == ["string", "integer", "null"]
    assert shelf["blob"]["contentEncoding"] == "base64"
    assert shelf["big"]["type"] == ["string", "integer"]
    assert shelf["ratio"]["type"] == "number"
    assert shelf["delta"]["format"] == "int32"
    assert shelf["open"]["type"] == "boolean"
    assert "At most one of `person`, `team` is set." in component(demo_doc, "demo.v1.Shelf")["description"]
    assert "`open`" not in component(demo_doc, "demo.v1.Shelf")["description"]
    # google.protobuf.Empty answers `{}`; well-known types never become components.
    head_ok = demo_doc["paths"]["/v1/{shelf.name}"]["head"]["responses"]["200"]
    assert head_ok["description"]
    assert not [name for name in demo_doc["components"]["schemas"] if name.startswith("google.protobuf.")]


def test_nested_and_recursive_messages_are_components(demo_doc: Json) -> None:
    schemas = demo_doc["components"]["schemas"]
    inner = schemas["demo.v1.Shelf.Inner"]["properties"]
    assert inner["level"]["$ref"] == "#/components/schemas/demo.v1.Shelf.Inner.Level"
    assert schemas["demo.v1.Shelf.Inner.Level"]["anyOf"][0]["enum"] == ["LEVEL_UNSPECIFIED", "LEVEL_HIGH"]
    node = schemas["demo.v1.Node"]["properties"]
    assert node["children"]["items"] == {"$ref": "#/components/schemas/demo.v1.Node"}
    assert node["parent"]["$ref"] == "#/components/schemas/demo.v1.Node"
    assert "demo.v1.Internal" not in str(demo_doc)
    assert [op["operationId"] for _, _, op in operations(demo_doc) if "Internal" in op["operationId"]] == []


def test_the_admin_note_and_comments_are_kept_as_data(demo_doc: Json) -> None:
    (tag,) = demo_doc["tags"]
    assert tag["description"] == (
        'ShelfService keeps shelves. <script>alert("shelf")</script>\n\nAdmin token required: CheckShelf.'
    )


def test_a_descriptor_set_without_google_rpc_status_is_refused(
    protoc: Callable[..., descriptor_pb2.FileDescriptorSet], demo_proto: str
) -> None:
    with pytest.raises(ValueError, match=r"lacks google\.rpc\.Status"):
        openapi.build_openapi(protoc(demo_proto), version="1")


def _add_binding(files: descriptor_pb2.FileDescriptorSet, method_name: str, **pattern: Any) -> None:
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if method.name == method_name:
                    method.options.Extensions[annotations_pb2.http].additional_bindings.add(**pattern)
                    return
    raise AssertionError(method_name)


def test_bindings_that_openapi_cannot_hold_are_refused(demo_set: descriptor_pb2.FileDescriptorSet) -> None:
    twice = descriptor_pb2.FileDescriptorSet()
    twice.CopyFrom(demo_set)
    _add_binding(twice, "AddBooks", get="/v1/shelves:lookup")
    with pytest.raises(ValueError, match=r"GET /v1/shelves:lookup is bound to two RPCs"):
        openapi.build_openapi(twice, version="1")
    custom = descriptor_pb2.FileDescriptorSet()
    custom.CopyFrom(demo_set)
    _add_binding(custom, "AddBooks", custom={"kind": "LIST", "path": "/v1/shelves"})
    with pytest.raises(ValueError, match="LIST"):
        openapi.build_openapi(custom, version="1")
    clash = descriptor_pb2.FileDescriptorSet()
    clash.CopyFrom(demo_set)
    (demo,) = [file for file in clash.file if file.name == "demo/v1/demo.proto"]
    (add_books,) = [method for method in demo.service[0].method if method.name == "AddBooks"]
    add_books.name = "GetShelf_1"  # its operation id is that of GetShelf's first additional binding
    with pytest.raises(ValueError, match=r"two operations would be named ShelfService\.GetShelf_1"):
        openapi.build_openapi(clash, version="1")
    bad_path = descriptor_pb2.FileDescriptorSet()
    bad_path.CopyFrom(demo_set)
    _add_binding(bad_path, "AddBooks", post="/v1/{books}", body="*")
    with pytest.raises(ValueError, match="must bind a singular scalar field"):
        openapi.build_openapi(bad_path, version="1")


def test_load_descriptor_set_refuses_what_is_not_one() -> None:
    with pytest.raises(ValueError, match="not a FileDescriptorSet"):
        openapi.load_descriptor_set(b"\xff\xff")
