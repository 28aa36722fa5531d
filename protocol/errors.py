"""Typed decode errors.

Every decoder in ``protocol`` raises only :class:`DecodeError` subclasses on bad input, so a
driver can catch one type, log ``err.reason`` and count it in a metric without ever crashing
on bytes from a peer.
"""


class DecodeError(ValueError):
    """Bytes from a peer that are not a valid protocol object.

    ``reason`` is a short, stable, machine-readable label (used as a metric label);
    the message says what was wrong in words.
    """

    reason = "malformed"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class FrameTooLarge(DecodeError):
    """The frame or change is larger than the configured limit."""

    reason = "too_large"


class MalformedMsgpack(DecodeError):
    """The bytes are not one complete, valid msgpack object."""

    reason = "malformed_msgpack"


class LimitExceeded(DecodeError):
    """A string, collection, nesting depth or count is over its limit."""

    reason = "limit_exceeded"


class SchemaError(DecodeError):
    """Valid msgpack whose shape or types do not match the message schema."""

    reason = "schema"


class UnknownVersion(DecodeError):
    """A protocol version this node does not speak."""

    reason = "unknown_version"


class UnknownMessageType(DecodeError):
    """A message type number that this version does not define."""

    reason = "unknown_type"


class BadPresenceInterest(DecodeError):
    """A ``PresenceInterest`` whose budget or view radius is not a finite number in its range
    (``protocol.frames.check_presence_interest`` says which)."""

    reason = "bad_presence_interest"
