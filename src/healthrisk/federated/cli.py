"""`healthrisk federation ...`: what a run's SuperLink pod runs besides Flower itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from healthrisk.contracts import SUPERLINK_CONTROL_PORT, SUPERLINK_FLEET_PORT, SUPERLINK_PORT

app = typer.Typer(help="A run's SuperLink pod: its proxy and the audit capture.", no_args_is_help=True)


@app.command("proxy")
def proxy(
    work_dir: Annotated[Path, typer.Option(help="writable: nginx's configuration, pid and temp files")],
    tls_dir: Annotated[
        Path | None, typer.Option(help="the SuperLink's CA, certificate and key (not with --insecure)")
    ] = None,
    control_ca: Annotated[
        Path | None, typer.Option(help="CA whose client certificates the Control listener accepts")
    ] = None,
    insecure: Annotated[bool, typer.Option(help="plain HTTP: only for a run that opted out of TLS")] = False,
    upstream_port: Annotated[int, typer.Option(help="the SuperLink's port on loopback")] = SUPERLINK_PORT,
    fleet_port: Annotated[int, typer.Option(help="listener for SuperNodes")] = SUPERLINK_FLEET_PORT,
    control_port: Annotated[int, typer.Option(help="listener for the Control API")] = SUPERLINK_CONTROL_PORT,
) -> None:
    """Expose only Fleet, and Control behind client certificates, of a SuperLink on loopback."""
    from healthrisk.federated.proxy import ProxySettings, nginx_argv, nginx_config

    if insecure == (tls_dir is not None and control_ca is not None):
        raise typer.BadParameter("give --tls-dir and --control-ca, or --insecure for a run without TLS")
    settings = ProxySettings(work_dir, tls_dir, control_ca, upstream_port, fleet_port, control_port)
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "nginx.conf"
    config.write_text(nginx_config(settings))
    argv = nginx_argv(settings, config)
    os.execvp(argv[0], argv)


@app.command("registrar")
def registrar(
    keys_dir: Annotated[Path, typer.Option(help="one OpenSSH public key per site, the file named after it")],
    root_certificates: Annotated[Path, typer.Option(help="CA bundle that signed the SuperLink")],
    work_dir: Annotated[Path, typer.Option(help="writable: the `ready` file the pod's readiness checks")],
    site: Annotated[list[str], typer.Option(help="a site of the run; repeat for each")],
    superlink: Annotated[
        str, typer.Option(help="the SuperLink's own host:port")
    ] = f"127.0.0.1:{SUPERLINK_PORT}",
) -> None:
    """Register the sites' keys with the SuperLink beside it, and report their standing."""
    from healthrisk.federated import registrar as registrar_loop
    from healthrisk.federated.control import SuperLinkAddress

    registrar_loop.run(SuperLinkAddress(superlink, root_certificates), keys_dir, work_dir, site)


@app.command("capture-init")
def capture_init(database: Annotated[Path, typer.Argument(help="the SuperLink's --database file")]) -> None:
    """Before the SuperLink starts: its database, with triggers that copy every message."""
    from healthrisk.federated import capture

    capture.install(database)


@app.command("capture-export")
def capture_export(database: Annotated[Path, typer.Argument(help="the SuperLink's --database file")]) -> None:
    """Every captured object, as JSON lines on stdout (what an audit takes out of the pod)."""
    from healthrisk.federated import capture

    for line in capture.export(database):
        sys.stdout.write(line + "\n")
