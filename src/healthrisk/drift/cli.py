"""`healthrisk drift ...`, `healthrisk retrain`, `healthrisk monitor`."""

import typer

app = typer.Typer(help="Check each site's data for drift against its reference window.", no_args_is_help=True)
