"""The vocabulary of a link (``meshnode.transport.link``): its two channels, how it is set up
(``LinkSettings``), what we say about ourselves in our hello (``LocalHello``), how it closes
(``LinkClosed``, with a stable reason) and what it counts (``LinkStats``)."""

from dataclasses import dataclass, field

from meshnode.transport.ice import IceSettings
from protocol.frames import ROOM_ID_BYTES
from protocol.link import (
    HELLO_VERSIONS,
    KINDS,
    MAX_INVITE_BYTES,
    MAX_INVITES,
    MAX_ROOMS_PER_LINK,
    MAX_URL_CHARS,
)

SYNC = "sync"
PRESENCE = "presence"
CHANNELS = (SYNC, PRESENCE)


@dataclass(frozen=True)
class LinkSettings:
    """How every link of a node behaves.

    - ``ice``: STUN/TURN servers and host addresses (``meshnode.transport.ice``).
    - ``hello_timeout_s``: from the remote description being set to a verified hello (ICE,
      DTLS, SCTP and the hello exchange together); then the link closes (``hello_timeout``).
    - ``high_water_bytes``: a channel's ``bufferedAmount`` above which the link stops
      handing it data (``sync`` queues, ``presence`` drops).
    - ``max_queue_bytes``: the link's own ``sync`` send queue; beyond it ``send`` refuses.
      Also bounds the inbox of messages that arrive before ``on_message`` is set.
    - ``max_message_bytes``: the largest message sent or accepted; advertised to the peer
      as ``a=max-message-size`` (a larger message from the peer closes the link).
    - ``batch_target_bytes``: how much the owner should pack into one message (the link
      sends what it is given; batching frames is the owner's job).
    - ``udp_buffer_bytes``: the receive and send buffers asked for the link's UDP sockets
      (aioice asks for 256 KiB, which bursts of SCTP packets overflow); the kernel caps it
      at ``net.core.rmem_max``/``wmem_max``; 0 leaves aioice's choice.
    """

    ice: IceSettings = field(default_factory=IceSettings)
    hello_timeout_s: float = 10.0
    high_water_bytes: int = 1_048_576
    max_queue_bytes: int = 8_388_608
    max_message_bytes: int = 262_144
    batch_target_bytes: int = 16_384
    udp_buffer_bytes: int = 4_194_304

    def __post_init__(self) -> None:
        if not self.hello_timeout_s > 0:
            raise ValueError("hello_timeout_s must be positive")
        for name in ("high_water_bytes", "max_queue_bytes", "max_message_bytes",
                     "batch_target_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.udp_buffer_bytes < 0:
            raise ValueError("udp_buffer_bytes must be 0 (aioice's default) or positive")


@dataclass(frozen=True)
class LocalHello:
    """What we say about ourselves in our hello: ``kind`` ("node" or "client"), the rooms
    we share over the link (32-byte room IDs), our signaling URL ("" if none) and the
    invite tokens we redeem, and the protocol versions we speak (``protocol.link.HELLO_VERSIONS``
    by default). Checked against the protocol's limits when created."""

    kind: str
    rooms: tuple[bytes, ...]
    url: str = ""
    invites: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = HELLO_VERSIONS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {self.kind!r}")
        if len(self.rooms) > MAX_ROOMS_PER_LINK:
            raise ValueError(f"at most {MAX_ROOMS_PER_LINK} rooms per link")
        if any(type(r) is not bytes or len(r) != ROOM_ID_BYTES for r in self.rooms):
            raise ValueError(f"each room ID must be {ROOM_ID_BYTES} bytes")
        if len(set(self.rooms)) != len(self.rooms):
            raise ValueError("duplicate room ID")
        if len(self.url) > MAX_URL_CHARS:
            raise ValueError(f"url longer than {MAX_URL_CHARS} characters")
        if len(self.invites) > MAX_INVITES or any(
            type(i) is not bytes or len(i) > MAX_INVITE_BYTES for i in self.invites
        ):
            raise ValueError(f"at most {MAX_INVITES} invites of at most {MAX_INVITE_BYTES} bytes")


class LinkClosed(Exception):
    """The link is closed (or closed while you waited); ``reason`` says why (a stable
    label: ``hello_timeout``, ``hello_expected``, ``connection_failed``, ``channel_closed``,
    a decode error's reason, or the reason given to :meth:`PeerLink.close`)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


@dataclass
class ChannelStats:
    """Counters of one channel. ``messages_*``/``bytes_*`` count what crossed the wire,
    the hello included; ``dropped`` counts messages not sent or not delivered, by reason:
    ``not_established``, ``closed`` (also what was still queued at close), ``too_large``,
    ``queue_full``, ``high_water`` (presence), ``before_hello`` (presence that arrived
    before the peer's hello), ``no_receiver`` (arrived with no ``on_message`` to take it
    and the inbox full)."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass
class LinkStats:
    """Counters of one link; ``queue_peak_bytes`` is the most the ``sync`` send queue held."""

    sync: ChannelStats = field(default_factory=ChannelStats)
    presence: ChannelStats = field(default_factory=ChannelStats)
    queue_peak_bytes: int = 0

    def channel(self, name: str) -> ChannelStats:
        if name == SYNC:
            return self.sync
        if name == PRESENCE:
            return self.presence
        raise ValueError(f"no channel {name!r}: a link has {list(CHANNELS)}")
