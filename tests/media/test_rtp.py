"""RTP, RFC 8285 header-extension, RFC 7741 VP8-descriptor and RFC 6464 audio-level parsing.

Fuzz: whatever the bytes, the parsers raise nothing but ``MediaDecodeError``. Round trips:
packets built by the small encoder below parse back to the fields they were built from.
"""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.media.rtp import (
    MediaDecodeError,
    audio_level,
    parse_rtp,
    parse_vp8,
)
from protocol.errors import DecodeError


def encode_rtp(
    *,
    payload_type: int,
    marker: bool,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    csrcs: tuple[int, ...] = (),
    extensions: dict[int, bytes] | None = None,
    two_byte: bool = False,
    padding: int = 0,
) -> bytes:
    """A minimal RTP encoder (RFC 3550 + RFC 8285), independent of the parser."""
    ext_block = b""
    if extensions is not None:
        body = b""
        for ext_id, value in extensions.items():
            if two_byte:
                body += bytes([ext_id, len(value)]) + value
            else:
                body += bytes([(ext_id << 4) | (len(value) - 1)]) + value
        body += b"\x00" * (-len(body) % 4)
        profile = 0x1000 if two_byte else 0xBEDE
        ext_block = (
            profile.to_bytes(2, "big") + (len(body) // 4).to_bytes(2, "big") + body
        )
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extensions is not None else 0)
    first |= len(csrcs)
    out = bytes([first, (0x80 if marker else 0) | payload_type])
    out += sequence_number.to_bytes(2, "big") + timestamp.to_bytes(4, "big")
    out += ssrc.to_bytes(4, "big")
    out += b"".join(c.to_bytes(4, "big") for c in csrcs) + ext_block + payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return out


@dataclass(frozen=True)
class Vp8Fields:
    start: bool
    partition: int
    picture_id: int | None
    long_picture_id: bool
    tl0picidx: int | None
    tid: int | None
    layer_sync: bool
    keyidx: int | None
    inter: bool


def encode_vp8(f: Vp8Fields, body: bytes = b"\x9d\x01\x2a") -> bytes:
    """A VP8 payload descriptor (RFC 7741 4.2) + payload header byte + body."""
    ext = 0
    tail = b""
    if f.picture_id is not None:
        ext |= 0x80
        if f.long_picture_id:
            tail += bytes([0x80 | (f.picture_id >> 8), f.picture_id & 0xFF])
        else:
            tail += bytes([f.picture_id])
    if f.tl0picidx is not None:
        ext |= 0x40
        tail += bytes([f.tl0picidx])
    if f.tid is not None or f.keyidx is not None:
        ext |= (0x20 if f.tid is not None else 0) | (0x10 if f.keyidx is not None else 0)
        tail += bytes([((f.tid or 0) << 6) | (0x20 if f.layer_sync else 0) | (f.keyidx or 0)])
    first = (0x80 if ext else 0) | (0x10 if f.start else 0) | f.partition
    return bytes([first]) + (bytes([ext]) if ext else b"") + tail + bytes([int(f.inter)]) + body


@st.composite
def vp8_fields(draw: st.DrawFn) -> Vp8Fields:
    long_pid = draw(st.booleans())
    pid = draw(st.none() | st.integers(0, 0x7FFF if long_pid else 0x7F))
    tid = draw(st.none() | st.integers(0, 3))
    return Vp8Fields(
        start=draw(st.booleans()),
        partition=draw(st.integers(0, 7)),
        picture_id=pid,
        long_picture_id=long_pid,
        tl0picidx=draw(st.none() | st.integers(0, 255)),
        tid=tid,
        layer_sync=tid is not None and draw(st.booleans()),
        keyidx=draw(st.none() | st.integers(0, 31)),
        inter=draw(st.booleans()),
    )


@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_parse_rtp_raises_only_media_decode_error(data: bytes) -> None:
    try:
        header = parse_rtp(data)
    except MediaDecodeError as exc:
        assert exc.reason in {"short", "version", "padding", "csrc", "extension"}
        return
    assert header.header_len + header.padding <= len(data)


@settings(max_examples=400)
@given(st.binary(min_size=12, max_size=80))
def test_parse_rtp_survives_version_2_garbage(data: bytes) -> None:
    # Force version 2 and the X bit so the extension parsers see random blocks.
    data = bytes([0x90 | (data[0] & 0x2F)]) + data[1:]
    try:
        header = parse_rtp(data)
    except MediaDecodeError as exc:
        assert exc.reason in {"short", "padding", "csrc", "extension"}
        return
    assert all(1 <= i <= 255 for i in header.extensions)


