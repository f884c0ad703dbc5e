"""The proxy in front of a run's SuperLink pod: nginx exposing Fleet alone to SuperNodes
and Control alone, behind client certificates, to the operator and its run submitter.

Flower 1.42 serves Fleet (`/v1/fleet`), Control (`/v1/control`: key registration, runs)
and Runtime (`/v1/runtime`: what the ServerApp uses) on one port, HTTP/1.1 with protobuf
bodies, and open-source Flower authorises nothing on Control or Runtime. So the
SuperLink listens on loopback only, and this proxy is the pod's only door:

* the Fleet listener forwards `POST /v1/fleet/...` and answers 404 to every other path
  (nginx normalises `..`, `%2e`, `%2f` and `//` before it matches a location);
* the Control listener asks for a client certificate signed by the run's Control CA
  and forwards only `POST /v1/control/...`;
* both re-originate TLS to the SuperLink and verify its certificate (`localhost`).

`healthrisk federation proxy` writes the configuration under a writable directory (the
pod's root filesystem is read-only) and replaces itself with nginx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healthrisk.contracts import (
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    SUPERLINK_PORT,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
)


@dataclass(frozen=True)
class ProxySettings:
    work_dir: Path  # nginx's pid, temp files and configuration
    # None: the run opted out of TLS (spec.security.insecure): plain listeners, and a
    # Control listener that cannot ask for client certificates.
    tls_dir: Path | None  # ca.crt, tls.crt, tls.key of the SuperLink
    control_ca: Path | None  # the CA whose certificates the Control listener accepts
    upstream_port: int = SUPERLINK_PORT
    fleet_port: int = SUPERLINK_FLEET_PORT
    control_port: int = SUPERLINK_CONTROL_PORT

    def __post_init__(self) -> None:
        if (self.tls_dir is None) != (self.control_ca is None):
            raise ValueError("TLS for the listeners and a Control client CA go together")


def nginx_config(settings: ProxySettings) -> str:
    work = settings.work_dir
    secure = settings.tls_dir is not None
    scheme = "https" if secure else "http"
    ssl = " ssl" if secure else ""
    tls = ""
    control_auth = ""
    if settings.tls_dir is not None:
        certs = settings.tls_dir
        tls = f"""
    ssl_certificate {certs / TLS_CERT_FILE};
    ssl_certificate_key {certs / TLS_KEY_FILE};
    ssl_protocols TLSv1.2 TLSv1.3;
    proxy_ssl_trusted_certificate {certs / TLS_CA_FILE};
    proxy_ssl_verify on;
    proxy_ssl_name localhost;
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;"""
        control_auth = f"""
        ssl_client_certificate {settings.control_ca};
        ssl_verify_client on;"""
    return f"""worker_processes 1;
pid {work / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work / "client_body"};
    proxy_temp_path {work / "proxy"};
    fastcgi_temp_path {work / "fastcgi"};
    uwsgi_temp_path {work / "uwsgi"};
    scgi_temp_path {work / "scgi"};
    log_format flower '$remote_addr "$request" $status listener=$server_port client_cert=$ssl_client_verify';
    access_log /dev/stdout flower;
    server_tokens off;
    # Flower pushes model arrays as objects; long polls wait for replies.
    client_max_body_size 256m;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 3600s;
    proxy_buffering off;
    upstream superlink {{ server 127.0.0.1:{settings.upstream_port}; keepalive 16; }}{tls}
    server {{
        listen {settings.fleet_port}{ssl};
        location /v1/fleet/ {{ limit_except POST {{ deny all; }} proxy_pass {scheme}://superlink; }}
        location / {{ return 404; }}
    }}
    server {{
        listen {settings.control_port}{ssl};{control_auth}
        location /v1/control/ {{ limit_except POST {{ deny all; }} proxy_pass {scheme}://superlink; }}
        location / {{ return 404; }}
    }}
}}
"""


def nginx_argv(settings: ProxySettings, config: Path) -> list[str]:
    # -e: the compiled-in error log under /var/log is not writable in the pod.
    return ["nginx", "-e", "stderr", "-p", str(settings.work_dir), "-c", str(config), "-g", "daemon off;"]
