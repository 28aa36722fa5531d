"""Room cards: a host's signed note "I host the room behind this rendezvous, reach me here".

A card is published in the DHT at ``keys.card_key(rendezvous, host key)`` (one key per room
and host). It holds only what a joiner needs to reach the host, nothing a non-member should
not learn: the rendezvous (a hash of the room ID, not the ID), the host's public key (its
PeerID), its meshnode URLs and libp2p addresses, when it was issued and when it expires. No
room name, no members, no content.

Wire: msgpack ``[1, rendezvous bin32, public_key bin32, [url...], [addr...], issued_ms,
expires_ms, signature bin64]``; the host signs ``CARD_SIG_TAG + msgpack(the first seven
fields)`` with its Ed25519 key. ``decode_card`` is the one trust boundary (limits inside the
parser); ``CardValidator`` is what every node registers for the ``meshroom`` DHT namespace:
it refuses malformed, oversized, unsigned, forged, expired, far-future cards and cards stored
under another host's key, each with a stable ``reason`` (metric label).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from meshnode.discovery.keys import CARD_NAMESPACE, card_key
from meshnode.identity import peer_id_from_public_key, verify_signature
from protocol.errors import DecodeError
from protocol.limits import Limits
from protocol.link import MAX_URL_CHARS
from protocol.msgpack_io import pack, unpack

__all__ = ["CARD_SIG_TAG", "MAX_CARD_BYTES", "CardReason", "CardRejected", "CardValidator",
           "RoomCard", "check_card", "decode_card", "make_card"]

CARD_VERSION = 1
CARD_SIG_TAG = b"meshnode/room-card/v1\x00"
MAX_CARD_BYTES = 2048
MAX_CARD_URLS = 4
MAX_CARD_ADDRS = 8
MAX_ADDR_CHARS = 200
MAX_CARD_TTL_MS = 24 * 3600 * 1000  # a card valid longer could be replayed long after
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000  # issued further in the future than this: refused
_LIMITS = Limits(max_str_bytes=MAX_URL_CHARS, max_bin_bytes=64, max_change_bytes=64,
                 max_collection_items=16, max_ops_per_change=16)


class CardReason(StrEnum):
    """Why a card was refused (stable: ``meshnode_discovery_rejected_total{reason}``)."""

    MALFORMED = "card_malformed"
    OVERSIZED = "card_oversized"
    UNSIGNED = "card_unsigned"
    FORGED = "card_forged"
    EXPIRED = "card_expired"
    FROM_FUTURE = "card_from_future"
    WRONG_KEY = "card_wrong_key"


class CardRejected(DecodeError):
    """A room card that must not be stored, returned or trusted; ``reason`` says why."""

    def __init__(self, reason: CardReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason.value


@dataclass(frozen=True, slots=True)
class RoomCard:
    """A decoded card (see the module docstring); ``signature`` checked by ``check_card``."""

    rendezvous: bytes
    public_key: bytes
    urls: tuple[str, ...]
    addrs: tuple[str, ...]
    issued_ms: int
    expires_ms: int
    signature: bytes

    @property
    def peer_id(self) -> str:
        """The host's PeerID."""
        return peer_id_from_public_key(self.public_key)

    @property
    def key(self) -> str:
        """The DHT key this card belongs under."""
        return card_key(self.rendezvous, self.public_key)

    def body(self) -> bytes:
        """The bytes the host signs."""
        return CARD_SIG_TAG + pack([CARD_VERSION, self.rendezvous, self.public_key,
                                    list(self.urls), list(self.addrs), self.issued_ms,
                                    self.expires_ms])

    def encode(self) -> bytes:
        """The card as stored in the DHT."""
        return pack([CARD_VERSION, self.rendezvous, self.public_key, list(self.urls),
                     list(self.addrs), self.issued_ms, self.expires_ms, self.signature])


def make_card(rendezvous: bytes, public_key: bytes, sign: Callable[[bytes], bytes],
              urls: Sequence[str], addrs: Sequence[str], now_ms: int, ttl_ms: int) -> RoomCard:
    """A card signed with ``sign`` (the host's ``Identity.sign``); URLs and addresses beyond
    the limits are left out (the first ones kept), so a card always fits."""
    ttl = max(1, min(ttl_ms, MAX_CARD_TTL_MS))
    kept_urls = [u for u in urls if 0 < len(u) <= MAX_URL_CHARS][:MAX_CARD_URLS]
    kept_addrs = [a for a in addrs if 0 < len(a) <= MAX_ADDR_CHARS][:MAX_CARD_ADDRS]
    while True:
        unsigned = RoomCard(rendezvous, public_key, tuple(kept_urls), tuple(kept_addrs),
                            now_ms, now_ms + ttl, b"")
        card = RoomCard(unsigned.rendezvous, public_key, unsigned.urls, unsigned.addrs,
                        now_ms, now_ms + ttl, sign(unsigned.body()))
        if len(card.encode()) <= MAX_CARD_BYTES or not (kept_addrs or len(kept_urls) > 1):
            return card
        if kept_addrs:
            kept_addrs.pop()
        else:
            kept_urls.pop()


