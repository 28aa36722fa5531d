"""The thin aiortc driver of the media relay: tap receivers, write RTP into senders.

aiortc has no public RTP API (aiortc#627), so forwarding packets without decoding them goes
through a few private attributes of aiortc 1.16 (and of aioice and pylibsrtp), all listed in
:data:`PRIVATE_HOOKS` (and the call sites they rely on in :data:`CALL_SITES`);
``tests/media/test_aiortc_contract.py`` fails, naming the attribute, if an upgrade moves one.
pyproject pins ``aiortc<1.17``.

- :class:`SourceTap` sits on a publisher's ``RTCRtpReceiver``: its jitter buffer is replaced by
  one that never yields a frame (so nothing is ever decoded), and each packet, after aiortc's
  SRTP, statistics, NACK/REMB generation and RTX unwrapping, is handed to ``on_packet``.
- :class:`OutputSender` sits on an ``RTCRtpSender`` of a subscriber's peer connection: aiortc's
  own RTP loop idles on a track that never yields, and we write rewritten RTP (our SSRC, the
  negotiated payload type and header-extension IDs) on the connection's :class:`SrtpWire`
  (the DTLS transport's SRTP session, then the selected ICE pair's UDP socket, synchronously;
  each copy built and protected in place by an :class:`SrtpPacker`),
  keep the RTX history (NACKs are answered), the Sender Report counters (the reports
  themselves leave on the wire too) and the DTLS transport's byte counters, and read REMB
  and receiver reports into ``estimate_kbps``, ``loss`` and ``rtt_ms``.
- :func:`guard_transport` counts what aiortc drops silently on a relay connection and gives
  its ICE sockets an RFC 7983 demultiplexer (:func:`demux_datagrams`): media datagrams skip
  aioice's STUN parser.
- :class:`Forwarder` glues one tap to any number of senders through
  :class:`meshnode.media.forwarding.Output` (sequence/timestamp rewriting, keyframe gate,
  temporal-layer filter) and one :class:`KeyframeThrottle` per source. One source packet is
  written to every output in one synchronous pass: no task, no ``await`` per copy.

Bad input from a peer (unknown payload type or SSRC, far over its rate, a malformed VP8
descriptor) is dropped and counted in ``dropped`` by reason; nothing raises into aiortc.

The driver is a file per idea, all of it importable from here: ``aiortc_hooks`` (the
private-hook tables, the contract with the pinned aiortc), ``transport_guard`` (drops counted
before any receiver, the RFC 7983 demux), ``srtp_wire`` (``SrtpWire``, ``SrtpPacker``),
``source_tap`` (``SourceTap``, the publisher side), ``output_sender`` (``OutputSender``, the
subscriber side) and ``forwarder`` (``Forwarder``, the glue); :func:`make_media_pc` is here.
"""

import logging
from dataclasses import replace

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from meshnode.media.aiortc_hooks import _DTLS_TX_BYTES as _DTLS_TX_BYTES
from meshnode.media.aiortc_hooks import _DTLS_TX_PACKETS as _DTLS_TX_PACKETS
from meshnode.media.aiortc_hooks import _RX_JITTER_BUFFER as _RX_JITTER_BUFFER
from meshnode.media.aiortc_hooks import _TX_EXTENSIONS_MAP as _TX_EXTENSIONS_MAP
from meshnode.media.aiortc_hooks import _TX_HISTORY as _TX_HISTORY
from meshnode.media.aiortc_hooks import _TX_NTP as _TX_NTP
from meshnode.media.aiortc_hooks import _TX_OCTETS as _TX_OCTETS
from meshnode.media.aiortc_hooks import _TX_PACKETS as _TX_PACKETS
from meshnode.media.aiortc_hooks import _TX_RTP_TS as _TX_RTP_TS
from meshnode.media.aiortc_hooks import CALL_SITES as CALL_SITES
from meshnode.media.aiortc_hooks import HOOK_OWNERS as HOOK_OWNERS
from meshnode.media.aiortc_hooks import PRIVATE_HOOKS as PRIVATE_HOOKS
from meshnode.media.aiortc_hooks import CallSite as CallSite
from meshnode.media.aiortc_hooks import PrivateHook as PrivateHook
from meshnode.media.forwarder import Forwarder as Forwarder
from meshnode.media.forwarder import OutputStats as OutputStats
from meshnode.media.forwarder import _Entry as _Entry
from meshnode.media.forwarder import _stream_ends as _stream_ends
from meshnode.media.output_sender import NTP_UNIX_OFFSET as NTP_UNIX_OFFSET
from meshnode.media.output_sender import READY_RECHECK as READY_RECHECK
from meshnode.media.output_sender import IdleTrack as IdleTrack
from meshnode.media.output_sender import OutputSender as OutputSender
from meshnode.media.output_sender import RtxHistory as RtxHistory
from meshnode.media.output_sender import _ntp_now as _ntp_now
from meshnode.media.output_sender import extension_ids as extension_ids
from meshnode.media.source_tap import DEFAULT_CLOCK_RATE as DEFAULT_CLOCK_RATE
from meshnode.media.source_tap import PacketHandler as PacketHandler
from meshnode.media.source_tap import SourcePacket as SourcePacket
from meshnode.media.source_tap import SourceTap as SourceTap
from meshnode.media.source_tap import _codec_map as _codec_map
from meshnode.media.source_tap import _TapBuffer as _TapBuffer
from meshnode.media.srtp_wire import _DTLS_CONNECTED as _DTLS_CONNECTED
from meshnode.media.srtp_wire import SRTP_BUFFER as SRTP_BUFFER
from meshnode.media.srtp_wire import SRTP_ROOM as SRTP_ROOM
from meshnode.media.srtp_wire import SrtpPacker as SrtpPacker
from meshnode.media.srtp_wire import SrtpWire as SrtpWire
from meshnode.media.transport_guard import STUN_FIRST_BYTE_MAX as STUN_FIRST_BYTE_MAX
from meshnode.media.transport_guard import _demux as _demux
from meshnode.media.transport_guard import demux_datagrams as demux_datagrams
from meshnode.media.transport_guard import guard_transport as guard_transport
from meshnode.media.transport_guard import transport_drops as transport_drops

logger = logging.getLogger(__name__)


def make_media_pc(configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
    """An ``RTCPeerConnection`` for media: ``configuration`` (ICE servers and policy; None:
    host candidates only, never aiortc's public STUN default) with ``bundlePolicy=MAX_BUNDLE``.

    MAX_BUNDLE is required: with aiortc's default (BALANCED), a remote offer with two m-lines
    of one kind leaves the second on a transport that never connects.
    """
    base = configuration if configuration is not None else RTCConfiguration(iceServers=[])
    return RTCPeerConnection(replace(base, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
