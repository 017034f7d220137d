"""`python -m stack up|down|status`: the embedded lab (broker, PostgreSQL, proxy server, nodes) on loopback."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def _say(msg: str) -> None:
    console.print(f"[dim]•[/dim] {msg}")


def _cmd_up(args: argparse.Namespace) -> int:
    from stack.embedded import StackError, StackOptions, down, status, up

    options = StackOptions(
        state_path=args.state,
        broker_runtime=args.broker_runtime,
        nodes=args.nodes.split(",") if args.nodes else StackOptions().nodes,
        heartbeat_interval_s=args.heartbeat_interval,
        proxies=not args.no_proxy,
    )
    try:
        state = up(options, progress=_say)
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    _print_status(status(args.state))
    console.print("\nclients reach the stack with:")
    for key, value in sorted(state.env.items()):
        console.print(f"  export {key}={value}")
    if not args.foreground:
        console.print("\nstop it with [bold]python -m stack down[/bold]" + (f" --state {args.state}" if args.state else ""))
        return 0
    console.print("\nrunning in the foreground; Ctrl-C stops the stack")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.2)
    down(args.state, progress=_say)
    return 0


def _print_status(rows: list[dict]) -> None:
    table = Table(title="bridgestorm stack")
    for col in ("part", "kind", "address", "pid / container", "health"):
        table.add_column(col)
    colors = {"up": "green", "not ready": "yellow", "down": "red", "gone": "red"}
    for row in rows:
        where = str(row["pid"]) if row["pid"] else (row["container"] or "")[:12]
        health = row["health"]
        table.add_row(row["name"], row["kind"], row["address"], where, f"[{colors.get(health, 'white')}]{health}[/]")
    Console().print(table)


def _cmd_status(args: argparse.Namespace) -> int:
    from stack.embedded import status

    try:
        rows = status(args.state)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_status(rows)
    return 0 if all(r["health"] == "up" for r in rows) else 3


def _cmd_down(args: argparse.Namespace) -> int:
    from stack.embedded import down

    stopped = down(args.state, progress=_say)
    if not stopped:
        console.print("nothing to stop (no stack state found)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from stack.system import NODE_KINDS

    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Start, inspect and stop the embedded stack (Tansu broker, PostgreSQL, Toxiproxy API and "
        "the bridge nodes) on free loopback ports.",
    )
    parser.add_argument("--state", help="state file of the stack (default: $BRIDGESTORM_STATE or ./.bridgestorm/stack.json)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start the stack, wait until healthy, print its endpoints")
    p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops the stack")
    p.add_argument("--broker-runtime", choices=["process", "docker"], default="process",
                   help="run the broker as a local process (default) or a Docker container")
    p.add_argument("--nodes", help=f"comma-separated node kinds to start (default: all of {','.join(NODE_KINDS)})")
    p.add_argument("--heartbeat-interval", type=float, default=10.0, help="seconds between node heartbeats")
    p.add_argument("--no-proxy", action="store_true",
                   help="connect nodes to the broker and database directly, without Toxiproxy in between")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("status", help="health of every part of the running stack (exit 3 if any is not up)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("down", help="stop exactly what `up` started")
    p.set_defaults(func=_cmd_down)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
