// meshnode browser client: a thin client of one node, with its person's own key.
//
// The page does not run the scene CRDT. It opens a WebRTC data channel "client" to the node
// that served it, shows the state the node pushes, and sends edit requests. The person's
// Ed25519 key lives in this browser (identity.js): the page proves it to the node (identify),
// the node drafts each edit as a change authored by the person, and the page checks the
// drafted bytes against the edit it asked for (wire.js) before signing them. Presence is
// signed by the person too. The JSON protocol is documented in meshnode/web/session.py.
//
// Component convention (what this page reads and writes; other components are kept as is):
//   transform  {position: [x, y, z]}   numbers, relative to the parent entity
//   name       {value: "text"}         the label (name.text is read too, for older scenes)
//   appearance {color: "#rrggbb"}
//
//   op         {id: "hex"}                set by this page on the entities it creates: a create
//                                          redelivered after a failover is recognised by it
//
// Failover: the page asks its node for the room's other hosts (GET /api/browser/hosts), and
// after a failover asks the node it moved to (cross-origin, under the offer's rule).
// When its node dies (the data channel closes, or the connection stays "disconnected" for
// DISCONNECTED_GRACE_MS), it offers to those hosts in turn (cross-origin: a node lets the
// pages of its room's other hosts in), round-robin with a bounded backoff, and redelivers the
// edits no node has acknowledged: those the new host's state already shows are settled, the
// others are sent again. Edits wait; none is lost or made twice.
//
// For automation (tests), window.meshnode = {ready, state(), presence(), info(), privacy(), identity(),
// exportIdentity(passphrase), importIdentity(file, passphrase), people(), me(), move(dx, dz),
// createEntity(parent, components) -> Promise<id>, setField(id, component, field, value),
// moveEntity(id, parent), deleteEntity(id), setPresence(fields), onChange(fn), view,
// connection() -> {url, hosts, failovers}, media} (media: see media.js).

import { createMedia } from "./media.js";
import * as ident from "./identity.js";
import { fromB64, b64, keyOfPeerId, fromHex } from "./wire.js";
import { createAvatars, createWalker } from "./avatars.js";

const PRESENCE_INTERVAL_MS = 250; // at most 4 presence updates a second
const GATHER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 20000;
const DISCONNECTED_GRACE_MS = 3000;
const HOSTS_REFRESH_MS = 10000;
const FAILOVER_WELCOME_MS = 10000;
const BACKOFF_MS = [250, 500, 1000, 2000];

// ------------------------------------------------------------------ connection and state

let scene = {}; // the last state the node pushed: SceneReplica.state()
let presence = {}; // PeerID -> presence fields
let info = null; // {room, room_name, node, session, peer_id, did, role}
let challenge = null; // the welcome's, signed to identify
let authors = {}; // entity ID -> PeerID of its last writer (the node's "authors" message)
let privacyShown = { private: false }; // the node's last "privacy" (session.py documents it)
let presenceKey = null; // a private room's {epoch, key} (bytes), from the node
const TAB = crypto.getRandomValues(new Uint32Array(2)).join("-"); // this page load
const partial = { state: null, presence: null };
let welcomed = false;
let pc = null;
let channel = null;
let nextReq = 1;
const pending = new Map(); // req -> {resolve, reject, msg}: not yet acknowledged
let room = null; // hex ID
let iceServers = [];
let nodeUrl = ""; // "" while on the node that served the page, else the host's origin
let hosts = []; // the room's other hosts' URLs (failover candidates)
let failovers = 0;
let failingOver = false;
let welcomeWaiter = null;
const changeListeners = new Set();

let readyResolve;
let readyReject;
const ready = new Promise((resolve, reject) => {
  readyResolve = resolve;
  readyReject = reject;
});
ready.catch(() => {}); // reported through the status line; callers still see the rejection

function send(msg) {
  if (!channel || channel.readyState !== "open") throw new Error("not connected to the node");
  channel.send(JSON.stringify(msg));
}

function request(msg) {
  return new Promise((resolve, reject) => {
    const req = nextReq++;
    pending.set(req, { resolve, reject, msg });
    try {
      send({ ...msg, req });
    } catch (err) {
      if (!failingOver) {
        pending.delete(req);
        reject(err);
      } // else kept: sent to the next host
    }
  });
}

function settle(req, ok, msg) {
  const waiter = pending.get(req);
  if (!waiter) return;
  pending.delete(req);
  if (ok) waiter.resolve(msg);
  else {
    const text = msg.error || "the node refused the request";
    const err = new Error(msg.reason && !text.includes(msg.reason) ? `${text} (${msg.reason})` : text);
    err.reason = msg.reason || null;
    waiter.reject(err);
  }
}

function takeState(msg) {
  partial.state = Object.assign(partial.state || {}, msg.state || {});
  if (msg.more) return;
  scene = partial.state;
  partial.state = null;
  changed();
  if (challenge) {
    const c = challenge;
    challenge = null;
    identify(c).catch((err) => failAll(`could not identify: ${err.message}`));
  }
}

// Prove the person's key to the node (a signature of its challenge) and present the invite.
async function identify(c) {
  const me = await ident.loadIdentity({ exportable: identityWanted() === "exportable" });
  const sig = await ident.signIdentify(fromHex(info.room), keyOfPeerId(info.node), c);
  const msg = { t: "identify", peer: me.peer_id, sig: b64(sig) };
  const { invite } = credentials();
  if (invite) msg.invite = invite;
  send(msg);
}

function identityWanted() {
  return new URLSearchParams(location.search).get("identity");
}

function onIdentified(msg) {
  info = { ...info, peer_id: msg.peer, did: msg.did, role: msg.role };
  // The node may have said who holds keys before it said who we are: mark our own line now.
  if (privacyShown.private) showPrivacy(privacyShown);
  if (msg.problem) showMessage(`Not admitted: ${msg.problem}`);
  showConnected();
  if (welcomeWaiter) {
    welcomeWaiter();
    welcomeWaiter = null;
  }
  if (!welcomed) {
    welcomed = true;
    readyResolve({ ...info });
  }
  changed();
  schedulePresence();
}

