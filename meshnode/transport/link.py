"""One link to one neighbour: an aiortc ``RTCPeerConnection`` with two data channels.

``sync`` (reliable, ordered) carries room frames and link messages; ``presence`` (unordered,
``maxRetransmits=0``) carries ephemeral presence. The offerer creates both channels in-band;
the answerer receives them. Once both are open each side sends a signed hello
(``protocol.link.Hello``) as the first message on ``sync`` and checks the other's with
:func:`~meshnode.transport.hello.check_hello`; only then does the link carry data.

What you may do in each state (``PeerLink.state``):

===============  ==========================================================================
state            allowed
===============  ==========================================================================
``new``          ``create_offer()`` (become the offerer) or ``accept_offer(sdp)``
``offering``     ``accept_answer(sdp)``
``connecting``   wait: ICE, DTLS, SCTP, then the hello exchange (``established()``)
``established``  ``send()``; messages arrive at ``on_message``
``closed``       nothing: ``send()`` returns False, ``close()`` returns at once
===============  ==========================================================================

``close()``, ``established()``, ``buffered_bytes()`` and ``stats`` work in every state.
While ``connecting``, ``on_progress`` hears the steps passed: ``ice_connected`` (a
connectivity check succeeded) and ``secured`` (DTLS is up; only the hello is missing).

Backpressure: aiortc hands data to SCTP without pacing, so a link never lets more than
``high_water_bytes`` wait in a channel's buffer; further ``sync`` messages wait in the link's
own queue (drained on ``bufferedamountlow``) up to ``max_queue_bytes``, after which ``send``
refuses them (returns False and counts a drop: the overlay's anti-entropy repairs the gap).
``presence`` is never queued: above high water an update is dropped (a newer one follows).

The link is one chain of classes: ``LinkChannels`` (``link_channels``: channels, hello,
receiving, sending, closing) and ``PeerLink`` (this module: the offer/answer negotiation);
``link_types`` holds its settings, stats and errors.
"""

import asyncio
import contextlib
import logging
import re
import socket

from aiortc import RTCPeerConnection, RTCSessionDescription

from meshnode.transport.hello import HelloRejected, local_fingerprint_of
from meshnode.transport.ice import sdp_fingerprints, strip_mdns_candidates
from meshnode.transport.link_channels import LinkChannels as LinkChannels
from meshnode.transport.link_channels import _teardowns as _teardowns
from meshnode.transport.link_types import (
    CHANNELS,
    PRESENCE,
    SYNC,
    ChannelStats,
    LinkClosed,
    LinkSettings,
    LinkStats,
    LocalHello,
)

__all__ = [
    "CHANNELS",
    "PRESENCE",
    "SYNC",
    "ChannelStats",
    "HelloRejected",
    "LinkClosed",
    "LinkSettings",
    "LinkStats",
    "LocalHello",
    "PeerLink",
]

logger = logging.getLogger(__name__)

# RFC 8841 section 6: a peer that advertises no a=max-message-size takes 64 KiB.
_DEFAULT_REMOTE_MAX_MESSAGE = 65_536
_MAX_MESSAGE_SIZE = re.compile(r"^a=max-message-size:(\d+)", re.MULTILINE)


