"""The `python -m chaos` command line: run, list, heal, proxy-server.

Exit codes (README: Exit codes): 0 the experiment ran as planned and the
steady state held; 1 the steady state did not come back after the faults
(the experiment's own threshold failed); 2 bad usage or input, checked
before anything is injected (experiment file, run directory, state file,
targets); 3 the run itself broke (a fault could not be injected or healed,
the steady state was not met before the method, interrupted, or an error).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).parent / "experiments"
EXIT_CODES = {"completed": 0, "deviated": 1}  # failed, aborted, interrupted: 3
EPILOG = ("exit codes: 0 ran as planned and the steady state held, 1 the steady state did not come back, "
          "2 bad usage or input (nothing was injected), 3 the run itself broke (a fault not injected or not "
          "healed, aborted, interrupted)")


def _default_run_dir(experiment: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", Path(experiment).stem.lower()).strip("-")
    return Path("reports") / f"{time.strftime('%Y%m%d-%H%M%S')}-chaos-{slug}"


def _sigterm(signum, frame):
    raise KeyboardInterrupt()


def run_problems(args, exp) -> list[str]:
    """What `run` needs, checked before anything is injected: the run directory, the state file, the targets."""
    from chaos.kinds import Resolver

    found = []
    if args.run_dir and Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        found.append(f"--run-dir: {args.run_dir} exists and is not a directory")
    if args.state and not Path(args.state).is_file():
        found.append(f"--state: {args.state}: no such stack state file")
        return found
    resolver = Resolver(args.state, args.toxiproxy_url or exp.toxiproxy_url)
    for kind, target in sorted({(p.fault.target_kind, p.fault.target) for p in exp.plan().faults}):
        try:
            resolver.target(kind, target)
        except Exception as exc:  # noqa: BLE001 - each target that cannot be reached is one line
            found.append(f"{args.experiment}: target {target!r} ({kind}): {exc}")
    return found


def cmd_run(args) -> int:
    from chaos.experiment import ExperimentError, load
    from chaos.runner import run_experiment

    try:
        exp = load(args.experiment)
    except ExperimentError as exc:
        for line, field, message in exc.problems:
            print(f"error: {exc.path}:{line or '?'}: {field + ': ' if field else ''}{message}", file=sys.stderr)
        return 2
    if args.dry_run:
        plan = exp.plan()
        print(f"{exp.title}: {len(plan.faults)} faults, method ends at {plan.end:.1f} s")
        for p in plan.faults:
            held = "until the end" if p.duration is None else f"{p.duration:g} s"
            print(f"  at {p.at:7.2f} s  {p.name:<28} {p.fault.target_kind} {p.fault.target} "
                  f"{p.fault.fault} {p.fault.parameters or ''} held {held}")
        return 0
    found = run_problems(args, exp)
    if found:
        for line in found:
            print(f"error: {line}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(args.experiment)
    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C heals and stops the run even when this process was started with SIGINT ignored (a shell's
    # background job without job control): Python keeps an inherited SIG_IGN and a run would go on to its end
    signal.signal(signal.SIGINT, signal.default_int_handler)
    result = run_experiment(exp, run_dir, state_path=args.state, toxiproxy_url=args.toxiproxy_url)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    return EXIT_CODES.get(result.status, 3)


def cmd_list(args) -> int:
    from chaos.experiment import ExperimentError, load
    from chaos.kinds import KINDS

    print("experiments:")
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        try:
            exp = load(path)
            print(f"  {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}\n      {exp.title}")
        except ExperimentError as exc:
            print(f"  {path}: INVALID\n{exc}")
    print("\nfault types (target_kind action: parameters -> healed by):")
    for kind in KINDS.values():
        print(f"  {kind.name}: {kind.summary}")
        for ft in sorted(kind.faults, key=lambda ft: ft.action):
            params = ", ".join(f"{k}={v}" for k, v in ft.parameters.items()) or "-"
            print(f"  {kind.name:<9} {ft.action:<11} {params:<48} -> {ft.heals_by or 'ends by itself'}")
            print(f"  {'':<9} {'':<11} {ft.summary}")
    return 0


def cmd_heal(args) -> int:
    from chaos.heal import heal_all

    done = heal_all(args.state, args.toxiproxy_url)
    return 3 if any(line.startswith("could not") for line in done) else 0


def main(argv: list[str] | None = None) -> int:
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where every thread is, on stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["proxy-server"]:
        from stack.proxy.process import main as proxy_main
        return proxy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m chaos", description="bridgestorm chaos: faults from experiment files",
                                     epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="print tracebacks with errors (also BRIDGESTORM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment file", epilog=EPILOG)
    run.add_argument("experiment")
    run.add_argument("--run-dir", help="where chaos.jsonl goes (default reports/<time>-chaos-<name>)")
    run.add_argument("--dry-run", action="store_true", help="validate and print the fault plan only")
    run.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    sub.add_parser("list", help="shipped experiments and fault types")
    heal = sub.add_parser("heal", help="undo everything bridgestorm injected (exit 3 when something could not be)")
    for p in (run, heal):
        p.add_argument("--state", help="stack state file (default $BRIDGESTORM_STATE or .bridgestorm/stack.json)")
        p.add_argument("--toxiproxy-url", help="Toxiproxy API (default $TOXIPROXY_URL, the stack's, or :8474)")
    sub.add_parser("proxy-server", help="serve the Toxiproxy API (--listen 127.0.0.1:8474)")
    args = parser.parse_args(argv)
    try:
        return {"run": cmd_run, "list": cmd_list, "heal": cmd_heal}[args.command](args)
    except Exception as exc:  # noqa: BLE001 - one line, unless asked for the traceback
        if args.debug or os.environ.get("BRIDGESTORM_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
