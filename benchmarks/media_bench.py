"""Media relay benchmark: forwarding RTP without decoding, real aiortc peer connections.

Run ``python benchmarks/media_bench.py [--quick]``. It prints ONE JSON object (its ``summary``
holds the headline figures) and exits 0 if every subscriber received media and every payload
matched (1 otherwise). Everything is real: aiortc peer connections on loopback (ICE, DTLS,
SRTP), the relay in its own process.

* **The relay** (``--relay forward``): a child process pinned to one core (``--relay-cpu``,
  ``os.sched_setaffinity``), uvloop, driving ``meshnode.media.aiortc_driver`` exactly as a node
  does: a :class:`SourceTap` per publisher track, a :class:`Forwarder` per source, an
  :class:`OutputSender` per subscriber track, ``make_media_pc`` (MAX_BUNDLE). It never decodes.
  Its CPU is read from ``/proc/<pid>/stat`` (user + system, every thread), so CPU per core is
  the relay's own even when other work shares the core.
* **The baseline** (``--relay transcode``): the same harness with aiortc's
  ``aiortc.contrib.media.MediaRelay`` (decode the publisher once, encode once per subscriber),
  measured at the same subscriber counts in the same run.
* **The load** (this process, pinned to ``--load-cpu``): one aiortc publisher, synthetic
  640x360 VP8 at 15 fps held at ``--video-kbps`` (REMB ignored) plus Opus (a tone with noise,
  aiortc's 96 kbps target); subscribers whose receivers are tapped the same way (nothing is
  decoded here either). Each RTP payload the publisher sends is hashed with its send times;
  each subscriber looks its arrivals up (payload-matched, through the relay, on loopback).
* **Transit** (``added_latency_ms_*``) = the publisher's ``sendto`` of the SRTP datagram
  (``CLOCK_REALTIME`` taken just before it, in a hook on aioice's ``send_data``) -> the
  kernel's receive stamp of the copy on the subscriber's ICE socket (``SIOCGSTAMPNS`` read
  right after uvloop's ``recvfrom``; on loopback the kernel delivers inside the relay's
  ``sendto``). It holds the relay's socket queue, its work and its ``sendto``, and nothing of
  this process's own queueing: here one event loop encodes the publisher's VP8 and runs all N
  subscribers' DTLS/SRTP, and a datagram can wait in a socket for it for milliseconds.
  ``added_latency_in_loop_ms_*`` keeps the old figure for comparison: the publisher's send in
  Python (before SRTP) -> the moment this event loop handles the datagram, both
  ``perf_counter``; it includes that harness queueing. ``relay_residence_ms_*`` is measured
  inside the relay (its event loop handles the source datagram -> the copy's ``sendto``), so it
  leaves out the time a datagram waits in the relay's own socket, which transit includes.

Phases (each measured over a window after a settle time; ``--quick`` uses fewer, shorter ones):

0. ``per_copy_breakdown_us``: each step of one forwarded copy timed alone in this process
   (forwarding decision, header and RTX history, SRTP, the loopback ``sendto``).
1. forward at N subscribers (audio + video each) for N in ``--steps``, each N measured twice
   back to back on the same connections: copies sent on the driver's ``SrtpWire``
   (``direct``, what the node runs) and through aiortc's own RTP send chain
   (``aiortc_chain``, the path before it), so the ``summary`` ratios compare the two under
   the same load. Per window: relay CPU, the CPU of the fan-out itself per copy (the relay's
   thread time inside ``Forwarder.on_packet``: what other processes on the core do not
   inflate), transit p50/p99 per kind, the relay residence (source datagram in -> copy
   handed to the kernel), per-subscriber wire kbps; a least-squares line through CPU(N)
   gives CPU per subscriber and ``subscribers_per_core`` = 100 % / slope.
2. an audio-only subscriber beside a full one: wire kbps of each (SRTP datagrams, and with
   IPv4/UDP headers).
3. pause/resume: a subscriber's video paused, then resumed: time until the first keyframe
   packet arrives at it (the relay gates on a keyframe and asks the publisher for one).
4. trunk: relay A -> ONE peer connection -> relay B (another pinned process) -> 5
   subscribers: bytes on the trunk / bytes of the publisher's copy into A, and B's fan-out.
5. transcode baseline at ``--transcode-steps``: relay CPU; the ratio forward / transcode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import fractions
import json
import logging
import math
import os
import statistics
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
IP_UDP_OVERHEAD = 28  # IPv4 + UDP header bytes per datagram
WIDTH, HEIGHT, FPS = 640, 360, 15
# ioctl: the kernel's receive time (CLOCK_REALTIME, a struct timespec) of the last datagram
# read from a socket; the first call turns the socket's receive timestamps on.
SIOCGSTAMPNS = 0x8907


def pin(cpu: int | None) -> bool:
    """Pin this thread and the threads it starts later (call it first) to ``cpu``."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of ``values`` in ms, rounded; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    return sum(cpu_times(pid))


def core_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _dtls(pc: Any) -> Any:
    """The one (bundled) DTLS transport of a media peer connection."""
    return pc.getTransceivers()[0].sender.transport


