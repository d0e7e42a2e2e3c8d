"""`dunning replies ...`: understand a customer's reply and propose the next step."""

from __future__ import annotations

import typer

replies_app = typer.Typer(help="Customer replies: understand them, propose the next step.",
                          no_args_is_help=True)
