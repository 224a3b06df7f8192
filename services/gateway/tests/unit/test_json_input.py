"""Proto3 JSON input through compiled field tables, on a message with every kind of field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, timestamp_pb2

from gateway_service.json_input import JsonInputError, JsonParser

F = descriptor_pb2.FieldDescriptorProto


def _build_kitchen_sink() -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="sink.proto", package="t", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="label", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="label")
    enum = file.enum_type.add(name="Color")
    enum.value.add(name="COLOR_UNSPECIFIED", number=0)
    enum.value.add(name="RED", number=1)
    sink = file.message_type.add(name="Sink")
    sink.oneof_decl.add(name="choice")
    entry = sink.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".t.Inner", label=F.LABEL_OPTIONAL)
    fields = [
        ("big", F.TYPE_INT64, None, F.LABEL_OPTIONAL),
        ("ratio", F.TYPE_FLOAT, None, F.LABEL_OPTIONAL),
        ("flag", F.TYPE_BOOL, None, F.LABEL_OPTIONAL),
        ("blob", F.TYPE_BYTES, None, F.LABEL_OPTIONAL),
        ("color", F.TYPE_ENUM, ".t.Color", F.LABEL_OPTIONAL),
        ("tags", F.TYPE_STRING, None, F.LABEL_REPEATED),
        ("inner", F.TYPE_MESSAGE, ".t.Inner", F.LABEL_OPTIONAL),
        ("inners", F.TYPE_MESSAGE, ".t.Inner", F.LABEL_REPEATED),
        ("at", F.TYPE_MESSAGE, ".google.protobuf.Timestamp", F.LABEL_OPTIONAL),
        ("counts", F.TYPE_MESSAGE, ".t.Sink.CountsEntry", F.LABEL_REPEATED),
        ("left", F.TYPE_STRING, None, F.LABEL_OPTIONAL),
        ("right", F.TYPE_STRING, None, F.LABEL_OPTIONAL),
        ("self_ref", F.TYPE_MESSAGE, ".t.Sink", F.LABEL_OPTIONAL),
    ]
    for number, (name, kind, type_name, label) in enumerate(fields, start=1):
        added = sink.field.add(name=name, number=number, type=kind, label=label)
        added.json_name = "".join(part if i == 0 else part.title() for i, part in enumerate(name.split("_")))
        if type_name:
            added.type_name = type_name
        if name in ("left", "right"):
            added.oneof_index = 0
    pool.Add(file)
    return pool, message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Sink"))


POOL, SINK = _build_kitchen_sink()


def parse(value: Any, *, strict: bool = False) -> Any:
    message = SINK()
    JsonParser(POOL, ignore_unknown_fields=not strict).parse(value, message)
    return message


def test_every_kind_of_field() -> None:
    message = parse(
        {
            "big": "9007199254740993",
            "ratio": "NaN",
            "flag": True,
            "blob": "AAE",
            "color": "RED",
            "tags": ["a", "b"],
            "inner": {},
            "inners": [{"label": "x"}],
            "at": "2024-05-01T10:00:00Z",
            "counts": {"7": {"label": "seven"}},
            "left": "l",
            "selfRef": {"selfRef": {"big": 1}},
        }
    )
    assert message.big == 9007199254740993
    assert math.isnan(message.ratio)
    assert (message.flag, message.blob, message.color) == (True, b"\x00\x01", 1)
    assert list(message.tags) == ["a", "b"]
    assert message.HasField("inner")
    assert message.inners[0].label == "x"
    assert message.at.seconds == 1714557600
    assert message.counts[7].label == "seven"
    assert message.self_ref.self_ref.big == 1
    # The same message through json_format, for parity.
    reference = SINK()
    json_format.ParseDict(json_format.MessageToDict(message), reference, descriptor_pool=POOL)
    assert reference == message


def test_null_means_default_and_enum_numbers_are_kept() -> None:
    message = parse({"big": None, "inner": None, "tags": None, "color": 7})
    assert not message.HasField("inner")
    assert message.color == 7


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"big": 1.5}, "big", "expected a 64-bit integer"),
        ({"big": True}, "big", "got a boolean"),
        ({"big": "1e3"}, "big", "expected a 64-bit integer"),
        ({"ratio": 1e39}, "ratio", "out of range"),
        ({"flag": "true"}, "flag", "expected true or false"),
        ({"blob": "!!"}, "blob", "base64"),
        ({"color": "BLUE"}, "color", "not a value of t.Color"),
        ({"tags": "a"}, "tags", "expected an array"),
        ({"tags": ["a", 1]}, "tags[1]", "expected a string"),
        ({"inner": []}, "inner", "expected an object"),
        ({"inners": [{"label": 1}]}, "inners[0].label", "expected a string"),
        ({"at": "yesterday"}, "at", "Failed to parse timestamp"),
        ({"counts": {"x": {}}}, "counts.x", "expected a 32-bit integer"),
        ({"counts": {"1": 2}}, "counts.1", "expected an object"),
        ({"left": "l", "right": "r"}, "right", "oneof 'choice'"),
        ({"self_ref": {"selfRef": {"flag": 1}}}, "self_ref.selfRef.flag", "expected true or false"),
    ],
)
def test_errors_name_the_field_path(value: Any, path: str, reason: str) -> None:
    with pytest.raises(JsonInputError) as info:
        parse(value)
    assert info.value.path == path
    assert reason in info.value.reason


def test_unknown_fields() -> None:
    assert parse({"nope": 1, "inner": {"nope": 2}}).HasField("inner")
    with pytest.raises(JsonInputError) as info:
        parse({"inner": {"nope": 2}}, strict=True)
    assert (info.value.path, info.value.reason) == ("inner.nope", "unknown field")
