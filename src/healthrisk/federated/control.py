"""The Control API of a SuperLink, in-process: submit a run, follow it, stop it, and
register the sites' SuperNode keys.

Flower's own client (`ControlHttpClient`, protobuf over HTTPS) with an SSLContext that
trusts the SuperLink's CA and, where the SuperLink sits behind the run's proxy, presents
the Control client certificate — which the `flwr` CLI cannot do. The FAB is built and
sent the way `flwr run` does it (flwr/cli/run/run.py), without a process per call.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from healthrisk.contracts import MANAGER
from healthrisk.federated.pki import pem_public_key
from healthrisk.federated.run_config import RunConfig

if TYPE_CHECKING:
    from flwr.supercore.control import ControlHttpClient

# The SuperLink answers a second registration of the same public key with this status.
PRECONDITION_FAILED = 412


class ControlError(RuntimeError):
    pass


@dataclass(frozen=True)
class SuperLinkAddress:
    address: str  # host:port of the SuperLink's Control API (its own port, or the proxy's)
    # CA that signed the SuperLink's certificate; None only for a run that opted out of
    # TLS (a FederatedTraining with spec.security.insecure).
    root_certificates: Path | None
    # (certificate, key) presented to a Control listener that asks for a client certificate.
    client_certificate: tuple[Path, Path] | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self.root_certificates is None:
            raise ValueError("no CA to verify the SuperLink with")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.root_certificates))
        if self.client_certificate is not None:
            cert, key = self.client_certificate
            context.load_cert_chain(str(cert), str(key))
        return context

    @property
    def url(self) -> str:
        scheme = "http" if self.root_certificates is None else "https"
        return f"{scheme}://{self.address}"


@dataclass(frozen=True)
class RunStatus:
    status: str  # pending | starting | running | finished
    sub_status: str  # completed | failed | stopped | ""
    details: str

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def succeeded(self) -> bool:
        return self.finished and self.sub_status == "completed"

    def __str__(self) -> str:
        text = f"{self.status}:{self.sub_status}" if self.sub_status else self.status
        return f"{text} ({self.details})" if self.details else text


@dataclass(frozen=True)
class NodeInfo:
    """A SuperNode the SuperLink knows: registered through the Control API (named after
    its site), `online` while it is connected with its key."""

    node_id: int
    name: str
    status: str  # registered | online | offline | unregistered
    public_key_pem: bytes


def app_dir() -> Path:
    return Path(str(files("healthrisk.federated") / "app"))


def build_fab() -> tuple[bytes, str]:
    """The Flower App bundle of the installed package, and its sha256 (what `flwr run` sends)."""
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(app_dir())
    return fab, hashlib.sha256(fab).hexdigest()


class ControlClient:
    """Flower's Control API client for one SuperLink; close it (or use `with`)."""

    def __init__(self, superlink: SuperLinkAddress, timeout: float = 30.0) -> None:
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor

        verify: ssl.SSLContext | bool = (
            False if superlink.root_certificates is None else superlink.ssl_context()
        )
        self._client: ControlHttpClient = ControlHttpClient(
            superlink.url,
            interceptors=[RuntimeVersionHttpInterceptor(component_name=MANAGER)],
            verify=verify,
            timeout=timeout,
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def submit(self, config: RunConfig) -> int:
        """Send the Flower App with `config` to the SuperLink; return the Flower run id."""
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        fab, digest = build_fab()
        response = self._client.StartRun(
            StartRunRequest(
                fab=fab_to_proto(Fab(digest, fab, {})),
                override_config=user_config_to_proto(config.to_flower()),
            )
        )
        if not response.HasField("run_id"):
            raise ControlError("the SuperLink did not start the run")
        return int(response.run_id)

    def status(self, run_id: int) -> RunStatus:
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        if run_id not in response.run_dict:
            raise ControlError(f"the SuperLink does not know run {run_id}")
        run = run_from_proto(response.run_dict[run_id])
        return RunStatus(run.status.status, run.status.sub_status, run.status.details)

    def runs(self) -> dict[int, RunStatus]:
        """Every run the SuperLink holds, by Flower run id."""
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._client.ListRuns(ListRunsRequest())
        return {
            int(run_id): RunStatus(run.status.status, run.status.sub_status, run.status.details)
            for run_id, run in ((i, run_from_proto(r)) for i, r in response.run_dict.items())
        }

    def stop(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self._client.StopRun(StopRunRequest(run_id=run_id))

    def nodes(self) -> list[NodeInfo]:
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._client.ListNodes(ListNodesRequest())
        return [
            NodeInfo(int(n.node_id), str(n.name), str(n.status), bytes(n.public_key))
            for n in response.nodes_info
        ]

    def register(self, name: str, openssh_public_key: bytes) -> int:
        from flwr.proto.control_pb2 import RegisterNodeRequest

        response = self._client.RegisterNode(
            RegisterNodeRequest(public_key=pem_public_key(openssh_public_key), name=name)
        )
        return int(response.node_id)

    def close(self) -> None:
        self._client.close()


def register_sites(client: ControlClient, public_keys: Mapping[str, bytes]) -> dict[str, NodeInfo]:
    """Register every site's key the SuperLink does not hold yet; return what it holds.

    List first, then register: the SuperLink refuses a key twice (HTTP 412), and an
    operator restarted mid-run, or a second reconcile, must find the work done.
    """
    import httpx

    wanted = {site: pem_public_key(key) for site, key in public_keys.items()}
    held = {n.public_key_pem: n for n in client.nodes()}
    for site, pem in wanted.items():
        if pem in held:
            continue
        try:
            client.register(site, public_keys[site])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != PRECONDITION_FAILED:
                raise ControlError(f"registering the key of {site}: {exc}") from exc
    held = {n.public_key_pem: n for n in client.nodes()}
    return {site: held[pem] for site, pem in wanted.items() if pem in held}
