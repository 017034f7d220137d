"""The web UI: bridgestorm's tabs on Locust's own page, and the routes behind them.

Locust's ``extended_tabs`` give four tabs (Chaos, Live, Thresholds, Report)
whose tables arrive with every ``/stats/requests`` poll while the load runs.
What a table cannot hold is added by ``static/bridgestorm.js`` inside the
open tab: the chaos controls (controls.py), the live chart of round-trip
p95 and consumer lag with the fault windows (live.py), and the report's
progress and link. Locust stops polling when the load stops, so the script
polls these routes itself:

- ``GET  /bridgestorm/chaos/catalogue``: the faults, each available or not, with the reason;
- ``POST /bridgestorm/chaos/inject`` ``{"id"}``, ``POST /bridgestorm/chaos/heal`` ``{"id"}`` (none: all);
- ``GET  /bridgestorm/chaos/state``: the journal with live status, what can be healed, the planned timeline;
- ``GET  /bridgestorm/live``: per second p95 by request type, lag per group, fault windows;
- ``GET  /bridgestorm/report/status`` and ``/bridgestorm/report/<file>``: the report, served from the run
  directory once the Stop button's drain and analysis are done (harness/lifecycle.py ``finish_run``).

A start form with a bad bridgestorm field is refused before Locust reads it,
with the file, line and field (harness/preflight.py); a scenario named in the
form loads its conf (scenarios.py).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flask import Response, abort, jsonify, request, send_from_directory
from werkzeug.datastructures import ImmutableMultiDict

from harness.context import RunContext
from harness.webui.controls import Availability, ChaosControl, active_faults, catalogue, timeline
from harness.webui.live import LiveSeries, fault_windows, lag_series
from harness.webui.scenarios import apply_scenario
from rundir.journal import FaultJournal

log = logging.getLogger("bridgestorm.webui")
STATIC = Path(__file__).parent / "static"

TABS = [{"title": "Chaos", "key": "bridgestorm-chaos"}, {"title": "Live", "key": "bridgestorm-live"},
        {"title": "Thresholds", "key": "bridgestorm-thresholds"}, {"title": "Report", "key": "bridgestorm-report"}]
TABLES = [
    {"key": "bridgestorm-chaos", "structure": [
        {"key": "name", "title": "Fault"}, {"key": "action", "title": "Action"}, {"key": "target", "title": "Target"},
        {"key": "status", "title": "Status"}, {"key": "started", "title": "Started"},
        {"key": "healed", "title": "Healed"}, {"key": "detail", "title": "Detail"}]},
    {"key": "bridgestorm-live", "structure": [
        {"key": "series", "title": "Series"}, {"key": "last", "title": "Last second"}, {"key": "max", "title": "Max"}]},
    {"key": "bridgestorm-thresholds", "structure": [
        {"key": "threshold", "title": "Threshold"}, {"key": "measured", "title": "Measured"},
        {"key": "verdict", "title": "Verdict"}, {"key": "detail", "title": "Detail"}]},
    {"key": "bridgestorm-report", "structure": [
        {"key": "run_dir", "title": "Run directory"}, {"key": "scenario", "title": "Scenario"},
        {"key": "verdict", "title": "Verdict"}]},
]
SCRIPT_TAG = '<link rel="stylesheet" href="{base}/bridgestorm/ui.css"><script src="{base}/bridgestorm/ui.js"></script>'


def threshold_rows(ctx: RunContext, cache: dict[str, Any]) -> list[dict[str, Any]]:
    """The final verdict once the report is written; before, each threshold on the samples so far (every 5 s)."""
    if ctx.verdict is not None:
        v = ctx.verdict
        return [{"threshold": "verdict", "measured": "", "verdict": v.status.upper(),
                 "detail": f"final, from the report ({len(v.results)} thresholds)"}] + [
            {"threshold": r["text"], "measured": r["measured_display"], "verdict": r["status"], "detail": r["detail"]}
            for r in v.results]
    if time.monotonic() - cache.get("at", 0) < 5 and "rows" in cache:
        return cache["rows"]
    rows: list[dict[str, Any]]
    try:
        from analysis.analyse import analyse

        if ctx.joined:
            ctx.recorder.flush()
        if not (Path(ctx.run_dir) / "samples").is_dir():
            rows = [{"threshold": "(no samples yet)", "measured": "", "verdict": "", "detail": ""}]
        else:
            opts = ctx.environment.parsed_options
            a = analyse(ctx.run_dir, getattr(opts, "thresholds", None) or None)
            rows = [{"threshold": "verdict", "measured": "", "verdict": "(live)",
                     "detail": "on the samples so far; the final verdict comes with the report"}] + [
                {"threshold": r["text"], "measured": r["measured_display"], "verdict": r["status"],
                 "detail": r["detail"]} for r in a.summary()["thresholds"]]
    except Exception as exc:  # noqa: BLE001 - the tab shows why, the run goes on
        rows = [{"threshold": "(not evaluated)", "measured": "", "verdict": "", "detail": str(exc)[:300]}]
    cache.update(at=time.monotonic(), rows=rows)
    return rows


def report_status(ctx: RunContext) -> dict[str, Any]:
    """Where the run is: not started, running, finishing (with its steps), done (with the verdict) or failed."""
    steps = [{"time": time.strftime("%H:%M:%S", time.localtime(t)), "step": text} for t, text in ctx.finish_steps]
    base = {"run_dir": ctx.run_dir, "steps": steps}
    if ctx.started_at is None:
        return base | {"state": "not started"}
    if ctx.finishing is None and not ctx.finished:
        return base | {"state": "running"}
    if not ctx.finished:
        return base | {"state": "finishing"}
    index = Path(ctx.run_dir) / "index.html"
    if ctx.verdict is None or not index.exists():
        return base | {"state": "failed", "error": "no report was written (see the log)"}
    results = [{k: r.get(k) for k in ("text", "measured_display", "status", "detail")} for r in ctx.verdict.results]
    return base | {"state": "done", "verdict": ctx.verdict.status, "results": results,
                   "report": "bridgestorm/report/index.html"}


def live_rows(live: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for t, points in live["p95"].items():
        if points:
            rows.append({"series": f"p95 {t} (ms)", "last": points[-1][1], "max": max(p[1] for p in points)})
    for group, points in sorted(live["lag"].items()):
        rows.append({"series": f"lag {group} (messages)", "last": points[-1][1], "max": max(p[1] for p in points)})
    return rows


def install(environment: Any, ctx: RunContext) -> None:
    web_ui = environment.web_ui
    control = ChaosControl(ctx)
    available = Availability(ctx)
    series = LiveSeries()
    cache: dict[str, Any] = {}
    web_ui.template_args["extended_tabs"] = TABS
    web_ui.template_args["extended_tables"] = TABLES
    app = web_ui.app
    base = getattr(web_ui, "web_base_path", "").rstrip("/")

    environment.events.request.add_listener(
        lambda request_type, response_time, exception=None, context=None, start_time=None, **_: series.add(
            request_type, (context or {}).get("ts_start") or start_time or time.time(), response_time or 0.0,
            exception is None))
    environment.events.test_start.add_listener(lambda **_: series.reset())

    def faults() -> list[dict[str, Any]]:
        return catalogue(ctx.experiment_file)

    def live() -> dict[str, Any]:
        since = ctx.started_at
        active = active_faults(ctx)
        journal = FaultJournal(ctx.run_dir).read() if ctx.run_dir else []
        return {"t0": since, "now": time.time(), "ended": ctx.ended_at, "p95": series.p95(since),
                "lag": lag_series(ctx.recent_lag, since), "faults": fault_windows(journal, active)}

    @app.after_request
    def extend(response: Response) -> Response:
        path = request.path.rstrip("/")
        if path.endswith("/stats/requests") and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [
                {"key": "bridgestorm-chaos", "data": control.rows()},
                {"key": "bridgestorm-live", "data": live_rows(live())},
                {"key": "bridgestorm-thresholds", "data": threshold_rows(ctx, cache)},
                {"key": "bridgestorm-report", "data": list(reversed(ctx.runs))},
            ]
            response.set_data(json.dumps(data))
        elif path == base and response.mimetype == "text/html":
            response.direct_passthrough = False
            html = response.get_data(as_text=True)
            if "bridgestorm/ui.js" not in html:
                response.set_data(html.replace("</head>", SCRIPT_TAG.format(base=base) + "</head>", 1))
        return response

    @app.before_request
    def check_form() -> Response | None:
        """A start form with a bad bridgestorm field is refused, before its values replace the run's options."""
        if request.method != "POST" or not request.path.rstrip("/").endswith("/swarm"):
            return None
        from harness.preflight import form_problems

        form, found = apply_scenario(request.form, environment)
        if not found:
            found = form_problems(form, form.get("scenario") or ctx.scenario)
        if ctx.finishing is not None and not ctx.finished:
            found.append("the last run's report is still being written: wait for it (the Report tab shows it)")
        if not found:
            request.form = ImmutableMultiDict(form)  # the scenario's values, as Locust will read them
            return None
        for line in found:
            log.error("error: %s", line)
        return jsonify({"success": False, "message": "; ".join(found), "host": environment.host})

    @app.route("/bridgestorm/ui.js")
    def ui_js() -> Response:
        return send_from_directory(STATIC, "bridgestorm.js", mimetype="text/javascript", max_age=0)

    @app.route("/bridgestorm/ui.css")
    def ui_css() -> Response:
        return send_from_directory(STATIC, "bridgestorm.css", mimetype="text/css", max_age=0)

    @app.route("/bridgestorm/chaos/catalogue")
    def chaos_catalogue() -> Response:
        out = []
        for f in faults():
            reason = available.reason(f["fault"])
            out.append({"id": f["id"], "label": f["label"], "available": reason is None, "reason": reason})
        return jsonify({"faults": out})

    @app.route("/bridgestorm/chaos/inject", methods=["POST"])
    def chaos_inject() -> Response | tuple[Response, int]:
        wanted = (request.get_json(silent=True) or {}).get("id")
        match = [f for f in faults() if f["id"] == wanted]
        if not match:
            return jsonify({"error": f"unknown fault {wanted!r}"}), 404
        reason = available.reason(match[0]["fault"])
        if reason:
            return jsonify({"error": f"{match[0]['label']} cannot run on this stack: {reason}"}), 409
        try:
            return jsonify(control.inject(match[0]["fault"]))
        except RuntimeError as exc:
            return jsonify({"error": str(exc)}), 409
        except Exception as exc:  # noqa: BLE001 - shown in the page; the run goes on
            log.exception("injecting from the web UI failed")
            return jsonify({"error": f"{type(exc).__name__}: {exc}"}), 500

    @app.route("/bridgestorm/chaos/heal", methods=["POST"])
    def chaos_heal() -> Response | tuple[Response, int]:
        wanted = (request.get_json(silent=True) or {}).get("id")
        if not wanted:
            return jsonify({"message": control.heal_all()})
        try:
            return jsonify({"message": control.heal(str(wanted))})
        except KeyError as exc:
            return jsonify({"error": exc.args[0]}), 404

    @app.route("/bridgestorm/chaos/state")
    def chaos_state() -> Response:
        return jsonify({"journal": control.rows(), "healable": control.healable(), "timeline": timeline(ctx)})

    @app.route("/bridgestorm/live")
    def live_route() -> Response:
        return jsonify(live())

    @app.route("/bridgestorm/report/status")
    def report_status_route() -> Response:
        return jsonify(report_status(ctx))

    @app.route("/bridgestorm/report/<path:name>")
    def report_file(name: str) -> Response:
        if not ctx.finished or not ctx.run_dir:
            abort(404)
        return send_from_directory(Path(ctx.run_dir).resolve(), name, max_age=0)  # safe_join: never outside it

    environment.events.quitting.add_listener(lambda **_: control.heal_all())
