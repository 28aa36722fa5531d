"""What the media relay needs of the world around it, as protocols: the driver
(``MediaDriver``, its taps ``TapPort`` and outputs ``OutputPort``: ``meshnode.media.relay_driver``
binds them to aiortc), who may receive or publish a room's media (``AccessCheck``) and where a
room's participants stand (``PositionsOf``).
"""

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver

from meshnode.media.endpoint import SourceInfo


class TapPort(Protocol):
    """The driver's tap on one receiver: what it measured, and a way to ask the publisher
    for a keyframe."""

    @property
    def kbps(self) -> float: ...
    @property
    def audio_level(self) -> int | None: ...
    @property
    def last_spoke(self) -> float | None: ...
    @property
    def layer_kbps(self) -> tuple[float, ...]: ...
    def close(self) -> None: ...


class OutputPort(Protocol):
    """The driver's output of one source into one sender, and what the subscriber's RTCP
    says about it (REMB ``estimate_kbps``; ``loss``, ``rtt_ms`` and the count of
    ``reports`` from its receiver reports)."""

    @property
    def estimate_kbps(self) -> float | None: ...
    @property
    def loss(self) -> float | None: ...
    @property
    def rtt_ms(self) -> float | None: ...
    @property
    def reports(self) -> int: ...
    @property
    def sent_bytes(self) -> int: ...
    def set_max_tid(self, tid: int | None) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


class MediaDriver(Protocol):
    """What the relay needs of the aiortc driver (``meshnode.media.aiortc_driver``)."""

    def make_pc(self) -> RTCPeerConnection: ...
    def tap(self, source: SourceInfo, transceiver: RTCRtpTransceiver) -> Any: ...
    def output(self, tap: Any, transceiver: RTCRtpTransceiver, key: str,
               trunk: bool) -> OutputPort: ...
    def stats(self) -> Mapping[str, Any]: ...


class AccessCheck(Protocol):
    """``access(peer, kind, room_id, publish)``: None if the peer may receive the room's
    media (``publish``: may publish into it), else the refusal reason (``not_member``,
    ``removed``, ``unknown_room``, ``read_only``)."""

    def __call__(self, peer: str, kind: str, room_id: bytes,
                 publish: bool = False) -> str | None: ...


PositionsOf = Callable[[bytes], Mapping[str, tuple[float, float, float]]]
"""The positions of a room's participants, from its presence (PeerID -> x, y, z)."""
