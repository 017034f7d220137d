"""Web UI: a "Chaos" tab and a "Thresholds" tab on Locust's main page.

Both are Locust ``extended_tabs``/``extended_tables``; their rows arrive with
every ``/stats/requests`` poll as ``extended_stats``, so they are live. The
Chaos tab shows the faults (active ones from the chaos module's active-fault
file, finished ones from the run's journal); a small control bar added to the
page injects one fault of the catalogue (the faults of the ``--chaos``
experiment, else of every shipped experiment) and heals everything. Thresholds
are evaluated on the raw samples written so far (this process's buffer is
flushed first), with the analysis module's own evaluator.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request

from harness.context import RunContext
from rundir.journal import FaultJournal

log = logging.getLogger("bridgestorm.webui")
REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "chaos" / "experiments"

TABS = [{"title": "Chaos", "key": "bridgestorm-chaos"}, {"title": "Thresholds", "key": "bridgestorm-thresholds"}]
TABLES = [
    {"key": "bridgestorm-chaos", "structure": [
        {"key": "name", "title": "Fault"}, {"key": "action", "title": "Action"}, {"key": "target", "title": "Target"},
        {"key": "status", "title": "Status"}, {"key": "started", "title": "Started"},
        {"key": "healed", "title": "Healed"}, {"key": "detail", "title": "Detail"}]},
    {"key": "bridgestorm-thresholds", "structure": [
        {"key": "threshold", "title": "Threshold"}, {"key": "measured", "title": "Measured"},
        {"key": "verdict", "title": "Verdict"}, {"key": "detail", "title": "Detail"}]},
]

CONTROLS_JS = """
<script>
(function () {
  function bar() {
    if (document.getElementById('bridgestorm-chaos-controls')) return;
    var d = document.createElement('div');
    d.id = 'bridgestorm-chaos-controls';
    d.style.cssText = 'position:fixed;right:12px;bottom:12px;z-index:2000;background:#fff;color:#000;' +
      'border:1px solid #888;border-radius:6px;padding:6px 8px;font:13px sans-serif;box-shadow:0 2px 6px #0004';
    d.innerHTML = '<b>Chaos</b> <select id="bridgestorm-fault"></select> ' +
      '<button id="bridgestorm-inject">Inject fault</button> <button id="bridgestorm-heal">Heal all</button> ' +
      '<span id="bridgestorm-chaos-msg"></span>';
    document.body.appendChild(d);
    fetch('bridgestorm/chaos/catalogue').then(r => r.json()).then(function (c) {
      var s = document.getElementById('bridgestorm-fault');
      c.faults.forEach(function (f) { var o = document.createElement('option'); o.value = f.id;
        o.textContent = f.label; s.appendChild(o); });
    });
    function post(path, body) {
      return fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(body || {})}).then(r => r.json()).then(function (j) {
          document.getElementById('bridgestorm-chaos-msg').textContent = j.message || j.error || ''; });
    }
    document.getElementById('bridgestorm-inject').onclick = function () {
      post('bridgestorm/chaos/inject', {id: document.getElementById('bridgestorm-fault').value}); };
    document.getElementById('bridgestorm-heal').onclick = function () { post('bridgestorm/chaos/heal'); };
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', bar); else bar();
})();
</script>
"""


def catalogue(experiment_ref: str | None) -> list[dict[str, Any]]:
    """Faults one can inject: those of the run's experiment, else those of every shipped experiment."""
    from chaos.experiment import load

    files = [Path(experiment_ref)] if experiment_ref else sorted(EXPERIMENTS.glob("*.yaml"))
    faults: list[dict[str, Any]] = []
    for f in files:
        try:
            exp = load(f)
        except Exception:  # noqa: BLE001 - a broken file is not offered
            continue
        for entry in exp.timeline or []:
            faults.append({"id": f"{f.stem}:{entry.label()}", "label": f"{entry.label()} ({f.stem})",
                           "file": str(f), "fault": entry.model_dump(exclude={"at", "repeat"})})
    return faults


