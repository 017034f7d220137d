"""The `python -m chaos` command line: run, list, heal, proxy-server."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["proxy-server"]:
        from chaos.proxy_server import main as proxy_main
        return proxy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m chaos")
    parser.add_subparsers(dest="command", required=True).add_parser("proxy-server")
    parser.parse_args(argv)
    return 2
