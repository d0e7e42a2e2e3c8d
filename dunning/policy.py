"""The dunning policy: ordered steps plus the thresholds the rules use.

The default policy is DESIGN.md's table. A TOML file (`dunning.toml`) is read by the
shell and handed here as a parsed mapping: `policy_from_mapping` validates it over the
default and raises `PolicyError` with every problem it finds, each naming its key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from dunning.model import Approval, Channel, Kind, Lane, Tone


class PolicyError(ValueError):
    """The policy file is invalid; `problems` lists each problem with its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid policy:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Step:
    key: str
    day: int  # <= 0: days relative to the contractual due date; > 0: after the effective due date
    lane: Lane
    kind: Kind
    tone: Tone | None = None  # customer messages only
    approval: Approval | None = None  # customer messages only
    channel: Channel = Channel.SLACK
    min_amount: Decimal = Decimal("0")  # below this amount due, the step is held
    skip_autopay: bool = False  # autopay customers do not get this step (pre_due)
    ask_owner_to_call: bool = False  # the card asks the owner to phone the customer
    cc_customer_cfo: bool = False  # the message copies the customer's CFO


@dataclass(frozen=True)
class Lanes:
    """First day past due of each lane; `current` is everything before `early`."""

    early: int = 1
    late: int = 15
    critical: int = 45


@dataclass(frozen=True)
class Sensitivity:
    """Accounts that never get an automatic customer message."""

    high_arr: Decimal = Decimal("250000")  # ARR at or above this is sensitive
    low_health_below: int = 40  # health below this is "at risk"


@dataclass(frozen=True)
class Chronic:
    """When a customer counts as a chronic late payer (see dunning.risk for the grounding)."""

    min_invoices: int = 3  # settled invoices needed before history says anything
    late_share: float = 0.5  # share of settled invoices paid late
    average_days_late: float = 5.0  # ... and paid at least this late on average
    broken_promises: int = 2  # or this many broken promises


