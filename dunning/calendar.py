"""Business days on the customer's own calendar: weekends, public holidays, time zones.

Holiday data comes from the `holidays` package (data only, no I/O). A country the package
does not know falls back to weekends only; the import reports it so nobody is surprised.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

_SAT_SUN = frozenset({5, 6})


class CalendarError(ValueError):
    """An unknown time zone or an unusable country code."""


@lru_cache(maxsize=1024)
def _holidays_for(country: str, year: int) -> tuple[frozenset[date], frozenset[int]]:
    try:
        h = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        return frozenset(), _SAT_SUN
    weekend = frozenset(getattr(h, "weekend", _SAT_SUN) or _SAT_SUN)
    return frozenset(h.keys()), weekend


def is_supported_country(country: str) -> bool:
    """Whether the holiday data knows this ISO 3166-1 alpha-2 code."""
    return country.upper() in holidays.list_supported_countries()


def holiday_name(day: date, country: str) -> str | None:
    try:
        h = holidays.country_holidays(country.upper(), years=day.year)
    except NotImplementedError:
        return None
    name = h.get(day)
    return str(name) if name else None


def is_business_day(day: date, country: str) -> bool:
    days, weekend = _holidays_for(country.upper(), day.year)
    return day.weekday() not in weekend and day not in days


def next_business_day(day: date, country: str, *, inclusive: bool = True) -> date:
    """The first business day on or after `day` (strictly after with inclusive=False)."""
    d = day if inclusive else day + timedelta(days=1)
    while not is_business_day(d, country):
        d += timedelta(days=1)
    return d


def previous_business_day(day: date, country: str, *, inclusive: bool = True) -> date:
    d = day if inclusive else day - timedelta(days=1)
    while not is_business_day(d, country):
        d -= timedelta(days=1)
    return d


def add_business_days(day: date, n: int, country: str) -> date:
    """`day` moved forward by `n` business days (n >= 0); n=0 returns `day` unchanged."""
    if n < 0:
        raise ValueError("add_business_days moves forward only")
    d = day
    for _ in range(n):
        d = next_business_day(d, country, inclusive=False)
    return d


def effective_due_date(due: date, country: str, grace_business_days: int) -> date:
    """The contractual due date rolled to the next business day, plus the grace days.

    Grace covers bank transfers in flight: a customer who paid on the due date must not
    get a reminder while the money is still travelling.
    """
    return add_business_days(next_business_day(due, country), grace_business_days, country)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarError(f"unknown time zone {name!r} (use an IANA name such as "
                            "'Europe/Berlin')") from exc


def is_valid_timezone(name: str) -> bool:
    try:
        zone(name)
    except CalendarError:
        return False
    return True


def local_date(moment: datetime, timezone: str) -> date:
    """The calendar date of an aware `moment` in the customer's time zone."""
    if moment.tzinfo is None:
        raise ValueError("local_date needs an aware datetime")
    return moment.astimezone(zone(timezone)).date()
