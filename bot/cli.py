"""`dunning ...`: the command line. Reads the clock and settings here, in the shell only."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from slack_sdk import WebClient
from sqlmodel import Session

from bot import logs
from bot.app import build_app
from bot.cli_common import (
    EXIT_AMBIGUOUS,
    EXIT_NOT_FOUND,
    Ctx,
    DateOpt,
    Format,
    TextFormat,
    _ctx,
    _parse_amount,
    _parse_date,
    _safe_url,
    fail,
    guarded,
)
from bot.cli_connectors import connectors_app, sync
from bot.cli_drafts import drafts_app
from bot.cli_replies import replies_app
from bot.deps import Deps, build_deps
from bot.settings import SettingsError, load_settings
from bot.web import build_web
from connectors.csv_source import Defaults, read_customers, read_invoices
from connectors.email import SmtpSender
from connectors.errors import ConnectorError
from connectors.slack import SlackMessenger, make_client, translate
from dunning.money import format_money
from handlers.jobs import post_cards, post_digest
from services import actions, demo
from services.common import Actor, ServiceError
from services.delivery import deliver_outbox
from services.export import export
from services.importing import upsert_ledger
from services.planning import Plan, build_plan, plan_json, run_cycle
from services.status import (
    Match,
    customer_status,
    customer_status_now,
    find_customer,
    status_json,
)
from store import tables as t
from store.audit import verify_chain
from store.engine import (
    current_revision,
    head_revision,
    migrate,
)

app = typer.Typer(help="Dunning bot: collaborative accounts-receivable escalation.",
                  no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(connectors_app, name="connectors")
app.command("sync")(sync)
app.add_typer(replies_app, name="replies")
app.add_typer(drafts_app, name="drafts")

T = TypeVar("T")

@app.callback()
def main_callback(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option("--db", help="Database URL or SQLite file path "
                                           "(default: DATABASE_URL, else dunning.db)")] = None,
    actor: Annotated[str, typer.Option("--as", help="Who acts, for the audit log")] = "cli",
) -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    url = db or settings.database_url
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser()}"
    ctx.obj = Ctx(settings=settings, db_url=url, actor=Actor(actor))


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database or migrate it to the latest schema (the Procfile's release)."""
    c = _ctx(ctx)
    try:
        head = migrate(c.engine)
    except Exception as exc:  # the driver's own message is the useful part here
        fail(f"cannot migrate {_safe_url(c.db_url)}: {exc.__class__.__name__}: "
             f"{str(exc).splitlines()[0] if str(exc) else ''}")
    typer.echo(f"database ready at {_safe_url(c.db_url)} (schema {head})")


@app.command("import-csv")
def import_csv(
    ctx: typer.Context,
    customers: Annotated[Path, typer.Option(help="customers.csv", exists=True, dir_okay=False)],
    invoices: Annotated[Path, typer.Option(help="invoices.csv", exists=True, dir_okay=False)],
) -> None:
    """Import (upsert) customers and invoices from the CSV export format."""
    c = _ctx(ctx)
    s = c.settings
    defaults = Defaults(country=s.dunning_country, timezone=s.dunning_timezone,
                        currency=s.dunning_currency)

    def run() -> dict[str, int]:
        custs = read_customers(customers, defaults)
        with c.session() as session:
            known = {x.customer_id for x in custs}
            currency = {x.customer_id: x.currency for x in custs}

            def in_ledger(cid: str) -> str | None:
                if cid in currency:
                    return currency[cid]
                row = session.get(t.Customer, cid)
                return row.currency if row else None

            class Known:
                def __contains__(self, cid: object) -> bool:
                    return cid in known or (isinstance(cid, str) and in_ledger(cid) is not None)

            invs = read_invoices(invoices, known_customers=Known(),  # type: ignore[arg-type]
                                 customer_currency=in_ledger)
            summary = upsert_ledger(session, customers=custs, invoices=invs, source="csv",
                                    actor=c.actor, now=c.now(), policy=c.policy)
            return summary.as_dict()

    result = guarded(run)
    typer.echo("imported: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items()))


def _print_plan(plan: Plan, fmt: Format, *, title: str) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(plan_json(plan), indent=2))
        return
    typer.echo(f"{title} for {plan.date.isoformat()}: {len(plan.actions)} action(s), "
               f"{len(plan.holds)} held")
    if plan.actions:
        rows = [("OWNER", "INVOICE", "CUSTOMER", "DPD", "LANE", "STEP", "TONE", "APPROVAL",
                 "AMOUNT DUE")]
        for p in plan.actions:
            a, st = p.action, p.state
            rows.append((a.owner or "-", st.number, st.customer.name[:28], str(a.days_past_due),
                         a.lane.value, a.step, a.tone.value if a.tone else "-",
                         a.approval.value if a.approval else "-",
                         format_money(st.amount_due, st.currency)))
        _table(rows, right=frozenset({3, 8}))
    if plan.holds:
        typer.echo("\nheld:")
        _table([("INVOICE", "CUSTOMER", "REASON", "DETAIL")] + [
            (h.state.number, h.state.customer.name[:28], h.hold.reason.value, h.hold.detail)
            for h in plan.holds])


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [v.rjust(w) if i in right else v.ljust(w)
                 for i, (v, w) in enumerate(zip(r, widths, strict=True))]
        typer.echo("  ".join(cells).rstrip())


