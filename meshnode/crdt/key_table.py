"""Where a new replica interns public keys: its own table, or one shared by a simulation.

A replica interns every public key it meets (``LocalEdits._key``) so that the entity IDs,
grants and version vectors that embed a key share one object. In a simulation thousands of
replicas in one process meet the same keys: ``using_key_table(table)`` makes the replicas
created inside the block intern into ``table``, so each key is stored once per process
instead of once per replica. Interning only chooses which of several equal ``bytes`` objects
is kept; the one lookup that reads the table (``set_field``: "is this entity's creator
known?") checks the replica's own entities right after, so a replica behaves the same with
either table.
"""

from contextlib import AbstractContextManager

from protocol.scoped import ScopedHook

__all__ = ["key_table", "using_key_table"]

_shared: ScopedHook[dict[bytes, bytes]] = ScopedHook()


def using_key_table(table: dict[bytes, bytes] | None) -> AbstractContextManager[None]:
    """Let replicas created inside the block intern keys into ``table`` (None: each its own);
    the table installed before is back when the block ends, even on error."""
    return _shared.using(table)


def key_table() -> dict[bytes, bytes]:
    """The table a replica created now interns keys into."""
    table = _shared.value
    return {} if table is None else table
