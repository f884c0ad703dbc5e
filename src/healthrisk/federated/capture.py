"""What actually passed through a SuperLink: a copy of every message it stored.

With `--database FILE` the SuperLink keeps every Message in flight (instructions from the
ServerApp, replies from SuperNodes) as content-addressed objects in the SQLite table
`objects`, and deletes them once delivered. Triggers installed before the SuperLink
starts copy each object as it is written, so an audit (or a test) can decode, after the
run, every Message that crossed the network — not what the ServerApp says about itself.

The copies hold whatever the messages held, in clear and at rest: capture only where an
audit asks for it, and delete the database with the SuperLink.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import Message

CAPTURE_TABLE = "captured_objects"
_TRIGGERS = f"""
CREATE TABLE IF NOT EXISTS {CAPTURE_TABLE} (object_id TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS capture_object_insert AFTER INSERT ON objects
  WHEN new.content IS NOT NULL AND length(new.content) > 0
  BEGIN INSERT OR IGNORE INTO {CAPTURE_TABLE} VALUES (new.object_id, new.content); END;
CREATE TRIGGER IF NOT EXISTS capture_object_update AFTER UPDATE OF content ON objects
  WHEN new.content IS NOT NULL AND length(new.content) > 0
  BEGIN INSERT OR IGNORE INTO {CAPTURE_TABLE} VALUES (new.object_id, new.content); END;
"""


def install(database: Path) -> None:
    """Create the SuperLink's schema with Flower's own migrations, then the triggers.

    Before the SuperLink starts, so that nothing can pass uncaptured; the SuperLink
    opens the existing file and keeps the triggers.
    """
    from flwr.superlink.config_loader import get_federation_manager, get_objectstore_linkstate_factories

    database.parent.mkdir(parents=True, exist_ok=True)
    _, link_state = get_objectstore_linkstate_factories(
        str(database), get_federation_manager(is_simulation=False)
    )
    link_state.state()  # runs Flower's migrations
    with sqlite3.connect(database, timeout=30) as connection:
        connection.executescript(_TRIGGERS)


def export(database: Path) -> Iterator[str]:
    """The captured objects as JSON lines (object id, base64 content): what leaves the pod."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        for object_id, content in connection.execute(f"SELECT object_id, content FROM {CAPTURE_TABLE}"):
            yield json.dumps({"id": object_id, "content": base64.b64encode(bytes(content)).decode()})


def read_export(lines: Iterable[str]) -> dict[str, bytes]:
    contents = {}
    for line in lines:
        if line.strip():
            item = json.loads(line)
            contents[item["id"]] = base64.b64decode(item["content"])
    return contents


def read_database(database: Path) -> dict[str, bytes]:
    return read_export(export(database))


def messages(contents: dict[str, bytes]) -> list[Message]:
    """Every Message among the captured objects, rebuilt with Flower's own decoder."""
    from flwr.app import Message
    from flwr.supercore.inflatable.inflatable_object import get_object_type_from_object_content
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    found = []
    for object_id, content in contents.items():
        if get_object_type_from_object_content(content) == Message.__name__:
            message = inflate_object_from_contents(object_id, contents, keep_object_contents=True)
            assert isinstance(message, Message)
            found.append(message)
    return found
