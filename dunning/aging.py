"""Days past due and lanes, as an AR clerk computes them by hand."""

from __future__ import annotations

from datetime import date

from dunning.model import Lane
from dunning.policy import Lanes


def days_past_due(due: date, today: date) -> int:
    """Calendar days after the contractual due date (negative before it)."""
    return (today - due).days


def lane_for(days: int, lanes: Lanes) -> Lane:
    if days >= lanes.critical:
        return Lane.CRITICAL
    if days >= lanes.late:
        return Lane.LATE
    if days >= lanes.early:
        return Lane.EARLY
    return Lane.CURRENT