@app.command()
def plan(ctx: typer.Context, date_: DateOpt = None,
         format_: Annotated[Format, typer.Option("--format")] = Format.table) -> None:
    """Dry run: what the bot would do on a date, and what is held and why."""
    c = _ctx(ctx)
    today = _parse_date(date_, "--date") or c.today()
    with c.session() as session:
        result = guarded(lambda: build_plan(session, c.policy, today))
    _print_plan(result, format_, title="plan")


@app.command()
def cycle(ctx: typer.Context, date_: DateOpt = None,
          format_: Annotated[Format, typer.Option("--format")] = Format.table) -> None:
    """Commit the day's escalations (each once); without Slack configured, print them.

    Without --date, each invoice is decided on its customer's own date right now.
    """
    c = _ctx(ctx)
    given = _parse_date(date_, "--date")
    today = given or c.today()
    actor = Actor("scheduler") if c.actor.id == "cli" else c.actor
    with c.session() as session:
        # Without --date each customer's own date at this moment counts (its time zone).
        result = guarded(lambda: run_cycle(session, c.policy, today, actor=actor, now=c.now(),
                                           customer_dates=given is None))
    plan_view = Plan(result.date, result.created, result.holds)
    if format_ is Format.json:
        out = plan_json(plan_view)
        out["already_done"] = result.already_done
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_plan(plan_view, format_, title="cycle committed")
        if result.already_done:
            typer.echo(f"({result.already_done} step(s) were already escalated: nothing "
                       "repeated)")
    # Progress notes go to stderr, so the JSON on stdout stays parseable.
    if c.settings.slack_bot_token is None:
        typer.echo("(Slack is not configured: escalations are stored and printed, not posted)",
                   err=format_ is Format.json)
        return
    deps, _, _ = guarded(lambda: _slack_deps(c))
    posted = post_cards(deps)
    typer.echo(f"posted {posted.posted} card(s) to Slack"
               + (f"; {len(posted.failed)} not posted (tried again next run): "
                  + "; ".join(f"#{i}: {why}" for i, why in posted.failed[:5])
                  if posted.failed else ""), err=format_ is Format.json)


def _resolve_customer(session: Session, query: str) -> str:
    match: Match = guarded(lambda: find_customer(session, query))
    if match.customer_id is None:
        lines = "\n".join(f"  {m.customer_id}  {m.name}  (match {m.score:.0f})"
                          for m in match.candidates)
        typer.echo(f"several customers match {query!r}; which one?\n{lines}", err=True)
        raise typer.Exit(EXIT_AMBIGUOUS)
    return match.customer_id


