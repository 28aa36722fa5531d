"""RTP parsing for the media relay: headers, header extensions, VP8 descriptors, audio levels.

Pure functions on bytes, no aiortc. The relay forwards payloads untouched; it only reads what
it needs to decide (sequence number, timestamp, marker, the RFC 8285 header extensions, the
RFC 7741 VP8 payload descriptor and the RFC 6464 audio level). Every parser raises only
:class:`MediaDecodeError` on bad input, whose ``reason`` is a stable metric label.
"""

from dataclasses import dataclass, field

from protocol.errors import DecodeError

RTP_VERSION = 2
RTP_FIXED_HEADER = 12
# RFC 8285: the "defined by profile" values of the two header-extension forms.
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000


class MediaDecodeError(DecodeError):
    """Bytes from a peer that are not valid RTP (or not a valid VP8 descriptor / audio level).

    ``reason`` is one of ``short``, ``version``, ``padding``, ``csrc``, ``extension``,
    ``vp8_descriptor``, ``audio_level``: stable labels for metrics and logs.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed RTP header fields plus the parsed RFC 8285 extensions.

    ``header_len`` is where the payload starts; ``padding`` is how many padding bytes end the
    packet, so the payload is ``data[header_len:len(data) - padding]`` (see :meth:`payload_of`).
    ``extensions`` maps an extension ID to its raw value (first occurrence wins).
    """

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    header_len: int
    extensions: dict[int, bytes] = field(default_factory=dict)
    csrcs: tuple[int, ...] = ()
    padding: int = 0

    def payload_of(self, data: bytes) -> bytes:
        """The payload of the packet this header was parsed from."""
        return data[self.header_len : len(data) - self.padding]


def parse_rtp(data: bytes) -> RtpHeader:
    """Parse an RTP packet's header (RFC 3550) and header extensions (RFC 8285).

    Extensions with a profile other than the one-byte and two-byte forms are skipped (their
    length is still checked). Raises :class:`MediaDecodeError` on anything malformed.
    """
    size = len(data)
    if size < RTP_FIXED_HEADER:
        raise MediaDecodeError("short", f"{size} bytes, an RTP header needs 12")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise MediaDecodeError("version", f"RTP version {first >> 6}, expected 2")
    csrc_count = first & 0x0F
    pos = RTP_FIXED_HEADER + 4 * csrc_count
    if pos > size:
        raise MediaDecodeError("csrc", f"{csrc_count} CSRCs do not fit in {size} bytes")
    csrcs = tuple(
        int.from_bytes(data[i : i + 4], "big") for i in range(RTP_FIXED_HEADER, pos, 4)
    )
    extensions: dict[int, bytes] = {}
    if first & 0x10:
        if pos + 4 > size:
            raise MediaDecodeError("extension", "extension header truncated")
        profile = int.from_bytes(data[pos : pos + 2], "big")
        words = int.from_bytes(data[pos + 2 : pos + 4], "big")
        start = pos + 4
        pos = start + 4 * words
        if pos > size:
            raise MediaDecodeError("extension", f"extension of {words} words overruns packet")
        block = data[start:pos]
        if profile == ONE_BYTE_PROFILE:
            extensions = _one_byte_extensions(block)
        elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
            extensions = _two_byte_extensions(block)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or pos + padding > size:
            raise MediaDecodeError("padding", f"padding of {padding} bytes is invalid here")
    return RtpHeader(
        payload_type=data[1] & 0x7F,
        marker=bool(data[1] & 0x80),
        sequence_number=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        header_len=pos,
        extensions=extensions,
        csrcs=csrcs,
        padding=padding,
    )


def _one_byte_extensions(block: bytes) -> dict[int, bytes]:
    # RFC 8285 4.2: ID (4 bits) and length - 1 (4 bits); ID 0 is a padding byte and ID 15
    # ends the block (the rest is ignored).
    out: dict[int, bytes] = {}
    i = 0
    end = len(block)
    while i < end:
        byte = block[i]
        ext_id = byte >> 4
        if ext_id == 0:
            i += 1
            continue
        if ext_id == 15:
            break
        length = (byte & 0x0F) + 1
        if i + 1 + length > end:
            raise MediaDecodeError("extension", f"one-byte element {ext_id} overruns block")
        out.setdefault(ext_id, block[i + 1 : i + 1 + length])
        i += 1 + length
    return out


