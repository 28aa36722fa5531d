"""``MediaSession``: the media ``RTCPeerConnection`` of one link, and how it is negotiated.

Every link that carries media (client-node, or a trunk between two nodes) gets one media
connection of its own, separate from the data connection (``meshnode.transport.link``): a
renegotiation never disturbs the data channels, and a media connection can be thrown away
and replaced without touching the link. It is negotiated with ``MediaSignal`` messages on
the link's ``sync`` channel (``protocol.media``):

- **One fixed offerer per link: the data link's answerer** (the node, on a client's link; on
  a trunk, the node that answered the other's dial). Only it ever offers, so offers never
  cross (no glare); the other side answers, or asks for an offer (``request``).
- **Tracks come and go by renegotiation.** The offerer keeps the table of lines: a
  ``sendonly`` m-line for each source it sends, a ``recvonly`` one for each source the peer
  sends it (the peer named them in ``MediaSources``). A line that ends becomes ``inactive``
  (aiortc never reuses or removes an m-line). Each offer maps its m-lines to sources
  (``MediaSignal.mids``); the answerer sends on the lines the offer receives on and taps the
  lines the offer sends on. An m-line the offer does not map is answered ``inactive``.
- **Recycling.** Inactive m-lines stay in the description, so it only grows (about 1.3 KB a
  line); when the offerer's description passes ``recycle_sdp_chars``, its next offer is the
  first of a new ``generation``: a fresh connection carrying only the live lines. The
  answerer drops its old connection when it sees the new generation.
- ``bundlePolicy=MAX_BUNDLE`` (the driver's ``make_media_pc``): with aiortc's default a
  second m-line of one kind stays on a transport that never connects.

The owner hears about lines through ``SessionHooks``; the session itself forwards nothing.
Bad signals (an answer nobody waits for, an offer to the offerer, an SDP aiortc refuses) are
counted through ``on_bad`` with a stable reason and ignored; an unanswered offer
(``answer_timeout_s``) ends the session (``on_failed``).
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from meshnode.transport.ice import strip_mdns_candidates
from meshnode.transport.reclaim import close_peer_connection
from protocol.media import MAX_MEDIA_SDP_CHARS, MediaSignal

log = logging.getLogger("meshnode.media")

__all__ = ["RECV", "SEND", "MediaSession", "SessionHooks"]

SEND = "send"
RECV = "recv"
DEFAULT_RECYCLE_SDP_CHARS = 24_000


class SessionHooks(Protocol):
    """What a ``MediaSession`` tells its owner (called on the event loop)."""

    def sending(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """Our ``sendonly`` line for ``source_id`` is (about to be) live: attach what feeds
        its sender (a client: its track; a node: the driver's output). On the answering side
        this comes before the answer, so a track is in place when the sender starts."""

    def receiving(self, source_id: str, transceiver: RTCRtpTransceiver) -> None:
        """The peer sends ``source_id`` on ``transceiver`` (called before its RTP can flow,
        so a tap can be installed first)."""

    def ended(self, source_id: str, direction: str, replaced: bool) -> None:
        """The line of ``source_id`` in ``direction`` (``SEND``/``RECV``) is gone.
        ``replaced``: only its connection was recycled; the line comes back on the new one
        (``sending``/``receiving`` again)."""


@dataclass(slots=True)
class _Line:
    source_id: str
    kind: str
    direction: str
    transceiver: RTCRtpTransceiver | None = None
    live: bool = False  # negotiated and told to the owner
    stopping: bool = False


class MediaSession:
    """The media connection of one link (see the module docstring).

    ``send_signal`` puts a ``MediaSignal`` on the link; ``make_pc`` builds a fresh media
    connection. The offerer side calls ``add``/``remove``; both sides give every
    ``MediaSignal`` from the link to ``handle``."""

    def __init__(self, *, offerer: bool, send_signal: Callable[[MediaSignal], bool],
                 make_pc: Callable[[], RTCPeerConnection], hooks: SessionHooks,
                 on_bad: Callable[[str], None] = lambda reason: None,
                 on_failed: Callable[[str], None] = lambda reason: None,
                 recycle_sdp_chars: int = DEFAULT_RECYCLE_SDP_CHARS,
                 answer_timeout_s: float = 15.0) -> None:
        self.offerer = offerer
        self._send = send_signal
        self._make_pc = make_pc
        self._hooks = hooks
        self._on_bad = on_bad
        self._on_failed = on_failed
        self.recycle_sdp_chars = min(recycle_sdp_chars, MAX_MEDIA_SDP_CHARS // 2)
        self._answer_timeout = answer_timeout_s
        self._pc: RTCPeerConnection | None = None
        self.generation = 0
        self._lines: dict[tuple[str, str], _Line] = {}
        self._dirty = asyncio.Event()
        self._answer: asyncio.Future[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending_offer: MediaSignal | None = None
        self.closed = False
        self.negotiations = 0
        self.recycles = 0

    # ------------------------------------------------------------------ offerer API

    def add(self, source_id: str, kind: str, direction: str) -> None:
        """(Offerer) carry ``source_id``: ``SEND`` (we forward it) or ``RECV`` (the peer
        sends it to us). Idempotent; negotiated in the background."""
        assert self.offerer, "only the offerer adds lines"
        key = (source_id, direction)
        line = self._lines.get(key)
        if line is not None and not line.stopping:
            return
        if line is not None and line.stopping:
            # Still in the table as ending: it keeps its old (soon inactive) m-line; the
            # new one is a fresh line.
            del self._lines[key]
            self._retire(line)
        self._lines[key] = _Line(source_id, kind, direction)
        self._kick()

    def remove(self, source_id: str, direction: str) -> None:
        """(Offerer) stop carrying ``source_id`` in ``direction`` (its m-line goes
        ``inactive``). Idempotent."""
        line = self._lines.get((source_id, direction))
        if line is None or line.stopping:
            return
        line.stopping = True
        self._kick()

    def request(self) -> None:
        """(Answerer) ask the offerer for a new offer."""
        if not self.offerer and not self.closed:
            self._send(MediaSignal(self.generation, "request", ""))

    def lines(self) -> list[tuple[str, str, bool]]:
        """``(source_id, direction, live)`` of every line."""
        return [(ln.source_id, ln.direction, ln.live) for ln in self._lines.values()]

    @property
    def sdp_chars(self) -> int:
        """The size of the current local description (0 before the first)."""
        pc = self._pc
        desc = pc.localDescription if pc is not None else None
        return len(desc.sdp) if desc is not None else 0

    # ------------------------------------------------------------------ signals

    def handle(self, msg: MediaSignal) -> None:
        """A ``MediaSignal`` from the link's peer."""
        if self.closed:
            return
        if msg.kind == "request":
            if not self.offerer:
                self._on_bad("media_unexpected_request")
                return
            self._kick()
        elif msg.kind == "answer":
            fut = self._answer
            if not self.offerer or fut is None or fut.done() or msg.generation != self.generation:
                self._on_bad("media_unexpected_answer")
                return
            fut.set_result(msg.sdp)
        else:
            if self.offerer:
                self._on_bad("media_unexpected_offer")
                return
            # One answer at a time; an offer that comes meanwhile replaces any waiting one
            # (the newest describes everything).
            self._pending_offer = msg
            self._kick()

    # ------------------------------------------------------------------ the work

    def _kick(self) -> None:
        self._dirty.set()
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="media-session")

    async def _run(self) -> None:
        try:
            while not self.closed:
                await self._dirty.wait()
                self._dirty.clear()
                if self.offerer:
                    await self._negotiate()
                elif self._pending_offer is not None:
                    offer, self._pending_offer = self._pending_offer, None
                    await self._answer_offer(offer)
        except asyncio.CancelledError:
            raise
        except _Failed as err:
            log.info("media session failed: %s", err.reason)
            await self.close()
            self._on_failed(err.reason)
        except Exception:
            log.exception("media session: internal error")
            await self.close()
            self._on_failed("internal_error")

    def _fresh_pc(self) -> RTCPeerConnection:
        pc = self._make_pc()
        self._pc = pc
        return pc

    async def _drop_pc(self, replaced: bool) -> None:
        """Close the current connection; every line on it ends (or waits for the next)."""
        pc, self._pc = self._pc, None
        for line in list(self._lines.values()):
            was_live = line.live
            line.transceiver, line.live = None, False
            if line.stopping:
                self._lines.pop((line.source_id, line.direction), None)
                self._hooks.ended(line.source_id, line.direction, False)
            elif was_live:
                self._hooks.ended(line.source_id, line.direction, replaced)
        if pc is not None:
            await close_peer_connection(pc)

    async def _negotiate(self) -> None:
        # Recycle only towards a connection that carries something: a fresh one with no
        # line would send no offer, and the answerer would never hear the last lines end.
        if (self._pc is not None and self.sdp_chars > self.recycle_sdp_chars
                and any(not ln.stopping for ln in self._lines.values())):
            self.generation += 1
            self.recycles += 1
            await self._drop_pc(replaced=True)
        pc = self._pc or self._fresh_pc()
        for key, line in list(self._lines.items()):
            if line.stopping:
                if line.transceiver is None:  # never negotiated
                    del self._lines[key]
                    continue
                line.transceiver.direction = "inactive"
            elif line.transceiver is None:
                line.transceiver = pc.addTransceiver(
                    line.kind, direction="sendonly" if line.direction == SEND else "recvonly")
        if not self._lines and pc.localDescription is None:
            return  # nothing to carry yet
        await pc.setLocalDescription(await pc.createOffer())
        mids = tuple((ln.transceiver.mid, ln.source_id) for ln in self._lines.values()
                     if ln.transceiver is not None and ln.transceiver.mid is not None
                     and not ln.stopping)
        sdp = pc.localDescription.sdp
        if len(sdp) > MAX_MEDIA_SDP_CHARS:
            raise _Failed("media_sdp_too_large")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._answer = fut
        if not self._send(MediaSignal(self.generation, "offer", sdp, mids)):
            raise _Failed("link_closed")
        try:
            answer = await asyncio.wait_for(fut, self._answer_timeout)
        except TimeoutError:
            raise _Failed("media_answer_timeout") from None
        finally:
            self._answer = None
        # Taps go in before the answer starts the receivers.
        for line in self._lines.values():
            if (line.direction == RECV and not line.live and not line.stopping
                    and line.transceiver is not None):
                line.live = True
                self._hooks.receiving(line.source_id, line.transceiver)
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=strip_mdns_candidates(answer), type="answer"))
        except Exception as err:  # aiortc raises several types for a bad SDP
            self._on_bad("media_bad_answer")
            raise _Failed("media_bad_answer") from err
        self.negotiations += 1
        for key, line in list(self._lines.items()):
            if line.stopping:
                del self._lines[key]
                self._retire(line)
            elif line.direction == SEND and not line.live and line.transceiver is not None:
                line.live = True
                self._hooks.sending(line.source_id, line.transceiver)

    def _retire(self, line: _Line) -> None:
        if line.live:
            line.live = False
            self._hooks.ended(line.source_id, line.direction, False)

    async def _answer_offer(self, offer: MediaSignal) -> None:
        if offer.generation != self.generation or self._pc is None:
            if offer.generation < self.generation:
                self._on_bad("media_stale_offer")
                return
            self.generation = offer.generation
            # The offer lists every line again: on this side they all end and come back.
            await self._drop_pc(replaced=False)
            self._lines.clear()
        pc = self._pc or self._fresh_pc()
        sdp = strip_mdns_candidates(offer.sdp)
        try:
            directions = {m.rtp.muxId: m.direction
                          for m in aiortc_sdp.SessionDescription.parse(sdp).media}
            if not directions:
                raise ValueError("an offer without m-lines")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception:  # aiortc raises several types for a bad SDP
            self._on_bad("media_bad_offer")
            return
        mapped = dict(offer.mids)
        seen: set[tuple[str, str]] = set()
        for t in pc.getTransceivers():
            source_id = mapped.get(t.mid or "")
            offered = directions.get(t.mid or "")
            if source_id is None or offered not in ("sendonly", "recvonly"):
                t.direction = "inactive"
                continue
            direction = RECV if offered == "sendonly" else SEND
            key = (source_id, direction)
            line = self._lines.get(key)
            if line is not None and line.transceiver is not t:
                # The source moved to a new m-line: the old one ends.
                self._retire(line)
                line = None
            if key in seen:  # one source on two lines: keep the first
                t.direction = "inactive"
                continue
            seen.add(key)
            if line is None:
                line = _Line(source_id, t.kind, direction, t)
                self._lines[key] = line
            t.direction = "sendonly" if direction == SEND else "recvonly"
            if not line.live:
                line.live = True
                if direction == SEND:
                    self._hooks.sending(source_id, t)
                else:
                    self._hooks.receiving(source_id, t)
        for key, line in list(self._lines.items()):
            if key not in seen:
                del self._lines[key]
                self._retire(line)
        await pc.setLocalDescription(await pc.createAnswer())
        self.negotiations += 1
        self._send(MediaSignal(self.generation, "answer", pc.localDescription.sdp))

    async def close(self) -> None:
        """Close the media connection (idempotent); every live line ends."""
        if self.closed:
            return
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop_pc(replaced=False)
        for line in list(self._lines.values()):
            self._retire(line)
        self._lines.clear()


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
