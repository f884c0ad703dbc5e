"""What a drift check measures against: the serving champion — its version, its validation
AUC, the model itself, and its training window at each site (the default reference) — and
which of a site's days are new since that window."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthrisk.contracts import CHAMPION_ALIAS, REGISTERED_MODEL, TAG_DATA_WINDOWS, TAG_VAL_AUC
from healthrisk.data.window import DateWindow
from healthrisk.federated.model import ServedModel
from healthrisk.registry import current_champion, served_model

if TYPE_CHECKING:
    from mlflow import MlflowClient


class NoReferenceWindow(LookupError):
    """No reference window can be derived; the message says what to pass instead."""


@dataclass(frozen=True)
class Champion:
    """The version a drift check scores against (the model) and measures from (its windows)."""

    version: str
    windows: dict[str, DateWindow]
    val_auc: float | None
    model: ServedModel

    def for_site(self, site: str) -> DateWindow:
        try:
            return self.windows[site]
        except KeyError:
            raise NoReferenceWindow(
                f"champion v{self.version} was not trained on site {site!r} "
                f"(its sites: {', '.join(sorted(self.windows)) or 'none'}); pass --reference FROM..TO"
            ) from None

    @property
    def source(self) -> str:
        return f"champion v{self.version}"


def serving_champion(
    client: MlflowClient, name: str = REGISTERED_MODEL, alias: str = CHAMPION_ALIAS
) -> Champion:
    """The `alias` version of `name`: its per-site training windows, validation AUC and model."""
    champion = current_champion(client, name, alias)
    if champion is None:
        raise NoReferenceWindow(
            f"model {name!r} has no {alias!r} alias yet: a drift check scores the serving model, "
            "so train and promote one first"
        )
    raw = champion.tags.get(TAG_DATA_WINDOWS)
    if not raw:
        raise NoReferenceWindow(
            f"{name} v{champion.version} has no {TAG_DATA_WINDOWS} tag; pass --reference FROM..TO"
        )
    try:
        windows = {site: DateWindow.parse(text) for site, text in json.loads(raw).items()}
    except (ValueError, AttributeError) as exc:
        raise NoReferenceWindow(
            f"{name} v{champion.version} tag {TAG_DATA_WINDOWS}={raw!r} is not a JSON "
            '{"site": "FROM..TO"} map'
        ) from exc
    try:
        val_auc: float | None = float(champion.tags[TAG_VAL_AUC])
    except (KeyError, ValueError):
        val_auc = None
    version = str(champion.version)
    return Champion(version, windows, val_auc, served_model(client, name, version))


def optional_serving_champion(
    client: MlflowClient, name: str = REGISTERED_MODEL, alias: str = CHAMPION_ALIAS
) -> Champion | None:
    """The champion, or None while there is none to measure against."""
    try:
        return serving_champion(client, name, alias)
    except NoReferenceWindow:
        return None


def new_days(days: Iterable[dt.date], trained: DateWindow, *, until: dt.date, most: int) -> DateWindow | None:
    """The site's days after the champion's training window there, through `until` (the
    newest day every site has), at most the newest `most` of them; None when there are none.

    Only new days: the days the champion trained on are what it was fitted to, so a check
    of them says nothing, and once a retrain took drifted days in, they stop being checked.
    """
    fresh = sorted(day for day in set(days) if trained.end < day <= until)[-most:]
    return DateWindow(fresh[0], fresh[-1]) if fresh else None