@app.command()
def status(ctx: typer.Context,
           query: Annotated[str, typer.Argument(help="customer name (fuzzy) or id")],
           format_: Annotated[TextFormat, typer.Option("--format")] = TextFormat.text,
           date_: DateOpt = None) -> None:
    """One customer's account: risk, open invoices, promises, disputes, last touches.

    Exit codes: 0 found, 1 no customer matches, 3 several match (they are listed).
    """
    c = _ctx(ctx)
    with c.session() as session:
        try:
            match = find_customer(session, query)
        except ServiceError as exc:
            if format_ is TextFormat.json:
                typer.echo(json.dumps({"query": query, "error": str(exc), "matches": []}))
            fail(str(exc), EXIT_NOT_FOUND)
        if match.customer_id is None:
            if format_ is TextFormat.json:
                typer.echo(json.dumps({"query": query, "error": "several customers match",
                                       "matches": [{"id": m.customer_id, "name": m.name,
                                                    "score": m.score}
                                                   for m in match.candidates]}, indent=2))
                raise typer.Exit(EXIT_AMBIGUOUS)
            _resolve_customer(session, query)
        assert match.customer_id is not None
        given = _parse_date(date_, "--date")
        st = (customer_status(session, c.policy, match.customer_id, given) if given
              else customer_status_now(session, c.policy, match.customer_id, now=c.now()))
        today = st.today
    if format_ is TextFormat.json:
        typer.echo(json.dumps(status_json(st), indent=2))
        return
    cust = st.customer
    typer.echo(f"{cust.name} ({cust.customer_id}) — owner {cust.owner_email or 'none'}"
               + (f", CSM {cust.csm_email}" if cust.csm_email else ""))
    arr = format_money(cust.arr, cust.currency) if cust.arr is not None else "unknown"
    typer.echo(f"ARR {arr}; risk {st.risk_score}/100; tone {st.tone}")
    for r in st.reasons:
        typer.echo(f"  - {r}")
    if st.sensitive_reasons:
        typer.echo("sensitive: " + "; ".join(st.sensitive_reasons))
    totals = ", ".join(format_money(v, k) for k, v in sorted(st.totals.items())) or "nothing"
    typer.echo(f"open: {totals} in {len(st.invoices)} invoice(s)")
    if st.invoices:
        rows = [("INVOICE", "DUE", "DPD", "LANE", "AMOUNT DUE", "STATE", "LAST TOUCH")]
        for line in st.invoices:
            s = line.state
            state = []
            if s.dispute:
                state.append(f"disputed ({s.dispute.reason[:30]})")
            if s.promise and s.promise.status.value == "open":
                state.append(f"promised {s.promise.promised_date}")
            if s.snoozed_until and s.snoozed_until > today:
                state.append(f"snoozed to {s.snoozed_until}")
            touch = line.last_touch
            rows.append((s.number, s.due_date.isoformat(), str(line.days_past_due), line.lane,
                         format_money(s.amount_due, s.currency), ", ".join(state) or "-",
                         f"{touch['summary']} {touch['at'][:10]}" if touch else "-"))
        _table(rows, right=frozenset({2, 4}))


@app.command()
def promise(ctx: typer.Context, invoice: str,
            date_: Annotated[str, typer.Option("--date", help="promised date YYYY-MM-DD")],
            amount: Annotated[str | None, typer.Option(help="promised amount")] = None,
            note: Annotated[str, typer.Option(help="what the customer said")] = "") -> None:
    """Log a promise to pay: reminders pause until the date (plus grace)."""
    c = _ctx(ctx)
    promised = _parse_date(date_, "--date")
    assert promised is not None
    value = _parse_amount(amount)
    with c.session() as session:
        out = guarded(lambda: actions.log_promise(
            session, c.policy, invoice=invoice, promised_date=promised, amount=value, note=note,
            actor=c.actor, now=c.now()))
    typer.echo(out.message)


@app.command()
def dispute(ctx: typer.Context, invoice: str,
            reason: Annotated[str, typer.Option(help="why the customer disputes it")],
            amount: Annotated[str | None, typer.Option(help="disputed amount")] = None,
            note: Annotated[str, typer.Option()] = "") -> None:
    """Mark an invoice disputed: routine reminders stop; the owner gets it to review."""
    c = _ctx(ctx)
    value = _parse_amount(amount)
    with c.session() as session:
        out = guarded(lambda: actions.open_dispute(
            session, c.policy, invoice=invoice, reason=reason, amount=value, note=note,
            actor=c.actor, now=c.now()))
    typer.echo(out.message)


