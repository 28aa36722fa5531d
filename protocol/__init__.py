"""meshnode's wire protocol: framed msgpack messages and signed scene changes.

Everything here is a pure function of its inputs: no sockets, clocks or disks. The
specification, with test vectors, is ``docs/protocol.md``.
"""

from protocol.errors import (
    DecodeError,
    FrameTooLarge,
    LimitExceeded,
    MalformedMsgpack,
    SchemaError,
    UnknownMessageType,
    UnknownVersion,
)
from protocol.frames import PROTOCOL_VERSION
from protocol.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "DecodeError",
    "FrameTooLarge",
    "LimitExceeded",
    "Limits",
    "MalformedMsgpack",
    "SchemaError",
    "UnknownMessageType",
    "UnknownVersion",
]