// The node drafted the change for one of our edits: sign it if it is that edit (and its seq
// is above every seq this person signed here), else refuse (identity.js, wire.js).
async function onSignRequest(msg) {
  const waiter = pending.get(msg.req);
  let answer;
  if (!waiter || waiter.msg.t === undefined || waiter.msg.t.startsWith("media_")) {
    answer = { t: "sign_refused", sreq: msg.sreq, reason: "unknown_request" };
  } else {
    let out;
    try {
      // A private room's draft comes with its epoch's secret and creating change, to open
      // and check the sealed ops (docs/protocol.md, "Browser signing in private rooms").
      const sealed = msg.sealed
        ? { secret: fromB64(msg.sealed.secret), epoch: fromB64(msg.sealed.epoch) }
        : null;
      out = await ident.signDraft(info.room, fromHex(info.room), fromB64(msg.body), waiter.msg,
        TAB, msg.req, sealed);
    } catch (err) {
      out = { refused: "mismatch", detail: err.message };
    }
    if (out.sig) answer = { t: "signed", sreq: msg.sreq, sig: b64(out.sig) };
    else {
      answer = { t: "sign_refused", sreq: msg.sreq, reason: out.refused };
      if (out.seq) answer.seq = out.seq;
      if (out.changes) answer.changes = out.changes.map((c) => b64(c));
      if (out.detail) console.warn(`meshnode: refused to sign: ${out.detail}`);
    }
  }
  try {
    send(answer);
  } catch {
    // lost the node: the failover redelivers the edit
  }
}

function onMessage(data) {
  if (typeof data !== "string") return;
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    console.warn("meshnode: a message from the node is not JSON");
    return;
  }
  switch (msg.t) {
    case "welcome":
      info = { ...(info || {}), room: msg.room, room_name: msg.room_name, node: msg.node || msg.me,
        session: msg.session };
      challenge = msg.challenge ? fromB64(msg.challenge) : null;
      presence = msg.presence || {};
      presenceKey = null; // a (new) node gives its own after the page identifies
      showPrivacy(msg.privacy || { private: false });
      takeState(msg);
      break;
    case "authors":
      authors = msg.authors || {};
      changed();
      break;
    case "identified":
      onIdentified(msg);
      break;
    case "sign":
      onSignRequest(msg);
      break;
    case "state":
      takeState(msg);
      break;
    case "delta":
      for (const [id, entity] of Object.entries(msg.set || {})) scene[id] = entity;
      for (const id of msg.del || []) delete scene[id];
      if (!msg.more) changed();
      break;
    case "presence":
      partial.presence = Object.assign(partial.presence || {}, msg.presence || {});
      if (!msg.more) {
        presence = partial.presence;
        partial.presence = null;
        changed();
      }
      break;
    case "privacy":
      showPrivacy(msg.privacy || { private: false });
      break;
    case "presence_key":
      presenceKey = msg.epoch && msg.key ? { epoch: fromB64(msg.epoch), key: fromB64(msg.key) } : null;
      if (presenceKey) schedulePresence();
      break;
    case "ack":
      settle(msg.req, msg.ok === true, msg);
      break;
    case "error":
      if (msg.req !== null && msg.req !== undefined) settle(msg.req, false, msg);
      else showMessage(`The node says: ${msg.error}`);
      break;
    case "media_answer":
      settle(msg.req, true, msg);
      break;
    case "media_refused":
      if (msg.req !== null && msg.req !== undefined) settle(msg.req, false, msg);
      else showMessage(`Voice and video: ${msg.error}`);
      break;
    default:
      if (!media.onMessage(msg)) console.warn("meshnode: unknown message type", msg.t);
  }
}

function failAll(reason) {
  const err = new Error(reason);
  for (const waiter of pending.values()) waiter.reject(err);
  pending.clear();
  if (!welcomed) readyReject(err);
  setStatus("failed", reason);
}

// What this page may prove to its node: an invite (`#invite=mninv1...` in the address: a
// fragment never reaches a server) or the operator's admin token (kept in sessionStorage by
// the status page, `meshnode status --open`). Both stay in this tab's sessionStorage and
// leave the address bar at once. Without them a page gets what the room gives anyone.
function credentials() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromHash = params.get("invite");
  if (fromHash) {
    sessionStorage.setItem("meshnode-invite", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  // An invite link (`/?room=...&invite=mninv1...`): the person's key redeems it.
  const query = new URLSearchParams(location.search);
  const fromQuery = query.get("invite");
  if (fromQuery) {
    sessionStorage.setItem("meshnode-invite", fromQuery);
    query.delete("invite");
    history.replaceState(null, "", `${location.pathname}?${query}${location.hash}`);
  }
  return {
    invite: sessionStorage.getItem("meshnode-invite"),
    adminToken: sessionStorage.getItem("meshnode-admin-token"),
  };
}

async function pickRoom() {
  const fromUrl = new URLSearchParams(location.search).get("room");
  if (fromUrl) return fromUrl;
  const resp = await fetch("/api/default-room");
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok || !body.room) throw new Error(body.error || "this node names no default room");
  return body.room;
}

function gatheringComplete(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS); // send what we have by then
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function connect() {
  room = await pickRoom();
  try {
    const resp = await fetch("/api/ice");
    if (resp.ok) iceServers = (await resp.json()).iceServers || [];
  } catch {
    // no STUN/TURN: host candidates only
  }
  await openSession("");
  ready.then(() => learnHosts());
}

