"""Command line for dead letters: python -m processor_service.deadletters list | replay (--all | SEQ…).

Talks to the processor's ProcessorService. The address comes from --addr or ANALYTICS_PROCESSOR_ADDR,
the admin credential from --token or ANALYTICS_ADMIN_TOKEN.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import grpc
from google.protobuf import json_format

from analytics.v1 import processor_pb2, processor_pb2_grpc
from processor_service.settings import CliSettings


def _parser(defaults: CliSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m processor_service.deadletters", description=__doc__)
    parser.add_argument("--addr", default=defaults.processor_addr, help="processor gRPC host:port")
    parser.add_argument("--token", default=defaults.admin_token, help="admin credential")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print dead letters, one JSON object per line")
    listing.add_argument("--page-size", type=int, default=100)
    listing.add_argument("--limit", type=int, default=0, help="stop after this many (0: all)")
    replay = commands.add_parser("replay", help="publish dead letters to the events subject again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter present now")
    which.add_argument("sequences", nargs="*", type=int, default=[], metavar="SEQ")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(CliSettings.from_env()).parse_args(argv)
    if not args.token:
        print("an admin credential is needed: --token or ANALYTICS_ADMIN_TOKEN", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {args.token}"),)
    with grpc.insecure_channel(args.addr) as channel:
        stub = processor_pb2_grpc.ProcessorServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            if args.command == "list":
                return _list(stub, metadata, args.page_size, args.limit, args.timeout)
            reply = stub.ReplayDeadLetters(
                processor_pb2.ReplayDeadLettersRequest(sequences=args.sequences, all=args.all),
                metadata=metadata,
                timeout=args.timeout,
            )
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps({"replayed": reply.replayed, "not_found": list(reply.not_found)}))
    return 0


def _list(
    stub: object, metadata: tuple[tuple[str, str], ...], page_size: int, limit: int, timeout: float
) -> int:
    token = ""
    shown = 0
    while True:
        reply = stub.ListDeadLetters(  # type: ignore[attr-defined]
            processor_pb2.ListDeadLettersRequest(page_size=page_size, page_token=token),
            metadata=metadata,
            timeout=timeout,
        )
        for entry in reply.dead_letters:
            print(json.dumps(json_format.MessageToDict(entry, preserving_proto_field_name=True)))
            shown += 1
            if limit and shown >= limit:
                return 0
        token = reply.next_page_token
        if not token:
            return 0


if __name__ == "__main__":
    sys.exit(main())
