"""A Kafka topic of the stack's broker: inject bad messages into it, or replay what it carried.

- `inject` publishes the catalogue's bad messages (chaos/messages.py), made
  from the newest real message on the topic, so they look like the
  consumers' own traffic: the same envelope with one thing wrong, about an
  entity of its own (`disguise`); the `duplicate` is the real message again.
  Or, with `file`, the lines of the user's own file, one message each.
  Seeded; at most `limit` messages.
- `replay` publishes again what the topic received in the last `seconds`
  (at most `limit` messages, keys, values and headers kept): duplicate
  delivery, which consumers must take once.

Every message carries the header `bridgestorm-injection` (the fault id) and
`bridgestorm-class` (`class:name`, `file:<line>` or `replay:<partition>:<offset>`),
so a dead-letter table that keeps headers says which fault sent what. The
journal line's `observed` has the counts per class and where each message
landed (partition, offset, and its event id when it has one). Both end by themselves: nothing to heal.

Safety: the broker is the stack's (`KAFKA_BOOTSTRAP_SERVERS` of its state
file, else of the environment) and must be on loopback.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from chaos.messages import CLASSES, bad_messages
from chaos.targets import ChaosRefused, FaultType, TargetContext, TargetError, TargetKind
from stack.proxy.addresses import is_loopback
from stack.state import StateFile

INJECTION_HEADER = "bridgestorm-injection"
CLASS_HEADER = "bridgestorm-class"
MAX_MESSAGES = 10_000  # any one fault: a bounded run stays bounded
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SEND_TIMEOUT_S = 10.0


REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120.0


def _in_own_process(action: str, arguments: dict) -> dict:
    """Run one topic fault in a Python process of its own and return what it sent.

    Why: the runner calls faults from a thread, which under Locust is a
    greenlet; aiokafka's asyncio loop inside gevent's patched selectors
    blocked every user for seconds (a 6 s replay, then a run that never
    ended). A child process is one cooperative wait for gevent and a plain
    one elsewhere; it costs about half a second to start.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-m", "chaos.targets.topic", action, json.dumps(arguments)],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=os.getcwd())
    except subprocess.TimeoutExpired:
        raise TargetError(f"topic {arguments['topic']!r}: {action} did not end within {RUN_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise TargetError(lines[-1] if lines else f"topic {action} exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class TopicTarget:
    """`TopicTarget("workflow-events.v1", "127.0.0.1:9092").inject("f1", classes=["malformed"])`."""

    kind = "topic"

    def __init__(self, topic: str, bootstrap: str):
        host = bootstrap.split(",")[0].rsplit(":", 1)[0].strip("[]")
        if not is_loopback(host):
            raise ChaosRefused(f"the broker {bootstrap} is not on loopback: bridgestorm sends messages only to "
                               "a broker on this machine")
        self.topic, self.bootstrap = topic, bootstrap

    # -- faults
    def inject(self, fault_id: str, classes: list[str] | None = None, seed: int = 1, limit: int = 0,
               file: str = "") -> dict:
        """Publish the catalogue's messages (or the file's lines); what was sent, for the journal."""
        return _in_own_process("inject", {"topic": self.topic, "bootstrap": self.bootstrap, "fault_id": fault_id,
                                          "classes": classes, "seed": seed, "limit": limit,
                                          "file": os.path.abspath(file) if file else ""})

    def replay(self, fault_id: str, seconds: float = 10.0, limit: int = 1000) -> dict:
        """Publish again what the topic received in the last `seconds`; what was sent, for the journal."""
        return _in_own_process("replay", {"topic": self.topic, "bootstrap": self.bootstrap, "fault_id": fault_id,
                                          "seconds": seconds, "limit": limit})

    async def _inject(self, fault_id: str, classes: list[str] | None, seed: int, limit: int, file: str) -> dict:
        if file:
            lines = Path(file).read_bytes().splitlines()
            messages = [(f"file:{i}", None, line) for i, line in enumerate(lines, 1) if line.strip()]
        else:
            key, template = await self._newest_object()
            own_key, own = disguise(template, key, seed)
            made = bad_messages(own, seed, classes=classes)
            # a duplicate is of the real event itself (a consumer must take it once); the rest are about an
            # entity of their own, so one that is applied changes nothing the load's ledger counts
            messages = [(m.label, (key if m.cls == "duplicate" else own_key),
                         template if m.cls == "duplicate" else m.value) for m in made]
        if limit and len(messages) > limit:
            messages = sorted(random.Random(seed).sample(messages, limit), key=lambda m: m[0])
        return await self._publish(fault_id, [(label, key, value, []) for label, key, value in messages[:MAX_MESSAGES]])

    async def _replay(self, fault_id: str, seconds: float, limit: int) -> dict:
        since_ms = int((time.time() - seconds) * 1000)
        found = []
        async with self._consumer() as consumer:
            tps = self._partitions(consumer)
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            for tp in tps:
                start = max(begins[tp], ends[tp] - limit)
                if start >= ends[tp]:
                    continue
                consumer.assign([tp])
                consumer.seek(tp, start)
                while True:  # to the end offset taken above: what is published meanwhile is not replayed
                    records = (await consumer.getmany(tp, timeout_ms=2000, max_records=500)).get(tp, [])
                    found += [r for r in records if r.offset < ends[tp] and r.timestamp >= since_ms
                              and not any(k == INJECTION_HEADER for k, _ in (r.headers or ()))]
                    if not records or records[-1].offset >= ends[tp] - 1:
                        break
        found = sorted(found, key=lambda r: r.timestamp)[-limit:] if limit else found
        return await self._publish(fault_id, [(f"replay:{r.partition}:{r.offset}", r.key, r.value, list(r.headers or ()))
                                              for r in found])

    # -- the broker
    def _consumer(self) -> "_Consumer":
        return _Consumer(self.bootstrap)

    def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            raise TargetError(f"no topic {self.topic!r} on the broker {self.bootstrap}")
        return [TopicPartition(self.topic, p) for p in sorted(parts)]

    async def _newest_object(self) -> tuple[bytes | None, bytes]:
        """The key and value of the newest message on the topic that is a JSON object and no injection."""
        newest = None
        async with self._consumer() as consumer:
            tps = self._partitions(consumer)
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            for tp in tps:
                if ends[tp] == 0:
                    continue
                consumer.seek(tp, max(0, ends[tp] - 20))
                records = (await consumer.getmany(tp, timeout_ms=2000)).get(tp, [])
                for r in records:
                    if any(k == INJECTION_HEADER for k, _ in (r.headers or ())) or r.value is None:
                        continue
                    try:
                        doc = json.loads(r.value)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(doc, dict) and (newest is None or r.timestamp > newest.timestamp):
                        newest = r
        if newest is None:
            raise TargetError(f"no real message on topic {self.topic!r} to make bad messages from: inject into "
                              "a topic with traffic (or give `file`)")
        return newest.key, newest.value

    async def _publish(self, fault_id: str, messages: list[tuple[str, bytes | None, bytes | None, list]]) -> dict:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", max_request_size=MAX_MESSAGE_BYTES,
                                    request_timeout_ms=int(SEND_TIMEOUT_S * 1000))
        await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
        sent: list[dict] = []
        by_class: dict[str, int] = {}
        size = 0
        try:
            pending = []  # sent in order without waiting for each ack: the producer keeps per-partition order
            for label, key, value, headers in messages:
                marks = [(INJECTION_HEADER, fault_id.encode()), (CLASS_HEADER, label.encode())]
                pending.append(await producer.send(
                    self.topic, value, key=key, headers=[h for h in headers if h[0] not in (INJECTION_HEADER, CLASS_HEADER)]
                    + marks))
            acks = await asyncio.wait_for(asyncio.gather(*pending), SEND_TIMEOUT_S + len(pending) * 0.05)
            for (label, _, value, _), meta in zip(messages, acks):
                sent.append({"label": label, "partition": meta.partition, "offset": meta.offset,
                             "event_id": _event_id(value)})
                cls = label.split(":", 1)[0]
                by_class[cls] = by_class.get(cls, 0) + 1
                size += len(value or b"")
        finally:
            await producer.stop()
        return {"observed": {"topic": self.topic, "sent": len(sent), "bytes": size, "by_class": by_class,
                             "messages": sent}}


