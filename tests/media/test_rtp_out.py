"""The relay's lean RTP serializer (meshnode.media.rtp_out.RtpWriter) writes exactly what
aiortc's ``RtpPacket.serialize`` writes with the sender's negotiated header-extension map,
the driver finds those IDs through the map's public ``get``, and the RTX history rebuilds the
same packet for a retransmission."""

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.media.aiortc_driver import RtxHistory, extension_ids
from meshnode.media.rtp_out import ExtensionIds, RtpWriter

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def aiortc_map(mid: int | None, abs_: int | None, level: int | None) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=x_id, uri=uri)
        for x_id, uri in ((mid, MID), (abs_, ABS), (level, LEVEL)) if x_id is not None]))
    return m


ids = st.lists(st.integers(1, 255), min_size=3, max_size=3, unique=True).flatmap(
    lambda xs: st.tuples(*(st.none() | st.just(x) for x in xs)))


@settings(max_examples=150, deadline=None)
@given(
    x_ids=ids,
    mid=st.none() | st.text(min_size=0, max_size=20),
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    abs_send_time=st.integers(0, 0xFFFFFF),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
    payload=st.binary(max_size=64),
)
def test_the_writer_matches_aiortc_byte_for_byte_or_declines(
    x_ids: tuple[int | None, int | None, int | None], mid: str | None, payload_type: int,
    marker: bool, seq: int, ts: int, ssrc: int, abs_send_time: int,
    level: tuple[bool, int] | None, payload: bytes,
) -> None:
    extensions = aiortc_map(*x_ids)
    found, two_byte = extension_ids(extensions)
    assert found == ExtensionIds(*x_ids)
    assert two_byte == any(x is not None and x > 14 for x in x_ids)
    rtp = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=seq,
                    timestamp=ts, ssrc=ssrc, payload=payload)
    rtp.extensions.mid = mid
    rtp.extensions.abs_send_time = abs_send_time
    rtp.extensions.audio_level = level
    expected = rtp.serialize(extensions)
    writer = RtpWriter.for_ids(ssrc, mid, found)
    if writer is None:  # aiortc writes the two-byte form here: the driver uses aiortc's
        assert two_byte or (mid is not None and found.mid is not None
                            and not 0 < len(mid.encode()) <= 16)
        return
    assert writer.packet(payload_type, marker, seq, ts, abs_send_time, level,
                         payload) == expected
    # The per-copy form writes the same header over whatever the buffer held before (the
    # relay reuses one buffer for every copy), padding included.
    buffer = bytearray(b"\xff" * 64)
    size = writer.pack_into(buffer, payload_type, marker, seq, ts, abs_send_time, level)
    assert bytes(buffer[:size]) + payload == expected
    # The RTX history rebuilds the same packet for aiortc's _retransmit.
    history = RtxHistory(ssrc)
    history.put(payload_type, marker, seq, ts, abs_send_time, level, payload, mid)
    again = history.get(seq % 128)
    assert again is not None and again.serialize(extensions) == expected
    assert history.get((seq + 1) % 128) is None
