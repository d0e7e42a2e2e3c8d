"""`dunning drafts ...`: preview the customer message a card would carry today."""

from __future__ import annotations

import typer

drafts_app = typer.Typer(help="Customer message drafts (model or templates).",
                         no_args_is_help=True)
