// meshnode browser client: voice and video, relayed by the node.
//
// Everything rides on the page's one RTCPeerConnection to its node; the page is always the
// offerer. It adds a sendonly transceiver when the microphone or camera starts (VP8 with
// temporal layers, scalabilityMode "L1T3", where the browser has them) and recvonly
// transceivers ("receive slots") when the node asks for them (media_renegotiate); each new
// offer goes to the node as a media_offer on the "client" channel and comes back as a
// media_answer. The node says which slot carries whose stream (media_streams); the page plays
// the audio and shows the video next to that person, and on their pointer in the 3D view.
// The JSON messages are documented in meshnode/web/media.py.
//
// While the microphone is on, its level (the sender's media-source energy, getStats) says
// whether the person is speaking; app.js puts that in their presence (`speaking`), which
// lights their avatar's ring on every page.

const STATS_INTERVAL_MS = 1000;
const LEVEL_INTERVAL_MS = 200; // how often the microphone's level is read
const SPEAKING_RMS = 0.01; // mean level (0..1) over a reading above which one is speaking
const SPEAKING_HOLD_MS = 1500; // speaking this long after the last loud reading: no flicker between words
const AUDIO_ONLY_KEY = "meshnode-audio-only"; // this tab's choice, kept across reloads

export function createMedia({
  getPc, send, request, personName, onStreamsChanged, onSpeakingChanged, showMessage,
}) {
  let hello = null; // the node's media_hello
  let streams = []; // [{mid, kind, source, publisher, layer}] from media_streams
  let negotiation = Promise.resolve();
  const local = { audio: null, video: null }; // {transceiver, track}
  let prefs = { audio_only: storedAudioOnly(), max_kbps: null };
  const people = new Map(); // publisher key -> {box, video, audio, videoMid, audioMid}
  let statsRows = []; // the last stats, one row per receiving stream
  const lastBytes = new Map(); // mid -> [bytesReceived, timestamp]
  let statsTimer = null;
  let speaking = false; // the local person, by their microphone's level
  let loudAt = -Infinity; // performance.now() of the last loud reading
  let lastEnergy = null; // [totalAudioEnergy, totalSamplesDuration] at the last reading
  let levelTimer = null;

  // ---------------------------------------------------------------- negotiation

  function negotiate() {
    const run = async () => {
      const pc = getPc();
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await request({ t: "media_offer", sdp: pc.localDescription.sdp });
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      attachStreams();
    };
    const next = negotiation.then(run, run);
    negotiation = next.catch(async (err) => {
      showMessage(`Voice and video: ${err.message}`);
      const pc = getPc();
      if (pc && pc.signalingState === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      }
    });
    return next;
  }

  function receiveSlots(kind) {
    return getPc().getTransceivers().filter(
      (t) => t.receiver.track.kind === kind && t.direction === "recvonly" && !t.stopped,
    ).length;
  }

  function onRenegotiate(msg) {
    const pc = getPc();
    for (const kind of ["audio", "video"]) {
      const want = Math.min(Number(msg[kind]) || 0, 16);
      for (let n = receiveSlots(kind); n < want; n++) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    negotiate().catch(() => {});
  }

  // ---------------------------------------------------------------- publishing

  function vp8First(transceiver) {
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs || [];
    const rank = (c) => (/vp8/i.test(c.mimeType) ? 0 : /rtx|red|ulpfec/i.test(c.mimeType) ? 1 : 2);
    const sorted = [...codecs].sort((a, b) => rank(a) - rank(b));
    try {
      transceiver.setCodecPreferences(sorted);
    } catch {
      // the browser's own order then
    }
  }

  function addSender(kind, track) {
    const pc = getPc();
    if (kind === "video") {
      try {
        // Temporal layers let the node send a weak peer every 4th frame without re-encoding.
        const t = pc.addTransceiver(track, {
          direction: "sendonly",
          sendEncodings: [{ scalabilityMode: "L1T3" }],
        });
        vp8First(t);
        return t;
      } catch {
        // no scalabilityMode here: one layer
      }
    }
    const t = pc.addTransceiver(track, { direction: "sendonly" });
    if (kind === "video") vp8First(t);
    return t;
  }

  function publishedTracks() {
    const out = [];
    for (const kind of ["audio", "video"]) {
      const l = local[kind];
      if (l && l.track && l.transceiver.mid !== null) out.push({ mid: l.transceiver.mid, kind });
    }
    return out;
  }

  async function setSending(kind, on) {
    if (!hello || !hello.publish) throw new Error("this page may not publish voice or video here");
    const l = local[kind];
    if (on) {
      if (l && l.track) return true;
      const constraints = kind === "audio"
        ? { audio: true }
        : { video: { width: 640, height: 360, frameRate: 15 } };
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      const track = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
      if (l) {
        await l.transceiver.sender.replaceTrack(track);
        l.track = track;
      } else {
        local[kind] = { transceiver: addSender(kind, track), track };
        await negotiate();
      }
    } else {
      if (!l || !l.track) return false;
      await l.transceiver.sender.replaceTrack(null);
      l.track.stop();
      l.track = null;
    }
    try {
      await request({ t: "media_publish", tracks: publishedTracks() });
    } catch (err) {
      if (on) {
        // The node would not take it: stop sending it.
        const now = local[kind];
        await now.transceiver.sender.replaceTrack(null);
        now.track.stop();
        now.track = null;
      }
      renderButtons();
      throw err;
    }
    if (kind === "audio") (on ? startSpeaking : stopSpeaking)();
    renderButtons();
    return on;
  }

  // ---------------------------------------------------------------- speaking

  function setSpeaking(on) {
    if (on === speaking) return;
    speaking = on;
    if (onSpeakingChanged) onSpeakingChanged(on);
  }

  // The microphone's mean level since the last reading, from the energy counters (a short
  // loud moment between two readings still counts); null while it has none yet.
  async function readLevel(sender) {
    const report = await sender.getStats();
    let level = null;
    report.forEach((s) => {
      if (s.type !== "media-source" || s.kind !== "audio") return;
      const now = [s.totalAudioEnergy, s.totalSamplesDuration];
      if (typeof now[0] !== "number" || typeof now[1] !== "number") {
        level = typeof s.audioLevel === "number" ? s.audioLevel : null;
        return;
      }
      if (lastEnergy && now[1] > lastEnergy[1]) {
        level = Math.sqrt(Math.max(0, now[0] - lastEnergy[0]) / (now[1] - lastEnergy[1]));
      }
      lastEnergy = now;
    });
    return level;
  }

  async function measureSpeaking() {
    const l = local.audio;
    if (!l || !l.track) {
      stopSpeaking();
      return;
    }
    let level = null;
    try {
      level = await readLevel(l.transceiver.sender);
    } catch {
      // no stats this time: keep what we had until the hold runs out
    }
    const now = performance.now();
    if (level !== null && level > SPEAKING_RMS) loudAt = now;
    setSpeaking(!!(local.audio && local.audio.track) && now - loudAt < SPEAKING_HOLD_MS);
  }

  function startSpeaking() {
    if (levelTimer === null) levelTimer = setInterval(measureSpeaking, LEVEL_INTERVAL_MS);
  }

  function stopSpeaking() {
    if (levelTimer !== null) clearInterval(levelTimer);
    levelTimer = null;
    lastEnergy = null;
    loudAt = -Infinity;
    setSpeaking(false);
  }

  function storedAudioOnly() {
    try {
      return sessionStorage.getItem(AUDIO_ONLY_KEY) === "1";
    } catch {
      return false;
    }
  }

  async function setPrefs(next) {
    prefs = { ...prefs, ...next };
    try {
      sessionStorage.setItem(AUDIO_ONLY_KEY, prefs.audio_only ? "1" : "0");
    } catch {
      // no storage: this page load only
    }
    renderButtons();
    await request({ t: "media_prefs", audio_only: !!prefs.audio_only, max_kbps: prefs.max_kbps ?? null });
  }

  // ---------------------------------------------------------------- receiving

  function trackOf(mid) {
    const t = getPc().getTransceivers().find((x) => x.mid === mid);
    return t ? t.receiver.track : null;
  }

  function personMedia(key) {
    let p = people.get(key);
    if (!p) {
      const box = document.createElement("span");
      box.className = "person-media";
      const video = document.createElement("video");
      video.autoplay = true;
      video.muted = true; // the sound comes from the audio element
      video.playsInline = true;
      video.hidden = true;
      const audio = document.createElement("audio");
      audio.autoplay = true;
      box.append(video, audio);
      p = { box, video, audio, videoMid: null, audioMid: null };
      people.set(key, p);
    }
    return p;
  }

  function setSource(el, track) {
    const current = el.srcObject && el.srcObject.getTracks()[0];
    if (current === track) return;
    el.srcObject = track ? new MediaStream([track]) : null;
    if (track) el.play().catch(() => {}); // autoplay may wait for a click; the video is muted
  }

  function attachStreams() {
    const byPerson = new Map();
    for (const s of streams) {
      if (!byPerson.has(s.publisher)) byPerson.set(s.publisher, {});
      byPerson.get(s.publisher)[s.kind] = s.mid;
    }
    for (const [key, p] of people) {
      if (!byPerson.has(key)) {
        setSource(p.video, null);
        setSource(p.audio, null);
        p.box.remove();
        people.delete(key);
      }
    }
    for (const [key, mids] of byPerson) {
      const p = personMedia(key);
      p.videoMid = mids.video ?? null;
      p.audioMid = mids.audio ?? null;
      setSource(p.video, p.videoMid ? trackOf(p.videoMid) : null);
      setSource(p.audio, p.audioMid ? trackOf(p.audioMid) : null);
      p.video.hidden = !p.videoMid;
    }
    onStreamsChanged();
  }

  async function collectStats() {
    const pc = getPc();
    if (!pc) return [];
    const report = await pc.getStats();
    const byMid = new Map(streams.map((s) => [s.mid, s]));
    const rows = [];
    report.forEach((s) => {
      if (s.type !== "inbound-rtp" || !byMid.has(s.mid)) return;
      const stream = byMid.get(s.mid);
      const prev = lastBytes.get(s.mid);
      let kbps = 0;
      if (prev && s.timestamp > prev[1]) kbps = ((s.bytesReceived - prev[0]) * 8) / (s.timestamp - prev[1]);
      lastBytes.set(s.mid, [s.bytesReceived, s.timestamp]);
      rows.push({
        mid: s.mid,
        kind: s.kind,
        publisher: stream.publisher,
        source: stream.source,
        layer: stream.layer,
        kbps: Math.max(0, Math.round(kbps)),
        bytesReceived: s.bytesReceived || 0,
        packetsReceived: s.packetsReceived || 0,
        packetsLost: s.packetsLost || 0,
        framesDecoded: s.framesDecoded || 0,
        framesPerSecond: s.framesPerSecond || 0,
        freezeCount: s.freezeCount || 0,
        frameWidth: s.frameWidth || 0,
        concealedSamples: s.concealedSamples || 0,
        totalSamplesReceived: s.totalSamplesReceived || 0,
        timestamp: s.timestamp,
      });
    });
    return rows;
  }

  function renderReceiving() {
    const body = document.getElementById("receiving");
    if (!body) return;
    const rows = statsRows.map((r) => {
      const tr = document.createElement("tr");
      const fps = r.kind === "video" ? `${Math.round(r.framesPerSecond)} fps` : "";
      const layer = r.kind === "video" && r.layer !== null && r.layer !== undefined ? ` TL${r.layer}` : "";
      for (const text of [personName(r.publisher), r.kind, `${r.kbps} kbps`, fps + layer]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 4;
      td.className = "empty";
      td.textContent = hello && !hello.enabled ? "This node relays no voice or video here." : "Nothing.";
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    const total = statsRows.reduce((n, r) => n + r.kbps, 0);
    const el = document.getElementById("receiving-total");
    if (el) el.textContent = statsRows.length ? `${total} kbps in all` : "";
  }

  async function refreshStats() {
    try {
      statsRows = await collectStats();
    } catch {
      statsRows = [];
    }
    renderReceiving();
  }

  // ---------------------------------------------------------------- page controls

  function renderButtons() {
    const mic = document.getElementById("mic-button");
    const cam = document.getElementById("cam-button");
    const can = !!(hello && hello.publish);
    if (mic) {
      mic.disabled = !can;
      mic.textContent = local.audio && local.audio.track ? "Microphone off" : "Microphone on";
      mic.setAttribute("aria-pressed", String(!!(local.audio && local.audio.track)));
    }
    if (cam) {
      cam.disabled = !can;
      cam.textContent = local.video && local.video.track ? "Camera off" : "Camera on";
      cam.setAttribute("aria-pressed", String(!!(local.video && local.video.track)));
    }
    const only = document.getElementById("audio-only");
    if (only) {
      only.disabled = !(hello && hello.receive);
      only.checked = !!prefs.audio_only;
    }
  }

  function initControls() {
    const toggle = (kind) => async () => {
      try {
        await setSending(kind, !(local[kind] && local[kind].track));
      } catch (err) {
        showMessage(`Could not switch the ${kind === "audio" ? "microphone" : "camera"}: ${err.message}`);
      }
      renderButtons();
    };
    document.getElementById("mic-button")?.addEventListener("click", toggle("audio"));
    document.getElementById("cam-button")?.addEventListener("click", toggle("video"));
    document.getElementById("audio-only")?.addEventListener("change", (ev) => {
      setPrefs({ audio_only: ev.target.checked }).catch((err) => showMessage(err.message));
    });
    renderButtons();
  }

  // ---------------------------------------------------------------- from the node

  function onMessage(msg) {
    switch (msg.t) {
      case "media_hello":
        hello = msg;
        renderButtons();
        renderReceiving();
        if (statsTimer === null) statsTimer = setInterval(refreshStats, STATS_INTERVAL_MS);
        // The node plans nothing for this page before it knows what the page wants.
        if (hello.enabled) setPrefs({}).catch((err) => showMessage(`Voice and video: ${err.message}`));
        return true;
      case "media_renegotiate":
        onRenegotiate(msg);
        return true;
      case "media_streams":
        streams = Array.isArray(msg.streams) ? msg.streams : [];
        attachStreams();
        return true;
      default:
        return false;
    }
  }

  // The page's connection was replaced (failover): the new node sends its own media_hello;
  // nothing sent or received rode on the new connection yet.
  function reset() {
    hello = null;
    streams = [];
    negotiation = Promise.resolve();
    for (const kind of ["audio", "video"]) {
      if (local[kind] && local[kind].track) local[kind].track.stop();
      local[kind] = null;
    }
    lastBytes.clear();
    statsRows = [];
    stopSpeaking();
    attachStreams();
    renderButtons();
    renderReceiving();
  }

  return {
    onMessage,
    initControls,
    reset,
    // The media box of a person (a video and an audio element), or null if they send nothing.
    elementFor: (key) => (people.has(key) ? people.get(key).box : null),
    // The video element showing a person, or null.
    videoFor: (key) => {
      const p = people.get(key);
      return p && p.videoMid ? p.video : null;
    },
    api: {
      hello: () => (hello ? { ...hello } : null),
      microphone: (on) => setSending("audio", on !== false),
      camera: (on) => setSending("video", on !== false),
      setPrefs,
      prefs: () => ({ ...prefs }),
      streams: () => structuredClone(streams),
      stats: collectStats,
      published: () => ({
        audio: !!(local.audio && local.audio.track),
        video: !!(local.video && local.video.track),
        scalabilityMode: local.video
          ? local.video.transceiver.sender.getParameters().encodings?.[0]?.scalabilityMode ?? null
          : null,
      }),
      negotiated: () => negotiation.then(() => true),
      // Whether the local person is speaking (microphone on and loud lately), as their presence says.
      speaking: () => speaking,
      // The page's connection to its node (media and data share it), for inspection.
      connection: () => getPc(),
    },
  };
}
