"""HubSpotCrm with the real hubspot-api-client against the loopback HubSpot fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import pytest

from connectors.base import CrmCompany, CrmPage
from connectors.errors import AuthError, DataError, RateLimitedError, UnavailableError
from connectors.hubspot_crm import HubSpotCrm, country_code, iana_zone
from tests.fakes.hubspot_fake import (
    ALL_SCOPES,
    BASE_TIME,
    NOTE_TO_COMPANY,
    TASK_TO_COMPANY,
    TOKEN,
    HubSpotFake,
)


@pytest.fixture
def fake() -> Iterator[HubSpotFake]:
    with HubSpotFake() as running:
        yield running


def crm_for(fake: HubSpotFake, *, sleeps: list[float] | None = None, page_size: int = 100,
            attempts: int = 5, timeout: float = 5.0, token: str = TOKEN) -> HubSpotCrm:
    waits = sleeps if sleeps is not None else []
    return HubSpotCrm(token, fake.url, page_size=page_size, sleep=waits.append,
                      attempts=attempts, timeout=timeout)


def add_companies(fake: HubSpotFake, count: int) -> list[str]:
    return [fake.add_company(name=f"Company {i:03d}", domain=f"c{i}.test") for i in range(count)]


def ids(pages: list[CrmPage]) -> list[str]:
    return [c.external_id for p in pages for c in p.companies]


# -- full listing ---------------------------------------------------------------------------
def test_full_sync_pages_through_every_company_exactly_once(fake: HubSpotFake) -> None:
    created = add_companies(fake, 250)
    crm = crm_for(fake)

    pages = list(crm.pages(None, full=True))

    assert [len(p.companies) for p in pages] == [100, 100, 50]
    assert ids(pages) == created
    lists = fake.calls("GET /crm/v3/objects/companies")
    assert [r.query.get("after") for r in lists] == [None, [created[100]], [created[200]]]
    assert all(r.query["limit"] == ["100"] for r in lists)
    # Every HTTP request the connector made is accounted for in the pages.
    assert sum(p.api_calls for p in pages) == len(fake.requests) == crm.api_calls


def test_full_sync_of_an_empty_portal_yields_one_empty_page(fake: HubSpotFake) -> None:
    pages = list(crm_for(fake).pages(None, full=True))
    assert [p.companies for p in pages] == [[]]
    assert pages[0].cursor is not None


# -- mapping --------------------------------------------------------------------------------
def test_company_properties_map_exactly(fake: HubSpotFake) -> None:
    ana = fake.add_owner("Ana@Acme.test", first="Ana")
    carl = fake.add_owner("carl@acme.test", first="Carl")
    ceo = fake.add_contact(firstname="Cora", lastname="Chief", email="cora@globex.test",
                           jobtitle="CEO")
    ap_title = fake.add_contact(firstname="Paul", lastname="Ayer", email="paul@globex.test",
                                jobtitle="AP Specialist")
    ap_role = fake.add_contact(firstname="Petra", lastname="Payable", email="AR@Globex.test",
                               jobtitle="Controller", dunning_role="ap")
    company = fake.add_company(
        name="Globex GmbH", domain="Globex.test", hubspot_owner_id=ana, csm_owner_id=carl,
        arr="125000.50", annualrevenue="9000000", health_score="72",
        lifecyclestage="customer", country="Germany", hs_timezone="europe_slash_berlin",
        strategic="true", stripe_customer_id="cus_123", quickbooks_customer_id=" 58 ",
        contacts=[(ceo, None), (ap_title, None), (ap_role, None)])

    [page] = list(crm_for(fake).pages(None, full=True))

    assert page.companies == [CrmCompany(
        external_id=company, name="Globex GmbH", domain="globex.test",
        owner_email="ana@acme.test", csm_email="carl@acme.test", arr=Decimal("125000.50"),
        health=72, lifecycle="customer", country="DE", timezone="Europe/Berlin",
        ap_contact_name="Petra Payable", ap_contact_email="ar@globex.test", strategic=True,
        billing_ids={"stripe": "cus_123", "quickbooks": "58"})]
    assert isinstance(page.companies[0].arr, Decimal)


def test_mapping_fallbacks_and_unknown_values(fake: HubSpotFake) -> None:
    gone = fake.add_owner("former@acme.test", archived=True)
    labelled = fake.add_contact(firstname="Lia", email="lia@initech.test", jobtitle="Office")
    billing = fake.add_contact(firstname="Bo", email="bo@initech.test", jobtitle="Billing lead")
    apprentice = fake.add_contact(email="app@umbrella.test", jobtitle="Apprentice")
    no_email = fake.add_contact(firstname="Al", jobtitle="Accounts Payable")
    initech = fake.add_company(
        name="Initech", hubspot_owner_id=gone, csm_owner_id="Csm@Initech.test",
        annualrevenue="48000", health_score="140", country="United Kingdom",
        timezone="Europe/London", strategic="false",
        contacts=[(billing, None), (labelled, "Accounts Payable")])
    umbrella = fake.add_company(domain="umbrella.test", arr="n/a", health_score="",
                                country="Narnia", hs_timezone="GMT+1",
                                contacts=[(apprentice, None), (no_email, None)])

    [page] = list(crm_for(fake).pages(None, full=True))
    by_id = {c.external_id: c for c in page.companies}

    first = by_id[initech]
    assert (first.owner_email, first.csm_email) == ("former@acme.test", "csm@initech.test")
    assert (first.arr, first.health) == (Decimal("48000"), None)
    assert (first.country, first.timezone, first.strategic) == ("GB", "Europe/London", False)
    # An association labelled Accounts Payable outranks a "Billing" job title.
    assert (first.ap_contact_name, first.ap_contact_email) == ("Lia", "lia@initech.test")
    second = by_id[umbrella]
    assert second.name == "umbrella.test"
    assert (second.arr, second.health, second.country, second.timezone) == (None,) * 4
    assert (second.owner_email, second.ap_contact_email, second.billing_ids) == (None, None, {})


@pytest.mark.parametrize(("text", "code"), [
    ("Germany", "DE"), ("DE", "DE"), ("deu", "DE"), ("United States", "US"), ("USA", "US"),
    ("U.S.A.", "US"), ("UK", "GB"), ("the Netherlands", "NL"), ("Österreich", "AT"),
    ("Côte d'Ivoire", "CI"), ("Narnia", None), ("", None),
])
def test_country_names_become_iso_codes(text: str, code: str | None) -> None:
    assert country_code(text) == code


def test_time_zones_accept_iana_and_hubspot_encoding_only() -> None:
    assert iana_zone("america_slash_new_york") == "America/New_York"
    assert iana_zone("Asia/Tokyo") == "Asia/Tokyo"
    assert iana_zone("Eastern Time") is None


def test_owners_are_listed_once_per_run(fake: HubSpotFake) -> None:
    ana = fake.add_owner("ana@acme.test")
    for i in range(30):
        fake.add_company(name=f"C{i}", hubspot_owner_id=ana, csm_owner_id=ana)
    crm = crm_for(fake, page_size=10)
    pages = list(crm.pages(None, full=True))
    assert len(pages) == 3
    assert all(c.owner_email == "ana@acme.test" for c in pages[2].companies)
    assert len(fake.calls("GET /crm/v3/owners")) == 1
    list(crm.pages(pages[-1].cursor, full=True))  # a new run lists them again
    assert len(fake.calls("GET /crm/v3/owners")) == 2


# -- incremental ----------------------------------------------------------------------------
def test_incremental_returns_only_modified_companies_with_few_calls(fake: HubSpotFake) -> None:
    owner = fake.add_owner("ana@acme.test")
    created = add_companies(fake, 250)
    crm = crm_for(fake)
    cursor = list(crm.pages(None, full=True))[-1].cursor
    fake.modify_company(created[7], arr="5000", hubspot_owner_id=owner)
    fake.modify_company(created[201], name="Renamed Inc")
    before = len(fake.requests)

    pages = list(crm_for(fake).pages(cursor, full=False))

    assert ids(pages) == [created[7], created[201]]
    assert pages[0].companies[0].arr == Decimal("5000")
    assert pages[0].companies[0].owner_email == "ana@acme.test"
    assert pages[0].companies[1].name == "Renamed Inc"
    made = fake.requests[before:]
    # One search, one associations read, one owner listing; no company listing at all.
    assert sum(p.api_calls for p in pages) == len(made) == 3
    assert not [r for r in made if r.path == "/crm/v3/objects/companies"]
    search = next(r for r in made if r.path.endswith("/search"))
    assert search.body["sorts"] == [{"propertyName": "hs_lastmodifieddate",
                                     "direction": "ASCENDING"}]
    [group] = search.body["filterGroups"]
    assert group["filters"][0]["propertyName"] == "hs_lastmodifieddate"
    assert group["filters"][0]["operator"] == "GTE"

    # Nothing changed since: one call, no companies, the cursor stays where it was.
    again = list(crm_for(fake).pages(pages[-1].cursor, full=False))
    assert [(p.companies, p.cursor, p.api_calls) for p in again] == \
        [([], pages[-1].cursor, 1)]


def test_changes_made_during_a_full_sync_reach_the_next_incremental(fake: HubSpotFake) -> None:
    created = add_companies(fake, 30)
    crm = crm_for(fake, page_size=10)
    pages: list[CrmPage] = []
    for page in crm.pages(None, full=True):
        pages.append(page)
        if len(pages) == 1:
            fake.modify_company(created[2], name="Changed while listing")
    assert ids(pages) == created

    later = list(crm_for(fake).pages(pages[-1].cursor, full=False))
    assert [(c.external_id, c.name) for p in later for c in p.companies] == \
        [(created[2], "Changed while listing")]


def test_incremental_never_leaves_the_search_window(fake: HubSpotFake) -> None:
    created = add_companies(fake, 10)
    crm = crm_for(fake, page_size=50)
    cursor = list(crm.pages(None, full=True))[-1].cursor
    fake.search_window = 100  # HubSpot's is 10,000: the same rule at a testable size
    changed = add_companies(fake, 320)
    fake.modify_company(created[0], name="Touched")

    pages = list(crm_for(fake, page_size=50).pages(cursor, full=False))

    assert ids(pages) == [*changed, created[0]]
    assert all(int(r.body.get("after") or 0) + 50 <= 100
               for r in fake.calls("/search"))


def test_many_companies_sharing_one_timestamp_are_each_returned_once(
        fake: HubSpotFake) -> None:
    crm = crm_for(fake, page_size=20)
    cursor = list(crm.pages(None, full=True))[-1].cursor
    same = BASE_TIME + timedelta(days=1)
    tied = [fake.add_company(name=f"Tied {i}", modified=same) for i in range(45)]
    after = fake.add_company(name="Later", modified=same + timedelta(seconds=1))

    pages = list(crm_for(fake, page_size=20).pages(cursor, full=False))

    assert sorted(ids(pages)) == sorted([*tied, after])
    assert len(ids(pages)) == 46


# -- writes ---------------------------------------------------------------------------------
def test_task_is_assigned_to_the_owner_and_associated_with_the_company(
        fake: HubSpotFake) -> None:
    owner = fake.add_owner("ana@acme.test")
    company = fake.add_company(name="Globex")
    crm = crm_for(fake)

    task_id = crm.create_task(company, owner_email="Ana@acme.test", subject="Call Globex",
                              body="INV-7 is 10 days late", due=date(2026, 3, 9))

    [task] = fake.tasks
    assert task["id"] == task_id
    assert task["properties"] == {
        "hs_task_subject": "Call Globex", "hs_task_body": "INV-7 is 10 days late",
        "hs_timestamp": "2026-03-09T12:00:00.000Z", "hs_task_status": "NOT_STARTED",
        "hs_task_type": "TODO", "hubspot_owner_id": owner}
    assert task["associations"] == [{"to": {"id": company}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}]}]


def test_task_for_an_unknown_owner_is_created_unassigned(fake: HubSpotFake) -> None:
    company = fake.add_company(name="Globex")
    crm_for(fake).create_task(company, owner_email="nobody@acme.test", subject="s", body="b",
                              due=date(2026, 3, 9))
    [task] = fake.tasks
    assert "hubspot_owner_id" not in task["properties"]


def test_note_is_logged_on_the_company_timeline(fake: HubSpotFake) -> None:
    company = fake.add_company(name="Globex")
    note_id = crm_for(fake).log_note(company, body="Reminder sent for INV-7",
                                     when=date(2026, 3, 2))
    [note] = fake.notes
    assert note == {"id": note_id, "properties": {
        "hs_note_body": "Reminder sent for INV-7", "hs_timestamp": "2026-03-02T12:00:00.000Z"},
        "associations": [{"to": {"id": company}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_COMPANY}]}]}


def test_a_write_to_a_missing_company_is_a_data_error_with_hubspots_message(
        fake: HubSpotFake) -> None:
    with pytest.raises(DataError, match="company 999999 does not exist"):
        crm_for(fake).log_note("999999", body="x", when=date(2026, 3, 2))
    assert len(fake.calls("/notes")) == 1
    assert fake.notes == []


# -- faults ---------------------------------------------------------------------------------
def test_rate_limits_are_retried_by_us_not_hidden_by_urllib3(fake: HubSpotFake) -> None:
    created = add_companies(fake, 3)
    fake.fail(match="GET /crm/v3/objects/companies", status=429, times=2)
    sleeps: list[float] = []
    pages = list(crm_for(fake, sleeps=sleeps).pages(None, full=True))
    assert ids(pages) == created
    assert sleeps == [0.0, 0.0]  # the fake's Retry-After: 0, honoured
    assert len(fake.calls("GET /crm/v3/objects/companies")) == 3
    assert sum(p.api_calls for p in pages) == len(fake.requests)


def test_rate_limit_that_persists_is_raised_with_retry_after(fake: HubSpotFake) -> None:
    fake.fail(match="/search", status=429, times=10, retry_after="7")
    with pytest.raises(RateLimitedError) as caught:
        list(crm_for(fake, attempts=2).pages(None, full=True))
    assert caught.value.retry_after == 7.0
    assert len(fake.calls("/search")) == 2


@pytest.mark.parametrize("kind", ["status", "drop", "delay"])
def test_outages_timeouts_and_dropped_pages_recover(fake: HubSpotFake, kind: str) -> None:
    created = add_companies(fake, 25)
    crm = crm_for(fake, page_size=10, timeout=0.3)
    fake.fail(kind, match="GET /crm/v3/objects/companies", status=503, delay=1.0)
    sleeps: list[float] = []
    crm.sleep = sleeps.append
    pages = list(crm.pages(None, full=True))
    assert ids(pages) == created
    assert len(sleeps) == 1


def test_an_outage_that_lasts_is_unavailable_after_the_attempts(fake: HubSpotFake) -> None:
    fake.fail(match="/search", status=500, times=99)
    with pytest.raises(UnavailableError, match="500"):
        list(crm_for(fake, attempts=3).pages(None, full=True))
    assert len(fake.calls("/search")) == 3


def test_an_unreachable_host_is_unavailable() -> None:
    with HubSpotFake() as gone:
        url = gone.url
    crm = HubSpotCrm(TOKEN, url, sleep=lambda s: None, attempts=2, timeout=1.0)
    with pytest.raises(UnavailableError):
        crm.check()


def test_a_wrong_token_is_an_auth_error_at_once(fake: HubSpotFake) -> None:
    sleeps: list[float] = []
    crm = crm_for(fake, sleeps=sleeps, token="pat-na1-revoked")
    with pytest.raises(AuthError, match="private app token was refused") as caught:
        crm.check()
    assert "crm.objects.companies.read" in str(caught.value)
    assert "pat-na1-revoked" not in str(caught.value)
    assert (len(fake.requests), sleeps) == (1, [])


def test_a_missing_scope_names_the_scopes(fake: HubSpotFake) -> None:
    fake.scopes = set(ALL_SCOPES - {"crm.objects.owners.read"})
    with pytest.raises(AuthError, match="lacks a scope") as caught:
        crm_for(fake).check()
    assert "crm.objects.owners.read" in str(caught.value)


def test_check_reports_one_line(fake: HubSpotFake) -> None:
    line = crm_for(fake).check()
    assert line == f"hubspot: token accepted by {fake.url}; companies and owners readable"


def test_a_write_whose_answer_was_lost_is_not_repeated(fake: HubSpotFake) -> None:
    company = fake.add_company(name="Globex")
    fake.fail("drop", match="POST /crm/v3/objects/tasks")
    with pytest.raises(UnavailableError, match="may have created it"):
        crm_for(fake).create_task(company, owner_email=None, subject="s", body="b",
                                  due=date(2026, 3, 9))
    assert len(fake.tasks) == 1  # HubSpot stored it; we did not send it twice


def test_a_rate_limited_write_is_retried_and_created_once(fake: HubSpotFake) -> None:
    company = fake.add_company(name="Globex")
    fake.fail(match="POST /crm/v3/objects/notes", status=429)
    crm_for(fake).log_note(company, body="b", when=date(2026, 3, 2))
    assert len(fake.notes) == 1
    assert len(fake.calls("/notes")) == 2


# -- crash and resume -----------------------------------------------------------------------
def test_a_full_sync_that_crashes_mid_way_resumes_from_the_cursor(fake: HubSpotFake) -> None:
    created = add_companies(fake, 250)
    stored: list[str] = []
    cursor: str | None = None
    crm = crm_for(fake, attempts=2)
    with pytest.raises(UnavailableError):
        for page in crm.pages(None, full=True):
            stored += [c.external_id for c in page.companies]
            cursor = page.cursor
            fake.fail(match="GET /crm/v3/objects/companies", status=500, times=2)
    assert len(stored) == 100

    # Even a rerun asked for a full sync resumes the listing that was under way.
    rest = list(crm_for(fake).pages(cursor, full=True))
    stored += ids(rest)
    assert stored == created
    assert fake.calls("GET /crm/v3/objects/companies")[-len(rest)].query["after"] == \
        [created[100]]


def test_an_incremental_sync_that_crashes_resumes_without_duplicates(
        fake: HubSpotFake) -> None:
    created = add_companies(fake, 120)
    cursor = list(crm_for(fake).pages(None, full=True))[-1].cursor
    for company in reversed(created):
        fake.modify_company(company, lifecyclestage="customer")
    stored: list[str] = []
    crm = crm_for(fake, page_size=50, attempts=1)
    with pytest.raises(UnavailableError):
        for page in crm.pages(cursor, full=False):
            stored += [c.external_id for c in page.companies]
            cursor = page.cursor
            fake.fail("drop", match="/search")

    stored += ids(list(crm_for(fake, page_size=50).pages(cursor, full=False)))
    assert stored == list(reversed(created))


def test_a_change_the_search_index_showed_late_is_read_by_the_next_run(
        fake: HubSpotFake) -> None:
    """HubSpot's search index lags writes: a change made just before the newest one read
    can surface after it. The next incremental run's overlap finds it, once."""
    created = add_companies(fake, 5)
    cursor = list(crm_for(fake).pages(None, full=True))[-1].cursor
    fake.modify_company(created[1], name="Indexed late", index_delay=timedelta(seconds=90))
    fake.modify_company(created[3], name="Indexed at once")

    first = list(crm_for(fake).pages(cursor, full=False))
    assert [(c.external_id, c.name) for p in first for c in p.companies] == \
        [(created[3], "Indexed at once")]

    fake.advance(timedelta(seconds=90))  # the index catches up
    second = list(crm_for(fake).pages(first[-1].cursor, full=False))
    assert [(c.external_id, c.name) for p in second for c in p.companies] == \
        [(created[1], "Indexed late")]

    third = list(crm_for(fake).pages(second[-1].cursor, full=False))
    assert [p.companies for p in third] == [[]]  # nothing read twice
    fake.modify_company(created[3], name="Changed again")  # a new version is new
    fourth = list(crm_for(fake).pages(third[-1].cursor, full=False))
    assert [(c.external_id, c.name) for p in fourth for c in p.companies] == \
        [(created[3], "Changed again")]


def test_a_cursor_of_the_previous_format_still_reads(fake: HubSpotFake) -> None:
    created = add_companies(fake, 3)
    newest = list(crm_for(fake).pages(None, full=True))[-1].cursor
    ts = json.loads(newest)["ts"]
    old = json.dumps({"v": 1, "ts": ts, "seen": [created[-1]], "after": None})
    fake.modify_company(created[0], name="After the upgrade")
    pages = list(crm_for(fake).pages(old, full=False))
    assert [(c.external_id, c.name) for p in pages for c in p.companies] == \
        [(created[0], "After the upgrade")]
    assert json.loads(pages[-1].cursor)["v"] == 2
