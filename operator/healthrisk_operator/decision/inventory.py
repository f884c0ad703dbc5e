"""The sites' days, learned without reading a row: one short pod per site runs
`healthrisk data days` on the site's volume and prints its days' names; the newest day
every site has is what a rolling window ends on and what a drift check looks up to.

An inventory serves whoever asked since it started (a pending trigger, a drift check):
`newest_common_day(d, since)` answers from one taken at or after `since`, follows the
one running, or starts one. The days themselves are read from the pods' logs in the
reconcile that finds them finished, and only the newest common day stays in the status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from healthrisk.contracts import ROLE_INVENTORY
from healthrisk.data.window import DateWindow, NoCommonDay
from healthrisk.data.window import newest_common_day as common_day
from healthrisk_operator import builders
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.status import Inventory
from healthrisk_operator.views import PodView


@dataclass(frozen=True)
class InventoryFailed:
    """Why the newest common day cannot be known: a pod failed, a site has no day, or the
    sites share no day. Reported; whoever asked drops its request."""

    message: str


def newest_common_day(d: Decision, since: dt.datetime) -> dt.date | InventoryFailed | None:
    """The newest day every site has, from an inventory taken at or after `since`; None
    while one is being taken (started here if needed)."""
    inventory = d.status.inventory or Inventory()
    fresh = inventory.started_at is not None and inventory.started_at >= since
    if fresh and not inventory.running:
        if inventory.error is not None:
            return InventoryFailed(inventory.error)
        assert inventory.newest_common_day is not None
        return dt.date.fromisoformat(inventory.newest_common_day)
    if not fresh:
        inventory = Inventory(round=(inventory.round or 0) + 1, running=True, started_at=d.now)
        d.status.inventory = inventory
        for pod in d.pods(ROLE_INVENTORY):  # an older listing nobody waits for now
            d.delete_pod(pod)
    _follow(d, inventory)
    return None if inventory.running else newest_common_day(d, since)


def _follow(d: Decision, inventory: Inventory) -> None:
    round_ = inventory.round or 0
    pods = {p.site: p for p in d.pods(ROLE_INVENTORY) if p.inventory_round == round_}
    timed_out = d.seconds_since(inventory.started_at) > d.config.drift_check_timeout_s
    for site in d.spec.sites:
        if site.name not in pods and not timed_out:
            d.plan.create.append(
                builders.inventory_pod(
                    d.training,
                    round_,
                    site,
                    d.config,
                    active_deadline_seconds=d.config.drift_check_timeout_s,
                )
            )
    if not timed_out and (len(pods) < len(d.spec.sites) or not all(p.finished for p in pods.values())):
        return
    days: dict[str, list[dt.date]] = {}
    problems = []
    for site in d.spec.sites:
        listed = _days(pods.get(site.name))
        if isinstance(listed, str):
            problems.append(f"{site.name}: {listed}")
        else:
            days[site.name] = listed
    inventory.running = False
    inventory.taken_at = d.now
    if problems:
        inventory.error = "; ".join(problems)[:500]
    else:
        try:
            inventory.newest_common_day = common_day(days).isoformat()
        except NoCommonDay as exc:
            inventory.error = str(exc)[:500]
    for pod in pods.values():
        d.delete_pod(pod)


def _days(pod: PodView | None) -> list[dt.date] | str:
    """The days a site's pod listed, or why there are none."""
    if pod is None:
        return "no inventory pod (timed out)"
    if pod.phase != "Succeeded":
        return pod.describe_problem()
    listed = (pod.summary or {}).get("days")
    if not isinstance(listed, list):
        return f"pod {pod.name} printed no list of days"
    try:
        return [day for text in listed for day in DateWindow.parse(str(text)).days()]
    except ValueError as exc:
        return f"pod {pod.name}: {exc}"
