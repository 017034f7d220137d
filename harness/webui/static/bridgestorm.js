// bridgestorm's part of Locust's web UI (harness/webui/__init__.py): what a Locust table cannot hold, drawn
// inside the open tab. One panel, placed right under the tab bar, filled for the tab that is open:
// Chaos (controls and the planned timeline), Live (the chart), Thresholds (the final verdict), Report
// (progress and the link). Locust stops polling when the load stops, so this polls its own routes.
(function () {
  "use strict";
  var TABS = {};  // tab key -> {build(panel), update(panel)}, filled in start()
  var panel = null, shown = null, timer = null, catalogue = null;

  function route(path) { return "bridgestorm/" + path; }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else if (k === "on") e.onclick = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  function getJSON(path) {
    return fetch(route(path), {cache: "no-store"}).then(function (r) { return r.json(); });
  }

  function post(path, body) {
    return fetch(route(path), {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(body || {})})
      .then(function (r) { return r.json(); });
  }

  function openTab() {
    var key = new URLSearchParams(window.location.search).get("tab");
    if (key) return key;
    var selected = document.querySelector('[role="tab"][aria-selected="true"]');
    var text = selected ? selected.textContent.trim() : "";
    return {"Chaos": "bridgestorm-chaos", "Live": "bridgestorm-live", "Thresholds": "bridgestorm-thresholds",
            "Report": "bridgestorm-report"}[text] || null;
  }

  function place() {
    var tabs = document.querySelector(".MuiTabs-root");
    if (!tabs) return null;
    if (!panel) panel = el("div", {id: "bridgestorm-panel"});
    if (tabs.nextElementSibling !== panel) tabs.after(panel);
    return panel;
  }

  function tick() {
    var key = openTab();
    var p = TABS[key] ? place() : null;
    if (!p) {
      if (panel) panel.style.display = "none";
      shown = null;
      return;
    }
    panel.style.display = "";
    if (shown !== key) {
      shown = key;
      panel.replaceChildren();
      panel.dataset.tab = key;
      TABS[key].build(panel);
    }
    TABS[key].update(panel);
  }

  // ------------------------------------------------------------------ Chaos

  var chaos = {
    build: function (p) {
      var select = el("select", {id: "bridgestorm-fault", "aria-label": "fault to inject"});
      var msg = el("span", {id: "bridgestorm-chaos-msg", role: "status"});
      function say(j) { msg.textContent = j.message || j.error || ""; msg.className = j.error ? "bad" : ""; }
      p.appendChild(el("div", {class: "bs-row", id: "bridgestorm-chaos-controls"}, [
        el("b", {text: "Inject "}), select,
        el("button", {id: "bridgestorm-inject", type: "button", text: "Inject fault", on: function () {
          post("chaos/inject", {id: select.value}).then(say);
        }}),
        el("button", {id: "bridgestorm-heal", type: "button", text: "Heal all", on: function () {
          post("chaos/heal", {}).then(say);
        }}),
        msg]));
      p.appendChild(el("div", {id: "bridgestorm-reason", class: "bs-muted"}));
      p.appendChild(el("div", {id: "bridgestorm-healable", class: "bs-row"}));
      p.appendChild(el("div", {id: "bridgestorm-timeline"}));
      select.onchange = function () { chaos.reason(select); };
      getJSON("chaos/catalogue").then(function (c) {
        catalogue = c.faults;
        c.faults.forEach(function (f) {
          var o = el("option", {value: f.id, text: f.available ? f.label : f.label + " (unavailable)"});
          if (!f.available) { o.disabled = true; o.title = f.reason; }
          select.appendChild(o);
        });
        var first = c.faults.filter(function (f) { return f.available; })[0];
        if (first) select.value = first.id;
        chaos.reason(select);
      });
    },
    reason: function (select) {
      var box = document.getElementById("bridgestorm-reason");
      var off = (catalogue || []).filter(function (f) { return !f.available; });
      box.replaceChildren();
      if (off.length) {
        box.appendChild(el("div", {text: "Not available on this stack:"}));
        box.appendChild(el("ul", {}, off.map(function (f) { return el("li", {text: f.label + ": " + f.reason}); })));
      }
    },
    update: function () {
      getJSON("chaos/state").then(function (s) {
        var heal = document.getElementById("bridgestorm-healable");
        if (!heal) return;
        heal.replaceChildren();
        if (s.healable.length) heal.appendChild(el("b", {text: "Injected from this page: "}));
        s.healable.forEach(function (h) {
          heal.appendChild(el("button", {type: "button", class: "bs-heal-one", "data-id": h.id,
                                         text: "Heal " + h.name, on: function () {
            post("chaos/heal", {id: h.id}).then(function (j) {
              document.getElementById("bridgestorm-chaos-msg").textContent = j.message || j.error || "";
            });
          }}));
        });
        var tl = document.getElementById("bridgestorm-timeline");
        tl.replaceChildren();
        var t = s.timeline;
        if (!t.experiment) {
          tl.appendChild(el("p", {class: "bs-muted", text: "The run has no chaos experiment: nothing is planned."}));
          return;
        }
        tl.appendChild(el("b", {text: "Planned: " + t.experiment + (t.file ? " (" + t.file + ")" : "")}));
        var rows = t.faults.map(function (f) {
          var when = f.status === "next" && f.in_s !== null ? "in " + Math.max(0, f.in_s).toFixed(0) + " s" : "";
          return el("tr", {class: "bs-" + f.status.replace(" ", "-")}, [
            el("td", {text: f.name}), el("td", {text: "+" + f.at + " s"}),
            el("td", {text: f.duration === null ? "to the end" : f.duration + " s"}),
            el("td", {text: f.status}), el("td", {text: when})]);
        });
        tl.appendChild(el("table", {class: "bs-table"}, [
          el("thead", {}, [el("tr", {}, ["fault", "at", "held", "status", ""].map(function (h) {
            return el("th", {text: h}); }))]),
          el("tbody", {}, rows)]));
      });
    }
  };

  // ------------------------------------------------------------------ Live

  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                "#bcbd22", "#7f7f7f"];
  var SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function chart(title, unit, series, faults, t0, t1, height) {
    var W = 1000, H = height, L = 60, R = 250, T = 22, B = 24;
    var root = svg("svg", {viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": title,
                           class: "bs-chart"});
    root.appendChild(svg("text", {x: L, y: 14, class: "bs-chart-title"}, title));
    var ymax = 1;
    Object.keys(series).forEach(function (k) { series[k].forEach(function (p) { ymax = Math.max(ymax, p[1]); }); });
    ymax *= 1.1;
    var span = Math.max(1, t1 - t0);
    function x(t) { return L + (W - L - R) * (t - t0) / span; }
    function y(v) { return H - B - (H - T - B) * v / ymax; }
    faults.forEach(function (f) {
      var a = Math.max(t0, f.start), b = Math.min(t1, f.end === null ? t1 : f.end);
      if (b <= t0 || a >= t1) return;
      root.appendChild(svg("rect", {x: x(a), y: T, width: Math.max(2, x(b) - x(a)), height: H - T - B,
                                    class: "bs-fault", "data-fault": f.name}));
      root.appendChild(svg("text", {x: x(a) + 3, y: T + 12, class: "bs-fault-label"}, f.name));
    });
    root.appendChild(svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "bs-axis"}));
    root.appendChild(svg("line", {x1: L, y1: T, x2: L, y2: H - B, class: "bs-axis"}));
    [0, 0.5, 1].forEach(function (q) {
      var v = ymax * q / 1.1;
      root.appendChild(svg("text", {x: L - 6, y: y(v) + 4, class: "bs-tick", "text-anchor": "end"},
                           (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + unit));
    });
    [0, 0.5, 1].forEach(function (q) {
      var t = t0 + span * q;
      root.appendChild(svg("text", {x: x(t), y: H - 6, class: "bs-tick", "text-anchor": "middle"},
                           "+" + (t - t0).toFixed(0) + " s"));
    });
    Object.keys(series).sort().forEach(function (k, i) {
      var pts = series[k].filter(function (p) { return p[0] >= t0; });
      var color = COLORS[i % COLORS.length];
      if (pts.length) {
        root.appendChild(svg("polyline", {points: pts.map(function (p) { return x(p[0]) + "," + y(p[1]); }).join(" "),
                                          fill: "none", stroke: color, "stroke-width": 1.5, "data-series": k}));
      }
      root.appendChild(svg("rect", {x: W - R + 12, y: T + 16 * i, width: 10, height: 10, fill: color}));
      root.appendChild(svg("text", {x: W - R + 26, y: T + 9 + 16 * i, class: "bs-tick"}, k));
    });
    if (!Object.keys(series).length) {
      root.appendChild(svg("text", {x: L + 10, y: H / 2, class: "bs-muted"}, "no data yet"));
    }
    return root;
  }

  var live = {
    build: function (p) {
      p.appendChild(el("p", {class: "bs-muted", text: "Per second: the p95 of the bus round trips (e2e: " +
        "publish until the result is seen; kafka: publish until acknowledged) and each consumer group's lag in " +
        "messages, read from the broker. Shaded: fault windows."}));
      p.appendChild(el("div", {id: "bridgestorm-live-charts"}));
      live.last = 0;
    },
    update: function () {
      if (Date.now() - live.last < 2000) return;
      live.last = Date.now();
      getJSON("live").then(function (d) {
        var box = document.getElementById("bridgestorm-live-charts");
        if (!box) return;
        var t0 = d.t0 || d.now - 60, t1 = d.ended || d.now;
        box.replaceChildren(chart("round-trip p95", " ms", d.p95, d.faults, t0, t1, 240),
                            chart("consumer lag", "", d.lag, d.faults, t0, t1, 240));
        box.dataset.faults = String(d.faults.length);
      });
    }
  };

  // ------------------------------------------------------------------ Thresholds and Report

  function verdictBox(s) {
    if (s.state !== "done") {
      return el("p", {class: "bs-muted", text: s.state === "finishing" ? "The final verdict comes with the " +
        "report (the Report tab shows its progress)." : "Live values below; the final verdict comes when the " +
        "run is stopped and its report written."});
    }
    return el("div", {id: "bridgestorm-verdict", class: "bs-verdict bs-" + s.verdict.replace(" ", "-")}, [
      el("b", {text: "Final verdict: " + s.verdict.toUpperCase()}),
      el("table", {class: "bs-table"}, [el("tbody", {}, (s.results || []).map(function (r) {
        return el("tr", {}, [el("td", {text: r.text}), el("td", {text: r.measured_display}),
                             el("td", {class: "bs-" + r.status.replace(" ", "-"), text: r.status}),
                             el("td", {text: r.detail})]);
      }))])]);
  }

  var thresholds = {
    build: function (p) { p.appendChild(el("div", {id: "bridgestorm-final"})); thresholds.last = 0; },
    update: function () {
      if (Date.now() - thresholds.last < 1000) return;
      thresholds.last = Date.now();
      getJSON("report/status").then(function (s) {
        var box = document.getElementById("bridgestorm-final");
        if (box && box.dataset.state !== s.state) { box.dataset.state = s.state; box.replaceChildren(verdictBox(s)); }
      });
    }
  };

  var report = {
    build: function (p) { p.appendChild(el("div", {id: "bridgestorm-report-status", role: "status"})); },
    update: function () {
      getJSON("report/status").then(function (s) {
        var box = document.getElementById("bridgestorm-report-status");
        if (!box) return;
        var children = [el("div", {}, [el("b", {text: "Run: "}), el("code", {text: s.run_dir})])];
        if (s.state === "not started" || s.state === "running") {
          children.push(el("p", {text: s.state === "running" ? "The load is running. Press Stop: the system is " +
            "drained, its truth read, the run analysed and the report written, here." :
            "Press Start: the report is written when the run is stopped."}));
        }
        if (s.steps.length) {
          children.push(el("ol", {id: "bridgestorm-report-steps"}, s.steps.map(function (x) {
            return el("li", {text: x.time + "  " + x.step}); })));
        }
        if (s.state === "finishing") children.push(el("p", {class: "bs-busy", text: "Working..."}));
        if (s.state === "failed") children.push(el("p", {class: "bad", text: s.error}));
        if (s.state === "done") {
          children.push(el("p", {}, [
            el("span", {class: "bs-verdict bs-" + s.verdict.replace(" ", "-"), text: s.verdict.toUpperCase()}),
            document.createTextNode(" "),
            el("a", {id: "bridgestorm-report-link", href: s.report, target: "_blank", rel: "noopener",
                     text: "Open the report"})]));
        }
        var key = s.state + ":" + s.steps.length;
        if (box.dataset.key !== key) { box.dataset.key = key; box.replaceChildren.apply(box, children); }
      });
    }
  };

  function start() {
    if (timer) return;
    TABS = {"bridgestorm-chaos": chaos, "bridgestorm-live": live, "bridgestorm-thresholds": thresholds,
            "bridgestorm-report": report};
    timer = setInterval(tick, 1000);
    document.addEventListener("click", function () { setTimeout(tick, 50); }, true);
    window.addEventListener("popstate", tick);
    tick();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
