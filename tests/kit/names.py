"""The names the operator gives the pods of a training, from its own builders.

Tests never spell `<name>-r<run>-supernode-<site>` themselves: a change of scheme in
`healthrisk_operator.builders` changes what the tests look for with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from healthrisk_operator import builders
from healthrisk_operator.spec import Site, parse_spec


@dataclass(frozen=True)
class RunPods:
    """The pods of run `run` of the training `training`."""

    training: str
    run: int
    sites: tuple[Site, ...]

    @property
    def superlink(self) -> str:
        """The SuperLink pod, and its Service."""
        return builders.superlink_name(self.training, self.run)

    @property
    def supernodes(self) -> dict[str, str]:
        """Site name → its SuperNode pod."""
        return {site.name: builders.supernode_name(self.training, self.run, site) for site in self.sites}

    @property
    def servers(self) -> set[str]:
        """The pods that must be up before the run is submitted."""
        return {self.superlink, *self.supernodes.values()}

    def submit(self, attempt: int = 0) -> str:
        return builders.submit_name(self.training, self.run, attempt)


def run_pods(training: str, run: int, spec: Mapping[str, Any]) -> RunPods:
    return RunPods(training, run, tuple(parse_spec(spec).sites))


def drift_pods(training: str, check: int, spec: Mapping[str, Any]) -> dict[str, str]:
    """Site name → its drift pod of drift check number `check`."""
    return {site.name: builders.drift_pod_name(training, check, site) for site in parse_spec(spec).sites}
