"""The system adapter: what the harness must know about one system under test, and nothing more.

The harness (the users' base classes, the end-to-end observer, the drain and
the loss accounting) is generic. An adapter tells it a few things about a
particular system:

1. how to build and key an event: ``event(...)`` gives a ``Message`` (topic,
   partition key, bytes, and the event and correlation ids the harness
   tracks);
2. which result topics the observer reads, and how to read a correlation id
   and an event type from a result message (``result_topics``,
   ``read_result``); a user waits for "the result of what I sent" by
   correlation id;
3. how to read the truth after the drain: one SQL query per ledger kind on
   the stack's ``DATABASE_URL`` (``truth_queries``), or a coroutine of your
   own (override ``read_truth``) for any other store. The truth holds what
   is stored under the run's namespace *and* every item the run sent, by
   its id, whatever namespace it was stored under: the loss accounting can
   then see items never sent (unexpected) and items stored under another
   tenant (leaked);
4. which addresses its users need from the stack's environment
   (``env_keys``, e.g. ``ORDERS_URL``);
5. optionally, what only the system can tell about the run, as numbers
   (``observe``: checked as ``observed(<name>)``);
6. for the sampler (harness/sampler.py), optionally: under which name each
   consumer group's lag is recorded (``consumer_group_label``) and the
   system's own backlog, e.g. unsent outbox rows (``backlog``).

Everything the load sends carries the run's namespace (tenant), so the truth
of this run can be told from any other run's on the same system.
``adapters/bridge/`` adapts bridgestorm's own nodes; docs/own-system.md walks
through adapting another system.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg


@dataclass(frozen=True)
class Message:
    """One message to publish. ``event_id`` keys its sample (and, by default, its ledger row)."""

    topic: str
    key: str
    value: bytes | None
    event_id: str
    correlation_id: str


@dataclass(frozen=True)
class Result:
    """A result message, as the observer matched it: the waiting user gets ``body``."""

    correlation_id: str
    event_type: str
    body: Any


@dataclass(frozen=True)
class TruthQuery:
    """How one ledger kind is found in the store: ``sql`` returns (item_id, namespace, count) rows.

    ``$1`` is the run's namespace, ``$2`` (``text[]``) the ids of every item
    of this kind the run sent: return the items stored under ``$1`` and the
    items of ``$2`` wherever they are stored. ``count`` is how many times the
    item took effect where once is required (the analysis counts an item
    stored more than once as duplicated): count an effect no unique key
    prevents, or a duplicate can never show.
    """

    source: str  # the table (or store) the rows come from, shown in the report
    sql: str


class IncarnationSource(Protocol):
    """Tells a broker that came back empty (a memory broker restarted) from one that kept its log."""

    async def start(self, wait_s: float = 30.0) -> None: ...

    async def read(self) -> str | None: ...

    async def stop(self) -> None: ...


class SystemAdapter:
    """How the harness talks to one system under test; subclass it and fill in what your system needs."""

    name: str = "system"
    env_keys: tuple[str, ...] = ()
    result_topics: tuple[str, ...] = ()
    truth_queries: Mapping[str, TruthQuery] = {}

    def event(self, event_type: str, payload: Mapping[str, Any], *, topic: str, key: str, namespace: str,
              source: str, correlation_id: str | None = None, event_id: str | None = None,
              metadata: Mapping[str, Any] | None = None) -> Message:
        """One event of ``event_type`` for ``namespace``, keyed by ``key``, ready to publish on ``topic``."""
        raise NotImplementedError(f"{type(self).__name__} does not build events")

    def read_result(self, raw: bytes | None) -> Result | None:
        """A message of a result topic, or None when it is not one to match (malformed, or not a result).

        Called for every message of the result topics, so it must be cheap.
        """
        raise NotImplementedError(f"{type(self).__name__} does not read results")

    def truth_kinds(self) -> set[str]:
        """The ledger kinds the truth can be read for (other kinds are left out of the drain's wait)."""
        return set(self.truth_queries)

    async def read_truth(self, env: Mapping[str, str], namespace: str, kinds: Collection[str] | None = None,
                         sent: Mapping[str, Collection[str]] | None = None) -> list[dict[str, Any]]:
        """Truth rows (rundir's TRUTH_SCHEMA): the items of ``namespace``, and ``sent`` (kind -> item ids) wherever
        they are stored. By default ``truth_queries``."""
        if not self.truth_queries:
            return []
        url = env.get("DATABASE_URL")
        if not url:
            raise RuntimeError(f"{self.name}: DATABASE_URL is unknown, so the truth cannot be read")
        conn = await asyncpg.connect(url)
        try:
            rows: list[dict[str, Any]] = []
            for kind, query in self.truth_queries.items():
                if kinds is not None and kind not in kinds:
                    continue
                ids = sorted((sent or {}).get(kind, ()))
                for item_id, ns, count in await conn.fetch(query.sql, namespace, ids):
                    rows.append({"kind": kind, "item_id": item_id, "namespace": ns, "count": count,
                                 "source": query.source})
            return rows
        finally:
            await conn.close()

    async def message_fates(self, env: Mapping[str, str],
                            messages: list[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
        """What became of messages a topic fault published, per consumer group that reads their topic.

        ``messages`` are the journal's ``observed.messages`` with ``topic`` added
        (``label``, ``partition``, ``offset``, ``event_id`` or None). Return one row
        per (message, group): ``index`` (into ``messages``), ``consumer`` and
        ``fate``, one of "dead-lettered" (the group set it aside with a reason),
        "applied" (the group took it: a receipt, or its effect, is stored) or
        "unaccounted". None (the default): this system cannot tell, and the
        analysis says so instead of a verdict.
        """
        return None

    async def observe(self, env: Mapping[str, str], namespace: str) -> dict[str, float] | None:
        """Numbers the system itself reports about the run, by name, read once after the drain.

        What only the system can tell: how sure its pattern discovery is, its
        cache's hit ratio... Thresholds check them as ``observed(<name>)``; they
        land in ``observations.json``. None (the default): nothing to report.
        """
        return None

    def stack_env(self, options: Any) -> dict[str, str]:
        """Extra environment for the services when ``--stack embedded`` starts them (from Locust's options)."""
        return {}

    def broker_incarnation(self, bootstrap: str) -> IncarnationSource | None:
        """A reader of the broker's incarnation, when the system marks one (None: the broker keeps its log)."""
        return None

    def consumer_group_label(self, group: str) -> str | None:
        """The name a consumer group's lag is recorded under in ``lag/``; None: do not sample this group.

        A system that names its groups per deployment or broker incarnation maps
        them back to one stable name here, so a group's lag is one line over the run.
        """
        return group

    async def backlog(self, env: Mapping[str, str]) -> dict[str, int]:
        """The system's own backlog in messages, by name (e.g. ``{"outbox": 12}``), read once a second.

        What waits outside the broker to be published: the sampler records each
        entry as a ``lag/`` row beside the consumer groups' lag, and the drain
        time counts it. Raise when it cannot be read (no row is written then).
        """
        return {}
