"""``locust -f <any of ours> --help`` lists bridgestorm's options, under their own heading.

Why this module: Locust prints ``--help`` before it imports a locustfile, so
the options a locustfile registers (harness/lifecycle.py ``add_options``)
never appear there. The project's virtual environment holds a one-line
``bridgestorm-help.pth`` (written by the Makefile's install step) that
Python runs when it starts: only when the process is ``locust`` asked for its
help does it import this module, which registers the same options before
Locust builds the parser it prints.
"""
from __future__ import annotations

import os
import sys

PTH_NAME = "bridgestorm-help.pth"
# run by Python at start-up: imports this module only for a `locust ... --help`, costs nothing otherwise
PTH_LINE = ("import sys; argv = getattr(sys, 'argv', []); any(a in ('-h', '--help') for a in argv[1:]) and "
            "argv[0].endswith('locust') and __import__('harness.locust_help')\n")


def asked_for_help(argv: list[str]) -> bool:
    """A ``locust`` command line with ``-h`` or ``--help`` (Locust's own test for printing its help)."""
    return bool(argv) and os.path.basename(argv[0]) == "locust" and any(a in ("-h", "--help") for a in argv[1:])


def register() -> None:
    from locust import events

    from harness.lifecycle import add_options

    events.init_command_line_parser.add_listener(add_options)


def install_pth() -> str:
    """Write the .pth line into this interpreter's site-packages (``python -m harness.locust_help``)."""
    import sysconfig
    from pathlib import Path

    path = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    path.write_text(PTH_LINE)
    return str(path)


if __name__ == "__main__":
    print(install_pth())
elif asked_for_help(getattr(sys, "argv", [])):
    register()
