"""`healthrisk operator ...`."""

import typer

app = typer.Typer(help="Run the FederatedTraining operator.", no_args_is_help=True)
