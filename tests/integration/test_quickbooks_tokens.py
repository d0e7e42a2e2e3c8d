"""QuickBooks OAuth: rotating refresh tokens persisted in the database (SQLite and
PostgreSQL), refreshed on 401 or before expiry, through intuit-oauth against the fake's
token endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import Engine

from connectors.errors import AuthError
from connectors.quickbooks_billing import QuickBooksBilling
from services.credentials import DbTokenStore
from tests.fakes.quickbooks_fake import QuickBooksFake

SEED = "seed-refresh-token"


@pytest.fixture
def fake() -> Iterator[QuickBooksFake]:
    with QuickBooksFake(seed_refresh_token=SEED) as server:
        yield server


def connect(fake: QuickBooksFake, store: DbTokenStore, **overrides: Any) -> QuickBooksBilling:
    options: dict[str, Any] = {
        "client_id": fake.client_id, "client_secret": fake.client_secret,
        "realm_id": fake.realm_id, "refresh_token": SEED, "token_store": store,
        "api_url": fake.api_url, "token_url": fake.token_url, "sleep": lambda _s: None,
        "clock": lambda: fake.now, "timeout": 5.0,
    }
    options.update(overrides)
    return QuickBooksBilling(**options)


def refresh_tokens_sent(fake: QuickBooksFake) -> list[str]:
    return [parse_qs(c.body)["refresh_token"][0] for c in fake.calls if c.endpoint == "token"]


def unauthorized(fake: QuickBooksFake) -> int:
    return sum(1 for c in fake.calls if c.status == 401)


def test_token_store_keeps_one_json_row_per_system(db: Engine) -> None:
    store = DbTokenStore(db, "quickbooks")
    other = DbTokenStore(db, "other")
    assert store.load() is None
    store.save({"access_token": "a1", "refresh_token": "r1"})
    store.save({"access_token": "a2", "refresh_token": "r2", "expires_at": "2026-03-02T15:00"})
    other.save({"refresh_token": "x"})
    assert DbTokenStore(db, "quickbooks").load() == {
        "access_token": "a2", "refresh_token": "r2", "expires_at": "2026-03-02T15:00"}
    store.clear()
    assert store.load() is None
    assert other.load() == {"refresh_token": "x"}


def test_rotated_tokens_are_stored_and_the_next_instance_uses_them(
        db: Engine, fake: QuickBooksFake) -> None:
    first = connect(fake, DbTokenStore(db, "quickbooks"))
    assert first.check().startswith("QuickBooks: ")
    stored = DbTokenStore(db, "quickbooks").load()
    assert stored is not None
    assert refresh_tokens_sent(fake) == [SEED]
    assert stored["refresh_token"] != SEED
    assert fake.refresh_tokens == {stored["refresh_token"]}  # the seed is spent

    fake.expire_access_tokens()  # e.g. revoked, or the hour is up on QuickBooks' side
    second = connect(fake, DbTokenStore(db, "quickbooks"))  # a new process, same seed
    assert second.check().startswith("QuickBooks: ")

    assert refresh_tokens_sent(fake) == [SEED, stored["refresh_token"]]
    assert unauthorized(fake) == 1  # the stored access token was tried, refused, refreshed
    latest = DbTokenStore(db, "quickbooks").load()
    assert latest is not None and latest["refresh_token"] not in (SEED, stored["refresh_token"])


def test_an_access_token_about_to_expire_is_refreshed_before_the_call(
        db: Engine, fake: QuickBooksFake) -> None:
    connector = connect(fake, DbTokenStore(db, "quickbooks"))
    connector.check()
    fake.now += timedelta(minutes=59, seconds=30)
    connector.check()
    assert len(refresh_tokens_sent(fake)) == 2
    assert unauthorized(fake) == 0


def test_a_refused_refresh_says_to_reconnect_and_is_not_retried(
        db: Engine, fake: QuickBooksFake) -> None:
    connector = connect(fake, DbTokenStore(db, "quickbooks"))
    connector.check()
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()  # the user disconnected the app in QuickBooks
    with pytest.raises(AuthError, match="reconnect QuickBooks"):
        connector.check()
    # The stored token, then the seed from settings; one refused API call; no retry loop.
    assert len(refresh_tokens_sent(fake)) == 3
    assert fake.count("companyinfo") == 2


def test_a_new_seed_after_reconnecting_replaces_the_dead_stored_token(
        db: Engine, fake: QuickBooksFake) -> None:
    store = DbTokenStore(db, "quickbooks")
    connect(fake, store).check()
    fake.revoke_refresh_tokens()
    fake.expire_access_tokens()
    fake.refresh_tokens.add("reconnected-seed")  # the operator authorized the app again

    connect(fake, store, refresh_token="reconnected-seed").check()

    stored = store.load()
    assert stored is not None and stored["refresh_token"] in fake.refresh_tokens