class PeerLink(LinkChannels):
    """One WebRTC link to one neighbour (see the module docstring).

    Create it inside the running event loop. ``expected_peer`` is the PeerID we mean to
    reach (None: whoever answers, e.g. a node accepting offers from clients).
    """

    # ------------------------------------------------------------------ public API: negotiation

    async def create_offer(self) -> str:
        """Become the offerer: create both channels, gather every candidate (no trickle)
        and return the offer SDP."""
        pc = self._require("new", "create_offer")
        self._offerer = True
        self._state = "offering"
        self._adopt(pc.createDataChannel(SYNC, ordered=True))
        self._adopt(pc.createDataChannel(PRESENCE, ordered=False, maxRetransmits=0))
        return await self._describe_local(pc, "offer")

    async def accept_answer(self, sdp: str) -> None:
        """Take the answerer's SDP; the connection starts. Raises :class:`LinkClosed`
        (reason ``bad_sdp``, link closed) if it is unusable."""
        pc = self._require("offering", "accept_answer")
        self._state = "connecting"
        await self._set_remote(pc, sdp, "answer")

    async def accept_offer(self, sdp: str) -> str:
        """Become the answerer: take the offer (``.local`` mDNS candidates removed) and
        return the answer SDP, with every candidate. Raises :class:`LinkClosed` (reason
        ``bad_sdp``, link closed) if the offer is unusable."""
        pc = self._require("new", "accept_offer")
        self._state = "connecting"
        await self._set_remote(pc, sdp, "offer")
        return await self._describe_local(pc, "answer")

    # ------------------------------------------------------------------ signaling

    def _require(self, state: str, action: str) -> RTCPeerConnection:
        if self.closed or self._pc is None:
            raise LinkClosed(self.close_reason or "closed", f"cannot {action}: link closed")
        if self._state != state:
            raise RuntimeError(f"{action}() is for a link in state {state!r}, "
                               f"this one is {self._state!r}")
        return self._pc

    async def _set_remote(self, pc: RTCPeerConnection, sdp: str, kind: str) -> None:
        try:
            if not isinstance(sdp, str):
                raise TypeError(f"SDP must be a str, not {type(sdp).__name__}")
            sdp = strip_mdns_candidates(sdp)
            self._remote_fingerprints = sdp_fingerprints(sdp)
            self._remote_fingerprint = local_fingerprint_of(sdp)  # ValueError if not one
            match = _MAX_MESSAGE_SIZE.search(sdp)
            remote_max = int(match.group(1)) if match else _DEFAULT_REMOTE_MAX_MESSAGE
            if remote_max:  # 0: no limit
                self._max_send = min(self._settings.max_message_bytes, remote_max)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except Exception as exc:
            if self.closed:  # closed meanwhile: that is the reason, not the SDP
                raise LinkClosed(self.close_reason or "closed", f"closed during the {kind}") \
                    from exc
            await self.close("bad_sdp")
            raise LinkClosed("bad_sdp", f"unusable {kind}: {exc}") from exc
        if not self.closed:
            self._deadline = self._loop.call_later(
                self._settings.hello_timeout_s, self._close_now, "hello_timeout", None
            )

    async def _describe_local(self, pc: RTCPeerConnection, kind: str) -> str:
        """Create and set our offer or answer (this gathers every candidate) and return it.

        Gathering runs in a task of the link that closing waits for rather than cancels:
        aioice opens the candidates' sockets as it goes, and a connection closed halfway
        through would leave the later ones open."""
        self._describing = self._loop.create_task(self._set_local(pc, kind))
        self._describing.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.shield(self._describing)
        except Exception as exc:
            if not self.closed:
                await self.close("internal_error")
                raise
            raise LinkClosed(self.close_reason or "closed", f"closed during the {kind}") from exc
        if self.closed:
            raise LinkClosed(self.close_reason or "closed", f"closed during the {kind}")
        sdp: str = pc.localDescription.sdp
        self._local_fingerprint = local_fingerprint_of(sdp)
        self._maybe_send_hello()  # (the channels cannot be open yet, but if they were)
        if self._settings.udp_buffer_bytes:
            _enlarge_socket_buffers(pc, self._settings.udp_buffer_bytes)
        # Advertise our own limit, so that a well-behaved peer never sends what we refuse.
        return _MAX_MESSAGE_SIZE.sub(
            f"a=max-message-size:{self._settings.max_message_bytes}", sdp
        )

    @staticmethod
    async def _set_local(pc: RTCPeerConnection, kind: str) -> None:
        description = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
        await pc.setLocalDescription(description)


def _enlarge_socket_buffers(pc: RTCPeerConnection, size: int) -> None:
    """Ask for ``size``-byte UDP buffers on the connection's ICE sockets (best effort:
    aiortc offers no API for it, so this reaches into aioice)."""
    try:
        connection = pc.sctp.transport.transport.iceGatherer._connection  # type: ignore[union-attr]
        for protocol in connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except AttributeError:  # pragma: no cover - a different aiortc/aioice layout
        logger.debug("cannot reach the ICE sockets to enlarge their buffers")