@app.command("resolve-dispute")
def resolve_dispute(ctx: typer.Context, invoice: str,
                    resolution: Annotated[str, typer.Option(help="how it was settled")]) -> None:
    """Close an invoice's open dispute: reminders resume from the step due now."""
    c = _ctx(ctx)
    with c.session() as session:
        out = guarded(lambda: actions.resolve_dispute(
            session, c.policy, invoice=invoice, resolution=resolution, actor=c.actor,
            now=c.now()))
    typer.echo(out.message)


@app.command()
def snooze(ctx: typer.Context,
           customer: Annotated[str, typer.Argument(help="customer name or id; with --owner, "
                                                   "the owner's email")],
           until: Annotated[str, typer.Option(help="cards resume on this date YYYY-MM-DD")],
           reason: Annotated[str, typer.Option(help="why (quarter-end, PTO, ...)")],
           owner: Annotated[bool, typer.Option("--owner", help="snooze every card of an "
                                               "owner")] = False) -> None:
    """Pause a customer's (or an owner's) cards until a date."""
    c = _ctx(ctx)
    day = _parse_date(until, "--until")
    assert day is not None
    with c.session() as session:
        target = customer.strip().lower() if owner else _resolve_customer(session, customer)
        out = guarded(lambda: actions.snooze(
            session, c.policy, scope="owner" if owner else "customer", target=target,
            until=day, reason=reason, actor=c.actor, now=c.now()))
    typer.echo(out.message)


@app.command()
def pay(ctx: typer.Context, invoice: str,
        amount: Annotated[str, typer.Option(help="amount received")],
        date_: Annotated[str | None, typer.Option("--date", help="paid on (default today)")]
        = None,
        reference: Annotated[str | None, typer.Option(help="bank reference")] = None) -> None:
    """Record a payment received outside a connector (bank transfer, cheque)."""
    c = _ctx(ctx)
    value = _parse_amount(amount)
    assert value is not None
    paid_on = _parse_date(date_, "--date") or c.today()
    with c.session() as session:
        out = guarded(lambda: actions.record_payment(
            session, c.policy, invoice=invoice, amount=value, paid_on=paid_on,
            reference=reference, source="manual", actor=c.actor, now=c.now()))
    typer.echo(out.message)


@app.command()
def touch(ctx: typer.Context, invoice: str,
          summary: Annotated[str, typer.Option(help="what was said or agreed")],
          channel: Annotated[str, typer.Option(help="email, call, meeting, letter, portal, "
                                               "other")] = "call") -> None:
    """Log a contact with the customer made outside the bot (shown as the last touch)."""
    c = _ctx(ctx)
    with c.session() as session:
        out = guarded(lambda: actions.record_touch(
            session, c.policy, invoice=invoice, channel=channel, summary=summary,
            actor=c.actor, now=c.now()))
    typer.echo(out.message)


