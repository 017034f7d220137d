"""The `python -m chaos` command line: run, list, heal, proxy-server."""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from pathlib import Path

EXPERIMENTS_DIR = Path(__file__).parent / "experiments"


def _default_run_dir(experiment: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", Path(experiment).stem.lower()).strip("-")
    return Path("reports") / f"{time.strftime('%Y%m%d-%H%M%S')}-chaos-{slug}"


def _sigterm(signum, frame):
    raise KeyboardInterrupt()


def cmd_run(args) -> int:
    from chaos.experiment import ExperimentError, load
    from chaos.runner import run_experiment

    try:
        exp = load(args.experiment)
    except ExperimentError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.dry_run:
        plan = exp.plan()
        print(f"{exp.title}: {len(plan.faults)} faults, method ends at {plan.end:.1f} s")
        for p in plan.faults:
            held = "until the end" if p.duration is None else f"{p.duration:g} s"
            print(f"  at {p.at:7.2f} s  {p.name:<28} {p.fault.target_kind} {p.fault.target} "
                  f"{p.fault.fault} {p.fault.parameters or ''} held {held}")
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(args.experiment)
    signal.signal(signal.SIGTERM, _sigterm)
    result = run_experiment(exp, run_dir, state_path=args.state, toxiproxy_url=args.toxiproxy_url)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    return {"completed": 0, "deviated": 1, "interrupted": 130}.get(result.status, 1)


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
    return 1 if any(line.startswith("could not") for line in done) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["proxy-server"]:
        from stack.proxy.process import main as proxy_main
        return proxy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m chaos", description="bridgestorm chaos: faults from experiment files")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment file")
    run.add_argument("experiment")
    run.add_argument("--run-dir", help="where chaos.jsonl goes (default reports/<time>-chaos-<name>)")
    run.add_argument("--dry-run", action="store_true", help="validate and print the fault plan only")
    run.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    sub.add_parser("list", help="shipped experiments and fault types")
    heal = sub.add_parser("heal", help="undo everything bridgestorm injected")
    for p in (run, heal):
        p.add_argument("--state", help="stack state file (default $BRIDGESTORM_STATE or .bridgestorm/stack.json)")
        p.add_argument("--toxiproxy-url", help="Toxiproxy API (default $TOXIPROXY_URL, the stack's, or :8474)")
    sub.add_parser("proxy-server", help="serve the Toxiproxy API (--listen 127.0.0.1:8474)")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "list": cmd_list, "heal": cmd_heal}[args.command](args)
