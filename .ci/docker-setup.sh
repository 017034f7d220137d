#!/usr/bin/env bash
# Make a Docker Engine answer on this machine, for the chaos tests.
#
# Why: the chaos module's container target and the `--broker-runtime docker`
# stack need a real engine, and CI runs on a fresh machine. No registry is
# reachable, so the engine runs without a bridge or iptables (containers use
# host networking) and images are built locally with `docker import`.
#
# Idempotent: returns at once when `docker info` already answers.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/bridgestorm-dockerd.log}"

if docker info >/dev/null 2>&1; then
    echo "docker-setup: engine already answers"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-setup: installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "docker-setup: starting dockerd (logs in $LOG)"
    nohup dockerd --bridge=none --iptables=false >"$LOG" 2>&1 &
fi

for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "docker-setup: engine answers"
        exit 0
    fi
    sleep 1
done

echo "docker-setup: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
