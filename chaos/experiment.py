"""Experiment files (YAML): loading, validation with file:line:field errors, and the fault plan.

The format follows Chaos Toolkit's (title, description, steady-state
hypothesis of probes with tolerances, method, rollbacks) and adds two forms
for load tests: a `timeline` (faults at given offsets, optionally repeated)
and a `random` monkey (faults drawn from a set at random intervals, with a
seed so a run can be repeated). Every form compiles to one plan: a list of
faults with their start offset and how long each is held.

Line numbers come from the YAML node marks, so each mistake is reported as
`file:line: field.path: message`, all of them at once.
"""
from __future__ import annotations

import random as _random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from chaos.kinds import FAULTS, KINDS, actions_for, fault_type, full_parameters


class ExperimentError(Exception):
    """Every problem found in an experiment file, each as (line, field, message)."""

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]):
        self.path, self.problems = path, problems
        lines = [f"{path}:{line or '?'}: {field + ': ' if field else ''}{message}" for line, field, message in problems]
        super().__init__("invalid experiment file\n" + "\n".join(lines))


# ----------------------------------------------------------------- schema

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _known_kind(kind: str) -> str:
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"unknown target_kind {kind!r} (known: auto, {', '.join(KINDS)})")
    return kind


# "auto" (the kind of the stack part of that name) or a kind of chaos.kinds.KINDS
TargetKindName = Annotated[str, AfterValidator(_known_kind)]


class Probe(_Model):
    """A steady-state probe; `tolerance` is the expected value, or [min, max] for numbers."""

    name: str
    type: Literal["tcp", "http", "kafka", "process", "python"]
    target: str | None = None  # a part of the stack: its address or health URL is used
    address: str | None = None  # host:port for tcp / kafka
    url: str | None = None  # for http
    module: str | None = None  # for python
    func: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    tolerance: Any = True
    timeout: float = Field(2.0, gt=0, le=60)

    @model_validator(mode="after")
    def _needs(self):
        if self.type in ("tcp", "kafka") and not (self.address or self.target):
            raise ValueError(f"a {self.type} probe needs `address` or `target`")
        if self.type == "http" and not (self.url or self.target):
            raise ValueError("an http probe needs `url` or `target`")
        if self.type == "process" and not self.target:
            raise ValueError("a process probe needs `target`")
        if self.type == "python" and not (self.module and self.func):
            raise ValueError("a python probe needs `module` and `func`")
        return self


class Hypothesis(_Model):
    title: str = ""
    probes: list[Probe] = Field(default_factory=list)
    within: float = Field(15.0, ge=0, le=600, description="seconds the hypothesis may take to hold again after the faults")


class Fault(_Model):
    """One fault: what to do (`fault`) to what (`target`, `target_kind`), and for how long."""

    name: str | None = None
    fault: str
    target: str
    target_kind: TargetKindName = "auto"
    parameters: dict[str, Any] = Field(default_factory=dict)
    duration: float | None = Field(None, ge=0, le=86400)

    def label(self) -> str:
        return self.name or f"{self.target}-{self.fault}"


class Pauses(_Model):
    before: float = Field(0, ge=0, le=3600)
    after: float = Field(0, ge=0, le=3600)


class MethodStep(_Model):
    """A Chaos Toolkit-style step: a fault (held for `duration`, else until the end) or a `sleep`."""

    name: str | None = None
    fault: str | None = None
    target: str | None = None
    target_kind: TargetKindName = "auto"
    parameters: dict[str, Any] = Field(default_factory=dict)
    duration: float | None = Field(None, ge=0, le=86400)
    sleep: float | None = Field(None, ge=0, le=86400)
    pauses: Pauses = Field(default_factory=Pauses)

    @model_validator(mode="after")
    def _one(self):
        if self.sleep is None and not (self.fault and self.target):
            raise ValueError("a method step needs `fault` and `target`, or `sleep`")
        if self.sleep is not None and self.fault:
            raise ValueError("a method step is either a fault or a sleep, not both")
        return self


class Repeat(_Model):
    every: float = Field(gt=0, le=86400)
    count: int = Field(ge=1, le=10000)


class TimelineEntry(Fault):
    at: float = Field(ge=0, le=86400)
    duration: float = Field(ge=0, le=86400)
    repeat: Repeat | None = None


class RandomFault(Fault):
    weight: float = Field(1.0, gt=0)


class RandomForm(_Model):
    seed: int
    duration: float = Field(gt=0, le=86400)
    interval: tuple[float, float] = Field(description="[min, max] seconds between faults")
    fault_duration: tuple[float, float] = Field(description="[min, max] seconds each fault is held")
    faults: list[RandomFault] = Field(min_length=1)

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("interval", "fault_duration"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"{name} must be [min, max] with 0 <= min <= max")
        return self


class Experiment(_Model):
    version: Literal[1] = 1
    title: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    toxiproxy_url: str | None = None
    steady_state_hypothesis: Hypothesis | None = Field(None, alias="steady-state-hypothesis")
    method: list[MethodStep] | None = None
    timeline: list[TimelineEntry] | None = None
    random: RandomForm | None = None
    rollbacks: list[Fault] = Field(default_factory=list)
    max_duration: float = Field(900, gt=0, le=86400, description="hard bound on the whole run, seconds")

    @model_validator(mode="after")
    def _one_form(self):
        forms = [n for n in ("method", "timeline", "random") if getattr(self, n) is not None]
        if len(forms) != 1:
            raise ValueError("give exactly one of `method`, `timeline` or `random`"
                             + (f" (found {', '.join(forms)})" if forms else ""))
        return self

    def plan(self) -> "Plan":
        return build_plan(self)


