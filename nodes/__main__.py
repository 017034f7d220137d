"""`python -m nodes run <kind>`: one bridge node in the foreground, configured from the environment.

The nodes are the system under test and know nothing of the toolkit; the
embedded stack (`python -m stack up`) starts each of them this way.
"""
from __future__ import annotations

import argparse
import asyncio
import sys


def _cmd_run(args: argparse.Namespace) -> int:
    from nodes.config import Settings
    from nodes.kinds import node_class
    from nodes.service import configure_logging

    settings = Settings.from_env(args.kind)
    configure_logging(settings.node_id)
    node = node_class(args.kind)(settings)
    try:
        asyncio.run(node.serve())
    except ConnectionError as exc:
        print(f"{args.kind}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from nodes.kinds import NODE_KINDS

    parser = argparse.ArgumentParser(
        prog="python -m nodes",
        description="Run one bridge node (the system under test). The environment configures it: "
        "KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL (or POSTGRES_*), HTTP_HOST, HTTP_PORT, ... (nodes/config.py). "
        "To start all of them with a broker and a database, use `python -m stack up`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one node in the foreground, configured from the environment")
    p.add_argument("kind", choices=sorted(NODE_KINDS))
    p.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
