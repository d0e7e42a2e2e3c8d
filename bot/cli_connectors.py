"""`dunning sync ...` and `dunning connectors ...`: billing and CRM systems."""

from __future__ import annotations

import typer

connectors_app = typer.Typer(help="Billing and CRM connectors (Stripe, QuickBooks, HubSpot).",
                             no_args_is_help=True)