@app.command("demo")
def demo_cmd(ctx: typer.Context,
             seed: Annotated[int, typer.Option(help="same seed and date, same ledger")] = 7,
             customers: Annotated[int, typer.Option(min=1, max=5000,
                                                    help="how many customers")] = 40,
             date_: DateOpt = None,
             format_: Annotated[Format, typer.Option("--format")] = Format.table,
             serve_: Annotated[bool, typer.Option(
                 "--serve", help="run today's cycle and open a local Slack sandbox page where "
                 "the real bot answers clicks, modals and /dunning")] = False,
             port: Annotated[int, typer.Option(min=0, max=65535, help="port of the sandbox "
                                               "page on 127.0.0.1 (0: any free one)")] = 3030,
             no_browser: Annotated[bool, typer.Option(
                 "--no-browser", help="print the sandbox URL without opening a browser")]
             = False) -> None:
    """Seed a realistic synthetic ledger (no accounts needed), then print today's plan.

    With --serve: run today's cycle and serve a local page that plays Slack for the bot.
    """
    c = _ctx(ctx)
    today = _parse_date(date_, "--date") or c.today()
    if serve_:
        _serve_sandbox(ctx, c, today=today, seed=seed, customers=customers, port=port,
                       browser=not no_browser)
        return
    with c.session() as session:
        summary = guarded(lambda: demo.seed(session, c.policy, seed_value=seed,
                                            n_customers=customers, today=today,
                                            timezone=c.settings.dunning_timezone))
    with c.session() as session:
        result = build_plan(session, c.policy, today)
    if format_ is Format.table:
        if summary is None:
            typer.echo(f"demo ledger already seeded in {_safe_url(c.db_url)} (seed {seed})")
        else:
            typer.echo(f"seeded {summary.customers_created} customers and "
                       f"{summary.invoices_created} invoices into {_safe_url(c.db_url)}")
        typer.echo("")
    _print_plan(result, format_, title="today's plan")
    if format_ is Format.table:
        typer.echo("\nnext: `dunning status acme`, `dunning cycle`, `dunning plan --format json`")


def _serve_sandbox(ctx: typer.Context, c: Ctx, *, today: date, seed: int, customers: int,
                   port: int, browser: bool) -> None:
    """The browser sandbox until Ctrl-C. Without --db it uses a fresh SQLite file, since the
    sandbox's Slack lives only as long as the process and cards need a Slack to live in."""
    import contextlib
    import tempfile
    import webbrowser

    import uvicorn

    from bot.sandbox.page import build_page
    from bot.sandbox.workspace import Workspace, bind_loopback

    db_url = c.db_url
    if ctx.find_root().params.get("db") is None:
        folder = Path(tempfile.mkdtemp(prefix="dunning-sandbox-"))
        db_url = f"sqlite:///{folder / 'sandbox.db'}"
    try:
        sock = bind_loopback(port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); try --port 0")
    s = c.settings
    workspace = Workspace(db_url=db_url, today=today, seed=seed, customers=customers,
                          timezone=s.dunning_timezone, country=s.dunning_country,
                          currency=s.dunning_currency, policy_path=s.dunning_policy)
    try:
        guarded(workspace.start)
        if workspace.seeded is not None:
            typer.echo(f"seeded {workspace.seeded.customers_created} customers and "
                       f"{workspace.seeded.invoices_created} invoices into {_safe_url(db_url)}")
        day = guarded(workspace.run_day)
        typer.echo(f"cycle for {day.day.isoformat()}: {day.created} escalation(s), "
                   f"{day.posted} card(s) posted" + (", digest posted" if day.digest else ""))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        app = build_page(workspace, port=int(sock.getsockname()[1]))
        typer.echo(f"Slack sandbox: {url}  (Ctrl-C stops it)")
        if browser:
            webbrowser.open(url)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None,
                                               lifespan="off"))
        # uvicorn re-raises the Ctrl-C it handled once it has shut down: a clean stop.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        workspace.stop()
        sock.close()
    typer.echo("sandbox stopped")


def _slack_deps(c: Ctx) -> tuple[Deps, WebClient, str]:
    token, secret = c.settings.require_slack()
    client = make_client(token.get_secret_value(), c.settings.slack_api_url)
    deps = build_deps(c.settings, SlackMessenger(client), engine=c.ready())
    return deps, client, secret.get_secret_value()


@app.command()
def deliver(ctx: typer.Context,
            limit: Annotated[int, typer.Option(min=1, max=1000, help="emails at most")] = 50
            ) -> None:
    """Send the approved emails waiting in the outbox (SMTP_*), each exactly once."""
    c = _ctx(ctx)
    s = c.settings
    if not s.smtp_host:
        fail("SMTP_HOST is not set: approved emails wait in the outbox until it is")
    sender = SmtpSender(s.smtp_host, s.smtp_port, s.smtp_username,
                        s.smtp_password.get_secret_value() if s.smtp_password else None)
    result = deliver_outbox(c.ready(), sender, now=c.now(), limit=limit)
    typer.echo(f"sent {len(result.sent)}, will retry {len(result.retried)}, failed "
               f"{len(result.failed)}, need a person {len(result.needs_human)}")
    if result.failed or result.needs_human:
        raise typer.Exit(1)


