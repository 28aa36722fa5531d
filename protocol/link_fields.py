"""What every link message module shares: field checks and the registry of link message
types defined outside ``protocol.link`` (``protocol.media``: types 72..75;
``protocol.snapshot_offer``: 76).

``protocol.link`` decodes the core types (64..71) itself and asks this registry for the
others; the extension modules import only this module, so neither imports the other.
"""

from typing import Any, ClassVar

from protocol.errors import LimitExceeded, SchemaError
from protocol.frames import ROOM_ID_BYTES
from protocol.limits import Limits

FIRST_LINK_TYPE = 64
CORE_LINK_TYPES = frozenset(range(FIRST_LINK_TYPE, 72))  # Hello .. Refused, in protocol.link
MAX_REFUSAL_REASON_CHARS = 64
MAX_DETAIL_CHARS = 256
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class LinkExtension:
    """A link message defined in another module (``protocol.media``: types 72..75).

    A subclass is a frozen dataclass with a ``TYPE``; it says how it encodes (``fields``) and
    decodes (``from_fields``, raising only ``DecodeError`` subclasses), and registers itself
    with :func:`register_link_type` so that :func:`decode_link` knows it."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def fields(self) -> list[Any]:
        """The message's fields after ``[version, type]``, as msgpack values."""
        raise NotImplementedError

    @classmethod
    def from_fields(cls, fields: list[Any], limits: Limits) -> "LinkExtension":
        """Check and build the message from its decoded fields."""
        raise NotImplementedError


_EXTENSIONS: dict[int, type[LinkExtension]] = {}


def register_link_type(cls: type[LinkExtension]) -> None:
    """Make ``protocol.link.decode_link`` decode ``cls`` (its ``TYPE`` must be a new link
    type)."""
    if (cls.TYPE < FIRST_LINK_TYPE or cls.TYPE > 0x7F or cls.TYPE in _EXTENSIONS
            or cls.TYPE in CORE_LINK_TYPES):
        raise ValueError(f"link message type {cls.TYPE} is taken or out of range")
    _EXTENSIONS[cls.TYPE] = cls


def extension_type(mtype: int) -> type[LinkExtension] | None:
    """The registered extension class of link message type ``mtype``, if any."""
    return _EXTENSIONS.get(mtype)


def _text(value: object, limit: int, what: str) -> str:
    if type(value) is not str:
        raise SchemaError(f"{what} must be a string")
    if len(value) > limit:
        raise LimitExceeded(f"{what} longer than {limit} characters")
    return value


def _label(value: object, limit: int, what: str) -> str:
    """A stable reason label: 1..``limit`` characters of [a-z0-9_]."""
    text = _text(value, limit, what)
    if not text or not all(c in _LABEL_CHARS for c in text):
        raise SchemaError(f"{what} must be 1..{limit} characters of [a-z0-9_]")
    return text


def _room_id(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != ROOM_ID_BYTES:
        raise SchemaError(f"{what} room_id must be {ROOM_ID_BYTES} bytes")
    return value


def _arity(fields: list[Any], n: int, layout: str) -> None:
    if len(fields) != n:
        raise SchemaError(f"link message layout is [version, type, {layout}]")
