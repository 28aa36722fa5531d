"""``HostedRoom``: one room on this node, as the node's services share it."""

from dataclasses import dataclass, field
from typing import Any

from meshnode.runtime.room import RoomRuntime
from meshnode.web.people import PeopleRoom

__all__ = ["HostedRoom"]


@dataclass(slots=True)
class HostedRoom:
    """A room on this node: its runtime and the operator's settings for it."""

    runtime: RoomRuntime
    settings: dict[str, Any]
    stored_since_snapshot: int = 0
    saving_snapshot: bool = False
    reader_snapshot: bool = False
    """A blind host's stored snapshot is a reader's sealed one (``meshnode.rooms.
    reader_snapshots``): the host no longer writes its own, which would replace it."""
    clients: set[str] = field(default_factory=set)
    browser_view: PeopleRoom | None = None