// One connection to the node at `base` ("": the page's own); resolves once the offer is
// answered (the welcome follows on the channel).
async function openSession(base) {
  // One transport for the data channel and every media m-line added later (media.js).
  const peer = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
  const ch = peer.createDataChannel("client", { ordered: true });
  if (pc) {
    pc.close();
    media.reset(); // what was sent and received rode on the old connection
  }
  pc = peer;
  channel = ch;
  const lost = (why) => {
    if (ch !== channel) return; // an older connection
    if (welcomed) failOver(why);
    else failAll(why);
  };
  let graceTimer = null;
  ch.onmessage = (ev) => {
    if (ch === channel) onMessage(ev.data);
  };
  ch.onclose = () => lost("the connection to the node closed");
  peer.onconnectionstatechange = () => {
    clearTimeout(graceTimer);
    if (peer.connectionState === "failed") lost("the connection to the node failed");
    else if (peer.connectionState === "disconnected")
      graceTimer = setTimeout(() => lost("the node stopped answering"), DISCONNECTED_GRACE_MS);
  };
  await peer.setLocalDescription(await peer.createOffer());
  await gatheringComplete(peer);
  const offer = { room, sdp: peer.localDescription.sdp };
  const headers = { "Content-Type": "application/json" };
  const { invite, adminToken } = credentials();
  if (invite) offer.invite = invite;
  // The admin token proves the operator of the page's own node only: never sent elsewhere.
  if (adminToken && !base) headers.Authorization = `Bearer ${adminToken}`;
  const resp = await fetch(`${base}/api/browser/offer`, {
    method: "POST",
    headers,
    body: JSON.stringify(offer),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`the node refused to connect (${resp.status}): ${body.error || ""}`);
  await peer.setRemoteDescription({ type: "answer", sdp: body.sdp });
}

// Ask the node the page is connected to (its own, or the host it failed over to) for the
// room's hosts now and every HOSTS_REFRESH_MS, and at once after a failover: the new node may
// know hosts the dead one never named.
async function learnHosts() {
  for (;;) {
    await refreshHosts();
    await new Promise((r) => setTimeout(r, HOSTS_REFRESH_MS));
  }
}

async function refreshHosts() {
  const base = nodeUrl; // "" : the page's own node
  try {
    const headers = {};
    const { invite, adminToken } = credentials();
    if (invite) headers["Meshnode-Invite"] = invite;
    if (adminToken && !base) headers.Authorization = `Bearer ${adminToken}`; // never cross-origin
    const resp = await fetch(`${base}/api/browser/hosts?room=${room}`, { headers });
    if (resp.ok) {
      const found = [];
      for (const u of (await resp.json()).hosts || []) {
        const url = hostOrigin(u);
        if (url && url !== location.origin && !found.includes(url)) found.push(url);
      }
      if (base && !found.includes(base)) found.push(base); // the node we are on
      for (const u of hosts) if (!found.includes(u)) found.push(u); // keep those seen once
      hosts = found.slice(0, 32);
    }
  } catch {
    // the node is busy or gone: the next round, or the failover, sees
  }
}

function hostOrigin(u) {
  try {
    const url = new URL(u);
    return url.protocol === "http:" || url.protocol === "https:" ? url.origin : null;
  } catch {
    return null;
  }
}

// The node is gone: offer to the room's other hosts, round-robin after the one lost (the
// lost one last: it may come back), with a bounded backoff between rounds, until one welcomes
// us; then redeliver what no node acknowledged.
async function failOver(why) {
  if (failingOver) return;
  failingOver = true;
  setStatus("connecting", `reconnecting… (${why})`);
  const lost = nodeUrl || location.origin;
  for (let round = 0; ; round++) {
    const all = [location.origin, ...hosts.filter((u) => u !== location.origin)];
    const i = all.indexOf(lost);
    const order = [...all.slice(i + 1), ...all.slice(0, i + 1)];
    for (const url of order) {
      try {
        const welcomed = new Promise((resolve, reject) => {
          welcomeWaiter = resolve;
          setTimeout(() => reject(new Error("no welcome")), FAILOVER_WELCOME_MS);
        });
        welcomed.catch(() => {}); // awaited below unless the offer fails first
        await openSession(url === location.origin ? "" : url);
        await welcomed;
        nodeUrl = url === location.origin ? "" : url;
        failovers += 1;
        failingOver = false;
        setStatus("connected", `connected to ${url}`);
        redeliver();
        refreshHosts(); // from the new node
        return;
      } catch (err) {
        welcomeWaiter = null;
        console.info(`meshnode: failover to ${url}: ${err.message}`);
      }
    }
    await new Promise((r) => setTimeout(r, BACKOFF_MS[Math.min(round, BACKOFF_MS.length - 1)]));
  }
}

// After a failover: settle the unacknowledged edits the new host's state already shows (the
// dead node applied them and they reached this one), send the others again (same req).
function redeliver() {
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  for (const [req, { msg }] of [...pending.entries()].sort((a, b) => a[0] - b[0])) {
    let done = false;
    let made = null;
    if (msg.t.startsWith("media_")) {
      // About the old connection's media lines: the new node knows none of them.
      settle(req, false, { error: "the connection to the node was replaced" });
      continue;
    }
    if (msg.t === "create") {
      const tag = msg.components.op && msg.components.op.id;
      made = Object.keys(scene).find((id) => {
        const op = scene[id].components && scene[id].components.op;
        return op && op.id === tag;
      });
      done = made !== undefined;
    } else if (msg.t === "set") {
      const comp = scene[msg.id] && scene[msg.id].components[msg.component];
      done = comp !== undefined && same(comp[msg.field], msg.value);
    } else if (msg.t === "move") {
      done = scene[msg.id] !== undefined && scene[msg.id].parent === msg.parent;
    } else if (msg.t === "delete") {
      done = !(msg.id in scene);
    }
    if (done) settle(req, true, made ? { id: made } : {});
    else {
      try {
        send({ ...msg, req });
      } catch {
        return; // lost again: the next failover redelivers
      }
    }
  }
}

// ------------------------------------------------------------------ reading entities

function entityName(id, entity) {
  const n = entity && entity.components && entity.components.name;
  if (n && typeof n.value === "string" && n.value) return n.value;
  if (n && typeof n.text === "string" && n.text) return n.text;
  return shortId(id);
}

function entityPosition(entity) {
  const t = entity && entity.components && entity.components.transform;
  const p = t && t.position;
  if (Array.isArray(p) && p.length === 3 && p.every((v) => typeof v === "number" && isFinite(v)))
    return p;
  return [0, 0, 0];
}

function entityColor(id, entity) {
  const a = entity && entity.components && entity.components.appearance;
  if (a && typeof a.color === "string" && /^#[0-9a-fA-F]{6}$/.test(a.color)) return a.color;
  return colorFor(id);
}

function colorFor(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  const hue = h % 360;
  return hslToHex(hue, 0.55, 0.55);
}

function hslToHex(h, s, l) {
  const f = (n) => {
    const k = (n + h / 30) % 12;
    const c = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

function shortId(id) {
  if (id === "root") return "root";
  const slash = id.lastIndexOf("/");
  const peer = id.slice(0, slash);
  return `${peer.slice(-6)}/${id.slice(slash + 1)}`;
}

function childrenMap() {
  const children = new Map();
  for (const [id, entity] of Object.entries(scene)) {
    if (!children.has(entity.parent)) children.set(entity.parent, []);
    children.get(entity.parent).push(id);
  }
  for (const ids of children.values())
    ids.sort((a, b) => entityName(a, scene[a]).localeCompare(entityName(b, scene[b])) ||
      (a < b ? -1 : a > b ? 1 : 0));
  return children;
}

function treeOrder() {
  // [id, depth] in depth-first order; entities whose parent is missing go under the root.
  const children = childrenMap();
  const out = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    for (const id of children.get(parent) || []) {
      if (seen.has(id)) continue;
      seen.add(id);
      out.push([id, depth]);
      walk(id, depth + 1);
    }
  };
  walk("root", 0);
  for (const id of Object.keys(scene)) if (!seen.has(id)) {
    seen.add(id);
    out.push([id, 0]);
    walk(id, 1);
  }
  return out;
}

function descendants(id) {
  const children = childrenMap();
  const out = new Set([id]);
  const stack = [id];
  while (stack.length) for (const c of children.get(stack.pop()) || []) {
    if (!out.has(c)) {
      out.add(c);
      stack.push(c);
    }
  }
  return out;
}

// ------------------------------------------------------------------ change fan-out

let uiQueued = false;

function changed() {
  if (!uiQueued) {
    uiQueued = true;
    setTimeout(() => {
      uiQueued = false;
      refreshUi();
    }, 0);
  }
  for (const fn of changeListeners) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

// ------------------------------------------------------------------ page UI

const $ = (id) => document.getElementById(id);
let selected = null;
let myName = "";
let myPointer = null;

function setStatus(kind, text) {
  const el = $("status");
  if (!el) return;
  el.className = `status ${kind}`;
  el.textContent = text;
}

function showConnected() {
  setStatus("connected", "connected");
  $("room-name").textContent = info.room_name || "room";
  document.title = `${info.room_name || "room"} · meshnode`;
  const who = info.peer_id ? `you: …${info.peer_id.slice(-8)} (${info.role || "?"})` : "";
  $("identity").textContent = `room ${info.room.slice(0, 12)}… · ${who}`;
  $("identity").title = `room ${info.room}\nyou: ${info.peer_id}\n${info.did}\n` +
    `role: ${info.role}\nnode ${info.node}\nsession ${info.session}`;
}

// A private room: a lock, which members hold the keys, and who renders the room for this
// page. The node that serves the page decrypts the room and renders it, for a page whose
// person proved their key and is a reader (a member who holds the keys); it seals this
// person's edits, and the page opens and checks the sealed ops before signing (wire.js).
function showPrivacy(p) {
  privacyShown = p;
  const lock = $("lock");
  const box = $("privacy");
  if (!lock || !box) return;
  lock.hidden = !p.private;
  box.hidden = !p.private;
  if (!p.private) return;
  if (p.room_name && info) {
    info.room_name = p.room_name;
    if (welcomed) showConnected();
  }
  box.textContent = "";
  const line = document.createElement("p");
  if (p.this_node !== "reader") {
    line.className = "blind";
    line.textContent = `Private room: this node (${p.node}) is a blind host: it stores and ` +
      "relays the room but cannot read it, so this page cannot show the scene. Open the room " +
      "from a node that is a member (a reader), or with the Python client.";
  } else if (p.you === "not_a_reader") {
    line.className = "blind";
    line.textContent = "Private room: you are not a member who holds its keys, so your node " +
      `${p.node} shows you nothing of it. Ask an admin for an invite.`;
  } else if (p.you === "not_identified") {
    line.textContent = "Private room: proving who you are to your node…";
  } else {
    line.textContent = `Private room: your node ${p.node} renders this room for you: it ` +
      "holds the keys as a member and decrypts the room. Your edits are sealed by your node " +
      "and this page opens and checks them before you sign. Hosts that are not members " +
      "store and relay the room without reading it." +
      (p.readable ? "" : " Your node is waiting for a member to come online and share the keys.");
  }
  box.append(line);
  const keys = Object.entries(p.keys || {});
  if (keys.length) {
    const list = document.createElement("ul");
    list.className = "keys";
    const me = info && info.peer_id;
    for (const [peer, ok] of keys) {
      const li = document.createElement("li");
      const who = peer === me ? " (you)" : peer === p.node ? " (this node)" : "";
      li.textContent = `${peer}${who}: ${ok ? "keys ok" : "waiting for a member to come online"}`;
      li.className = ok ? "ok" : "waiting";
      list.append(li);
    }
    box.append(list);
  }
}

function showMessage(text, isInfo = false) {
  const el = $("message");
  el.textContent = text;
  el.className = isInfo ? "message info" : "message";
}

function refreshUi() {
  if (selected && !(selected in scene)) select(null);
  renderEntityList();
  const addParent = $("add-form").elements.parent;
  if (document.activeElement !== addParent)
    fillParentSelect(addParent, addParent.value || "root", new Set());
  if (selected && !$("edit-form").contains(document.activeElement)) fillEditForm();
  renderPresence();
  syncView();
}

function renderEntityList() {
  const list = $("entities");
  const items = [];
  for (const [id, depth] of treeOrder()) {
    const entity = scene[id];
    const li = document.createElement("li");
    li.dataset.id = id;
    li.style.paddingLeft = `${0.4 + depth * 1.1}em`;
    if (id === selected) li.className = "selected";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entityColor(id, entity);
    const name = document.createElement("span");
    name.textContent = entityName(id, entity);
    const small = document.createElement("span");
    small.className = "entity-id";
    small.textContent = shortId(id);
    small.title = id;
    li.append(swatch, name, small);
    li.addEventListener("click", () => select(id));
    items.push(li);
  }
  fillList(list, items, "No entities yet: add one below.");
}

function fillParentSelect(sel, value, exclude) {
  const options = [new Option("(root)", "root")];
  for (const [id, depth] of treeOrder()) {
    if (exclude.has(id)) continue;
    options.push(new Option(`${"\u00a0\u00a0".repeat(depth + 1)}${entityName(id, scene[id])}`, id));
  }
  sel.replaceChildren(...options);
  sel.value = value in scene || value === "root" ? value : "root";
}

function select(id) {
  selected = id;
  $("edit-panel").hidden = !id;
  if (id) fillEditForm();
  renderEntityList();
  highlightSelected();
  schedulePresence();
}

function fillEditForm() {
  const entity = scene[selected];
  if (!entity) return;
  const form = $("edit-form");
  $("edit-title").textContent = entityName(selected, entity);
  form.elements.name.value = entityName(selected, entity);
  const [x, y, z] = entityPosition(entity);
  form.elements.x.value = x;
  form.elements.y.value = y;
  form.elements.z.value = z;
  form.elements.color.value = entityColor(selected, entity);
  fillParentSelect(form.elements.parent, entity.parent, descendants(selected));
  // Accountability: who made it (its ID names its creator) and who changed it last.
  const creator = selected.split("/")[0];
  const last = authors[selected] || creator;
  const who = (peer) => `${personName(peer)} (…${peer.slice(-8)})`;
  $("edit-by").textContent = `made by ${who(creator)} · last changed by ${who(last)}`;
  $("edit-by").title = `creator ${creator}\nlast changed by ${last}`;
}

function readXyz(form) {
  return ["x", "y", "z"].map((k) => {
    const v = Number(form.elements[k].value);
    return Number.isFinite(v) ? v : 0;
  });
}

function samePosition(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function onAdd(ev) {
  ev.preventDefault();
  const form = ev.target;
  const components = {
    name: { value: form.elements.name.value || "entity" },
    transform: { position: readXyz(form) },
    appearance: { color: form.elements.color.value },
  };
  try {
    const id = await api.createEntity(form.elements.parent.value || "root", components);
    showMessage(`Added ${components.name.value}.`, true);
    select(id);
  } catch (err) {
    showMessage(`Could not add: ${err.message}`);
  }
}

async function onApply(ev) {
  ev.preventDefault();
  const id = selected;
  const entity = scene[id];
  if (!entity) return;
  const form = ev.target;
  const edits = [];
  const name = form.elements.name.value;
  if (name && name !== entityName(id, entity)) edits.push(api.setField(id, "name", "value", name));
  const position = readXyz(form);
  if (!samePosition(position, entityPosition(entity)))
    edits.push(api.setField(id, "transform", "position", position));
  const color = form.elements.color.value;
  if (color !== entityColor(id, entity)) edits.push(api.setField(id, "appearance", "color", color));
  const parent = form.elements.parent.value;
  if (parent && parent !== entity.parent) edits.push(api.moveEntity(id, parent));
  if (!edits.length) return;
  try {
    await Promise.all(edits);
    showMessage("Saved.", true);
    document.activeElement?.blur();
    fillEditForm();
  } catch (err) {
    showMessage(`Could not save: ${err.message}`);
  }
}

async function onDelete() {
  const id = selected;
  if (!id) return;
  try {
    await api.deleteEntity(id);
    select(null);
    showMessage("Deleted.", true);
  } catch (err) {
    showMessage(`Could not delete: ${err.message}`);
  }
}

// Who is here, one entry per person, keyed by their own PeerID: each person signs their own
// presence. (An older node published its browsers inside its own presence, as
// {browsers: {session: fields}}: those are shown as "PeerID#session".)
function presenceEntries() {
  const out = [];
  for (const [peer, fields] of Object.entries(presence)) {
    const browsers = fields && fields.browsers;
    if (browsers && typeof browsers === "object" && !Array.isArray(browsers)) {
      for (const [session, bf] of Object.entries(browsers)) {
        if (bf && typeof bf === "object") out.push([`${peer}#${session}`, bf]);
      }
    } else {
      out.push([peer, fields]);
    }
  }
  return out;
}

// A person's media sources are named by the node that relays them and the page's session
// there ("nodePeerID#session", meshnode.web.media): their presence says which.
function mediaKey(peer, fields) {
  return fields && typeof fields.node === "string" && typeof fields.session === "string"
    ? `${fields.node}#${fields.session}` : peer;
}

function personName(key) {
  for (const [peer, fields] of presenceEntries()) {
    if ((peer === key || mediaKey(peer, fields) === key) && fields && typeof fields.name === "string" && fields.name)
      return fields.name;
  }
  const peer = key.split("#")[0];
  return `…${peer.slice(-6)}`;
}

const media = createMedia({
  getPc: () => pc,
  send,
  request,
  personName,
  onStreamsChanged: () => {
    renderPresence();
    if (renderer) syncPointers();
    requestRender();
  },
  onSpeakingChanged: () => schedulePresence(), // presence at its normal rate, on the change
  showMessage,
});

function renderPresence() {
  const list = $("present");
  const items = [];
  for (const [peer, fields] of presenceEntries()) {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "swatch";
    dot.style.background = colorFor(peer);
    const name = document.createElement("span");
    const label = fields && typeof fields.name === "string" && fields.name ? fields.name : "?";
    const mine = info && peer === info.peer_id;
    name.textContent = mine ? `${label} (you)` : label;
    const small = document.createElement("span");
    small.className = "entity-id";
    small.textContent = peer.split("#")[0].slice(-8);
    small.title = peer;
    li.append(dot, name, small);
    const box = media.elementFor(mediaKey(peer, fields));
    if (box) li.append(box);
    items.push(li);
  }
  fillList(list, items, "Nobody else is here.");
}

// Show ``items`` in ``list``, or one line saying ``emptyText`` when there are none.
function fillList(list, items, emptyText) {
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = emptyText;
    items.push(li);
  }
  list.replaceChildren(...items);
}

// Presence: at most one update per PRESENCE_INTERVAL_MS, always the latest.
let presenceTimer = null;
let lastPresenceAt = 0;

function schedulePresence() {
  if (presenceTimer !== null || !welcomed) return;
  const wait = Math.max(0, lastPresenceAt + PRESENCE_INTERVAL_MS - performance.now());
  presenceTimer = setTimeout(() => {
    presenceTimer = null;
    lastPresenceAt = performance.now();
    publishPresence().catch(() => {
      // not connected: nothing to tell
    });
  }, wait);
}

// The person's presence, signed with their key (identity.js); the node publishes it as theirs.
async function publishPresence() {
  const fields = {
    name: myName, pointer: myPointer, selected, session: info.session, node: info.node,
    position: walker.position, yaw: walker.yaw, speaking: media.api.speaking ? !!media.api.speaking() : false,
  };
  await sendPresence(fields);
}

// Sign (and in a private room seal) presence fields and send them. A private room's page
// without a presence key (not a reader, or its node holds none) publishes nothing: presence
// in clear would reach the hosts that relay the room blind.
async function sendPresence(fields) {
  if (privacyShown.private && !presenceKey) return;
  const seal = privacyShown.private ? presenceKey : null;
  const signed = await ident.signPresence(fromHex(info.room), fields, seal);
  send({ t: "presence", ...signed });
}

// Presence expires on other nodes after 10 s of silence: repeat it while the page is open.
const PRESENCE_KEEPALIVE_MS = 4000;
setInterval(() => {
  if (welcomed && performance.now() - lastPresenceAt >= PRESENCE_KEEPALIVE_MS) {
    schedulePresence();
  }
}, PRESENCE_KEEPALIVE_MS / 2);

function initName() {
  const input = $("my-name");
  try {
    myName = localStorage.getItem("meshnode.name") || "";
  } catch {
    myName = "";
  }
  if (!myName) myName = `guest-${Math.floor(Math.random() * 0xffff).toString(16)}`;
  input.value = myName;
  input.addEventListener("input", () => {
    myName = input.value.slice(0, 40);
    try {
      localStorage.setItem("meshnode.name", myName);
    } catch {
      // private mode: the name lasts for this page only
    }
    schedulePresence();
  });
}

// ------------------------------------------------------------------ the 3D view

const view = {
  webgl: false,
  reason: "loading",
  frames: 0,
  frameWaiters: [],
};
let THREE = null;
let renderer = null;
let scene3 = null;
let camera = null;
let world = null;
let boxGeometry = null;
let pointerGeometry = null;
let ground = null;
const objects = new Map(); // entity id -> {group, mesh, label, name, color}
const pointers = new Map(); // PeerID -> mesh
let avatars = null; // avatars.js, once the view is up
// The local person: moved by the keyboard, looking where the pointer points (avatars.js).
const walker = createWalker([Math.round((Math.random() * 6 - 3) * 100) / 100, 0, Math.round((Math.random() * 6 - 3) * 100) / 100]);
let lastStep = performance.now();
setInterval(() => {
  const now = performance.now();
  const moved = walker.step((now - lastStep) / 1000);
  lastStep = now;
  if (moved) {
    schedulePresence();
    if (renderer) syncView();
  }
}, 50);
const orbit = { azimuth: 0.7, elevation: 0.55, distance: 14 };
let renderQueued = false;

function noView(text) {
  view.webgl = false;
  view.reason = text;
  const el = $("view-message");
  el.textContent = text;
  el.hidden = false;
  for (const resolve of view.frameWaiters.splice(0)) resolve(false);
}

async function initView() {
  const container = $("view");
  try {
    THREE = await import("./vendor/three.module.min.js");
  } catch (err) {
    noView(`The 3D view is off: three.js did not load (${err.message}).`);
    return;
  }
  try {
    renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  } catch (err) {
    noView("The 3D view is off: this browser has no WebGL 2. The entity list and the " +
      "controls still work.");
    console.warn("meshnode: WebGL unavailable:", err && err.message);
    return;
  }
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  container.prepend(renderer.domElement);
  scene3 = new THREE.Scene();
  scene3.background = new THREE.Color(0x20252c);
  camera = new THREE.PerspectiveCamera(50, 1, 0.1, 1000);
  scene3.add(new THREE.HemisphereLight(0xffffff, 0x404850, 1.2));
  const sun = new THREE.DirectionalLight(0xffffff, 2.0);
  sun.position.set(5, 10, 7);
  scene3.add(sun);
  scene3.add(new THREE.GridHelper(20, 20, 0x6a7584, 0x3a414b));
  ground = new THREE.Plane(new THREE.Vector3(0, 1, 0), 0);
  world = new THREE.Group();
  scene3.add(world);
  boxGeometry = new THREE.BoxGeometry(1, 1, 1);
  pointerGeometry = new THREE.SphereGeometry(0.15, 16, 12);
  view.webgl = true;
  view.reason = "";
  const resize = () => {
    const w = Math.max(1, container.clientWidth);
    const h = Math.max(1, container.clientHeight);
    renderer.setSize(w, h);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
    requestRender();
  };
  new ResizeObserver(resize).observe(container);
  resize();
  initPointer(renderer.domElement);
  avatars = createAvatars({ three: THREE, scene: scene3, requestRender, colorFor, makeLabel, disposeLabel });
  updateCamera();
  syncView();
}

function updateCamera() {
  const { azimuth, elevation, distance } = orbit;
  camera.position.set(
    distance * Math.cos(elevation) * Math.sin(azimuth),
    distance * Math.sin(elevation),
    distance * Math.cos(elevation) * Math.cos(azimuth),
  );
  camera.lookAt(0, 0, 0);
  requestRender();
}

function requestRender() {
  if (!renderer || renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderer.render(scene3, camera);
    view.frames += 1;
    for (const resolve of view.frameWaiters.splice(0)) resolve(true);
  });
}

function makeLabel(text) {
  const canvas = document.createElement("canvas");
  canvas.width = 256;
  canvas.height = 64;
  const ctx = canvas.getContext("2d");
  ctx.font = "bold 30px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.lineWidth = 6;
  ctx.strokeStyle = "rgba(0,0,0,0.75)";
  const shown = text.length > 18 ? `${text.slice(0, 17)}…` : text;
  ctx.strokeText(shown, 128, 32);
  ctx.fillStyle = "#ffffff";
  ctx.fillText(shown, 128, 32);
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial({ map: texture, depthTest: false }));
  sprite.scale.set(2, 0.5, 1);
  sprite.position.set(0, 0.95, 0);
  sprite.renderOrder = 1;
  return sprite;
}

function disposeLabel(label) {
  label.material.map.dispose();
  label.material.dispose();
}

function syncView() {
  if (!renderer) return;
  for (const [id, entity] of Object.entries(scene)) {
    let obj = objects.get(id);
    if (!obj) {
      const group = new THREE.Group();
      const mesh = new THREE.Mesh(boxGeometry, new THREE.MeshLambertMaterial());
      mesh.userData.entity = id;
      group.add(mesh);
      obj = { group, mesh, label: null, name: null, color: null };
      objects.set(id, obj);
    }
    const [x, y, z] = entityPosition(entity);
    obj.group.position.set(x, y, z);
    const color = entityColor(id, entity);
    if (color !== obj.color) {
      obj.mesh.material.color.set(color);
      obj.color = color;
    }
    const name = entityName(id, entity);
    if (name !== obj.name) {
      if (obj.label) {
        obj.group.remove(obj.label);
        disposeLabel(obj.label);
      }
      obj.label = makeLabel(name);
      obj.group.add(obj.label);
      obj.name = name;
    }
  }
  for (const [id, obj] of objects) {
    if (id in scene) continue;
    obj.group.removeFromParent();
    obj.mesh.material.dispose();
    if (obj.label) disposeLabel(obj.label);
    objects.delete(id);
  }
  for (const [id, entity] of Object.entries(scene)) {
    const obj = objects.get(id);
    const parent = entity.parent === "root" ? world : objects.get(entity.parent)?.group || world;
    if (obj.group.parent !== parent) parent.add(obj.group);
  }
  syncPointers();
  if (avatars) avatars.sync(presenceEntries().map(([peer, fields]) =>
    [peer, peer === (info && info.peer_id) ? { ...fields, position: walker.position, yaw: walker.yaw, name: myName } : fields]));
  highlightSelected();
  requestRender();
}

function syncPointers() {
  const seen = new Set();
  for (const [peer, fields] of presenceEntries()) {
    const p = fields && fields.pointer;
    if (info && peer === info.peer_id) continue; // our own pointer
    if (!Array.isArray(p) || p.length !== 3 || !p.every((v) => typeof v === "number" && isFinite(v)))
      continue;
    seen.add(peer);
    let mesh = pointers.get(peer);
    if (!mesh) {
      mesh = new THREE.Mesh(pointerGeometry, new THREE.MeshBasicMaterial({ color: colorFor(peer) }));
      pointers.set(peer, mesh);
      scene3.add(mesh);
    }
    mesh.position.set(p[0], p[1], p[2]);
    syncBillboard(mediaKey(peer, fields), mesh);
  }
  for (const [peer, mesh] of pointers) {
    if (seen.has(peer)) continue;
    dropBillboard(peer);
    mesh.removeFromParent();
    mesh.material.dispose();
    pointers.delete(peer);
  }
  for (const peer of [...billboards.keys()]) if (!pointers.has(peer)) dropBillboard(peer);
}

// A person's video on their pointer in the 3D view: a sprite above it, textured by the same
// <video> element the people list shows.
const billboards = new Map(); // key -> {sprite, video}

function syncBillboard(peer, mesh) {
  const video = media.videoFor(peer);
  const board = billboards.get(peer);
  if (board && board.video === video) return;
  dropBillboard(peer);
  if (!video) return;
  const texture = new THREE.VideoTexture(video);
  texture.colorSpace = THREE.SRGBColorSpace;
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial({ map: texture }));
  sprite.scale.set(1.6, 0.9, 1);
  sprite.position.set(0, 0.8, 0);
  mesh.add(sprite);
  billboards.set(peer, { sprite, video });
}

function dropBillboard(peer) {
  const board = billboards.get(peer);
  if (!board) return;
  board.sprite.removeFromParent();
  board.sprite.material.map.dispose();
  board.sprite.material.dispose();
  billboards.delete(peer);
}

// The view draws on demand; a playing video needs a frame now and then.
setInterval(() => {
  if (billboards.size) requestRender();
}, 100);

function highlightSelected() {
  if (!renderer) return;
  for (const [id, obj] of objects) obj.mesh.material.emissive.setHex(id === selected ? 0x333333 : 0);
  requestRender();
}

function initPointer(canvas) {
  const raycaster = new THREE.Raycaster();
  const ndc = new THREE.Vector2();
  let drag = null;
  const toNdc = (ev) => {
    const r = canvas.getBoundingClientRect();
    ndc.set(((ev.clientX - r.left) / r.width) * 2 - 1, -((ev.clientY - r.top) / r.height) * 2 + 1);
    raycaster.setFromCamera(ndc, camera);
  };
  canvas.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, moved: 0 };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (drag) {
      const dx = ev.clientX - drag.x;
      const dy = ev.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy);
      drag.x = ev.clientX;
      drag.y = ev.clientY;
      orbit.azimuth -= dx * 0.008;
      orbit.elevation = Math.min(1.45, Math.max(0.05, orbit.elevation + dy * 0.008));
      updateCamera();
      return;
    }
    toNdc(ev);
    const hit = new THREE.Vector3();
    if (raycaster.ray.intersectPlane(ground, hit)) {
      myPointer = [hit.x, hit.y, hit.z].map((v) => Math.round(v * 100) / 100);
      walker.lookAt(myPointer);
      schedulePresence();
    }
  });
  canvas.addEventListener("pointerup", (ev) => {
    const wasClick = drag && drag.moved < 5;
    drag = null;
    if (!wasClick) return;
    toNdc(ev);
    const hits = raycaster.intersectObjects([...objects.values()].map((o) => o.mesh), false);
    select(hits.length ? hits[0].object.userData.entity : null);
  });
  canvas.addEventListener("pointerleave", () => {
    if (drag) return;
    myPointer = null;
    schedulePresence();
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    orbit.distance = Math.min(200, Math.max(2, orbit.distance * (ev.deltaY > 0 ? 1.1 : 1 / 1.1)));
    updateCamera();
  }, { passive: false });
}

