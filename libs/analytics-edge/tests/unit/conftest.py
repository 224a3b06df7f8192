"""Descriptor sets for the edge tests: the project's own, and a synthetic one built with protoc."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.api
import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

from analytics_edge import openapi

# Everything the project's protos do not use yet: a custom HEAD binding, field paths with a pattern,
# an anonymous wildcard, body:"field" on a repeated field, maps, well-known types, nested and
# recursive messages, oneofs, an RPC without a rule, and a comment that tries to inject a script.
DEMO_PROTO = """
syntax = "proto3";

package demo.v1;

import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

// ShelfService keeps shelves. <script>alert("shelf")</script>
service ShelfService {
  // CheckShelf tells whether a shelf exists. Needs the admin token.
  rpc CheckShelf(GetShelfRequest) returns (google.protobuf.Empty) {
    option (google.api.http) = {
      custom: {kind: "HEAD", path: "/v1/{shelf.name=shelves/*}"}
    };
  }
  // GetShelf returns a shelf.
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = {
      get: "/v1/{shelf.name=shelves/*}"
      additional_bindings {get: "/v1/shelves:lookup"}
      additional_bindings {get: "/v1/archive/*/{shelf.name=shelves/*}"}
    };
  }
  // AddBooks puts books on a shelf.
  rpc AddBooks(AddBooksRequest) returns (AddBooksResponse) {
    option (google.api.http) = {
      post: "/v1/shelves/{shelf_id}/books:add"
      body: "books"
    };
  }
  // Internal is for other services only.
  rpc Internal(GetShelfRequest) returns (Shelf);
}

// Color of a book.
enum Color {
  // Not set.
  COLOR_UNSPECIFIED = 0;
  // Red <b>bold</b>.
  COLOR_RED = 1;
}

// GetShelfRequest names a shelf.
message GetShelfRequest {
  // The shelf.
  ShelfRef shelf = 1;
  // Wanted colors.
  repeated Color colors = 2;
  // Oldest book time.
  google.protobuf.Timestamp since = 3;
  // Page size.
  int64 limit = 4;
  // Filters: a map, which no query parameter can carry.
  map<string, string> filters = 5;
  // A recursive message: its query parameters must end.
  Node tree = 6;
}

// ShelfRef points at a shelf.
message ShelfRef {
  // shelves/{id}
  string name = 1;
  // Revision.
  uint64 revision = 2;
}

// Node is one node of a tree.
message Node {
  // Label.
  string label = 1;
  // Children.
  repeated Node children = 2;
  // Parent.
  Node parent = 3;
}

// Shelf is a shelf of books.
message Shelf {
  // Inner is a nested message.
  message Inner {
    // Level is a nested enum.
    enum Level {
      // Not set.
      LEVEL_UNSPECIFIED = 0;
      // High.
      LEVEL_HIGH = 1;
    }
    // Color.
    Color color = 1;
    // Level.
    Level level = 2;
  }
  // Name.
  string name = 1;
  // Counts by key.
  map<string, int64> counts = 2;
  // Creation time.
  google.protobuf.Timestamp created = 3;
  // Time to live.
  google.protobuf.Duration ttl = 4;
  // Free-form attributes.
  google.protobuf.Struct attributes = 5;
  // Any value.
  google.protobuf.Value extra = 6;
  // Any list.
  google.protobuf.ListValue list = 7;
  // Nickname, null when unset.
  google.protobuf.StringValue nickname = 8;
  // Size, null when unset.
  google.protobuf.Int64Value size = 9;
  // Inner.
  Inner inner = 10;
  // Tree.
  Node tree = 11;
  // Blob.
  bytes blob = 12;
  // Big.
  fixed64 big = 13;
  // Ratio.
  double ratio = 14;
  // Delta.
  sint32 delta = 15;
  // Open, with presence.
  optional bool open = 16;
  // Owner.
  oneof owner {
    // A person.
    string person = 17;
    // A team.
    string team = 18;
  }
  // Inner by level.
  map<int32, Inner> by_level = 19;
}

// Book is one book.
message Book {
  // Title.
  string title = 1;
}

// AddBooksRequest carries books.
message AddBooksRequest {
  // Shelf id.
  string shelf_id = 1;
  // The books; over HTTP the body is a JSON array of them.
  repeated Book books = 2;
  // Whether to only check.
  bool dry_run = 3;
}

// AddBooksResponse says how many books were added.
message AddBooksResponse {
  // Books added.
  uint32 added = 1;
}
"""

Json = dict[str, Any]


def compile_protos(directory: Path, source: str, *extra: str) -> descriptor_pb2.FileDescriptorSet:
    """Runs protoc on `source` (and any `extra` includable files) the way scripts/proto_codegen.sh does."""
    (directory / "demo" / "v1").mkdir(parents=True, exist_ok=True)
    (directory / "demo" / "v1" / "demo.proto").write_text(source)
    common = os.path.dirname(os.path.dirname(google.api.__path__[0]))
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = directory / "demo.binpb"
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(directory), "-I", common, "-I", wkt]
    command += ["--include_imports", "--include_source_info", f"--descriptor_set_out={out}"]
    subprocess.run([*command, "demo/v1/demo.proto", *extra], check=True, capture_output=True)
    return openapi.load_descriptor_set(out.read_bytes())


@pytest.fixture
def demo_proto() -> str:
    return DEMO_PROTO


@pytest.fixture
def protoc(tmp_path: Path) -> Callable[..., descriptor_pb2.FileDescriptorSet]:
    """compile_protos into a fresh directory: call it with the source and the extra files."""
    return functools.partial(compile_protos, tmp_path)


@pytest.fixture(scope="session")
def real_set() -> descriptor_pb2.FileDescriptorSet:
    return openapi.load_descriptor_set(openapi.default_descriptor_set())


@pytest.fixture(scope="session")
def real_doc(real_set: descriptor_pb2.FileDescriptorSet) -> Json:
    return openapi.build_openapi(real_set, version="1.2.3")


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorSet:
    directory = tmp_path_factory.mktemp("demo")
    return compile_protos(directory, DEMO_PROTO, "google/rpc/status.proto", "google/rpc/error_details.proto")


@pytest.fixture(scope="session")
def demo_doc(demo_set: descriptor_pb2.FileDescriptorSet) -> Json:
    return openapi.build_openapi(demo_set, version="0.0.1", title="Demo", servers=["http://127.0.0.1:8080"])
