"""Exact percentiles, throughput, coordinated omission and per-second series, against known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rungen

from analysis.analyse import Analysis
from analysis.metrics import compute_metrics


def frame(names: list[str], lat: list[float], ts: list[float], ok: list[bool] | None = None,
          intended: list[float | None] | None = None) -> pd.DataFrame:
    n = len(lat)
    return pd.DataFrame({
        "ts_intended": pd.Series(intended if intended is not None else [None] * n, dtype="float64"),
        "ts_start": ts, "type": pd.Categorical(["http"] * n), "name": pd.Categorical(names),
        "latency_ms": lat, "ok": ok if ok is not None else [True] * n, "bytes": [1] * n,
        "error": pd.Categorical([None] * n), "process": pd.Categorical(["p"] * n),
    })


def test_percentiles_are_exact_not_bucketed() -> None:
    # 1..1000 ms: Locust's buckets would round p99 to 990; the exact (linear) value is 990.01
    lat = [float(x) for x in range(1, 1001)]
    m = compute_metrics(frame(["a"] * 1000, lat, [100.0 + i / 1000 for i in range(1000)]), {})
    row = m.names.iloc[0]
    assert row["p50"] == pytest.approx(500.5)
    assert row["p90"] == pytest.approx(900.1)
    assert row["p95"] == pytest.approx(950.05)
    assert row["p99"] == pytest.approx(990.01)
    assert row["p99.9"] == pytest.approx(999.001)
    assert row["max"] == 1000.0 and row["count"] == 1000


def test_percentiles_match_numpy_per_name_on_random_data() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    names = rng.choice(["a", "b", "c"], n).tolist()
    lat = rng.lognormal(2, 1, n)
    m = compute_metrics(frame(names, lat.tolist(), (1000 + np.sort(rng.uniform(0, 30, n))).tolist()), {})
    for name in "abc":
        want = np.quantile(lat[np.array(names) == name], [0.5, 0.95, 0.99, 0.999])
        row = m.names[m.names["name"] == name].iloc[0]
        assert [row["p50"], row["p95"], row["p99"], row["p99.9"]] == pytest.approx(want.tolist(), rel=1e-12)


def test_per_second_series() -> None:
    # second 0: 10, 20, 30, 40 ms; second 1: 100 ms x 2 (one failure)
    m = compute_metrics(frame(["a"] * 6, [10, 20, 30, 40, 100, 100], [50.1, 50.2, 50.3, 50.4, 51.5, 51.6],
                              ok=[True] * 5 + [False]), {})
    s = m.series.set_index("sec")
    assert s.loc[0, "count"] == 4 and s.loc[0, "p50"] == pytest.approx(25.0) and s.loc[0, "p95"] == pytest.approx(38.5)
    assert s.loc[1, "count"] == 2 and s.loc[1, "failures"] == 1
    assert m.overall["failures"].tolist() == [0, 1]


def test_throughput_is_successes_over_the_names_window() -> None:
    # 11 successes from t=0 to the last completion at t=10.5 -> 11 / 10.5 per second
    ts = [float(i) for i in range(11)] + [10.0]
    lat = [500.0] * 11 + [1.0]
    m = compute_metrics(frame(["a"] * 12, lat, ts, ok=[True] * 11 + [False]), {})
    row = m.names.iloc[0]
    assert row["window_s"] == pytest.approx(10.5)
    assert row["throughput"] == pytest.approx(11 / 10.5)
    assert row["error_rate"] == pytest.approx(100 / 12)


def test_coordinated_omission_beside_service_time(chaos_analysis: Analysis) -> None:
    names = chaos_analysis.metrics.names.set_index("name")
    wf = names.loc["workflow→completed"]
    # service 100/300 ms; intended start 50 ms earlier -> 150/350 ms from the intended start
    assert wf["service_p50"] == pytest.approx(200.0)
    assert wf["p50"] == pytest.approx(250.0, abs=1e-3)
    assert wf["min"] == pytest.approx(150.0, abs=1e-3) and wf["max"] == pytest.approx(350.0, abs=1e-3)
    assert wf["co_count"] == 40
    stamp = names.loc["POST /stamp"]
    assert stamp["co_count"] == 0 and stamp["p50"] == stamp["service_p50"]


def test_chaos_run_name_table(chaos_analysis: Analysis) -> None:
    stamp = chaos_analysis.metrics.names.set_index("name").loc["POST /stamp"]
    expected = rungen.stamp_samples()
    assert stamp["count"] == 600
    assert stamp["failures"] == (~expected["ok"]).sum() == 55
    assert stamp["p50"] == pytest.approx(np.quantile(expected["latency_ms"], 0.5))
    assert stamp["p90"] == pytest.approx(np.quantile(expected["latency_ms"], 0.9))


def test_selection_by_type_and_all(chaos_analysis: Analysis) -> None:
    m = chaos_analysis.metrics
    assert m.select("e2e")["count"] == 40
    assert m.select("http")["count"] == 600
    assert m.select(None)["count"] == 640
    assert m.select("http:POST /stamp")["count"] == 600
    assert m.select("nope") is None


def test_lag_and_resources(chaos_analysis: Analysis) -> None:
    lag = chaos_analysis.metrics.lag.set_index("consumer").loc["db-adapter"]
    values = 5.0 * (np.arange(60) % 10)
    assert lag["p95"] == pytest.approx(np.quantile(values, 0.95)) and lag["max"] == 45.0
    assert set(chaos_analysis.metrics.resources["part"].astype(str)) == {"orchestrator", "reducer"}
