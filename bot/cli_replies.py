"""`dunning replies ...` and `dunning drafts ...`: reply understanding and draft previews."""

from __future__ import annotations

import typer

replies_app = typer.Typer(help="Customer replies: understand them, propose the next step.",
                          no_args_is_help=True)
drafts_app = typer.Typer(help="Customer message drafts (model or templates).",
                         no_args_is_help=True)