def _strings(value: object, limit: int, max_chars: int, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise CardRejected(CardReason.MALFORMED, f"card {what} must be a list of at most "
                                                 f"{limit} strings")
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= max_chars:
            raise CardRejected(CardReason.MALFORMED, f"card {what} entries must be strings "
                                                     f"of 1 to {max_chars} characters")
    return tuple(value)


def decode_card(data: bytes) -> RoomCard:
    """Parse a card (signature not checked yet: ``check_card``). Raises ``CardRejected``."""
    if not isinstance(data, bytes):
        raise CardRejected(CardReason.MALFORMED, "a card is bytes")
    if len(data) > MAX_CARD_BYTES:
        raise CardRejected(CardReason.OVERSIZED,
                           f"card of {len(data)} bytes is over {MAX_CARD_BYTES}")
    try:
        obj = unpack(data, _LIMITS, MAX_CARD_BYTES, "room card")
    except DecodeError as err:
        raise CardRejected(CardReason.MALFORMED, str(err)) from None
    if not isinstance(obj, list) or len(obj) not in (7, 8) or obj[0] != CARD_VERSION:
        raise CardRejected(CardReason.MALFORMED,
                           f"a card is [{CARD_VERSION}, rendezvous, key, urls, addrs, issued, "
                           "expires, signature]")
    rdv, pk, urls, addrs, issued, expires = obj[1:7]
    sig = obj[7] if len(obj) == 8 else b""
    if not (isinstance(rdv, bytes) and len(rdv) == 32 and isinstance(pk, bytes)
            and len(pk) == 32):
        raise CardRejected(CardReason.MALFORMED, "rendezvous and key are 32 bytes each")
    if not (type(issued) is int and type(expires) is int and 0 <= issued < expires < 2**63):
        raise CardRejected(CardReason.MALFORMED, "issued and expires are times in ms, "
                                                 "issued before expires")
    if not isinstance(sig, bytes):
        raise CardRejected(CardReason.MALFORMED, "the signature is bytes")
    return RoomCard(rdv, pk, _strings(urls, MAX_CARD_URLS, MAX_URL_CHARS, "urls"),
                    _strings(addrs, MAX_CARD_ADDRS, MAX_ADDR_CHARS, "addrs"),
                    issued, expires, sig)


def check_card(card: RoomCard, key: str | None, now_ms: int) -> None:
    """Raise ``CardRejected`` unless ``card`` is signed by its host, belongs under ``key``
    (None: any), and is valid at ``now_ms``."""
    if not card.signature:
        raise CardRejected(CardReason.UNSIGNED, f"card of {card.peer_id} is not signed")
    if key is not None and card.key != key:
        raise CardRejected(CardReason.WRONG_KEY,
                           f"card of {card.peer_id} stored under another host's key")
    if not verify_signature(card.public_key, card.signature, card.body()):
        raise CardRejected(CardReason.FORGED,
                           f"card claiming {card.peer_id}: the signature is not its key's")
    if card.expires_ms <= now_ms:
        raise CardRejected(CardReason.EXPIRED, f"card of {card.peer_id} expired")
    if card.issued_ms > now_ms + MAX_CLOCK_SKEW_MS or (
            card.expires_ms - card.issued_ms > MAX_CARD_TTL_MS):
        raise CardRejected(CardReason.FROM_FUTURE,
                           f"card of {card.peer_id} is issued in the future or valid for "
                           f"more than {MAX_CARD_TTL_MS // 3_600_000} h")


class CardValidator:
    """The ``meshroom`` namespace's DHT validator (libp2p's ``validate``/``select`` shape):
    every node registers it, so no node stores or returns a card that ``check_card``
    refuses. ``now_ms`` is the clock; ``on_reject(reason, detail)`` counts and logs."""

    namespace = CARD_NAMESPACE

    def __init__(self, now_ms: Callable[[], int],
                 on_reject: Callable[[str, str], None] | None = None) -> None:
        self._now_ms = now_ms
        self._on_reject = on_reject

    def card(self, key: str, value: bytes) -> RoomCard:
        """The valid card ``value`` under ``key``, or ``CardRejected`` (reported)."""
        try:
            card = decode_card(value)
            check_card(card, key, self._now_ms())
        except CardRejected as err:
            if self._on_reject is not None:
                self._on_reject(err.reason, str(err))
            raise
        return card

    def validate(self, key: str, value: bytes) -> None:
        """Raise ``CardRejected`` unless ``value`` is a valid card for ``key``."""
        self.card(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        """The index of the best card: valid, the latest issued (ties: the greater bytes,
        so every node picks the same). Raises ``CardRejected`` if none is valid."""
        best: tuple[int, bytes] | None = None
        index = -1
        for i, value in enumerate(values):
            try:
                card = self.card(key, value)
            except CardRejected:
                continue
            rank = (card.issued_ms, value)
            if best is None or rank > best:
                best, index = rank, i
        if index < 0:
            raise CardRejected(CardReason.MALFORMED, "no valid card among the values")
        return index
