"""`python -m analytics_edge openapi|docs`: the files they write and how they fail."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analytics_edge import docs, openapi
from analytics_edge.__main__ import SUBCOMMANDS, main

Json = dict[str, Any]


def test_openapi_then_docs_write_the_document_and_its_page(tmp_path: Path, real_doc: Json) -> None:
    spec, page = tmp_path / "edge" / "openapi.json", tmp_path / "edge" / "docs.html"
    assert main(["openapi", "--out", str(spec), "--title", "T", "--server", "https://a.example"]) == 0
    written = json.loads(spec.read_text(encoding="utf-8"))
    assert written["info"]["title"] == "T"
    assert written["info"]["version"] == importlib.metadata.version("analytics-edge")
    assert written["servers"] == [{"url": "https://a.example"}]
    assert written["paths"] == real_doc["paths"]
    assert written["components"] == real_doc["components"]
    assert main(["docs", "--openapi", str(spec), "--out", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == docs.render_docs(written)


def test_an_explicit_descriptor_set_is_read(tmp_path: Path) -> None:
    descriptor = tmp_path / "set.binpb"
    descriptor.write_bytes(openapi.default_descriptor_set())
    spec = tmp_path / "openapi.json"
    assert main(["openapi", "--descriptor", str(descriptor), "--out", str(spec), "--api-version", "9"]) == 0
    assert json.loads(spec.read_text(encoding="utf-8"))["info"]["version"] == "9"


def test_the_defaults_write_under_build_edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["openapi"]) == 0
    assert main(["docs"]) == 0
    assert (tmp_path / "build" / "edge" / "openapi.json").is_file()
    assert (tmp_path / "build" / "edge" / "docs.html").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["openapi", "--descriptor", "missing.binpb"], "No such file"),
        (["openapi", "--descriptor", "garbage.binpb"], "not a FileDescriptorSet"),
        (["docs", "--openapi", "missing.json"], "No such file"),
    ],
)
def test_bad_input_fails_with_a_message(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.binpb").write_bytes(b"\xff\xff")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_subcommands_are_one_dict_and_the_module_runs(tmp_path: Path) -> None:
    assert list(SUBCOMMANDS) == ["openapi", "docs", "envoy", "run"]
    out = tmp_path / "o.json"
    command = [sys.executable, "-m", "analytics_edge", "openapi", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout == f"openapi: 22 paths written to {out}\n"
    assert json.loads(out.read_text(encoding="utf-8"))["openapi"] == "3.1.0"
