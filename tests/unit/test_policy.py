"""The policy: defaults exactly as DESIGN.md's table, TOML overrides, clear errors."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from dunning.model import Approval, Channel, Kind, Lane, Tone
from dunning.policy import DEFAULT_POLICY, PolicyError, policy_from_mapping

ROOT = Path(__file__).resolve().parents[2]


def test_default_policy_is_designs_table() -> None:
    rows = [(s.key, s.day, s.lane, s.kind, s.tone, s.approval) for s in DEFAULT_POLICY.steps]
    assert rows == [
        ("pre_due", -3, Lane.CURRENT, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER),
        ("nudge", 1, Lane.EARLY, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER),
        ("follow_up", 7, Lane.EARLY, Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER),
        ("owner_loop_in", 10, Lane.EARLY, Kind.OWNER_TASK, None, None),
        ("firm_notice", 15, Lane.LATE, Kind.CUSTOMER_MESSAGE, Tone.FIRM, Approval.OWNER),
        ("pause_warning", 30, Lane.LATE, Kind.CUSTOMER_MESSAGE, Tone.FINAL, Approval.FINANCE),
        ("service_pause", 45, Lane.CRITICAL, Kind.FINANCE_DECISION, None, None),
    ]
    assert DEFAULT_POLICY.grace_business_days == 2
    assert (DEFAULT_POLICY.lanes.early, DEFAULT_POLICY.lanes.late,
            DEFAULT_POLICY.lanes.critical) == (1, 15, 45)


def test_example_file_in_the_repo_is_valid_and_matches_the_default_steps() -> None:
    policy = policy_from_mapping(tomllib.loads((ROOT / "dunning.toml").read_text()))
    assert [s.key for s in policy.steps] == [s.key for s in DEFAULT_POLICY.steps]
    assert policy.fingerprint() == DEFAULT_POLICY.fingerprint()


def test_table_overrides_change_only_the_named_fields() -> None:
    policy = policy_from_mapping({"grace_business_days": 3, "minimum_amount": "25.00",
                                  "steps": {"nudge": {"day": 2, "approval": "none",
                                                      "channel": "billing"}}})
    nudge = policy.step("nudge")
    assert (nudge.day, nudge.approval, nudge.channel, nudge.tone) == (
        2, Approval.NONE, Channel.BILLING, Tone.FRIENDLY)
    assert policy.grace_business_days == 3 and policy.minimum_amount == Decimal("25.00")
    assert policy.fingerprint() != DEFAULT_POLICY.fingerprint()


def test_array_of_steps_replaces_the_list_and_inherits_known_keys() -> None:
    policy = policy_from_mapping({"steps": [
        {"key": "nudge", "day": 3},
        {"key": "second_call", "day": 20, "kind": "owner_task"},
        {"key": "service_pause", "day": 60},
    ]})
    assert [(s.key, s.day, s.kind) for s in policy.steps] == [
        ("nudge", 3, Kind.CUSTOMER_MESSAGE), ("second_call", 20, Kind.OWNER_TASK),
        ("service_pause", 60, Kind.FINANCE_DECISION)]


@pytest.mark.parametrize(("data", "message"), [
    ({"grace_days": 2}, "grace_days: unknown key"),
    ({"steps": {"nudg": {"day": 2}}}, "steps.nudg: unknown step key"),
    ({"steps": {"nudge": {"tone": "angry"}}}, "steps.nudge.tone: 'angry' is not one of"),
    ({"steps": {"nudge": {"day": 9}}}, "unordered days: 'follow_up' (day 7) must come after "
                                       "'nudge' (day 9)"),
    ({"steps": [{"key": "b", "day": 5, "kind": "owner_task"},
                {"key": "a", "day": 1, "kind": "owner_task"}]}, "unordered days"),
    ({"lanes": {"late": 50}}, "lanes: unordered days"),
    ({"minimum_amount": 2.5}, "minimum_amount: write amounts as a quoted decimal"),
    ({"steps": {"owner_loop_in": {"tone": "firm"}}}, "tone and approval apply only"),
    ({"steps": [{"key": "x", "day": 1, "kind": "customer_message"}]}, "needs a tone"),
    ({"steps": {"nudge": {"channel": "slack"}}}, "goes by email or billing"),
    ({"steps": {"nudge": {"colour": "red"}}}, "steps.nudge.colour: unknown key"),
])
def test_invalid_policy_names_the_key_and_the_problem(data: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PolicyError) as err:
        policy_from_mapping(data)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PolicyError) as err:
        policy_from_mapping({"grace_days": 1, "steps": {"nudge": {"tone": "angry"}}})
    assert len(err.value.problems) == 2
