"""A browser's voice and video, on the node's side: its media on the one ``RTCPeerConnection``
it already has with the node, renegotiated through JSON messages on its ``client`` channel.

Why the same connection (measured, headless Chromium 156 to aiortc 1.16 on loopback): adding
media m-lines to the open connection costs one offer/answer over the data channel, about
165 ms for the first (the node sets up its codecs: ~110 ms of it) and 35 ms for later ones
(node ~11 ms), and no new ICE or DTLS handshake. A second connection would cost a full ICE +
DTLS handshake, a second HTTP signaling round trip, and a second DTLS/SRTP stack per browser.
The node's side of the connection uses ``bundlePolicy=MAX_BUNDLE`` (aiortc leaves a second
m-line of one kind on a transport that never connects otherwise).

The browser is always the offerer. Its m-lines are of two sorts:

- **send m-lines** (the browser's microphone and camera, ``sendonly``): its publications. When
  one carries a live track, the node hands its receiver to the room's relay, which taps the
  RTP packets (never decodes them) and forwards them as a source.
- **receive slots** (``recvonly``): the node writes the streams the relay chose for this
  browser into them. A slot carries one stream at a time and is reused when the relay changes
  its choice, so the session description stays bounded (aiortc never recycles m-lines): slots
  are only added, up to ``MediaLimits``, when the relay wants more streams than there are.

Protocol (on the ``client`` channel, next to the messages of ``meshnode.web.session``)
====================================================================================

Browser → node (``req`` as for edits; every one is answered):

- ``{"t":"media_offer","req":n,"sdp":offer}`` → ``{"t":"media_answer","req":n,"sdp":answer}``.
  One at a time: an offer while another is being answered is refused (``busy``).
- ``{"t":"media_publish","req":n,"tracks":[{"mid":m,"kind":"audio"|"video"},...]}``: which of
  its send m-lines carry a live track now (the others carry none) → ``ack``.
- ``{"t":"media_prefs","req":n,"audio_only":bool,"max_kbps":number|null}`` → ``ack``.

Node → browser:

- ``{"t":"media_hello","enabled":bool,"publish":bool,"receive":bool,"publisher":key,
  "max_audio":n,"max_video":n}``: once, after the welcome. ``publisher`` is this browser's
  own key in the people list (``PeerID#session``). The page answers with its ``media_prefs``:
  the relay plans nothing for a page before its first media message.
- ``{"t":"media_renegotiate","audio":a,"video":v}``: the node needs ``a`` audio and ``v`` video
  receive slots: add ``recvonly`` transceivers up to these counts and send a ``media_offer``.
- ``{"t":"media_streams","streams":[{"mid":m,"kind":k,"source":id,"publisher":key},...]}``:
  which receive slot carries whose stream now (replaces the last; a slot not listed is idle).
  ``publisher`` is the key of the person in the people list (``PeerID`` for a Python client,
  ``PeerID#session`` for a browser on a node: ``person_key``).
- ``{"t":"media_refused","req":n|null,"reason":r,"error":text}``: a refused media message;
  ``reason`` is a ``MediaRefusal`` value (also counted as ``media_<reason>``). Without
  ``req`` but with ``"source":id`` it is the relay's own refusal of a source ("" : all of
  the room's media), ``reason`` the relay's label.

A browser's own sources are ``<node PeerID>/web.<session>.<mid>`` (``browser_source_id``).
All the browsers of a node share its PeerID, so the relay tells them apart as participants,
``PeerID#session`` (``BrowserMedia.participant``, ``meshnode.media.participants``): a
browser never gets its own streams back, and does get those of the node's other browsers.

Access follows the browser's access to the room (``meshnode.rooms.readers.browser_access``): a
page that may read the room (a viewer's role) may receive; one that may edit it (an editor's
role or better, or the operator) may publish too, so an open room that admits viewers does not
let any passer-by talk into it. A room the page may not see never gets this far, and the relay
may refuse with its own rules (``relay_refused``).

``BrowserMedia`` (here) implements this protocol; ``media_setup`` holds what it starts from
(``MediaRights``, ``MediaLimits``, ``RelayHost``, ``MediaSetup``) and ``media_lines`` the
browser's m-lines (``Publication``, ``ReceiveSlot``, ``browser_source_id``, ``person_key``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from meshnode.media.endpoint import Preferences, RelayPort, SourceInfo
from meshnode.overlay.scoring import TokenBucket
from meshnode.transport.ice import strip_mdns_candidates
from meshnode.web.media_lines import Publication as Publication
from meshnode.web.media_lines import ReceiveSlot as ReceiveSlot
from meshnode.web.media_lines import _Mline as _Mline
from meshnode.web.media_lines import _Negotiation as _Negotiation
from meshnode.web.media_lines import _offered_media as _offered_media
from meshnode.web.media_lines import browser_source_id as browser_source_id
from meshnode.web.media_lines import person_key as person_key
from meshnode.web.media_messages import (
    MEDIA_TYPES,
    BadMediaMessage,
    MediaOffer,
    MediaPrefsRequest,
    MediaPublish,
    MediaRefusal,
    parse_media_message,
)
from meshnode.web.media_setup import BrowserMediaHost as BrowserMediaHost
from meshnode.web.media_setup import MediaLimits as MediaLimits
from meshnode.web.media_setup import MediaRights as MediaRights
from meshnode.web.media_setup import MediaSetup as MediaSetup
from meshnode.web.media_setup import RelayHost as RelayHost

__all__ = [
    "MEDIA_TYPES",
    "BrowserMedia",
    "BrowserMediaHost",
    "MediaLimits",
    "MediaRights",
    "MediaSetup",
    "Publication",
    "ReceiveSlot",
    "RelayHost",
    "browser_source_id",
    "person_key",
]

log = logging.getLogger(__name__)


class BrowserMedia:
    """One browser's media on its connection: the relay's ``MediaEndpoint`` for it (see the
    module docstring for the protocol with the page).

    ``send(msg)`` sends one JSON message to the browser; ``counters`` is the session's counter
    (refusals count as ``media_<reason>``). ``port`` is the room's relay (None: media off);
    ``start()`` attaches to it, ``close()`` detaches.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        send: Callable[[dict[str, Any]], None],
        *,
        name: str,
        node_peer: str,
        room_id: bytes,
        rights: MediaRights,
        port: RelayPort | None = None,
        limits: MediaLimits | None = None,
        counters: Counter[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pc = pc
        self.name = name
        self.node_peer = node_peer
        self.room_id = room_id
        self.rights = rights
        self.port = port
        self.limits = limits = limits if limits is not None else MediaLimits()
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._send = send
        self._clock = clock
        self._bucket = TokenBucket(limits.message_rate, limits.message_burst,
                                   limits.message_burst, clock())
        self.audio_only = False
        self.max_kbps: float | None = None
        self.publications: dict[str, Publication] = {}
        self.slots: dict[str, ReceiveSlot] = {}
        self._waiting: dict[str, SourceInfo] = {}
        """Outputs the relay asked for that wait for a receive slot."""
        self._shown: list[dict[str, Any]] | None = None
        self._negotiation = _Negotiation()
        self._attached = False
        self._ask_scheduled = False
        self.closed = False

    # ------------------------------------------------------------------ MediaEndpoint

    @property
    def peer_id(self) -> str:
        """The PeerID this browser's sources are published under: its node's (browsers have
        none of their own; ``participant`` tells the node's browsers apart)."""
        return self.node_peer

    @property
    def participant(self) -> str:
        """This browser as a person in the room: ``PeerID#session`` (``person_key``)."""
        return f"{self.node_peer}#{self.name}"

    @property
    def kind(self) -> str:
        """Always ``"browser"``."""
        return "browser"

    def rooms(self) -> frozenset[bytes]:
        """The browser's one room."""
        return frozenset((self.room_id,))

    def preferences(self, room_id: bytes) -> Preferences:
        """What the page asked for (``media_prefs``)."""
        return Preferences(audio_only=self.audio_only, max_kbps=self.max_kbps)

    def add_output(self, source: SourceInfo) -> None:
        """Send ``source`` to the browser: on a free receive slot of its kind at once, else
        after the browser added one (``media_renegotiate``)."""
        if self.closed or source.kind not in ("audio", "video") or not self.rights.receive:
            return
        if any(s.source is not None and s.source.source_id == source.source_id
               for s in self.slots.values()):
            return
        self._waiting[source.source_id] = source
        self._assign()

    def remove_output(self, source_id: str) -> None:
        """Stop sending ``source_id``: its slot goes idle (kept for the next source)."""
        self._waiting.pop(source_id, None)
        for slot in self.slots.values():
            if slot.source is not None and slot.source.source_id == source_id:
                slot.source = None
        self._show_streams()

    def refuse(self, room_id: bytes, reason: str, detail: str, source_id: str = "") -> None:
        """Tell the page the relay refused (``media_refused`` with ``source``)."""
        self.counters["media_relay_refused"] += 1
        self._send({"t": "media_refused", "req": None, "reason": reason, "error": detail,
                    "source": source_id})

    # ------------------------------------------------------------------ life

    @property
    def enabled(self) -> bool:
        """The node relays media in this browser's room."""
        return self.port is not None

    def start(self) -> None:
        """Tell the page what it may do (after the session's welcome). The relay learns of
        the browser with its first media message (the page answers the hello with its
        ``media_prefs``), so nothing is planned for it before its wishes are known: a page
        that is audio-only from the start never gets a video line."""
        self._send({
            "t": "media_hello",
            "enabled": self.enabled,
            "publish": self.enabled and self.rights.publish,
            "receive": self.enabled and self.rights.receive,
            "publisher": self.participant,
            "max_audio": self.limits.max_receive_audio,
            "max_video": self.limits.max_receive_video,
        })

    def close(self) -> None:
        """The browser left: the relay forgets its sources and outputs. Idempotent."""
        if self.closed:
            return
        self.closed = True
        port, self.port = self.port, None
        if port is not None and self._attached:
            try:
                port.detach(self)
            except Exception:
                log.exception("browser %s: the relay failed to forget its media", self.name)

    # ------------------------------------------------------------------ from the browser

    async def handle(self, msg: dict[str, Any]) -> None:
        """Handle one media message (``msg["t"]`` in ``MEDIA_TYPES``). Never raises on bad
        input: it answers ``media_refused``."""
        if self.closed:
            return
        self.counters["media_messages"] += 1
        req = msg.get("req") if type(msg.get("req")) is int else None
        try:
            if not self._bucket.take(1.0, self._clock()):
                raise BadMediaMessage(
                    MediaRefusal.RATE_LIMITED,
                    f"at most {self.limits.message_rate:g} media messages a second", req)
            request = parse_media_message(msg)
            if self.port is None:
                raise BadMediaMessage(MediaRefusal.MEDIA_OFF,
                                      "this node relays no voice or video in this room",
                                      request.req)
            if not self._attached:
                self._attached = True
                self.port.attach(self)
            if isinstance(request, MediaOffer):
                await self._offer(request)
            elif isinstance(request, MediaPublish):
                self._publish(request)
            else:
                self._prefs(request)
        except BadMediaMessage as bad:
            self.refuse_request(bad.reason, bad.text, bad.req if bad.req is not None else req)

    def refuse_request(self, reason: MediaRefusal, text: str, req: int | None) -> None:
        """Answer ``media_refused`` to a request and count it."""
        self.counters[f"media_{reason.value}"] += 1
        log.info("browser %s: media refused (%s): %s", self.name, reason.value, text)
        self._send({"t": "media_refused", "req": req, "reason": reason.value, "error": text})

    async def _offer(self, offer: MediaOffer) -> None:
        neg = self._negotiation
        if neg.busy:
            raise BadMediaMessage(MediaRefusal.BUSY, "an offer is being answered: send the "
                                  "next one after its media_answer", offer.req)
        mlines = _offered_media(offer.sdp)
        self._check_offer(mlines, offer.req)
        neg.busy = True
        try:
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(
                    sdp=strip_mdns_candidates(offer.sdp), type="offer"))
            except Exception as err:
                raise BadMediaMessage(MediaRefusal.BAD_SDP,
                                      f"the offer cannot be applied: {err!r}", offer.req) from None
            self._take_mlines(mlines)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            if self.closed:
                return
            self.counters["media_offers"] += 1
            self._send({"t": "media_answer", "req": offer.req,
                        "sdp": self.pc.localDescription.sdp})
        finally:
            neg.busy = False
        have = self._slot_counts()
        if neg.asked is not None and have[0] >= neg.asked[0] and have[1] >= neg.asked[1]:
            neg.asked = None  # (else the browser's next offer will bring the slots asked for)
        self._assign()

    def _check_offer(self, mlines: Sequence[_Mline], req: int) -> None:
        sends = [m for m in mlines if m.direction in ("sendonly", "sendrecv")]
        recvs = [m for m in mlines if m.direction == "recvonly"]
        if sends and not self.rights.publish:
            raise BadMediaMessage(MediaRefusal.NO_ROLE,
                                  "this page may not publish voice or video in this room", req)
        if recvs and not self.rights.receive:
            raise BadMediaMessage(MediaRefusal.NO_ROLE,
                                  "this page may not receive voice or video in this room", req)
        lim = self.limits
        if len(sends) > lim.max_publications:
            raise BadMediaMessage(MediaRefusal.TOO_MANY_TRACKS,
                                  f"at most {lim.max_publications} published tracks", req)
        for kind, cap in (("audio", lim.max_receive_audio), ("video", lim.max_receive_video)):
            if sum(1 for m in recvs if m.kind == kind) > cap:
                raise BadMediaMessage(MediaRefusal.TOO_MANY_TRACKS,
                                      f"at most {cap} {kind} receive slots", req)
        for m in mlines:
            known = self.publications.get(m.mid) or self.slots.get(m.mid)
            if known is not None and known.kind != m.kind:
                raise BadMediaMessage(MediaRefusal.BAD_SDP,
                                      f"m-line {m.mid} changed its kind", req)
            if (m.mid in self.slots and m.direction != "recvonly") or (
                    m.mid in self.publications and m.direction not in ("sendonly", "sendrecv")):
                raise BadMediaMessage(MediaRefusal.BAD_SDP,
                                      f"m-line {m.mid} changed its direction", req)
            if m in sends:
                try:
                    browser_source_id(self.node_peer, self.name, m.mid)
                except ValueError:
                    raise BadMediaMessage(MediaRefusal.BAD_SDP,
                                          f"mid {m.mid!r} cannot name a source", req) from None

    def _take_mlines(self, mlines: Sequence[_Mline]) -> None:
        """Note the new m-lines of an applied offer: send m-lines become publications,
        receive m-lines slots the node sends on."""
        by_mid = {t.mid: t for t in self.pc.getTransceivers() if t.mid is not None}
        for m in mlines:
            if m.mid in self.slots or m.mid in self.publications:
                continue
            transceiver = by_mid.get(m.mid)
            if transceiver is None:
                continue
            if m.direction == "recvonly":
                transceiver.direction = "sendonly"
                self.slots[m.mid] = ReceiveSlot(m.mid, m.kind, transceiver)
            elif m.direction in ("sendonly", "sendrecv"):
                transceiver.direction = "recvonly"
                source = SourceInfo(browser_source_id(self.node_peer, self.name, m.mid),
                                    self.node_peer, m.kind, self.room_id)
                self.publications[m.mid] = Publication(m.mid, m.kind, transceiver, source)

    def _publish(self, request: MediaPublish) -> None:
        if request.tracks and not self.rights.publish:
            raise BadMediaMessage(MediaRefusal.NO_ROLE,
                                  "this page may not publish voice or video in this room",
                                  request.req)
        wanted: set[str] = set()
        for track in request.tracks:
            pub = self.publications.get(track.mid)
            if pub is None or pub.kind != track.kind:
                raise BadMediaMessage(MediaRefusal.UNKNOWN_TRACK,
                                      f"no negotiated {track.kind} send m-line {track.mid!r}: "
                                      "send a media_offer with it first", request.req)
            wanted.add(track.mid)
        port = self.port
        assert port is not None  # checked by handle()
        for pub in self.publications.values():
            if pub.active and pub.mid not in wanted:
                pub.active = False
                port.unpublish(self, pub.source.source_id)
        added: list[Publication] = []
        for mid in sorted(wanted):
            pub = self.publications[mid]
            if pub.active:
                continue
            refusal = port.publish(self, pub.source, pub.transceiver)
            if refusal is not None:
                for done in added:  # all or nothing
                    done.active = False
                    port.unpublish(self, done.source.source_id)
                raise BadMediaMessage(MediaRefusal.RELAY_REFUSED,
                                      f"the relay refused {pub.kind}: {refusal}", request.req)
            pub.active = True
            added.append(pub)
        self.counters["media_publish"] += 1
        self._send({"t": "ack", "req": request.req, "ok": True})

    def _prefs(self, request: MediaPrefsRequest) -> None:
        self.audio_only = request.audio_only
        self.max_kbps = request.max_kbps
        if self.port is not None:
            self.port.preferences_changed(self, self.room_id)
        self.counters["media_prefs"] += 1
        self._send({"t": "ack", "req": request.req, "ok": True})

    # ------------------------------------------------------------------ receive slots

    def _assign(self) -> None:
        """Put the waiting outputs on free slots of their kind; ask for more slots when
        there are too few."""
        if self.closed:
            return
        missing = {"audio": 0, "video": 0}
        for source_id, source in list(self._waiting.items()):
            free = next((s for s in self.slots.values()
                         if s.kind == source.kind and s.source is None), None)
            if free is None:
                missing[source.kind] += 1
                continue
            free.source = source
            del self._waiting[source_id]
            if self.port is not None:
                self.port.output_ready(self, source_id, free.transceiver)
        self._show_streams()
        if missing["audio"] or missing["video"]:
            self._ask_for_slots(missing)

    def _ask_for_slots(self, missing: dict[str, int]) -> None:
        # Outputs the relay adds in one go (a new publisher's audio and video) are asked for
        # in one media_renegotiate: the message goes out once the loop is free.
        if not self._ask_scheduled:
            self._ask_scheduled = True
            asyncio.get_running_loop().call_soon(self._ask_now)

    def _slot_counts(self) -> tuple[int, int]:
        kinds = [slot.kind for slot in self.slots.values()]
        return kinds.count("audio"), kinds.count("video")

    def _ask_now(self) -> None:
        self._ask_scheduled = False
        if self.closed:
            return
        missing = {"audio": 0, "video": 0}
        for source in self._waiting.values():
            missing[source.kind] += 1
        have = self._slot_counts()
        want = (min(have[0] + missing["audio"], self.limits.max_receive_audio),
                min(have[1] + missing["video"], self.limits.max_receive_video))
        if want == have:
            if missing["audio"] or missing["video"]:
                self.counters["media_slots_exhausted"] += 1
            return
        neg = self._negotiation
        if neg.busy or neg.asked == want:
            return  # asked already; the next answer assigns them
        neg.asked = want
        self.counters["media_renegotiate"] += 1
        self._send({"t": "media_renegotiate", "audio": want[0], "video": want[1]})

    def _show_streams(self) -> None:
        streams = [
            {"mid": slot.mid, "kind": slot.kind, "source": slot.source.source_id,
             "publisher": person_key(slot.source)}
            for slot in sorted(self.slots.values(), key=lambda s: (s.kind, s.mid))
            if slot.source is not None
        ]
        if streams != self._shown and not self.closed:
            self._shown = streams
            self._send({"t": "media_streams", "streams": streams})