// ------------------------------------------------------------------ automation API

function opId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const api = {
  ready,
  state: () => structuredClone(scene),
  presence: () => structuredClone(presence),
  people: () => presenceEntries().map(([key, fields]) => ({ key, peer_id: key, ...structuredClone(fields) })),
  info: () => (info ? { ...info } : null),
  privacy: () => structuredClone(privacyShown),
  identity: () => {
    const me = ident.identityInfo();
    return me ? { peer_id: me.peer_id, did: me.did } : null;
  },
  exportIdentity: (passphrase) => ident.exportIdentity(passphrase),
  importIdentity: (file, passphrase) => ident.importIdentity(file, passphrase),
  me: () => ({ position: walker.position.slice(), yaw: walker.yaw }),
  move: (dx, dz) => {
    walker.move(dx, dz);
    schedulePresence();
    if (renderer) syncView();
    return walker.position.slice();
  },
  authors: () => ({ ...authors }),
  connection: () => ({ url: nodeUrl || location.origin, hosts: [...hosts], failovers }),
  createEntity: (parent, components) =>
    request({ t: "create", parent, components: { ...(components || {}), op: { id: opId() } } })
      .then((ack) => ack.id),
  setField: (id, component, field, value) =>
    request({ t: "set", id, component, field, value }).then(() => undefined),
  moveEntity: (id, parent) => request({ t: "move", id, parent }).then(() => undefined),
  deleteEntity: (id) => request({ t: "delete", id }).then(() => undefined),
  setPresence: (fields) => sendPresence(fields),
  onChange: (fn) => {
    changeListeners.add(fn);
    return () => changeListeners.delete(fn);
  },
  media: media.api,
  view: {
    status: () => ({
      webgl: view.webgl,
      reason: view.reason,
      frames: view.frames,
      meshes: objects.size,
      avatars: avatars ? avatars.count() : 0,
    }),
    avatars: () => (avatars ? avatars.positions() : {}),
    // Whose avatar shows them speaking (its ring lit): PeerID -> boolean.
    speaking: () => (avatars ? avatars.speaking() : {}),
    // Resolves true after the next frame is drawn (false if there is no 3D view).
    nextFrame: () => {
      if (!renderer) return Promise.resolve(false);
      const p = new Promise((resolve) => view.frameWaiters.push(resolve));
      requestRender();
      return p;
    },
  },
};
window.meshnode = api;