@settings(max_examples=400)
@given(st.binary(max_size=24))
def test_parse_vp8_and_audio_level_raise_only_media_decode_error(data: bytes) -> None:
    for parse in (parse_vp8, audio_level):
        try:
            parse(data)
        except MediaDecodeError as exc:
            assert exc.reason in {"vp8_descriptor", "audio_level"}
            assert isinstance(exc, DecodeError)


@given(
    pt=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    payload=st.binary(max_size=40),
    two_byte=st.booleans(),
    ext=st.none() | st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16)),
    padding=st.integers(0, 255),
)
def test_rtp_round_trip(
    pt: int,
    marker: bool,
    seq: int,
    ts: int,
    ssrc: int,
    csrcs: tuple[int, ...],
    payload: bytes,
    two_byte: bool,
    ext: dict[int, bytes] | None,
    padding: int,
) -> None:
    data = encode_rtp(
        payload_type=pt, marker=marker, sequence_number=seq, timestamp=ts, ssrc=ssrc,
        payload=payload, csrcs=csrcs, extensions=ext, two_byte=two_byte, padding=padding,
    )
    header = parse_rtp(data)
    assert (header.payload_type, header.marker, header.sequence_number) == (pt, marker, seq)
    assert (header.timestamp, header.ssrc, header.csrcs) == (ts, ssrc, csrcs)
    assert header.extensions == (ext or {})
    assert header.padding == padding
    assert header.payload_of(data) == payload


@given(vp8_fields())
def test_vp8_round_trip(f: Vp8Fields) -> None:
    info = parse_vp8(encode_vp8(f))
    assert info.frame_start == (f.start and f.partition == 0)
    assert info.keyframe == (info.frame_start and not f.inter)
    assert (info.picture_id, info.tl0picidx, info.tid) == (f.picture_id, f.tl0picidx, f.tid)
    assert info.layer_sync == f.layer_sync


def test_rtp_rejections_name_the_reason() -> None:
    good = encode_rtp(payload_type=96, marker=False, sequence_number=1, timestamp=2, ssrc=3,
                      payload=b"x", extensions={1: b"\x80"})
    assert parse_rtp(good).extensions == {1: b"\x80"}
    cases = {
        "short": good[:11],
        "version": bytes([0x40]) + good[1:],
        "csrc": bytes([0x8F]) + good[1:16],
        "extension": good[:14],
        "padding": bytes([good[0] | 0x20]) + good[1:-1] + b"\xff",
    }
    for reason, data in cases.items():
        with pytest.raises(MediaDecodeError) as err:
            parse_rtp(data)
        assert err.value.reason == reason, (reason, err.value)


def test_one_byte_extension_padding_and_stop() -> None:
    block = b"\x00\x10\xaa\x00" + b"\xf0\x21\x01\x02"  # padding, id1 len1, pad, stop, junk
    data = encode_rtp(payload_type=1, marker=False, sequence_number=0, timestamp=0, ssrc=0,
                      payload=b"")
    data = bytes([data[0] | 0x10]) + data[1:] + b"\xbe\xde\x00\x02" + block
    assert parse_rtp(data).extensions == {1: b"\xaa"}


def test_vp8_keyframe_and_layers() -> None:
    # Chromium-style L1T3 descriptor: X, I (15-bit), L, T; TID 2 with Y; inter frame.
    data = bytes([0x90, 0xE0, 0x81, 0x23, 0x07, 0xA0, 0x01]) + b"body"
    info = parse_vp8(data)
    assert (info.picture_id, info.tl0picidx, info.tid, info.layer_sync) == (0x123, 7, 2, True)
    assert info.frame_start and not info.keyframe and info.descriptor_len == 6
    assert parse_vp8(bytes([0x10, 0x00])).keyframe
    assert not parse_vp8(bytes([0x00, 0x00])).keyframe  # not the first packet of a frame
    assert not parse_vp8(bytes([0x11, 0x00])).keyframe  # partition 1 is not a frame start
    with pytest.raises(MediaDecodeError) as err:
        parse_vp8(bytes([0x90, 0x80]))
    assert err.value.reason == "vp8_descriptor"


def test_audio_level() -> None:
    assert audio_level(b"\x85") == (True, 5)
    assert audio_level(b"\x7f") == (False, 127)
