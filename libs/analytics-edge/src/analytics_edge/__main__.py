"""Command line: `python -m analytics_edge <subcommand>` writes what the HTTP edge derives from protos."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from analytics_edge import docs, launcher, openapi

# Subcommand → the function that adds its arguments and sets `run` (args → exit status) as a default;
# its docstring is the subcommand's help. A new subcommand is one more entry, its code in its own module.
SUBCOMMANDS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "openapi": openapi.add_cli,
    "docs": docs.add_cli,
    "envoy": launcher.add_render_cli,
    "run": launcher.add_run_cli,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics_edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, add_cli in SUBCOMMANDS.items():
        help_text = (add_cli.__doc__ or "").strip()
        add_cli(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except (OSError, ValueError) as error:
        parser.exit(1, f"{parser.prog} {args.command}: {error}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