@dataclass(frozen=True)
class Policy:
    steps: tuple[Step, ...]
    grace_business_days: int = 2
    promise_grace_business_days: int = 2
    minimum_amount: Decimal = Decimal("0")
    lanes: Lanes = field(default_factory=Lanes)
    sensitivity: Sensitivity = field(default_factory=Sensitivity)
    chronic: Chronic = field(default_factory=Chronic)

    def step(self, key: str) -> Step:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(key)

    def index_of(self, key: str) -> int:
        for i, s in enumerate(self.steps):
            if s.key == key:
                return i
        return -1

    def fingerprint(self) -> str:
        """Stable hash: stored next_action_on dates are recomputed when it changes."""
        blob = json.dumps(asdict(self), default=str, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEFAULT_STEPS: tuple[Step, ...] = (
    Step("pre_due", -3, Lane.CURRENT, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER,
         Channel.EMAIL, skip_autopay=True),
    Step("nudge", 1, Lane.EARLY, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER,
         Channel.EMAIL),
    Step("follow_up", 7, Lane.EARLY, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER,
         Channel.EMAIL),
    Step("owner_loop_in", 10, Lane.EARLY, Kind.OWNER_TASK),
    Step("firm_notice", 15, Lane.LATE, Kind.CUSTOMER_MESSAGE, Tone.FIRM, Approval.OWNER,
         Channel.EMAIL, ask_owner_to_call=True),
    Step("pause_warning", 30, Lane.LATE, Kind.CUSTOMER_MESSAGE, Tone.FINAL, Approval.FINANCE,
         Channel.EMAIL, cc_customer_cfo=True),
    Step("service_pause", 45, Lane.CRITICAL, Kind.FINANCE_DECISION),
)

DEFAULT_POLICY = Policy(steps=DEFAULT_STEPS)

_TOP_KEYS = {
    "grace_business_days", "promise_grace_business_days", "minimum_amount", "lanes",
    "sensitivity", "chronic", "steps",
}
_STEP_KEYS = {
    "key", "day", "lane", "kind", "tone", "approval", "channel", "min_amount", "skip_autopay",
    "ask_owner_to_call", "cc_customer_cfo",
}


def _choices(enum: type[Any]) -> str:
    return ", ".join(m.value for m in enum)


class _Reader:
    """Collects every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def unknown(self, where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
        for k in data:
            if k not in allowed:
                self.problems.append(
                    f"{where}{k}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def integer(self, where: str, value: Any, *, minimum: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(f"{where}: expected a whole number, got {value!r}")
            return None
        if minimum is not None and value < minimum:
            self.problems.append(f"{where}: must be at least {minimum}, got {value}")
            return None
        return value

    def decimal(self, where: str, value: Any) -> Decimal | None:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self.problems.append(
                f"{where}: write amounts as a quoted decimal string (\"25.00\") or a whole "
                f"number, got {value!r}")
            return None
        try:
            d = Decimal(str(value))
        except InvalidOperation:
            self.problems.append(f"{where}: not a decimal amount: {value!r}")
            return None
        if not d.is_finite() or d < 0:
            self.problems.append(f"{where}: must be a non-negative amount, got {value!r}")
            return None
        return d

    def fraction(self, where: str, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problems.append(f"{where}: expected a number, got {value!r}")
            return None
        return float(value)

    def boolean(self, where: str, value: Any) -> bool | None:
        if not isinstance(value, bool):
            self.problems.append(f"{where}: expected true or false, got {value!r}")
            return None
        return value

    def enum(self, where: str, value: Any, enum: type[Any]) -> Any:
        try:
            return enum(value)
        except ValueError:
            self.problems.append(f"{where}: {value!r} is not one of: {_choices(enum)}")
            return None

    def table(self, where: str, value: Any) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problems.append(f"{where}: expected a table")
            return None
        return value


def _read_step(r: _Reader, where: str, data: Mapping[str, Any], base: Step | None) -> Step | None:
    r.unknown(f"{where}.", data, _STEP_KEYS)
    key = data.get("key", base.key if base else None)
    if not isinstance(key, str) or not key.strip():
        r.problems.append(f"{where}.key: every step needs a key (a short name)")
        return None
    fields: dict[str, Any] = asdict(base) if base else {}
    fields["key"] = key
    if base is None:
        for required in ("day", "kind"):
            if required not in data:
                r.problems.append(f"{where}.{required}: required for a new step '{key}'")
    readers: dict[str, Callable[[str, Any], Any]] = {
        "day": lambda w, v: r.integer(w, v),
        "lane": lambda w, v: r.enum(w, v, Lane),
        "kind": lambda w, v: r.enum(w, v, Kind),
        "tone": lambda w, v: r.enum(w, v, Tone),
        "approval": lambda w, v: r.enum(w, v, Approval),
        "channel": lambda w, v: r.enum(w, v, Channel),
        "min_amount": lambda w, v: r.decimal(w, v),
        "skip_autopay": lambda w, v: r.boolean(w, v),
        "ask_owner_to_call": lambda w, v: r.boolean(w, v),
        "cc_customer_cfo": lambda w, v: r.boolean(w, v),
    }
    ok = True
    for name, read in readers.items():
        if name in data:
            value = read(f"{where}.{name}", data[name])
            if value is None:
                ok = False
            fields[name] = value
    if not ok or "day" not in fields or "kind" not in fields:
        return None
    fields.setdefault("lane", Lane.CURRENT)
    kind = fields["kind"]
    if kind is Kind.CUSTOMER_MESSAGE:
        fields.setdefault("tone", None)
        fields.setdefault("approval", None)
        if fields.get("tone") is None:
            r.problems.append(f"{where}.tone: a customer_message step needs a tone "
                              f"({_choices(Tone)})")
            ok = False
        if fields.get("approval") is None:
            r.problems.append(f"{where}.approval: a customer_message step needs an approval "
                              f"({_choices(Approval)})")
            ok = False
        if "channel" not in data and fields.get("channel") in (None, Channel.SLACK):
            fields["channel"] = Channel.EMAIL  # a new message step defaults to email
        if fields["channel"] is Channel.SLACK:
            r.problems.append(f"{where}.channel: a customer_message goes by email or billing, "
                              "not slack")
            ok = False
    else:
        if data.get("tone") is not None or data.get("approval") is not None:
            r.problems.append(f"{where}: tone and approval apply only to customer_message "
                              f"steps, not {kind.value}")
            ok = False
        fields["tone"] = None
        fields["approval"] = None
        fields["channel"] = Channel.SLACK
    if not ok:
        return None
    if isinstance(fields.get("min_amount"), str):
        fields["min_amount"] = Decimal(fields["min_amount"])
    return Step(**fields)


def policy_from_mapping(data: Mapping[str, Any], base: Policy = DEFAULT_POLICY) -> Policy:
    """Validate a parsed TOML policy over `base`; raise PolicyError listing every problem.

    `steps` is either an array of tables (it replaces the steps; listed in day order, each
    inheriting fields from the default step of the same key) or a table of tables keyed by
    step key (each overrides fields of that existing step).
    """
    r = _Reader()
    root = data.get("policy", data) if isinstance(data.get("policy"), Mapping) else data
    r.unknown("", root, _TOP_KEYS)
    policy = base

    updates: dict[str, Any] = {}
    for name in ("grace_business_days", "promise_grace_business_days"):
        if name in root and (v := r.integer(name, root[name], minimum=0)) is not None:
            updates[name] = v
    if "minimum_amount" in root:
        d = r.decimal("minimum_amount", root["minimum_amount"])
        if d is not None:
            updates["minimum_amount"] = d
    policy = replace(policy, **updates)

    if "lanes" in root and (lanes := r.table("lanes", root["lanes"])) is not None:
        r.unknown("lanes.", lanes, {"early", "late", "critical"})
        values = {k: r.integer(f"lanes.{k}", lanes[k], minimum=1)
                  for k in ("early", "late", "critical") if k in lanes}
        merged = {**asdict(policy.lanes), **{k: v for k, v in values.items() if v is not None}}
        if not merged["early"] < merged["late"] < merged["critical"]:
            r.problems.append(
                "lanes: unordered days: need early < late < critical, got "
                f"early={merged['early']}, late={merged['late']}, critical={merged['critical']}")
        else:
            policy = replace(policy, lanes=Lanes(**merged))

    if "sensitivity" in root and (sens := r.table("sensitivity", root["sensitivity"])):
        r.unknown("sensitivity.", sens, {"high_arr", "low_health_below"})
        s = policy.sensitivity
        if "high_arr" in sens and (d := r.decimal("sensitivity.high_arr", sens["high_arr"])):
            s = replace(s, high_arr=d)
        if "low_health_below" in sens:
            h = r.integer("sensitivity.low_health_below", sens["low_health_below"], minimum=0)
            if h is not None:
                s = replace(s, low_health_below=h)
        policy = replace(policy, sensitivity=s)

    if "chronic" in root and (chronic := r.table("chronic", root["chronic"])):
        r.unknown("chronic.", chronic, set(asdict(policy.chronic)))
        changes: dict[str, Any] = {}
        for k in ("min_invoices", "broken_promises"):
            if k in chronic and (i := r.integer(f"chronic.{k}", chronic[k], minimum=0)) is not None:
                changes[k] = i
        for k in ("late_share", "average_days_late"):
            if k in chronic and (f := r.fraction(f"chronic.{k}", chronic[k])) is not None:
                changes[k] = f
        c = replace(policy.chronic, **changes)
        if not 0 <= c.late_share <= 1:
            r.problems.append(f"chronic.late_share: a share between 0 and 1, got {c.late_share}")
        policy = replace(policy, chronic=c)

    if "steps" in root:
        steps = _read_steps(r, root["steps"], policy)
        if steps is not None:
            policy = replace(policy, steps=steps)

    if r.problems:
        raise PolicyError(r.problems)
    return policy


def _read_steps(r: _Reader, raw: Any, policy: Policy) -> tuple[Step, ...] | None:
    defaults = {s.key: s for s in policy.steps}
    steps: list[Step] = []
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            where = f"steps[{i}]"
            if not isinstance(item, Mapping):
                r.problems.append(f"{where}: expected a table")
                continue
            step = _read_step(r, where, item, defaults.get(str(item.get("key", ""))))
            if step is not None:
                steps.append(step)
    elif isinstance(raw, Mapping):
        for key in raw:
            if key not in defaults:
                r.problems.append(
                    f"steps.{key}: unknown step key (known: {', '.join(defaults)}); to add a "
                    "step, list every step as [[steps]] in day order")
        for s in policy.steps:
            if s.key in raw:
                item = r.table(f"steps.{s.key}", raw[s.key])
                if item is None:
                    continue
                if "key" in item:
                    r.problems.append(f"steps.{s.key}.key: the key is the table name")
                    continue
                step = _read_step(r, f"steps.{s.key}", item, s)
                if step is not None:
                    steps.append(step)
            else:
                steps.append(s)
    else:
        r.problems.append("steps: expected [[steps]] entries or [steps.<key>] tables")
        return None
    if not steps:
        if not r.problems:
            r.problems.append("steps: a policy needs at least one step")
        return None
    seen: set[str] = set()
    for s in steps:
        if s.key in seen:
            r.problems.append(f"steps: duplicate step key '{s.key}'")
        seen.add(s.key)
    for a, b in itertools.pairwise(steps):
        if b.day <= a.day:
            r.problems.append(
                f"steps: unordered days: '{b.key}' (day {b.day}) must come after "
                f"'{a.key}' (day {a.day}); steps are listed in strictly increasing day order")
    return tuple(steps)