def wire_counters(pc: Any) -> dict[str, int]:
    """Datagrams and bytes (SRTP, SRTCP, DTLS; no IP/UDP headers) in and out of ``pc``."""
    dtls = _dtls(pc)
    return {k: int(getattr(dtls, f"_RTCDtlsTransport__{k}"))
            for k in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets")}


async def wait_connected(pc: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.01)


# -- the relay process ------------------------------------------------------------------------


class RelayServer:
    """The relay child: requests as JSON lines on stdin, one JSON reply line each on stdout.

    Peer connections are named: ``publish`` is the one media comes in on (a publisher, or a
    trunk from another relay); any other name is an outgoing connection (a subscriber, or a
    trunk to another relay) offered by this side with one ``sendonly`` line per kind.
    """

    def __init__(self, mode: str) -> None:
        from aiortc.contrib.media import MediaRelay

        self.mode = mode
        self.pcs: dict[str, Any] = {}
        self.forwarders: dict[str, Any] = {}
        self.senders: dict[str, list[tuple[str, Any]]] = {}
        self.tracks: dict[str, Any] = {}
        self.media_relay = MediaRelay()
        self.direct = True  # the send path of new OutputSenders (op send_path)
        self.fanout_cpu_ns = 0  # this thread's CPU inside Forwarder.on_packet (all copies)
        self.arrivals = ArrivalStamps()  # of the datagrams of the ``publish`` connection
        # (arrival, fan-out start, fan-out end, copies sent) per source packet
        self.fanouts: list[tuple[float, float, float, int]] = []

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "publish":
            return await self.publish(req["offer"])
        if op == "offer":
            return await self.offer(req["key"], req["kinds"])
        if op == "answer":
            return await self.answer(req["key"], req["answer"])
        if op == "close":
            await self.close(req["key"])
            return {}
        if op == "pause":
            self.forwarders[req["kind"]].pause(req["key"])
            return {}
        if op == "resume":
            self.forwarders[req["kind"]].resume(req["key"])
            return {}
        if op == "stats":
            return self.stats()
        if op == "residence":
            return self.residence()
        if op == "send_path":
            self.direct = bool(req["direct"])
            for senders in self.senders.values():
                for _, sender in senders:
                    sender.direct = self.direct
            return {}
        raise ValueError(f"unknown op {op!r}")

    async def publish(self, offer: dict[str, str]) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        from meshnode.media.aiortc_driver import Forwarder, SourceTap, make_media_pc

        pc = make_media_pc()
        self.pcs["publish"] = pc
        if self.mode == "transcode":
            pc.on("track", lambda track: self.tracks.__setitem__(track.kind, track))
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        self.arrivals.attach(_dtls(pc).transport._connection)
        if self.mode == "forward":
            for t in pc.getTransceivers():
                forwarder = self.forwarders[t.kind] = Forwarder(SourceTap(t, source_id=t.kind))
                forwarder.tap.on_packet = self.timed(forwarder)
        await pc.setLocalDescription(await pc.createAnswer())
        return {"answer": _sdp(pc.localDescription)}

    def timed(self, forwarder: Any) -> Any:
        """``forwarder.on_packet`` (the fan-out of one source packet to every output), adding
        the CPU time this thread spends in it to ``fanout_cpu_ns``: CPU per copy measured in
        place, which other processes on the core do not inflate (the aiortc chain's awaits
        never suspend, so nothing else runs inside it either)."""

        on_packet = forwarder.on_packet

        async def timed_on_packet(tap: Any, packet: Any, now: float) -> None:
            sent0 = forwarder.copies_sent
            start, t0 = time.perf_counter(), time.thread_time_ns()
            try:
                await on_packet(tap, packet, now)
            finally:
                self.fanout_cpu_ns += time.thread_time_ns() - t0
                copies = forwarder.copies_sent - sent0
                if self.arrivals.arrival is not None and copies:
                    self.fanouts.append((self.arrivals.arrival, start, time.perf_counter(),
                                         copies))

        return timed_on_packet

    def residence(self) -> dict[str, Any]:
        """Relay residence of the copies since the last call: from the source datagram's
        arrival at the relay's ICE connection to each copy's ``sendto``, the copies of one
        packet taken as evenly spaced over its fan-out (timing each would slow it). What the
        relay itself adds, without the load process's own queueing (``transit``)."""
        values = []
        for arrival, start, end, copies in self.fanouts:
            step = (end - start) / copies
            values.extend(start + step * (i + 1) - arrival for i in range(copies))
        self.fanouts.clear()
        return {"copies": len(values), "p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99),
                "max_ms": pct(values, 1.0)}

    async def offer(self, key: str, kinds: list[str]) -> dict[str, Any]:
        from meshnode.media.aiortc_driver import OutputSender, make_media_pc

        pc = make_media_pc()
        self.pcs[key] = pc
        senders = []
        for kind in kinds:
            if self.mode == "forward":
                t = pc.addTransceiver(kind, direction="sendonly")
                senders.append((kind, OutputSender(t, direct=self.direct)))
            else:
                pc.addTransceiver(self.media_relay.subscribe(self.tracks[kind]),
                                  direction="sendonly")
        self.senders[key] = senders
        await pc.setLocalDescription(await pc.createOffer())
        return {"offer": _sdp(pc.localDescription)}

    async def answer(self, key: str, answer: dict[str, str]) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        pc = self.pcs[key]
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await wait_connected(pc)
        for kind, sender in self.senders[key]:
            self.forwarders[kind].add_output(key, sender)
        return {}

    async def close(self, key: str) -> None:
        for kind, _ in self.senders.pop(key, []):
            self.forwarders[kind].remove_output(key)
        pc = self.pcs.pop(key, None)
        if pc is not None:
            await pc.close()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"wire": {k: wire_counters(pc) for k, pc in self.pcs.items()
                                        if pc.getTransceivers()}}
        fwd: dict[str, Any] = {}
        for kind, f in self.forwarders.items():
            sent = [f.stats(k) for k in f.keys]
            dropped: dict[str, int] = {}
            for s in sent:
                for reason, n in s.dropped.items():
                    dropped[reason] = dropped.get(reason, 0) + n
            fwd[kind] = {"tap_packets": f.tap.packets, "tap_dropped": dict(f.tap.dropped),
                         "keyframe_requests": f.tap.keyframe_requests,
                         "sent_packets": sum(s.sent_packets for s in sent),
                         "sent_bytes": sum(s.sent_bytes for s in sent), "dropped": dropped}
        out["forwarders"] = fwd
        out["fanout_cpu_ns"] = self.fanout_cpu_ns
        # The forwarding relay must never decode or encode: aiortc creates codecs lazily,
        # so these count every decoder and encoder this process ever made.
        out["codecs_created"] = dict(CODECS_CREATED)
        return out


CODECS_CREATED: dict[str, int] = {"decoders": 0, "encoders": 0}


def count_codecs() -> None:
    """Count aiortc's codec creations (it looks ``get_decoder``/``get_encoder`` up in its
    receiver and sender modules when the first frame needs one)."""
    import aiortc.rtcrtpreceiver as receiver_module
    import aiortc.rtcrtpsender as sender_module

    for module, name, key in ((receiver_module, "get_decoder", "decoders"),
                              (sender_module, "get_encoder", "encoders")):
        original = getattr(module, name)

        def counting(*args: Any, _original: Any = original, _key: str = key) -> Any:
            CODECS_CREATED[_key] += 1
            return _original(*args)

        setattr(module, name, counting)


def _sdp(desc: Any) -> dict[str, str]:
    return {"sdp": desc.sdp, "type": desc.type}