@app.command()
def digest(ctx: typer.Context,
           channel: Annotated[str | None, typer.Option(help="channel id or #name (default: "
                                                       "DUNNING_DIGEST_CHANNEL)")] = None
           ) -> None:
    """Post today's manager digest (with the DSO chart) to Slack."""
    c = _ctx(ctx)
    target = channel or c.settings.dunning_digest_channel
    if not target:
        fail("no channel: set DUNNING_DIGEST_CHANNEL or pass --channel")
    deps, _, _ = guarded(lambda: _slack_deps(c))
    try:
        blocks = post_digest(deps, target)
    except ConnectorError as exc:
        fail(f"the digest was not posted: {exc}")
    typer.echo(f"digest posted to {target} ({blocks} blocks, chart attached)")


@app.command()
def worker(ctx: typer.Context) -> None:
    """The scheduler: daily cycle and digest on business days, outbox every 30 s, card
    reposts every 5 min. A second worker stands by and takes over when the first dies."""
    from scheduler.worker import run_worker
    c = _ctx(ctx)
    logs.configure(json_lines=c.settings.dunning_log_format == "json",
                   secrets=c.settings.secret_values())
    engine = c.ready()
    typer.echo(f"worker: daily cycle {c.settings.dunning_cycle_time}, digest "
               f"{c.settings.dunning_digest_time} ({c.settings.dunning_timezone}), business "
               f"days in {c.settings.dunning_country}")
    run_worker(c.settings, engine)


def _doctor_checks(c: Ctx) -> list[tuple[str, bool | None, str]]:
    """(what, ok, detail); ok None = not configured (not a failure)."""
    out: list[tuple[str, bool | None, str]] = []
    try:
        policy = c.policy
        out.append(("settings", True, f"policy with {len(policy.steps)} steps, time zone "
                    f"{c.settings.dunning_timezone}, country {c.settings.dunning_country}"))
    except SettingsError as exc:
        out.append(("settings", False, str(exc).splitlines()[0]))
    try:
        revision, head = current_revision(c.engine), head_revision()
        ok = revision == head
        out.append(("database", ok, f"{_safe_url(c.db_url)} at schema {revision}"
                    + ("" if ok else f", expected {head}: run `dunning init`")))
    except Exception as exc:  # the driver's own words are the useful part
        out.append(("database", False, f"{_safe_url(c.db_url)}: {exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"))
    s = c.settings
    if s.slack_bot_token is None:
        out.append(("slack", None, "not configured (SLACK_BOT_TOKEN)"))
    else:
        try:
            client = make_client(s.slack_bot_token.get_secret_value(), s.slack_api_url,
                                 max_retries=0)
            resp = translate(client.auth_test)
            out.append(("slack", True, f"authenticated as {resp.get('user')} in "
                        f"{resp.get('team')}"))
        except ConnectorError as exc:
            out.append(("slack", False, str(exc)))
        if s.slack_signing_secret is None:
            out.append(("slack signing", False, "SLACK_SIGNING_SECRET is not set"))
    if not s.smtp_host:
        out.append(("smtp", None, "not configured (SMTP_HOST): approved emails wait"))
    else:
        import smtplib
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=10) as smtp:
                smtp.ehlo()
                tls = smtp.has_extn("starttls")
            out.append(("smtp", True, f"{s.smtp_host}:{s.smtp_port} answers"
                        + (", offers STARTTLS" if tls else ", no STARTTLS")))
        except (OSError, smtplib.SMTPException) as exc:
            out.append(("smtp", False, f"{s.smtp_host}:{s.smtp_port}: "
                        f"{exc.__class__.__name__}: {exc}"))
    out.extend(_connector_checks(c))
    if s.imap_host is None:
        out.append(("imap", None, "not configured (IMAP_HOST): replies are logged on cards"))
    if s.openai_api_key is None and s.openai_base_url is None:
        out.append(("openai", None, "not configured: drafts come from the templates"))
    return out


