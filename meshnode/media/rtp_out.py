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

__all__ = ["MAX_HEADER", "ExtensionIds", "RtpWriter"]

ONE_BYTE_PROFILE = 0xBEDE
MAX_ONE_BYTE_ID = 14
MAX_ONE_BYTE_LEN = 16

MAX_HEADER = 12 + 4 + (1 + MAX_ONE_BYTE_LEN) + 4 + 2 + 3  # fixed, profile, mid, abs, level, pad

_FIXED = struct.Struct("!BBHLL")


@dataclass(frozen=True, slots=True)
class ExtensionIds:
    """The negotiated IDs of the header extensions the relay writes (None: not negotiated,
    not written)."""

    mid: int | None
    abs_send_time: int | None
    audio_level: int | None


class RtpWriter:
    """Serializes the RTP one sender writes (see the module docstring). Build it with
    :meth:`for_ids`.

    :meth:`pack_into` writes a header into a caller's buffer with one precompiled ``struct``
    per layout (with and without the audio level), so the relay's per-copy path builds no
    intermediate bytes; :meth:`packet` returns the whole packet as bytes.
    """

    def __init__(self, ssrc: int, mid_element: bytes, abs_send_time_id: int | None,
                 audio_level_id: int | None) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self._mid = mid_element
        self._abs = abs_send_time_id << 4 | 2 if abs_send_time_id else 0
        self._level = audio_level_id << 4 if audio_level_id else 0
        # Header layouts: [0] without the audio level element, [1] with it (None: the same
        # as [0], the level not negotiated). Each is (struct, its size in bytes).
        self._plain = self._layout(with_level=False)
        self._leveled = self._layout(with_level=True) if self._level else self._plain

    def _layout(self, *, with_level: bool) -> tuple[struct.Struct, int] | None:
        """The header struct: fixed header, then (if any element) the one-byte profile, its
        length in words, ``mid`` (constant bytes), abs-send-time (ID byte, then the 24-bit
        time as a byte and a 16-bit half), the level (ID byte, value) and zero padding.
        None: no extension at all (the fixed header alone)."""
        ext_len = len(self._mid) + (4 if self._abs else 0) + (2 if with_level else 0)
        if not ext_len:
            return None
        pad = -ext_len % 4
        fmt = (f"!BBHLLHH{len(self._mid)}s" + ("BBH" if self._abs else "")
               + ("BB" if with_level else "") + f"{pad}x")
        layout = struct.Struct(fmt)
        return layout, layout.size

    def pack_into(self, buffer: "bytearray | memoryview", payload_type: int, marker: bool,
                  sequence_number: int, timestamp: int, abs_send_time: int,
                  audio_level: tuple[bool, int] | None) -> int:
        """Write the header of one packet (as :meth:`packet` would) at the start of
        ``buffer`` (any writable buffer); returns its length: the payload goes right after."""
        second = (0x80 if marker else 0) | payload_type
        if audio_level is not None and self._level:
            layout = self._leveled
            level = (0x80 if audio_level[0] else 0) | audio_level[1] & 0x7F
        else:
            layout = self._plain
            level = -1
        if layout is None:
            _FIXED.pack_into(buffer, 0, 0x80, second, sequence_number, timestamp, self.ssrc)
            return _FIXED.size
        header, size = layout
        words = (size - 12 - 4) >> 2
        if self._abs:
            if level >= 0:
                header.pack_into(buffer, 0, 0x90, second, sequence_number, timestamp,
                                 self.ssrc, ONE_BYTE_PROFILE, words, self._mid, self._abs,
                                 abs_send_time >> 16 & 0xFF, abs_send_time & 0xFFFF,
                                 self._level, level)
            else:
                header.pack_into(buffer, 0, 0x90, second, sequence_number, timestamp,
                                 self.ssrc, ONE_BYTE_PROFILE, words, self._mid, self._abs,
                                 abs_send_time >> 16 & 0xFF, abs_send_time & 0xFFFF)
        elif level >= 0:
            header.pack_into(buffer, 0, 0x90, second, sequence_number, timestamp, self.ssrc,
                             ONE_BYTE_PROFILE, words, self._mid, self._level, level)
        else:
            header.pack_into(buffer, 0, 0x90, second, sequence_number, timestamp, self.ssrc,
                             ONE_BYTE_PROFILE, words, self._mid)
        return size

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
        header = bytearray(MAX_HEADER)
        size = self.pack_into(header, payload_type, marker, sequence_number, timestamp,
                              abs_send_time, audio_level)
        return bytes(header[:size]) + payload
