"""A scenario named in the start form: its conf's values replace the form's (users, rates, chaos, thresholds).

The confs in scenarios/ are Locust config files (``key = value`` lines);
only the load's own keys are taken from them here, and only when the form
names another scenario than the one running: the form's other fields are
the user's. A scenario of another locustfile cannot run in this Locust
(its user classes are not loaded), so it is refused with the command that
runs it.
"""
from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

from werkzeug.datastructures import MultiDict

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
# conf key -> form field
FORM_FIELDS = {"users": "user_count", "spawn-rate": "spawn_rate", "run-time": "run_time", "rate": "rate",
               "chaos": "chaos", "thresholds": "thresholds"}


def read_conf(path: Path) -> dict[str, str]:
    """A Locust conf file's ``key = value`` lines (underscores as dashes)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    parser.read_string("[conf]\n" + path.read_text(encoding="utf-8"), source=str(path))
    return {k.replace("_", "-"): v.strip() for k, v in parser["conf"].items()}


def known() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.conf"))


def apply_scenario(form: Any, environment: Any) -> tuple[MultiDict, list[str]]:
    """The form with the named scenario's values in it, and what is wrong (nothing: an empty list)."""
    out = MultiDict(form.items(multi=True))
    name = (form.get("scenario") or "").strip()
    opts = environment.parsed_options
    if not name or name == (getattr(opts, "scenario", "") or ""):
        return out, []
    path = SCENARIOS / f"{name}.conf"
    if "/" in name or not path.is_file():
        return out, [f"scenario: unknown scenario {name!r} (known: {', '.join(known())})"]
    try:
        conf = read_conf(path)
    except (OSError, configparser.Error) as exc:
        return out, [f"{path}: {exc}"]
    wanted = conf.get("locustfile", "")
    needs = {(REPO / f.strip()).resolve() for f in wanted.split(",") if f.strip()}
    running = [Path(f).resolve() for f in str(getattr(opts, "locustfile", "") or "").split(",") if f.strip()]
    if needs and running and not needs <= set(running):
        here = ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in running)
        return out, [f"scenario: {name!r} runs {wanted}, and this Locust runs {here}: start the web UI with"
                     f" .venv/bin/locust -f {wanted} --stack embedded, then pick {name!r} in the form"]
    for key, field in FORM_FIELDS.items():
        if key in conf:
            out[field] = conf[key]
    return out, []
