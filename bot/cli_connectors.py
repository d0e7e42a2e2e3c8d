"""`dunning sync ...` and `dunning connectors ...`: billing and CRM systems."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from bot.cli_common import Ctx, Format, _ctx, fail, guarded
from bot.connectors import (
    BILLING_SYSTEMS,
    NotConfigured,
    billing_source,
    configured,
    crm_source,
)
from connectors.errors import AuthError, ConnectorError
from services.sync import SyncReport, sync_billing, sync_crm, unmatched_report

connectors_app = typer.Typer(help="Billing and CRM connectors (Stripe, QuickBooks, HubSpot).",
                             no_args_is_help=True)


class System(StrEnum):
    stripe = "stripe"
    quickbooks = "quickbooks"
    hubspot = "hubspot"
    all = "all"


def _run_one(c: Ctx, system: str, *, full: bool) -> SyncReport:
    engine = c.ready()
    if system in BILLING_SYSTEMS:
        source = billing_source(c.settings, system, engine)
        if isinstance(source, NotConfigured):
            fail(str(source))
        return guarded(lambda: sync_billing(engine, source, policy=c.policy, now=c.now(),
                                            full=full, actor=c.actor))
    crm = crm_source(c.settings)
    if isinstance(crm, NotConfigured):
        fail(str(crm))
    return guarded(lambda: sync_crm(engine, crm, policy=c.policy, now=c.now(), full=full,
                                    actor=c.actor))


def _print_report(r: SyncReport) -> None:
    t = r.totals
    what = (f"{r.companies_seen} companies ({r.matched} matched, {r.unmatched} unmatched)"
            if r.system == "hubspot" else
            f"{r.invoices_seen} invoices, {r.customers_seen} customers; "
            f"created {t.get('invoices_created', 0)}, updated {t.get('invoices_updated', 0)}, "
            f"closed {t.get('invoices_closed', 0)}")
    typer.echo(f"{r.system}: {'full' if r.full else 'incremental'} sync, {r.pages} page(s), "
               f"{r.api_calls} API call(s), {r.seconds:.1f} s: {what}")


def sync(ctx: typer.Context,
         system: Annotated[System, typer.Argument(help="which system; all = every configured "
                                                       "one, billing before CRM")] = System.all,
         full: Annotated[bool, typer.Option("--full", help="backfill everything open instead "
                                                           "of the changes since last sync")]
         = False,
         report: Annotated[bool, typer.Option("--report", help="list customers and CRM "
                                                               "companies that match nothing")]
         = False,
         format_: Annotated[Format, typer.Option("--format")] = Format.table) -> None:
    """Pull invoices, customers and CRM context into the ledger (resumes after a crash)."""
    c = _ctx(ctx)
    if report:
        with c.session() as s:
            rep = unmatched_report(s)
        if format_ is Format.json:
            typer.echo(json.dumps({"companies": rep.companies, "customers": rep.customers},
                                  indent=2))
            return
        typer.echo(f"{len(rep.customers)} customer(s) with open invoices and no CRM company:")
        for cust in rep.customers:
            typer.echo(f"  {cust['id']}  {cust['name']}  {cust['domain']}")
        typer.echo(f"{len(rep.companies)} CRM compan(ies) matching no customer:")
        for comp in rep.companies:
            typer.echo(f"  {comp['id']}  {comp['name']}  {comp.get('domain') or ''}")
        return
    systems = ([s for s in ("stripe", "quickbooks", "hubspot") if s in configured(c.settings)]
               if system is System.all else [system.value])
    if not systems:
        fail("no connector is configured: set STRIPE_API_KEY, the QUICKBOOKS_* settings or "
             "HUBSPOT_ACCESS_TOKEN (see README 'Connectors'), or use `dunning import-csv`")
    reports = []
    for name in systems:
        try:
            reports.append(_run_one(c, name, full=full))
        except AuthError as exc:
            fail(f"{exc} (check the credentials; `dunning connectors check` tests them)")
        except ConnectorError as exc:
            fail(f"{exc}; stored pages are kept, the next sync resumes from there")
        if format_ is Format.table:
            _print_report(reports[-1])
    if format_ is Format.json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))


@connectors_app.command("check")
def check(ctx: typer.Context) -> None:
    """Authenticate against each configured system: one line per system; exit 1 on failure."""
    c = _ctx(ctx)
    engine = c.ready()
    failed = False
    for name in ("stripe", "quickbooks", "hubspot"):
        source = (billing_source(c.settings, name, engine) if name in BILLING_SYSTEMS
                  else crm_source(c.settings))
        if isinstance(source, NotConfigured):
            typer.echo(f"-  {source}")
            continue
        try:
            typer.echo(f"ok {source.check()}")
        except ConnectorError as exc:
            failed = True
            typer.secho(f"!! {exc}", fg=typer.colors.RED)
    if failed:
        raise typer.Exit(1)
