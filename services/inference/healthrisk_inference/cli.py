"""`healthrisk serve`: the inference service under uvicorn, configured from the environment."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated

import typer

from healthrisk.contracts import INFERENCE_METRICS_PORT, INFERENCE_PORT

# The command is the group's callback, so that it runs as `healthrisk serve --port ...`.
app = typer.Typer(help="Serve predictions over REST.")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors in the cluster."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own handlers would print a second, differently formatted copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@app.callback(invoke_without_command=True)
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = INFERENCE_PORT,
    metrics_port: Annotated[
        int, typer.Option(help="Port of GET /metrics (Prometheus), apart from the API.")
    ] = INFERENCE_METRICS_PORT,
    access_log: Annotated[
        bool, typer.Option(help="Log one line per request (method, path, status).")
    ] = False,
) -> None:
    """Serve the model named by MODEL_NAME/MODEL_VERSION (or MODEL_URI); see `Settings` for every variable.

    One process, one event loop: scale out with replicas, not workers, so that the
    Prometheus metrics of a process describe all of its traffic. The metrics have their own
    port: the risk-score histogram tells, at low traffic, each request's risk band, so only
    Prometheus should reach it (the chart's NetworkPolicy), never the API's callers.
    """
    import uvicorn
    from prometheus_client import start_http_server

    from healthrisk_inference.app import create_app
    from healthrisk_inference.settings import Settings

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    # prometheus_client's own server, on a thread: a scrape never waits for the event loop.
    start_http_server(metrics_port, addr=host, registry=app.state.metrics.registry)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        # Health data: request bodies are never logged; the access log holds the path only.
        server_header=False,
        # The service never uses the client's address, so X-Forwarded-* headers need no
        # parsing (uvicorn would parse its trusted-proxy list on every request).
        proxy_headers=False,
    )
