"""The relay's outgoing RTP, serialized without packet objects: the per-copy hot path.

Every packet a source sends is written once per subscriber, so what each copy costs in Python
bounds how many subscribers a core serves (``benchmarks/media_bench.py``). Building an aiortc
``RtpPacket`` and calling its ``serialize`` per copy costs object creation, a dataclass of
header extensions and a generic extension packer; an :class:`RtpWriter` holds what is fixed
for one sender (its SSRC, its negotiated extension IDs, its ``mid`` element) and packs the
rest with one ``struct`` call.

The bytes are exactly those aiortc's ``RtpPacket.serialize`` makes with the sender's
header-extension map (``tests/media/test_rtp_out.py`` checks it byte for byte): the one-byte
header form (RFC 8285) with ``mid``, ``abs-send-time`` and ``ssrc-audio-level``, in that
order, zero-padded to 32 bits. :meth:`RtpWriter.for_ids` returns None when aiortc would use
the two-byte form (an ID over 14 or a ``mid`` over 16 bytes): the caller then serializes
the aiortc way. Pure: no aiortc import, no I/O.
"""

import struct
from dataclasses import dataclass

__all__ = ["ExtensionIds", "RtpWriter"]

ONE_BYTE_PROFILE = 0xBEDE
MAX_ONE_BYTE_ID = 14
MAX_ONE_BYTE_LEN = 16

_FIXED = struct.Struct("!BBHLL")
_FIXED_EXT = struct.Struct("!BBHLLHH")


@dataclass(frozen=True, slots=True)
class ExtensionIds:
    """The negotiated IDs of the header extensions the relay writes (None: not negotiated,
    not written)."""

    mid: int | None
    abs_send_time: int | None
    audio_level: int | None


class RtpWriter:
    """Serializes the RTP one sender writes (see the module docstring). Build it with
    :meth:`for_ids`."""

    def __init__(self, ssrc: int, mid_element: bytes, abs_send_time_id: int | None,
                 audio_level_id: int | None) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self._mid = mid_element
        self._abs = abs_send_time_id << 4 | 2 if abs_send_time_id else 0
        self._level = audio_level_id << 4 if audio_level_id else 0

    @classmethod
    def for_ids(cls, ssrc: int, mid: str | None, ids: ExtensionIds) -> "RtpWriter | None":
        """A writer for a sender with SSRC ``ssrc``, m-line ``mid`` and extension ``ids``;
        None if aiortc would write the two-byte extension form for it."""
        for x_id in (ids.mid, ids.abs_send_time, ids.audio_level):
            if x_id is not None and x_id > MAX_ONE_BYTE_ID:
                return None
        mid_element = b""
        if mid is not None and ids.mid:
            value = mid.encode("utf8")
            if not 0 < len(value) <= MAX_ONE_BYTE_LEN:
                return None
            mid_element = bytes((ids.mid << 4 | (len(value) - 1),)) + value
        return cls(ssrc, mid_element, ids.abs_send_time, ids.audio_level)

    def packet(self, payload_type: int, marker: bool, sequence_number: int, timestamp: int,
               abs_send_time: int, audio_level: tuple[bool, int] | None,
               payload: bytes) -> bytes:
        """One RTP packet: the header with ``abs_send_time`` (24 bits) and, when given, the
        RFC 6464 ``audio_level`` (voice flag, level), then ``payload``."""
        ext = self._mid
        if self._abs:
            ext += bytes((self._abs, abs_send_time >> 16 & 0xFF, abs_send_time >> 8 & 0xFF,
                          abs_send_time & 0xFF))
        if audio_level is not None and self._level:
            ext += bytes((self._level, (0x80 if audio_level[0] else 0) | audio_level[1] & 0x7F))
        second = (0x80 if marker else 0) | payload_type
        if not ext:
            return _FIXED.pack(0x80, second, sequence_number, timestamp, self.ssrc) + payload
        pad = -len(ext) % 4
        if pad:
            ext += bytes(pad)
        return _FIXED_EXT.pack(0x90, second, sequence_number, timestamp, self.ssrc,
                               ONE_BYTE_PROFILE, len(ext) >> 2) + ext + payload
