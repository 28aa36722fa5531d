"""Who is who in a room's media: participants, not PeerIDs.

A Python client is a participant of its own: its PeerID. A browser has no identity of its
own: all the browsers of a node publish under the node's PeerID, its presence goes out as the
node's (``{"browsers": {session: fields}}``, ``meshnode.web.shared_presence``), and its sources
are ``<node PeerID>/web.<session>.<mid>``. So the relay must tell a node's browsers apart by
*participant*, ``<PeerID>#<session>``, wherever it asks "is this the same person?": the key of
an endpoint, a subscriber's own sources (never sent back to it), and positions. Deciding that
by PeerID would leave browser A on a node without browser B's stream (or send A its own).
"""

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from meshnode.media.endpoint import SourceInfo

__all__ = ["BROWSER_LABEL_PREFIX", "participant_of", "presence_participants",
           "source_participant"]

BROWSER_LABEL_PREFIX = "web."
"""A browser's source labels start so: ``web.<session>.<mid>``."""


class _Endpoint(Protocol):
    @property
    def peer_id(self) -> str: ...


def participant_of(endpoint: _Endpoint) -> str:
    """The participant on the other end of a media endpoint: its ``participant`` if it has
    one (a browser: ``PeerID#session``), else its PeerID (a client; a neighbour node)."""
    participant = getattr(endpoint, "participant", None)
    return participant if isinstance(participant, str) and participant else endpoint.peer_id


def source_participant(source: SourceInfo) -> str:
    """The participant publishing ``source``: ``PeerID#session`` for a browser's source
    (its label says which session), the publisher's PeerID for anyone else's."""
    label = source.source_id.partition("/")[2]
    if label.startswith(BROWSER_LABEL_PREFIX):
        session = label[len(BROWSER_LABEL_PREFIX):].rpartition(".")[0]
        if session:
            return f"{source.publisher}#{session}"
    return source.publisher


def presence_participants(
        presence: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A room's presence (PeerID -> fields) as participants: a node's browsers
    (``{"browsers": {session: fields}}``) each as ``PeerID#session`` with their own fields,
    everyone else as themselves."""
    for peer, fields in presence.items():
        browsers = fields.get("browsers") if isinstance(fields, Mapping) else None
        if isinstance(browsers, Mapping):
            for session, own in browsers.items():
                if isinstance(session, str) and isinstance(own, Mapping):
                    yield f"{peer}#{session}", dict(own)
        elif isinstance(fields, Mapping):
            yield peer, dict(fields)