async def relay_main(mode: str) -> None:
    from meshnode.transport.ice import install_host_addresses

    install_host_addresses(("127.0.0.1",))
    count_codecs()
    server = RelayServer(mode)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def serve(req: dict[str, Any]) -> None:
        try:
            reply = {"id": req["id"], "ok": True, **await server.handle(req)}
        except Exception as exc:  # reported to the parent, which fails the run
            logging.exception("relay request %s failed", req.get("op"))
            reply = {"id": req["id"], "ok": False, "error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        req = json.loads(line)
        if req["op"] == "quit":
            break
        task = loop.create_task(serve(req))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for key in list(server.pcs):
        await server.close(key)


# -- the load process: relay handle, publisher, subscribers ---------------------------------


class Relay:
    """A relay child process and its request channel."""

    def __init__(self, name: str, mode: str, cpu: int | None,
                 profile: str | None = None) -> None:
        self.name, self.mode, self.cpu, self.profile = name, mode, cpu, profile
        self.proc: asyncio.subprocess.Process | None = None
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Relay:
        args = [sys.executable, str(Path(__file__).resolve()), "--relay", self.mode]
        if self.cpu is not None:
            args += ["--relay-cpu", str(self.cpu)]
        if self.profile:
            args += ["--profile-relay", self.profile]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 22)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.call("stats")  # imports done, loop running
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            fut = self._waiting.pop(reply["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"relay {self.name} exited"))

    async def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(fut, 60)
        if not reply.pop("ok"):
            raise RuntimeError(f"relay {self.name} {op}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write(b'{"id": 0, "op": "quit"}\n')
        try:
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 10)
        except (TimeoutError, ConnectionError):
            self.proc.kill()
            await self.proc.wait()


class SyntheticVideo:
    """640x360 yuv420p at 15 fps: a drifting gradient, a moving textured block and light
    noise (a camera-like load for the encoder), from a few precomputed frames."""

    def __new__(cls, kbps: int) -> Any:
        import av
        import numpy as np
        from aiortc.mediastreams import MediaStreamTrack

        rng = np.random.default_rng(1)
        y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
        texture = rng.integers(0, 255, (96, 96), dtype=np.uint8)
        frames = []
        for i in range(FPS):
            luma = ((x + y + i * 8) % 256).astype(np.int16)
            luma += rng.integers(-10, 10, luma.shape, dtype=np.int16)
            bx, by = (i * 37) % (WIDTH - 96), (i * 19) % (HEIGHT - 96)
            luma[by:by + 96, bx:bx + 96] = texture
            chroma = np.full((HEIGHT // 2, WIDTH), 128, dtype=np.int16)
            chroma += rng.integers(-4, 4, chroma.shape, dtype=np.int16)
            frames.append(np.clip(np.vstack([luma, chroma]), 0, 255).astype(np.uint8))

        class Track(MediaStreamTrack):
            kind = "video"

            def __init__(self) -> None:
                super().__init__()
                self.sender: Any = None
                self.n = 0
                self.start: float | None = None

            async def recv(self) -> Any:
                if self.start is None:
                    self.start = time.monotonic()
                await asyncio.sleep(max(0.0, self.start + self.n / FPS - time.monotonic()))
                frame = av.VideoFrame.from_ndarray(frames[self.n % FPS], format="yuv420p")
                frame.pts, frame.time_base = self.n * (90000 // FPS), fractions.Fraction(
                    1, 90000)
                self.n += 1
                encoder = getattr(self.sender, "_RTCRtpSender__encoder", None)
                if encoder is not None and hasattr(encoder, "target_bitrate"):
                    encoder.target_bitrate = kbps * 1000
                return frame

        return Track()


class ToneAudio:
    """20 ms mono frames at 48 kHz: a 440 Hz tone plus noise (so Opus never goes silent and
    no two packets are alike)."""

    def __new__(cls) -> Any:
        import av
        import numpy as np
        from aiortc.mediastreams import MediaStreamTrack

        rng = np.random.default_rng(2)

        class Track(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.n = 0
                self.start: float | None = None

            async def recv(self) -> Any:
                if self.start is None:
                    self.start = time.monotonic()
                await asyncio.sleep(max(0.0, self.start + self.n * 0.02 - time.monotonic()))
                t = (np.arange(960) + self.n * 960) / 48000
                pcm = 6000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 800, 960)
                frame = av.AudioFrame.from_ndarray(
                    pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts = 48000, self.n * 960
                frame.time_base = fractions.Fraction(1, 48000)
                self.n += 1
                return frame

        return Track()


class Publisher:
    """An aiortc publisher whose every sent RTP payload is hashed with its send times: ``sent``
    (``perf_counter`` when aiortc hands the packet to SRTP, in this busy event loop) and
    ``wire_sent`` (``CLOCK_REALTIME`` ns just before the ``sendto`` of its SRTP datagram, the
    clock of the kernel's receive stamps)."""

    def __init__(self, video_kbps: int) -> None:
        self.video_kbps = video_kbps
        self.sent: dict[int, float] = {}
        self.wire_sent: dict[int, int] = {}
        self.pc: Any = None

    async def connect(self, relay: Relay) -> None:
        from aiortc import RTCSessionDescription
        from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, is_rtcp

        from meshnode.media.aiortc_driver import make_media_pc
        from meshnode.media.rtp import parse_rtp

        self.pc = pc = make_media_pc()
        video = SyntheticVideo(self.video_kbps)
        pc.addTransceiver(ToneAudio(), direction="sendonly")
        video.sender = pc.addTransceiver(video, direction="sendonly").sender
        # Hold the video bitrate: drop REMB before aiortc hands it to the encoder.
        original_rtcp = video.sender._handle_rtcp_packet

        async def rtcp(packet: Any) -> None:
            if not (isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP):
                await original_rtcp(packet)

        video.sender._handle_rtcp_packet = rtcp
        await pc.setLocalDescription(await pc.createOffer())
        wire_sent, pending = self.wire_sent, [0]
        for protocol in _dtls(pc).transport._connection._protocols:
            transport = protocol.transport

            async def send_data(data: bytes, addr: tuple[str, int],
                                _transport: Any = transport) -> None:
                if pending[0]:
                    wire_sent.setdefault(pending[0], time.time_ns())
                    pending[0] = 0
                _transport.sendto(data, addr)  # (uvloop: the sendto(2) happens here)

            protocol.send_data = send_data
        answer = await relay.call("publish", offer=_sdp(pc.localDescription))
        await pc.setRemoteDescription(RTCSessionDescription(**answer["answer"]))
        dtls = _dtls(pc)
        original_send = dtls._send_rtp
        sent = self.sent

        async def send_rtp(data: bytes) -> None:
            if not is_rtcp(data):
                payload = data[parse_rtp(data).header_len:]
                key = hash(payload)
                sent.setdefault(key, time.perf_counter())
                pending[0] = key  # stamped by send_data (no await suspends in between)
            await original_send(data)
            pending[0] = 0

        dtls._send_rtp = send_rtp
        await wait_connected(pc)

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


class ArrivalStamps:
    """Two arrival times of each datagram of an aioice connection, and which datagram the DTLS
    transport is working on (it takes them one at a time, in order, through ``recvfrom``):

    * ``kernel_arrival``: the kernel's receive stamp (``CLOCK_REALTIME`` ns, ``SIOCGSTAMPNS`` on
      the ICE socket right after uvloop's ``recvfrom``, which calls ``datagram_received``
      synchronously per datagram). On loopback it is taken inside the relay's ``sendto``, so
      transit to it holds nothing of this process's own event-loop queueing.
    * ``arrival``: ``perf_counter`` when this process's event loop handles the datagram (its
      ``data_received``): it also holds the time the datagram waited in the socket while the
      loop encoded video and ran the other subscribers (the old, in-loop figure)."""

    def __init__(self) -> None:
        self.arrival: float | None = None
        self.kernel_arrival: int | None = None
        self.fd: int | None = None
        self.kernel_missing = 0
        # Stamps equal to the previous one: datagrams read in one batch would share the last
        # one's (none expected: libuv reads and hands over one datagram at a time).
        self.kernel_repeats = 0
        self._last_kernel: int | None = None

    def attach(self, connection: Any) -> None:
        stamps: deque[tuple[float, int | None]] = deque()
        data_received, recvfrom = connection.data_received, connection.recvfrom
        buffer = bytes(16)

        def stamped(data: bytes, component: int) -> None:
            kernel: int | None = None
            if self.fd is not None:
                try:
                    seconds, ns = struct.unpack("qq", fcntl.ioctl(self.fd, SIOCGSTAMPNS, buffer))
                    kernel = seconds * 1_000_000_000 + ns
                    if kernel == self._last_kernel:
                        self.kernel_repeats += 1
                    self._last_kernel = kernel
                except OSError:
                    pass
            stamps.append((time.perf_counter(), kernel))
            data_received(data, component)

        async def next_datagram() -> tuple[bytes, int]:
            result = await recvfrom()
            self.arrival, self.kernel_arrival = stamps.popleft() if stamps else (None, None)
            return result  # type: ignore[no-any-return]

        connection.data_received, connection.recvfrom = stamped, next_datagram

    def attach_socket(self, connection: Any) -> None:
        """After candidates are gathered: the one ICE socket (host 127.0.0.1 only) whose
        kernel stamps are read; the first ioctl turns them on (it fails: nothing read yet)."""
        sockets = [p.transport.get_extra_info("socket") for p in connection._protocols]
        if len(sockets) != 1:
            return  # (then no kernel stamps: counted as missing)
        self.fd = sockets[0].fileno()
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, SIOCGSTAMPNS, bytes(16))


class Subscriber:
    """An aiortc subscriber of a relay; its receivers are tapped (nothing decoded here)."""

    def __init__(self, key: str, kinds: list[str], publisher: Publisher) -> None:
        self.key, self.kinds, self.publisher = key, kinds, publisher
        self.pc: Any = None
        self.transit: dict[str, list[float]] = {"audio": [], "video": []}
        self.in_loop: dict[str, list[float]] = {"audio": [], "video": []}
        self.handled: dict[str, list[float]] = {"audio": [], "video": []}
        self.stamps = ArrivalStamps()
        self.unmatched = 0
        self.packets = 0
        self.keyframe_wait: asyncio.Future[float] | None = None

    async def connect(self, relay: Relay) -> None:
        from aiortc import RTCSessionDescription

        from meshnode.media.aiortc_driver import SourceTap, make_media_pc

        offer = await relay.call("offer", key=self.key, kinds=self.kinds)
        self.pc = pc = make_media_pc()
        await pc.setRemoteDescription(RTCSessionDescription(**offer["offer"]))
        self.stamps.attach(_dtls(pc).transport._connection)
        for t in pc.getTransceivers():
            SourceTap(t, source_id=t.kind, on_packet=self.on_packet, clock=time.perf_counter)
        await pc.setLocalDescription(await pc.createAnswer())
        self.stamps.attach_socket(_dtls(pc).transport._connection)
        await relay.call("answer", key=self.key, answer=_sdp(pc.localDescription))

    async def on_packet(self, tap: Any, packet: Any, now: float) -> None:
        self.packets += 1
        key = hash(packet.payload)
        sent = self.publisher.sent.get(key)
        if sent is None:
            self.unmatched += 1
        else:
            self.in_loop[tap.kind].append((self.stamps.arrival or now) - sent)
            self.handled[tap.kind].append(now - sent)
            wire_sent, kernel = self.publisher.wire_sent.get(key), self.stamps.kernel_arrival
            if wire_sent is None or kernel is None:
                self.stamps.kernel_missing += 1
            else:
                self.transit[tap.kind].append((kernel - wire_sent) / 1e9)
        if (self.keyframe_wait is not None and not self.keyframe_wait.done()
                and packet.vp8 is not None and packet.vp8.keyframe and packet.vp8.frame_start):
            self.keyframe_wait.set_result(now)

    def reset(self) -> None:
        for values in (*self.transit.values(), *self.in_loop.values(), *self.handled.values()):
            values.clear()
        self.unmatched = self.packets = self.stamps.kernel_missing = 0
        self.stamps.kernel_repeats = 0

    async def close(self, relay: Relay) -> None:
        await relay.call("close", key=self.key)
        if self.pc is not None:
            await self.pc.close()


class Window:
    """CPU and wire counters of a relay and this process over one measurement window."""

    def __init__(self, relay: Relay, pcs: dict[str, Any]) -> None:
        self.relay, self.pcs = relay, pcs
        self.t0 = time.perf_counter()
        self.cpu0 = cpu_times(relay.pid)
        self.load0 = cpu_seconds(os.getpid())
        self.wire0 = {k: wire_counters(pc) for k, pc in pcs.items()}
        self.cores0 = core_ticks()

    async def close(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        user, system = (b - a for a, b in zip(self.cpu0, cpu_times(self.relay.pid),
                                              strict=True))
        load = cpu_seconds(os.getpid()) - self.load0
        wire = {}
        for k, pc in self.pcs.items():
            now = wire_counters(pc)
            delta = {c: now[c] - self.wire0[k][c] for c in now}
            wire[k] = {
                "rx_kbps": round(delta["rx_bytes"] * 8 / seconds / 1000, 1),
                "rx_kbps_with_ip_udp": round(
                    (delta["rx_bytes"] + IP_UDP_OVERHEAD * delta["rx_packets"]) * 8
                    / seconds / 1000, 1),
                "rx_packets_per_s": round(delta["rx_packets"] / seconds, 1),
                "tx_kbps": round(delta["tx_bytes"] * 8 / seconds / 1000, 1),
                "tx_bytes": delta["tx_bytes"], "rx_bytes": delta["rx_bytes"]}
        cores = core_ticks()
        busy = {cpu: round(100 * (cores[cpu][0] - self.cores0[cpu][0])
                           / max(1, cores[cpu][1] - self.cores0[cpu][1]), 1) for cpu in cores}
        return {"seconds": round(seconds, 2),
                # Every process on each core, ours included: far above relay_cpu_percent
                # (relay core) or load_cpu_percent (load core) means other work shared it.
                "core_busy_percent": busy,
                "relay_cpu_percent": round(100 * (user + system) / seconds, 2),
                "relay_cpu_system_percent": round(100 * system / seconds, 2),
                "relay_rss_mb": rss_mb(self.relay.pid),
                "load_cpu_percent": round(100 * load / seconds, 1), "wire": wire}


def transit_summary(subs: list[Subscriber]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    everything: list[float] = []
    for kind in ("audio", "video"):
        values = [v for s in subs for v in s.transit[kind]]
        everything += values
        out[kind] = {"samples": len(values), "p50_ms": pct(values, 0.5),
                     "p99_ms": pct(values, 0.99)}
    out["all"] = {"samples": len(everything), "min_ms": pct(everything, 0.0),
                  "p50_ms": pct(everything, 0.5),
                  "p99_ms": pct(everything, 0.99), "max_ms": pct(everything, 1.0)}
    # The old figure: arrival stamped when this (busy) event loop handles the datagram.
    in_loop = [v for s in subs for k in ("audio", "video") for v in s.in_loop[k]]
    out["in_loop_arrival"] = {"samples": len(in_loop), "p50_ms": pct(in_loop, 0.5),
                              "p99_ms": pct(in_loop, 0.99), "max_ms": pct(in_loop, 1.0)}
    out["without_kernel_stamp"] = sum(s.stamps.kernel_missing for s in subs)
    out["repeated_kernel_stamps"] = sum(s.stamps.kernel_repeats for s in subs)
    handled = [v for s in subs for k in ("audio", "video") for v in s.handled[k]]
    out["after_subscriber_receive"] = {"p50_ms": pct(handled, 0.5),
                                       "p99_ms": pct(handled, 0.99)}
    out["unmatched_packets"] = sum(s.unmatched for s in subs)
    return out


SEND_PATHS = ("direct", "aiortc_chain")


async def per_copy_breakdown(copies: int) -> dict[str, float]:
    """CPU microseconds (this process's CPU time, so other work on the core does not count)
    of each step a forwarded copy takes on the direct path, each timed alone over ``copies``
    runs with a 1100-byte VP8-sized payload: the forwarding decision (``Output.rewrite``),
    the RTX history, the header and SRTP protection built in place (``SrtpPacker``,
    AES-256-GCM, what two aiortc peers negotiate), and the ``sendto`` of the datagram on
    loopback (to a draining child process: the kernel's loopback delivery is in the sender's
    ``sendto``). For comparison, the path before ``SrtpPacker``: the header as bytes and
    pylibsrtp's ``protect`` (AES-256-GCM, and AES-CM/HMAC-SHA1, what Chromium may use)."""
    from pylibsrtp import Policy, Session

    from meshnode.media.aiortc_driver import RtxHistory, SrtpPacker, _ntp_now
    from meshnode.media.forwarding import Output, PacketInfo
    from meshnode.media.rtp_out import ExtensionIds, RtpWriter

    def timed(step: Any) -> float:
        t0 = time.process_time()
        for i in range(copies):
            step(i)
        return round((time.process_time() - t0) / copies * 1e6, 2)

    payload = os.urandom(1100)
    out: dict[str, float] = {}
    infos = [PacketInfo(sequence_number=i & 0xFFFF, timestamp=i // 8 * 6000, marker=i % 8 == 7,
                        keyframe=True, frame_start=i % 8 == 0, tid=None, size=len(payload))
             for i in range(copies)]
    output = Output("video", 90000)
    out["forward_decision"] = timed(lambda i: output.rewrite(infos[i], 0.0))
    writer = RtpWriter.for_ids(1234, "1", ExtensionIds(mid=1, abs_send_time=2, audio_level=None))
    assert writer is not None
    history = RtxHistory(1234)
    out["rtx_history"] = timed(
        lambda i: history.put(96, False, i & 0xFFFF, i, 7, None, payload, "1"))
    packer = SrtpPacker()
    session = Session(Policy(key=os.urandom(44), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                             srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
    out["header_and_srtp_in_place_aes256gcm"] = timed(
        lambda i: packer.protect(session, writer, 96, False, i & 0xFFFF, i, 7, None, payload))
    out["header_as_bytes"] = timed(
        lambda i: writer.packet(96, False, i & 0xFFFF, i, 7, None, payload))
    out["ntp_stamp_per_source_packet"] = timed(lambda i: _ntp_now(time.time()))
    data = writer.packet(96, False, 0, 0, 7, None, payload)
    for name, profile, key_len in (
            ("srtp_protect_aes256gcm", Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
            ("srtp_protect_aes128cm_sha1", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30)):
        policy = Policy(key=os.urandom(key_len), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=profile)
        policy.allow_repeat_tx = True
        srtp = Session(policy)
        out[name] = timed(lambda i, srtp=srtp: srtp.protect(data))
    drain = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import socket\ns = socket.socket(socket.AF_INET, "
        "socket.SOCK_DGRAM)\ns.bind(('127.0.0.1', 0))\nprint(s.getsockname()[1], flush=True)"
        "\nwhile True: s.recv(2048)", stdout=asyncio.subprocess.PIPE)
    try:
        assert drain.stdout is not None
        addr = ("127.0.0.1", int(await drain.stdout.readline()))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        protected = data + bytes(16)
        out["udp_sendto_loopback"] = timed(lambda i: transport.sendto(protected, addr))
        transport.close()
    finally:
        drain.kill()
        await drain.wait()
    out["sum_direct_path"] = round(sum(v for k, v in out.items() if k in (
        "forward_decision", "rtx_history", "header_and_srtp_in_place_aes256gcm",
        "udp_sendto_loopback")), 2)
    # the same before SrtpPacker: the header as bytes, then pylibsrtp's protect
    out["sum_direct_path_bytes_then_pylibsrtp"] = round(sum(v for k, v in out.items() if k in (
        "forward_decision", "rtx_history", "header_as_bytes", "srtp_protect_aes256gcm",
        "udp_sendto_loopback")), 2)
    return out


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line y = a + b x through ``points``: (a, b)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.window_s = 3.0 if self.quick else 8.0
        self.settle_s = 1.0 if self.quick else 2.0
        self.ok = True
        self.problems: list[str] = []

    async def add_subscribers(self, relay: Relay, pub: Publisher, subs: list[Subscriber],
                              n: int, prefix: str, kinds: list[str]) -> None:
        new = [Subscriber(f"{prefix}{i}", kinds, pub) for i in range(len(subs), n)]
        for chunk in range(0, len(new), 5):  # a few at a time: ICE on a busy core
            await asyncio.gather(*(s.connect(relay) for s in new[chunk:chunk + 5]))
        subs.extend(new)

    async def measure(self, relay: Relay, subs: list[Subscriber],
                      extra_pcs: dict[str, Any] | None = None,
                      forwarded: bool = True, settle_s: float | None = None) -> dict[str, Any]:
        await asyncio.sleep(self.settle_s if settle_s is None else settle_s)
        for s in subs:
            s.reset()
        pcs = {s.key: s.pc for s in subs} | (extra_pcs or {})
        window = Window(relay, pcs)
        before = await relay.call("stats")
        await relay.call("residence")  # (clears it)
        await asyncio.sleep(self.window_s)
        result = await window.close()
        after = await relay.call("stats")
        result["transit"] = transit_summary(subs)
        result["relay_residence"] = await relay.call("residence")
        sent = sum(f["sent_packets"] for f in after["forwarders"].values()) - sum(
            f["sent_packets"] for f in before["forwarders"].values())
        result["forwarded_packets_per_s"] = round(sent / result["seconds"], 1)
        tapped = sum(f["tap_packets"] for f in after["forwarders"].values()) - sum(
            f["tap_packets"] for f in before["forwarders"].values())
        result["source_packets_per_s"] = round(tapped / result["seconds"], 1)
        video_sent = (after["forwarders"].get("video", {}).get("sent_packets", 0)
                      - before["forwarders"].get("video", {}).get("sent_packets", 0))
        result["forwarded_video_packets_per_s"] = round(video_sent / result["seconds"], 1)
        fanout_ns = after.get("fanout_cpu_ns", 0) - before.get("fanout_cpu_ns", 0)
        result["fanout_cpu_us_per_copy"] = round(fanout_ns / 1000 / sent, 2) if sent else None
        result["relay_dropped"] = {k: f["dropped"] for k, f in after["forwarders"].items()}
        sub_kbps = [result["wire"][s.key]["rx_kbps"] for s in subs]
        result["subscriber_rx_kbps_mean"] = round(statistics.fmean(sub_kbps), 1) if subs else None
        for s in subs:
            if s.packets == 0:
                self.ok = False
                self.problems.append(f"subscriber {s.key} received nothing")
            if s.unmatched and forwarded:
                self.ok = False
                self.problems.append(f"subscriber {s.key}: {s.unmatched} unmatched payloads")
        if not self.args.keep_wire:
            result["wire"] = {k: v for k, v in result["wire"].items() if not k.startswith("s")}
        return result

    async def forward_steps(self, relay: Relay, pub: Publisher) -> dict[str, Any]:
        """Each N measured twice, back to back on the same connections: copies sent on the
        driver's SrtpWire (``direct``) and through aiortc's RTP send chain (``aiortc_chain``,
        the path before it), in alternating order so drift in the machine's load falls on
        both alike."""
        subs: list[Subscriber] = []
        steps = []
        for i, n in enumerate(self.args.steps):
            await self.add_subscribers(relay, pub, subs, n, "s", ["audio", "video"])
            paths = SEND_PATHS if i % 2 == 0 else SEND_PATHS[::-1]
            if n == 0:
                paths = SEND_PATHS[:1]  # nothing is sent: ingest only
            for k, path in enumerate(paths):
                await relay.call("send_path", direct=path == "direct")
                # (the second path runs on connections that have already settled)
                m = await self.measure(relay, subs, {"publisher": pub.pc},
                                       settle_s=0.5 if k else None)
                m["subscribers"], m["send_path"] = n, path
                steps.append(m)
        await relay.call("send_path", direct=True)
        for s in subs:
            await s.close(relay)
        return {"steps": steps}

    async def audio_only_and_resume(self, relay: Relay, pub: Publisher) -> dict[str, Any]:
        audio = Subscriber("audio_only", ["audio"], pub)
        full = Subscriber("full", ["audio", "video"], pub)
        await audio.connect(relay)
        await full.connect(relay)
        m = await self.measure(relay, [audio, full])
        out: dict[str, Any] = {
            "audio_only": {"rx_kbps": m["wire"]["audio_only"]["rx_kbps"],
                           "rx_kbps_with_ip_udp": m["wire"]["audio_only"]["rx_kbps_with_ip_udp"],
                           "rx_packets_per_s": m["wire"]["audio_only"]["rx_packets_per_s"]},
            "audio_and_video": {"rx_kbps": m["wire"]["full"]["rx_kbps"],
                                "rx_kbps_with_ip_udp": m["wire"]["full"]["rx_kbps_with_ip_udp"],
                                "rx_packets_per_s": m["wire"]["full"]["rx_packets_per_s"]},
            "audio_only_video_packets": len(audio.handled["video"]),
        }
        resumes = []
        for _ in range(3 if self.quick else 8):
            await relay.call("pause", key="full", kind="video")
            await asyncio.sleep(0.5)
            full.keyframe_wait = asyncio.get_running_loop().create_future()
            start = time.perf_counter()
            await relay.call("resume", key="full", kind="video")
            try:
                arrived = await asyncio.wait_for(full.keyframe_wait, 5)
                resumes.append(arrived - start)
            except TimeoutError:
                self.ok = False
                self.problems.append("no keyframe within 5 s of a resume")
            await asyncio.sleep(0.2)
        out["resume"] = {"resumes": len(resumes), "p50_ms": pct(resumes, 0.5),
                         "max_ms": pct(resumes, 1.0),
                         "all_ms": [round(r * 1000, 1) for r in resumes]}
        await audio.close(relay)
        await full.close(relay)
        return out

    async def trunk(self, a: Relay, b: Relay, pub: Publisher) -> dict[str, Any]:
        offer = await a.call("offer", key="trunk", kinds=["audio", "video"])
        answer = await b.call("publish", offer=offer["offer"])
        await a.call("answer", key="trunk", answer=answer["answer"])
        subs: list[Subscriber] = []
        await self.add_subscribers(b, pub, subs, 5, "b", ["audio", "video"])
        await asyncio.sleep(self.settle_s)
        for s in subs:
            s.reset()
        a0, b0 = await a.call("stats"), await b.call("stats")
        t0 = time.perf_counter()
        await asyncio.sleep(self.window_s)
        a1, b1 = await a.call("stats"), await b.call("stats")
        seconds = time.perf_counter() - t0

        def delta(s0: dict[str, Any], s1: dict[str, Any], pc: str, counter: str) -> int:
            return int(s1["wire"][pc][counter] - s0["wire"][pc][counter])

        source = delta(a0, a1, "publish", "rx_bytes")
        trunk_tx = delta(a0, a1, "trunk", "tx_bytes")
        trunk_rx = delta(b0, b1, "publish", "rx_bytes")
        fanout = sum(delta(b0, b1, s.key, "tx_bytes") for s in subs)
        for s in subs:
            await s.close(b)
        await a.call("close", key="trunk")
        return {
            "subscribers_on_b": len(subs),
            "source_into_a_kbps": round(source * 8 / seconds / 1000, 1),
            "trunk_a_to_b_kbps": round(trunk_tx * 8 / seconds / 1000, 1),
            "trunk_received_by_b_kbps": round(trunk_rx * 8 / seconds / 1000, 1),
            "fanout_from_b_kbps": round(fanout * 8 / seconds / 1000, 1),
            "trunk_copies_per_source": round(trunk_tx / source, 3) if source else None,
            "fanout_copies_per_trunk_copy": round(fanout / trunk_rx, 2) if trunk_rx else None,
            "transit_publisher_a_b_subscriber": transit_summary(subs),
        }

    async def transcode_steps(self, relay: Relay, pub: Publisher) -> dict[str, Any]:
        subs: list[Subscriber] = []
        steps = []
        for n in self.args.transcode_steps:
            await self.add_subscribers(relay, pub, subs, n, "s", ["audio", "video"])
            await asyncio.sleep(self.settle_s)  # the per-subscriber encoders warm up too
            m = await self.measure(relay, subs, {"publisher": pub.pc}, forwarded=False)
            m["subscribers"] = n
            m.pop("transit")  # re-encoded payloads never match the publisher's
            m.pop("forwarded_packets_per_s")
            m.pop("forwarded_video_packets_per_s")
            m.pop("relay_dropped")
            m.pop("fanout_cpu_us_per_copy")
            m.pop("relay_residence")
            steps.append(m)
        for s in subs:
            await s.close(relay)
        return {"steps": steps}

    async def run(self) -> dict[str, Any]:
        from benchmarks._env import environment
        from meshnode.transport.ice import install_host_addresses

        install_host_addresses(("127.0.0.1",))
        load_start = [round(x, 2) for x in os.getloadavg()]
        args = self.args
        out: dict[str, Any] = {"benchmark": "media", "quick": self.quick,
                               "environment": environment(),
                               "setup": {"relay_cpu": args.relay_cpu, "load_cpu": args.load_cpu,
                                         "pinned": args.pinned, "video": f"{WIDTH}x{HEIGHT} VP8 "
                                         f"{FPS} fps at {args.video_kbps} kbps",
                                         "audio": "Opus (aiortc, 96 kbps target), tone + noise",
                                         "window_s": self.window_s, "settle_s": self.settle_s}}
        a, b, t = await asyncio.gather(
            Relay("a", "forward", args.relay_cpu, args.profile_relay).start(),
            Relay("b", "forward", args.relay_cpu).start(),
            Relay("transcode", "transcode", args.relay_cpu).start())
        try:
            out["per_copy_breakdown_us"] = await per_copy_breakdown(
                2000 if self.quick else 20000)
            pub = Publisher(args.video_kbps)
            await pub.connect(a)
            await asyncio.sleep(args.warmup)
            out["forward"] = await self.forward_steps(a, pub)
            out["low_bandwidth"] = await self.audio_only_and_resume(a, pub)
            out["trunk"] = await self.trunk(a, b, pub)
            out["forward_relay_codecs_created"] = (await a.call("stats"))["codecs_created"]
            if any(out["forward_relay_codecs_created"].values()):
                self.ok = False
                self.problems.append("the forwarding relay created a decoder or encoder")
            await pub.close()
            await asyncio.gather(a.stop(), b.stop())
            pub = Publisher(args.video_kbps)
            await pub.connect(t)
            await asyncio.sleep(args.warmup)
            out["transcode"] = await self.transcode_steps(t, pub)
            await pub.close()
        finally:
            await asyncio.gather(a.stop(), b.stop(), t.stop())
        # Other work on the machine shows here: compare runs only by same-run ratios.
        out["load_average"] = {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}
        out["summary"] = self.summary(out)
        out["problems"] = self.problems
        out["ok"] = self.ok
        return out

    def summary(self, out: dict[str, Any]) -> dict[str, Any]:
        by_path = {path: [s for s in out["forward"]["steps"]
                          if s["send_path"] == path or s["subscribers"] == 0]
                   for path in SEND_PATHS}
        steps = by_path["direct"]
        chain = by_path["aiortc_chain"]
        intercept, slope = fit([(s["subscribers"], s["relay_cpu_percent"]) for s in steps])
        _, chain_slope = fit([(s["subscribers"], s["relay_cpu_percent"]) for s in chain])
        _, chain_per_packet = fit([(s["forwarded_packets_per_s"], s["relay_cpu_percent"])
                                   for s in chain])
        largest = steps[-1]
        chain_largest = chain[-1]
        fwd_cpu = {s["subscribers"]: s["relay_cpu_percent"] for s in steps}
        tx_cpu = {s["subscribers"]: s["relay_cpu_percent"] for s in out["transcode"]["steps"]}
        common = sorted(n for n in fwd_cpu if n in tx_cpu and n > 0)
        # Compare where the baseline still keeps up (a saturated core drops frames, which
        # would understate what re-encoding costs); else at the smallest common N.
        unsaturated = [n for n in common if tx_cpu[n] < 90]
        ratio_n = (unsaturated or common or [None])[-1 if unsaturated else 0]
        _, per_packet = fit([(s["forwarded_packets_per_s"], s["relay_cpu_percent"])
                             for s in steps])
        _, tx_slope = fit(list(tx_cpu.items())) if len(tx_cpu) > 1 else (0.0, 0.0)
        low = out["low_bandwidth"]
        fanout = {path: [s["fanout_cpu_us_per_copy"] for s in by_path[path]
                         if s["fanout_cpu_us_per_copy"] is not None] for path in SEND_PATHS}
        fanout_us = {path: round(statistics.fmean(v), 2) if v else None
                     for path, v in fanout.items()}
        # The source's packets per second at each N (what each subscriber gets): on a busy
        # machine the publisher (on the load core) can fall behind at the larger N, and the
        # CPU slope against N, measured at a lower rate there, then flatters the relay. The
        # per-copy fit does not depend on the rate: at the source's full rate it gives the
        # subscribers a core serves. (Runs saved before ``source_packets_per_s`` existed:
        # the forwarded rate per subscriber.)
        rates = [s.get("source_packets_per_s") or s["forwarded_packets_per_s"]
                 / max(1, s["subscribers"]) for s in steps if s["subscribers"]]
        full_rate = max([*rates, *(s.get("source_packets_per_s") or 0 for s in steps)],
                        default=0.0)
        rate_spread = round(min(rates) / full_rate, 3) if rates and full_rate else None
        if rate_spread is not None and rate_spread < 0.9:
            self.problems.append(
                f"the publisher fell behind: {min(rates):.0f} to {full_rate:.0f} packets/s "
                "across the steps; `subscribers_per_core` (the slope against N) is not at one "
                "rate, `subscribers_per_core_at_full_rate` is")
        p99 = largest["transit"]["all"]["p99_ms"]
        chain_p99 = chain_largest["transit"]["all"]["p99_ms"]
        n_max = largest["subscribers"]
        # On a core of its own, the last copy of a video frame leaves this long after the
        # first: the frame's packets times N copies, at the measured CPU per copy.
        frame_fanout_ms = (round(largest["forwarded_video_packets_per_s"] / n_max / FPS * n_max
                                 * fanout_us["direct"] / 1000, 2)
                           if n_max and fanout_us["direct"] else None)
        return {
            "load_average": out["load_average"],
            "subscribers_per_core": round(100 / slope) if slope > 0 else None,
            "subscribers_per_core_after_ingest": round((100 - intercept) / slope)
            if slope > 0 else None,
            # 100 % over (CPU per forwarded copy x copies per subscriber per second).
            "subscribers_per_core_at_full_rate": round(1e6 / (per_packet * 1e4 * full_rate))
            if per_packet > 0 and full_rate else None,
            "forwarded_packets_per_s_per_subscriber_spread": rate_spread,
            "relay_cpu_percent_per_subscriber": round(slope, 3),
            "relay_cpu_percent_ingest": round(intercept, 2),
            "relay_cpu_us_per_forwarded_packet": round(per_packet * 1e4, 1),
            # CPU of the fan-out alone (this thread's time in Forwarder.on_packet per copy):
            # the steadiest figure on a shared machine.
            "fanout_cpu_us_per_copy": fanout_us["direct"],
            "aiortc_chain": {  # the old send path, measured in this run on the same connections
                "fanout_cpu_us_per_copy": fanout_us["aiortc_chain"],
                "subscribers_per_core": round(100 / chain_slope) if chain_slope > 0 else None,
                "relay_cpu_us_per_forwarded_packet": round(chain_per_packet * 1e4, 1),
                "added_latency_ms_p50": chain_largest["transit"]["all"]["p50_ms"],
                "added_latency_ms_p99": chain_p99,
                "added_latency_in_loop_ms_p50": chain_largest["transit"]["in_loop_arrival"][
                    "p50_ms"],
                "added_latency_in_loop_ms_p99": chain_largest["transit"]["in_loop_arrival"][
                    "p99_ms"],
                "relay_residence_ms_p50": chain_largest["relay_residence"]["p50_ms"],
                "relay_residence_ms_p99": chain_largest["relay_residence"]["p99_ms"],
            },
            "cpu_per_copy_ratio_direct_vs_aiortc_chain": round(per_packet / chain_per_packet, 3)
            if chain_per_packet > 0 else None,
            "fanout_cpu_ratio_direct_vs_aiortc_chain": round(
                fanout_us["direct"] / fanout_us["aiortc_chain"], 3)
            if fanout_us["direct"] and fanout_us["aiortc_chain"] else None,
            "added_latency_p99_ratio_direct_vs_aiortc_chain": round(p99 / chain_p99, 3)
            if p99 and chain_p99 else None,
            "forwarded_packets_per_s_per_subscriber": round(
                largest["forwarded_packets_per_s"] / largest["subscribers"], 1)
            if largest["subscribers"] else None,
            "subscriber_kbps": largest["subscriber_rx_kbps_mean"],
            # Publisher's sendto(2) -> the kernel's receive stamp on the subscriber's socket
            # (CLOCK_REALTIME both): the relay's socket queue, its work and its sendto, and
            # none of the load process's own event-loop queueing.
            "added_latency_ms_p50": largest["transit"]["all"]["p50_ms"],
            "added_latency_ms_p99": largest["transit"]["all"]["p99_ms"],
            "added_latency_at_subscribers": largest["subscribers"],
            # The old figure, for comparison: publisher's send in Python (before SRTP) ->
            # the subscriber's event loop handling the datagram; it holds the queueing of the
            # load process (VP8 encoding + N subscribers' DTLS/SRTP on one event loop).
            "added_latency_in_loop_ms_p50": largest["transit"]["in_loop_arrival"]["p50_ms"],
            "added_latency_in_loop_ms_p99": largest["transit"]["in_loop_arrival"]["p99_ms"],
            "added_latency_samples_without_kernel_stamp": largest["transit"][
                "without_kernel_stamp"],
            # The relay's own part of it: source datagram in -> copy handed to the kernel.
            "relay_residence_ms_p50": largest["relay_residence"]["p50_ms"],
            "relay_residence_ms_p99": largest["relay_residence"]["p99_ms"],
            "video_frame_fanout_ms_computed": frame_fanout_ms,
            "cpu_ratio_forward_vs_reencode": round(fwd_cpu[ratio_n] / tx_cpu[ratio_n], 3)
            if ratio_n is not None and tx_cpu[ratio_n] else None,
            "cpu_ratio_at_subscribers": ratio_n,
            "reencode_cpu_percent_per_subscriber": round(tx_slope, 2),
            "reencode_subscribers_per_core": round(100 / tx_slope, 1) if tx_slope > 0 else None,
            "audio_only_kbps": low["audio_only"]["rx_kbps"],
            "audio_and_video_kbps": low["audio_and_video"]["rx_kbps"],
            "trunk_copies_per_source": out["trunk"]["trunk_copies_per_source"],
            "resume_to_frame_ms": low["resume"]["p50_ms"],
            "targets": {
                "subscribers_per_core_at_least_200": slope > 0 and 100 / slope >= 200,
                "added_latency_p99_under_10ms": (largest["transit"]["all"]["p99_ms"] or 1e9)
                < 10,
                "audio_only_under_100kbps": low["audio_only"]["rx_kbps"] < 100,
                "one_copy_per_source_on_trunk": abs(
                    (out["trunk"]["trunk_copies_per_source"] or 0) - 1) < 0.1,
            },
        }


def steps_arg(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    parser.add_argument("--steps", type=steps_arg, default=None,
                        help="subscriber counts for forwarding (default 0,5,10,20; quick 0,8)")
    parser.add_argument("--transcode-steps", type=steps_arg, default=None,
                        help="subscriber counts for the MediaRelay baseline "
                        "(default 0,5,10; quick 8)")
    parser.add_argument("--video-kbps", type=int, default=1200,
                        help="publisher video bitrate (held; Opus adds ~100 kbps on the wire)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds after publishing")
    parser.add_argument("--relay-cpu", type=int, default=0, help="core the relays run on")
    parser.add_argument("--load-cpu", type=int, default=1,
                        help="core the publisher and subscribers run on")
    parser.add_argument("--keep-wire", action="store_true",
                        help="keep every subscriber's wire counters in the output")
    parser.add_argument("--profile-relay", metavar="FILE",
                        help="write the forwarding relay's cProfile stats to FILE (slows it)")
    parser.add_argument("--relay", choices=("forward", "transcode"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.relay:
        pin(args.relay_cpu)
        if args.profile_relay:
            import cProfile

            with cProfile.Profile() as profile:
                run(relay_main(args.relay))
            profile.dump_stats(args.profile_relay)
        else:
            run(relay_main(args.relay))
        return 0
    if args.steps is None:
        args.steps = [0, 8] if args.quick else [0, 5, 10, 20]
    if args.transcode_steps is None:
        args.transcode_steps = [8] if args.quick else [0, 5, 10]
    if args.warmup is None:
        args.warmup = 1.5 if args.quick else 3.0
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    args.pinned = (args.relay_cpu in usable and args.load_cpu in usable
                   and args.relay_cpu != args.load_cpu and pin(args.load_cpu))
    if not args.pinned:  # one core (or no affinity API): everything shares it
        args.relay_cpu = args.load_cpu = None
    out = run(Bench(args).run())
    print(json.dumps(out, indent=2, allow_nan=False, default=_json_default))
    return 0 if out["ok"] else 1


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(type(value))


if __name__ == "__main__":
    sys.exit(main())
