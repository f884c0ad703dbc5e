"""The default reference of a drift check: the serving model's training window at that site."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthrisk.contracts import CHAMPION_ALIAS, REGISTERED_MODEL, TAG_DATA_WINDOWS
from healthrisk.data.window import DateWindow
from healthrisk.registry import current_champion

if TYPE_CHECKING:
    from mlflow import MlflowClient


class NoReferenceWindow(LookupError):
    """No reference window can be derived; the message says what to pass instead."""


@dataclass(frozen=True)
class ChampionWindows:
    version: str
    windows: dict[str, DateWindow]

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


def champion_windows(
    client: MlflowClient, name: str = REGISTERED_MODEL, alias: str = CHAMPION_ALIAS
) -> ChampionWindows:
    """The per-site training windows recorded on the `alias` version of `name`."""
    champion = current_champion(client, name, alias)
    if champion is None:
        raise NoReferenceWindow(f"model {name!r} has no {alias!r} alias yet; pass --reference FROM..TO")
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
    return ChampionWindows(str(champion.version), windows)


def optional_champion_windows(
    client: MlflowClient, name: str = REGISTERED_MODEL, alias: str = CHAMPION_ALIAS
) -> ChampionWindows | None:
    """The champion's windows, or None while there is no champion to take them from."""
    try:
        return champion_windows(client, name, alias)
    except NoReferenceWindow:
        return None
