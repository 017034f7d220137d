"""Locust entry points: thin files that pick the users and install the harness with the system's adapter.

    locust -f locustfiles/bridge.py                                   # web UI (Chaos and Thresholds tabs)
    locust -f locustfiles/bridge.py --headless -u 200 -r 200 -t 60s   # CI; exit code 1 when a threshold fails
    locust -f locustfiles/introspection.py,locustfiles/shapes/burst.py --headless -t 15s --burst 100
    locust -f locustfiles/stamping.py --headless -u 10 -r 10 -t 15s --rate 5      # fixed-rate mode
    locust -f locustfiles/workflows.py --headless -u 10 -t 30s --chaos broker-latency
    locust --config scenarios/flagship.conf                           # a scenario of the catalog

bridgestorm's options (see ``locust --help``): --scenario, --stack auto|embedded|external,
--stack-state, --chaos, --thresholds, --run-dir, --drain, --rate, --e2e-timeout, --namespace,
--no-report, --burst and --shape-*; the bridge's users add --heartbeat, --intelligence,
--stamp-sizes and --batch-size, --resend-share, --malformed.
"""