def _connector_checks(c: Ctx) -> list[tuple[str, bool | None, str]]:
    """One line per billing/CRM system: not configured, or its own `check()`."""
    from bot.connectors import BILLING_SYSTEMS, NotConfigured, billing_source, crm_source

    out: list[tuple[str, bool | None, str]] = []
    for name in ("stripe", "quickbooks", "hubspot"):
        try:
            source = (billing_source(c.settings, name, c.engine) if name in BILLING_SYSTEMS
                      else crm_source(c.settings))
            if isinstance(source, NotConfigured):
                out.append((name, None, str(source).split(": ", 1)[1]))
                continue
            out.append((name, True, source.check()))
        except ConnectorError as exc:
            out.append((name, False, str(exc)))
    return out


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check settings, database, Slack and SMTP: one line each; exit 1 if any fails."""
    c = _ctx(ctx)
    checks = _doctor_checks(c)
    width = max(len(name) for name, _, _ in checks)
    for name, ok, detail in checks:
        mark = "ok  " if ok else ("--  " if ok is None else "FAIL")
        typer.echo(f"{mark} {name.ljust(width)}  {detail}")
    if any(ok is False for _, ok, _ in checks):
        raise typer.Exit(1)


@app.command()
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port (the Procfile passes $PORT)")] = 3000,
          workers: Annotated[int, typer.Option(
              min=1, max=64, envvar="WEB_CONCURRENCY",
              help="worker processes (default WEB_CONCURRENCY, else 1)")] = 1,
          ) -> None:
    """The web process: Slack events at /slack/events and /healthz (Socket Mode when
    SLACK_APP_TOKEN is set)."""
    c = _ctx(ctx)
    logs.configure(json_lines=c.settings.dunning_log_format == "json",
                   secrets=c.settings.secret_values())
    deps, client, secret = guarded(lambda: _slack_deps(c))
    bolt = build_app(deps, client, signing_secret=secret)
    if c.settings.slack_app_token is not None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler
        typer.echo("Socket Mode: connecting to Slack (no public URL needed)")
        SocketModeHandler(bolt, c.settings.slack_app_token.get_secret_value()).start()  # type: ignore[no-untyped-call]
        return
    import uvicorn
    if workers > 1:
        # Each worker process builds its own app (engine, Slack client) from settings.
        uvicorn.run("bot.web:web_from_settings", factory=True, workers=workers, host=host,
                    port=port, log_level="info", proxy_headers=True, log_config=None)
        return
    uvicorn.run(build_web(bolt, deps), host=host, port=port, log_level="info",
                proxy_headers=True, log_config=None)


@app.command("export")
def export_cmd(ctx: typer.Context,
               out: Annotated[Path, typer.Option(help="folder to write into")],
               format_: Annotated[str, typer.Option("--format", help="csv or json (the "
                                                    "tables beside customers and invoices)")]
               = "csv") -> None:
    """Export the ledger and the audit log: customers.csv and invoices.csv in the import
    format, every other table whole."""
    c = _ctx(ctx)
    if format_ not in ("csv", "json"):
        raise typer.BadParameter("csv or json", param_hint="--format")
    counts = export(c.ready(), out, fmt=format_)
    for name, n in counts.items():
        typer.echo(f"{n:>9} rows  {out / name}")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Recompute the hash chain of the audit log; exit 1 at the first broken link."""
    c = _ctx(ctx)
    with c.session() as session:
        result = verify_chain(session)
    if result.ok:
        typer.echo(f"audit log intact: {result.events} event(s), every link verified")
        return
    where = f" at event {result.first_bad_id}" if result.first_bad_id is not None else ""
    fail(f"audit log broken{where}: {result.problem} ({result.events} event(s) checked)")


def main() -> None:
    """Console entry point; a broken pipe (`| head`) is not an error."""
    try:
        app()
    except BrokenPipeError:
        sys.stderr.close()
