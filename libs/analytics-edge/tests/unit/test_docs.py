"""The HTML documentation page rendered from the OpenAPI document."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

from analytics_edge import docs

Json = dict[str, Any]
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
VOID = {"meta", "br", "hr", "img", "input", "link"}


class Page(HTMLParser):
    """Ids, internal links, tags and whether every element is closed where it was opened."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.open: list[str] = []
        self.misnested: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in VOID:
            self.open.append(tag)
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids.append(value)
            if name in ("href", "src") and value is not None:
                self.links.append(value)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.misnested.append(tag)


def test_the_page_has_every_operation_and_schema(real_doc: Json) -> None:
    page = docs.render_docs(real_doc)
    for path, item in real_doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                assert f"<code>{html.escape(path)}</code>" in page
                assert f'id="op-{op["operationId"]}"' in page
                assert html.escape(op["description"]) in page
    for name in real_doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    # Parameters, a request body's field table, the response and the error shape are all shown.
    assert "<td><code>limit</code></td><td>query</td><td>integer (uint32)</td><td>no</td>" in page
    assert "<td><code>event_type</code></td><td>string</td>" in page
    assert '<a href="#schema-analytics.v1.TrackResponse">analytics.v1.TrackResponse</a>' in page
    assert '<td>429</td><td><div class="d">RESOURCE_EXHAUSTED' in page
    assert "type.googleapis.com/google.rpc.BadRequest" in page
    assert "array of <a href" in page


def test_the_page_is_self_contained_and_well_formed(real_doc: Json) -> None:
    page = docs.render_docs(real_doc)
    parsed = Page(page)
    assert parsed.misnested == []
    assert parsed.open == []
    assert len(parsed.ids) == len(set(parsed.ids))
    assert parsed.links
    for link in parsed.links:
        assert link.startswith("#"), link
        assert link[1:] in parsed.ids, link
    assert parsed.tags.isdisjoint({"script", "link", "img", "iframe", "object"})
    assert not re.search(r"@import|url\(", page)


def test_everything_from_the_document_is_escaped(demo_doc: Json) -> None:
    page = docs.render_docs(demo_doc)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;shelf&quot;)&lt;/script&gt;" in page
    assert "<b>" not in page
    assert "Red &lt;b&gt;bold&lt;/b&gt;." in page
    assert "script" not in Page(page).tags
    # Backticks become <code>, and only after escaping.
    assert "Matches <code>shelves/*</code>, slashes included." in page


def test_a_custom_method_and_a_bodyless_answer_render(demo_doc: Json) -> None:
    page = docs.render_docs(demo_doc)
    assert '<h3><span class="m">head</span> <code>/v1/{shelf.name}</code></h3>' in page
    assert "<p>No body.</p>" in page
    assert "map of string to string | integer (int64)" in page
    assert "string: <code>LEVEL_UNSPECIFIED</code>, <code>LEVEL_HIGH</code> | integer (int32)" in page
