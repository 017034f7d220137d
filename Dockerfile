# bridgestorm: one image for the six bridge nodes and for Locust (master and workers).
#
#   docker build -t bridgestorm:local .
#   docker run --rm bridgestorm:local python -m nodes run stamping        # a node
#   docker run --rm bridgestorm:local locust -f locustfiles/bridge.py ... # Locust
#
# compose/docker-compose.yml builds it and sets the environment each node reads
# (nodes/config.py). The nodes answer GET /ready on $HTTP_PORT.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (cached while only the code changes): install the project
# from its metadata alone, then again with the code.
COPY pyproject.toml README.md ./
RUN mkdir -p nodes chaos analysis locustfiles \
    && touch nodes/__init__.py chaos/__init__.py analysis/__init__.py locustfiles/__init__.py \
    && pip install . \
    && pip uninstall -y bridgestorm \
    && rm -rf nodes chaos analysis locustfiles build *.egg-info

# The code. Locust is started with `-f locustfiles/<scenario>.py`, so the
# locustfiles (and the experiment and threshold files) stay in /app as well.
COPY . .
RUN pip install --no-deps . \
    && rm -rf build *.egg-info \
    && useradd --system --uid 10001 --home-dir /app bridgestorm \
    && mkdir -p /app/reports \
    && chown bridgestorm /app/reports

USER bridgestorm

# nodes: one HTTP port each (compose uses 8000-8005); Locust: web UI 8089, workers 5557
EXPOSE 8000-8005 8089 5557

CMD ["python", "-m", "nodes", "--help"]