class ChaosControl:
    """Injects single faults on request and heals them all; each injection is a one-fault experiment."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.handles: list[Any] = []
        self.requested: list[dict[str, Any]] = []

    @property
    def active_path(self) -> str:
        return str(Path(self.ctx.run_dir) / "chaos-active.json")

    def inject(self, fault: dict[str, Any]) -> str:
        from chaos.experiment import Experiment, TimelineEntry
        from chaos.runner import start_experiment

        entry = TimelineEntry(**{**fault, "at": 0, "duration": fault.get("duration") or 30})
        exp = Experiment(title=f"web UI: {entry.label()}", timeline=[entry])
        handle = start_experiment(exp, self.ctx.run_dir, state_path=self.ctx.stack_state,
                                  toxiproxy_url=self.ctx.env.get("TOXIPROXY_URL"), active_path=self.active_path,
                                  log=lambda m: log.info("chaos: %s", m))
        self.handles.append(handle)
        self.requested.append({"name": entry.label(), "action": entry.fault, "target": entry.target,
                               "at": time.time(), "handle": handle})
        return f"injecting {entry.label()}"

    def heal_all(self) -> str:
        handles, self.handles = self.handles, []
        for h in handles:
            h.stop()
        if self.ctx.chaos is not None:
            self.ctx.chaos.stop()
        return f"healed ({len(handles)} injected from the UI)"

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        active: dict[str, Any] = {}
        try:
            from chaos.active import ActiveFaults

            active = ActiveFaults(self.active_path).all()
        except Exception:  # noqa: BLE001
            pass
        for fid, e in active.items():
            rec = e.get("record", e)
            rows.append({"name": rec.get("name"), "action": rec.get("action"), "target": rec.get("target"),
                         "status": "active", "started": _fmt_t(rec.get("started_at")), "healed": "",
                         "detail": json.dumps(rec.get("parameters", {}))})
        for j in FaultJournal(self.ctx.run_dir).read():
            rows.append({"name": j.get("name"), "action": j.get("action"), "target": j.get("target"),
                         "status": j.get("outcome") or "", "started": _fmt_t(j.get("started_at")),
                         "healed": _fmt_t(j.get("healed_at")), "detail": j.get("error") or ""})
        names_active = {r["name"] for r in rows}
        for r in self.requested:  # asked for, not yet injected (probes and setup run first)
            if r["name"] not in names_active and r["handle"].running():
                rows.append({"name": r["name"], "action": r["action"], "target": r["target"],
                             "status": "injecting", "started": _fmt_t(r["at"]), "healed": "", "detail": ""})
        return rows


def _fmt_t(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}" if t else ""


def threshold_rows(ctx: RunContext, cache: dict[str, Any]) -> list[dict[str, Any]]:
    """Each threshold with its live value and verdict, from the raw samples on disk (recomputed every 5 s)."""
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
            rows = [{"threshold": r["text"], "measured": r["measured_display"], "verdict": r["status"],
                     "detail": r["detail"]} for r in a.summary()["thresholds"]]
    except Exception as exc:  # noqa: BLE001 - the tab shows why, the run goes on
        rows = [{"threshold": "(not evaluated)", "measured": "", "verdict": "", "detail": str(exc)[:300]}]
    cache.update(at=time.monotonic(), rows=rows)
    return rows


def install(environment: Any, ctx: RunContext) -> None:
    web_ui = environment.web_ui
    control = ChaosControl(ctx)
    cache: dict[str, Any] = {}
    web_ui.template_args["extended_tabs"] = TABS
    web_ui.template_args["extended_tables"] = TABLES
    app = web_ui.app

    def faults() -> list[dict[str, Any]]:
        return catalogue(ctx.experiment_file)

    @app.after_request
    def extend(response: Response) -> Response:
        path = request.path.rstrip("/")
        if path.endswith("/stats/requests") and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [
                {"key": "bridgestorm-chaos", "data": control.rows()},
                {"key": "bridgestorm-thresholds", "data": threshold_rows(ctx, cache)},
            ]
            response.set_data(json.dumps(data))
        elif path in ("", getattr(web_ui, "web_base_path", "").rstrip("/")) and response.mimetype == "text/html":
            response.direct_passthrough = False
            html = response.get_data(as_text=True)
            if "bridgestorm-chaos-controls" not in html:
                response.set_data(html.replace("</body>", CONTROLS_JS + "</body>"))
        return response

    @app.before_request
    def check_form() -> Response | None:
        """A start form with a bad bridgestorm field is refused, before its values replace the run's options."""
        if request.method != "POST" or not request.path.rstrip("/").endswith("/swarm"):
            return None
        from harness.preflight import form_problems

        found = form_problems(request.form, ctx.scenario)
        if not found:
            return None
        for line in found:
            log.error("error: %s", line)
        return jsonify({"success": False, "message": "; ".join(found), "host": environment.host})

    @app.route("/bridgestorm/chaos/catalogue")
    def chaos_catalogue() -> Response:
        return jsonify({"faults": [{"id": f["id"], "label": f["label"]} for f in faults()]})

    @app.route("/bridgestorm/chaos/inject", methods=["POST"])
    def chaos_inject() -> Response:
        wanted = (request.get_json(silent=True) or {}).get("id")
        match = [f for f in faults() if f["id"] == wanted]
        if not match:
            return jsonify({"error": f"unknown fault {wanted!r}"}), 404
        try:
            return jsonify({"message": control.inject(match[0]["fault"])})
        except Exception as exc:  # noqa: BLE001
            return jsonify({"error": str(exc)}), 500

    @app.route("/bridgestorm/chaos/heal", methods=["POST"])
    def chaos_heal() -> Response:
        return jsonify({"message": control.heal_all()})

    environment.events.quitting.add_listener(lambda **_: control.heal_all())