def disguise(template: bytes, key: bytes | None, seed: int) -> tuple[bytes | None, bytes]:
    """The template about an entity of its own: its key replaced everywhere with a fresh one, its namespace marked.

    Why: an injected message the consumers apply (a valid envelope with an odd
    value) would otherwise count as one more event of a real workflow or node,
    and the loss accounting would blame the system for a duplicate the chaos sent.
    """
    text = template.decode("utf-8", "replace")
    new_key = key
    if key:
        old = key.decode("utf-8", "replace")
        rng = random.Random(seed)
        try:
            uuid.UUID(old)
            fresh = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        except ValueError:
            fresh = f"{old}-injected-{rng.getrandbits(32):08x}"
        if old and json.dumps(old)[1:-1] == old:  # a plain id: safe to replace inside the JSON text
            text = text.replace(old, fresh)
            new_key = fresh.encode()
    doc = json.loads(text)
    if isinstance(doc.get("namespace"), str):
        doc["namespace"] = f"{doc['namespace']}-injected"
    return new_key, json.dumps(doc).encode()


def _event_id(value: bytes | None) -> str | None:
    """The event id a message carries, if it is a JSON object with one (how a consumer's receipt finds it)."""
    try:
        doc = json.loads(value) if value else None
    except (ValueError, RecursionError):  # the catalogue nests past any parser's depth on purpose
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("event_id"), str):
        return None
    try:  # the catalogue also makes event ids 256 KiB long: only a real one goes to the journal
        return str(uuid.UUID(doc["event_id"]))
    except ValueError:
        return None