# ----------------------------------------------------------------- the plan

@dataclass
class PlannedFault:
    at: float  # seconds after the method starts
    duration: float | None  # held this long; None = until the end of the method
    fault: Fault
    name: str


@dataclass
class Plan:
    faults: list[PlannedFault]
    end: float  # seconds after the start when the method is over (last heal, or the random window)


def build_plan(exp: Experiment) -> Plan:
    plan: list[PlannedFault] = []
    end = 0.0
    if exp.method is not None:
        t = 0.0
        for step in exp.method:
            t += step.pauses.before
            if step.sleep is not None:
                t += step.sleep
            else:
                fault = Fault(name=step.name, fault=step.fault, target=step.target, target_kind=step.target_kind,
                              parameters=step.parameters, duration=step.duration)
                plan.append(PlannedFault(t, step.duration, fault, fault.label()))
                t += step.duration or 0.0
            t += step.pauses.after
        end = t
    elif exp.timeline is not None:
        for entry in exp.timeline:
            count, every = (entry.repeat.count, entry.repeat.every) if entry.repeat else (1, 0.0)
            for i in range(count):
                suffix = f"#{i + 1}" if count > 1 else ""
                plan.append(PlannedFault(entry.at + i * every, entry.duration, entry, entry.label() + suffix))
    else:
        form = exp.random
        rng = _random.Random(form.seed)
        t = rng.uniform(*form.interval)
        weights = [f.weight for f in form.faults]
        n = 0
        while t < form.duration:
            fault = rng.choices(form.faults, weights)[0]
            held = min(rng.uniform(*form.fault_duration), form.duration - t)
            n += 1
            plan.append(PlannedFault(round(t, 3), round(held, 3), fault, f"{fault.label()}#{n}"))
            t += held + rng.uniform(*form.interval)
        end = form.duration
    end = max([end] + [p.at + (p.duration or 0.0) for p in plan])
    return Plan(sorted(plan, key=lambda p: p.at), end)


# ----------------------------------------------------------------- loading

def _to_python(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    """Build plain data from a composed YAML node, recording each path's line (1-based)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            out[key] = _to_python(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _line_for(path: tuple, lines: dict[tuple, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


_FRIENDLY = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
}


def parse(text: str, path: str = "<experiment>") -> Experiment:
    """Validate experiment text; raises ExperimentError naming file, line and field of every mistake."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ExperimentError(path, [(mark.line + 1 if mark else None, "", f"YAML syntax: {exc.problem}")]) from None
    if node is None:
        raise ExperimentError(path, [(1, "", "the file is empty")])
    lines: dict[tuple, int] = {}
    data = _to_python(node, (), lines)
    if not isinstance(data, dict):
        raise ExperimentError(path, [(lines.get(()), "", "an experiment is a mapping (title, method, ...)")])
    problems: list[tuple[int | None, str, str]] = []
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = _FRIENDLY.get(err["type"], err["msg"].removeprefix("Value error, "))
            problems.append((_line_for(loc, lines), ".".join(str(p) for p in loc), message))
        raise ExperimentError(path, problems) from None
    for loc, fault in _faults(exp):
        for sub, message in check_fault(fault):
            full = loc + sub
            problems.append((_line_for(full, lines), ".".join(str(p) for p in full), message))
    if problems:
        raise ExperimentError(path, problems)
    return exp


def load(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExperimentError(str(path), [(None, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse(text, str(path))


def _faults(exp: Experiment):
    for i, step in enumerate(exp.method or []):
        if step.fault:
            yield ("method", i), step
    for i, entry in enumerate(exp.timeline or []):
        yield ("timeline", i), entry
    if exp.random is not None:
        for i, fault in enumerate(exp.random.faults):
            yield ("random", "faults", i), fault
    for i, fault in enumerate(exp.rollbacks):
        yield ("rollbacks", i), fault


def check_fault(fault) -> list[tuple[tuple, str]]:
    """Problems with a fault's action and parameters, as (sub-path, message)."""
    kinds = [fault.target_kind] if fault.target_kind != "auto" else [k for k in KINDS if (k, fault.fault) in FAULTS]
    if not kinds or (fault.target_kind != "auto" and (fault.target_kind, fault.fault) not in FAULTS):
        known = ", ".join(actions_for(fault.target_kind))
        return [(("fault",), f"unknown fault {fault.fault!r} for target_kind {fault.target_kind} (known: {known})")]
    errors = []
    for kind in kinds:
        ft = fault_type(kind, fault.fault)
        try:
            params = full_parameters(ft, fault.parameters)
        except ValueError as exc:
            errors.append((("parameters",), str(exc)))
            continue
        for name, value in params.items():
            problem = _check_value(ft, name, value)
            if problem:
                errors.append((("parameters", name), problem))
        if not errors:
            return []
    return errors[:1] if len(kinds) > 1 else errors


def _check_value(ft, name: str, value: Any) -> str | None:
    """The fault type's own check of the parameter, else: a whole-number default wants a whole number >= 0."""
    check = ft.checks.get(name)
    if check is not None:
        return check(value)
    default = ft.parameters[name]
    if isinstance(default, int) and not isinstance(default, bool):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"must be a whole number >= 0, got {value!r}"
    return None
