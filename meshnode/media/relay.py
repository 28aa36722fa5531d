"""``MediaRelay``: the node as a selective forwarding unit for the rooms it hosts.

The endpoint protocol (what a client's, a trunk's or a browser's media connection provides
to the relay, and what it may tell the relay) is in ``meshnode.media.endpoint`` and
re-exported here: ``MediaEndpoint``, ``RelayPort``, ``SourceInfo``, ``Preferences``.
"""

from meshnode.media.endpoint import MediaEndpoint, Preferences, RelayPort, SourceInfo

__all__ = ["MediaEndpoint", "Preferences", "RelayPort", "SourceInfo"]