// ------------------------------------------------------------------ start

// Export: a passphrase-encrypted file to download; import: a file, then a reload (the new key
// identifies on the next connection).
function initIdentityControls() {
  $("export-button").addEventListener("click", async () => {
    const pass = prompt("A passphrase to encrypt the exported identity:");
    if (!pass) return;
    try {
      const text = await api.exportIdentity(pass);
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      a.download = `meshnode-identity-${info.peer_id.slice(-8)}.json`;
      a.click();
      URL.revokeObjectURL(a.href);
    } catch (err) {
      showMessage(`Could not export: ${err.message}`);
    }
  });
  $("import-file").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const pass = (await file.text()).trim().startsWith("{") ? prompt("The file's passphrase:") : "";
    try {
      await api.importIdentity(file, pass);
      location.reload();
    } catch (err) {
      showMessage(`Could not import: ${err.message}`);
    }
  });
}

function main() {
  initName();
  initIdentityControls();
  $("add-form").addEventListener("submit", onAdd);
  $("edit-form").addEventListener("submit", onApply);
  $("delete-button").addEventListener("click", onDelete);
  media.initControls();
  fillParentSelect($("add-form").elements.parent, "root", new Set());
  renderEntityList();
  renderPresence();
  const viewReady = initView().catch((err) => noView(`The 3D view failed: ${err.message}`));
  const timer = setTimeout(
    () => failAll(`could not connect to the node within ${CONNECT_TIMEOUT_MS / 1000} s`),
    CONNECT_TIMEOUT_MS,
  );
  ready.then(() => {
    clearTimeout(timer);
    schedulePresence();
  }, () => clearTimeout(timer));
  connect().catch((err) => failAll(err.message));
  viewReady.then(() => syncView());
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
else main();