def _two_byte_extensions(block: bytes) -> dict[int, bytes]:
    # RFC 8285 4.3: ID byte, length byte, value; a zero ID byte is padding.
    out: dict[int, bytes] = {}
    i = 0
    end = len(block)
    while i < end:
        ext_id = block[i]
        if ext_id == 0:
            i += 1
            continue
        if i + 2 > end:
            raise MediaDecodeError("extension", f"two-byte element {ext_id} has no length")
        length = block[i + 1]
        if i + 2 + length > end:
            raise MediaDecodeError("extension", f"two-byte element {ext_id} overruns block")
        out.setdefault(ext_id, block[i + 2 : i + 2 + length])
        i += 2 + length
    return out


@dataclass(frozen=True, slots=True)
class Vp8Info:
    """What the relay needs from a VP8 payload descriptor (RFC 7741 4.2).

    ``frame_start``: first packet of a frame (S bit set, partition index 0). ``keyframe``:
    ``frame_start`` and the VP8 payload header's P bit clear. ``tid`` is None when the T bit is
    clear; ``layer_sync`` is the Y bit (the frame depends only on base-layer frames).
    ``descriptor_len`` is where the VP8 payload starts.
    """

    keyframe: bool
    frame_start: bool
    picture_id: int | None
    tl0picidx: int | None
    tid: int | None
    layer_sync: bool
    descriptor_len: int = 0


def parse_vp8(payload: bytes) -> Vp8Info:
    """Parse the VP8 payload descriptor at the start of an RTP payload (RFC 7741).

    Raises :class:`MediaDecodeError` (reason ``vp8_descriptor``) when the descriptor is
    truncated or no VP8 payload follows it.
    """
    size = len(payload)
    if size == 0:
        raise MediaDecodeError("vp8_descriptor", "empty payload")
    first = payload[0]
    start = bool(first & 0x10)
    partition = first & 0x07
    pos = 1
    picture_id: int | None = None
    tl0picidx: int | None = None
    tid: int | None = None
    layer_sync = False
    if first & 0x80:
        if pos >= size:
            raise MediaDecodeError("vp8_descriptor", "X set but no extension byte")
        ext = payload[pos]
        pos += 1
        if ext & 0x80:  # I: PictureID, 7 or 15 bits (M bit)
            if pos >= size:
                raise MediaDecodeError("vp8_descriptor", "PictureID truncated")
            if payload[pos] & 0x80:
                if pos + 2 > size:
                    raise MediaDecodeError("vp8_descriptor", "15-bit PictureID truncated")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos]
                pos += 1
        if ext & 0x40:  # L: TL0PICIDX
            if pos >= size:
                raise MediaDecodeError("vp8_descriptor", "TL0PICIDX truncated")
            tl0picidx = payload[pos]
            pos += 1
        if ext & 0x30:  # T or K: one byte TID | Y | KEYIDX
            if pos >= size:
                raise MediaDecodeError("vp8_descriptor", "TID/KEYIDX truncated")
            if ext & 0x20:
                tid = payload[pos] >> 6
                layer_sync = bool(payload[pos] & 0x20)
            pos += 1
    if pos >= size:
        raise MediaDecodeError("vp8_descriptor", "no VP8 payload after the descriptor")
    frame_start = start and partition == 0
    # VP8 payload header (RFC 7741 4.3): P (bit 0 of the first byte) is 0 for a key frame.
    keyframe = frame_start and not payload[pos] & 0x01
    return Vp8Info(
        keyframe=keyframe,
        frame_start=frame_start,
        picture_id=picture_id,
        tl0picidx=tl0picidx,
        tid=tid,
        layer_sync=layer_sync,
        descriptor_len=pos,
    )


def audio_level(ext: bytes) -> tuple[bool, int]:
    """The RFC 6464 client-to-mixer audio level: (voice activity, level in -dBov 0..127).

    Level 0 is the loudest, 127 silence. Raises :class:`MediaDecodeError` (``audio_level``)
    on an empty element.
    """
    if not ext:
        raise MediaDecodeError("audio_level", "empty audio-level element")
    return bool(ext[0] & 0x80), ext[0] & 0x7F