class _Consumer:
    """A consumer without a group, started and stopped around one read."""

    def __init__(self, bootstrap: str):
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         max_partition_fetch_bytes=MAX_MESSAGE_BYTES, request_timeout_ms=5000,
                                         fetch_max_wait_ms=50)  # Tansu answers a waiting fetch only at its end

    async def __aenter__(self) -> AIOKafkaConsumer:
        await asyncio.wait_for(self.consumer.start(), SEND_TIMEOUT_S)
        return self.consumer

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()


# ----------------------------------------------------------------- the kind

def check_classes(value: object) -> str | None:
    names = _classes(value) if isinstance(value, (str, list)) else None
    if names is None:
        return f"classes must be 'all', a comma-separated string or a list of names (known: {', '.join(CLASSES)})"
    unknown = sorted(set(names) - set(CLASSES))
    return f"unknown message class(es) {', '.join(unknown)} (known: {', '.join(CLASSES)})" if unknown else None


def _classes(value: str | list) -> list[str] | None:
    """'all' -> None (every class); 'a,b' or [a, b] -> the names."""
    if value == "all" or value == ["all"]:
        return []
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    return names if all(isinstance(n, str) and n for n in names) else None


def check_file(value: object) -> str | None:
    if not isinstance(value, str):
        return "file must be a path (a text file, one message per line)"
    if value and not os.path.isfile(value):
        return f"no file {value!r}"
    return None


def check_limit(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_MESSAGES:
        return f"limit must be a whole number from 0 (every message) to {MAX_MESSAGES}"
    return None


def check_seconds(value: object) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 3600:
        return "seconds must be more than 0 and at most 3600"
    return None


def _inject(target: TopicTarget, params: dict, fault_id: str) -> dict:
    names = _classes(params["classes"]) or None
    return target.inject(fault_id, classes=names, seed=int(params["seed"]), limit=int(params["limit"]),
                         file=params["file"])


def build(name: str, context: TargetContext) -> TopicTarget:
    """A topic of the stack's broker (its state file's KAFKA_BOOTSTRAP_SERVERS, else the environment's)."""
    bootstrap = None
    state_file = StateFile(context.state_path)
    if state_file.exists():
        bootstrap = state_file.read().env.get("KAFKA_BOOTSTRAP_SERVERS")
    bootstrap = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise ChaosRefused(f"no broker for topic {name!r}: no stack state file at {state_file.path} and no "
                           "KAFKA_BOOTSTRAP_SERVERS")
    return TopicTarget(name, bootstrap)


KIND = TargetKind(
    name="topic",
    summary="a Kafka topic of the stack's broker (on loopback), by name",
    faults=(
        FaultType("topic", "inject", "publish the catalogue's bad messages, made from the topic's newest real "
                  "message (or the lines of `file`)", {"classes": "all", "seed": 1, "limit": 0, "file": ""}, None,
                  inject=_inject, checks={"classes": check_classes, "file": check_file, "limit": check_limit},
                  watched=False),
        FaultType("topic", "replay", "publish again what the topic received in the last `seconds` "
                  "(duplicate delivery)", {"seconds": 10, "limit": 1000}, None,
                  inject=lambda t, p, f: t.replay(f, seconds=float(p["seconds"]), limit=int(p["limit"])),
                  checks={"seconds": check_seconds, "limit": check_limit}, watched=False),
    ),
    build=build,
)


def main(argv: list[str]) -> int:
    """`python -m chaos.targets.topic inject|replay '<json arguments>'`: what `_in_own_process` runs."""
    action, arguments = argv[1], json.loads(argv[2])
    target = TopicTarget(arguments.pop("topic"), arguments.pop("bootstrap"))
    try:
        run = target._inject if action == "inject" else target._replay
        result = asyncio.run(run(**arguments))
    except (TargetError, ChaosRefused, OSError, ValueError) as exc:
        print(f"topic {target.topic!r}: {action}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
