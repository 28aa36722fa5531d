// The operator's status page: polls the admin API (loopback only, admin token) every 2 s.
// The token comes from the page's fragment (`meshnode status --open` prints such a link:
// browsers never send a fragment to a server) or from the form, and is kept in
// sessionStorage (this tab only), never in the address bar or the history.
"use strict";

const TOKEN_KEY = "meshnode-admin-token";

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function adminFetch(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return fetch(path, { headers }).then((r) => (r.ok ? r.json() : Promise.reject(r.status)));
}

function askForToken(show) {
  document.getElementById("token-form").hidden = !show;
}

function cell(text, code = false) {
  const td = document.createElement("td");
  if (code) {
    const c = document.createElement("code");
    c.textContent = text;
    td.append(c);
  } else {
    td.textContent = text;
  }
  return td;
}

function short(id) {
  return id.length > 20 ? `${id.slice(0, 12)}…${id.slice(-6)}` : id;
}

// Which operators' nodes host which rooms with us, the [federation] policy, its refusals.
function showFederation(fed) {
  const p = fed.policy;
  const allow = p.allow === null ? "any operator" : (p.allow.join(", ") || "no other node");
  document.getElementById("policy").textContent =
    `deny: ${p.deny.join(", ") || "nobody"} · allow: ${allow} · announce: ` +
    (p.announce_default ? "every room" : "no room") +
    (p.no_announce.length ? ` except ${p.no_announce.map(short).join(", ")}` : "") +
    (!p.announce_default && p.announce_rooms.length
      ? `, but ${p.announce_rooms.map(short).join(", ")}` : "");
  document.querySelector("#operators tbody").replaceChildren(...fed.rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.append(cell(r.name), cell(short(r.room), true),
              cell(r.hosts.map(short).join(", ") || "none linked now", true));
    return tr;
  }));
  document.querySelector("#refused tbody").replaceChildren(...fed.refused.map((r) => {
    const tr = document.createElement("tr");
    tr.append(cell(short(r.peer), true), cell(r.reason), cell(String(r.count)), cell(r.how));
    return tr;
  }));
}

// The media relay's load (the `media` section of /api/status, MediaRelay.status()): totals,
// then one row per stream it relays (kbps measured in; the cumulative temporal-layer rates
// the selector picks layers by; how many subscribers or trunks it goes out to).
function showMedia(media) {
  const load = document.getElementById("media-load");
  const body = document.querySelector("#media-streams tbody");
  if (!media || !media.enabled) {
    load.textContent = "media off";
    body.replaceChildren();
    return;
  }
  const total = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  const drv = media.driver || {};
  const bytes = drv.bytes || {};
  load.textContent =
    `${media.sources} source(s) in · ${media.outputs} output(s), ${media.paused} paused · ` +
    `${media.kbps_out} kbps out · ${Math.round((bytes.in || 0) / 1000)} kB in, ` +
    `${Math.round(((bytes.out || 0) + (bytes.trunk || 0)) / 1000)} kB out ` +
    `(${Math.round((bytes.trunk || 0) / 1000)} kB on trunks) · ` +
    `keyframe requests ${drv.keyframe_requests || 0} · drops ${total(drv.drops)} · ` +
    `refusals ${total(media.refusals)} · decoders ${drv.decoders || 0}`;
  const rows = [];
  for (const [room, r] of Object.entries(media.rooms || {})) {
    for (const s of r.streams || []) {
      const tr = document.createElement("tr");
      tr.className = "media-stream";
      tr.append(cell(short(room), true), cell(short(s.source), true), cell(s.kind),
                cell(String(s.kbps)), cell(s.layer_kbps.length ? s.layer_kbps.join(" / ") : "—"),
                cell(String(s.outputs)));
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
}

async function refresh() {
  try {
    const [status, peers] = await Promise.all([
      adminFetch("/api/status"),
      adminFetch("/api/peers"),
    ]);
    askForToken(false);
    document.getElementById("peer-id").textContent = status.peer_id;
    document.getElementById("summary").textContent =
      `${status.url} · up ${Math.round(status.uptime_s)} s · ${status.links} link(s) · ` +
      `${status.rooms.length} room(s)` + (status.media ? ` · media: ${status.media.sources} ` +
      `source(s), ${status.media.outputs} output(s), ${status.media.kbps_out} kbps out` : "");
    const rooms = document.querySelector("#rooms tbody");
    rooms.replaceChildren(...status.rooms.map((r) => {
      const tr = document.createElement("tr");
      const open = document.createElement("td");
      const a = document.createElement("a");
      a.href = `/?room=${r.id}`;
      a.textContent = "open";
      open.append(a);
      tr.append(cell(r.name), cell(short(r.id), true), cell(r.role), cell(r.admit),
                cell(String(r.changes)), cell(String(r.entities)), cell(String(r.peers.length)),
                cell(String(r.participants.length)), open);
      return tr;
    }));
    const links = document.querySelector("#peers tbody");
    links.replaceChildren(...peers.map((p) => {
      const tr = document.createElement("tr");
      tr.append(cell(short(p.peer), true), cell(p.kind), cell(String(p.rooms.length)),
                cell(p.url || "—"), cell(String(p.buffered_bytes)));
      return tr;
    }));
    showMedia(status.media);
    showFederation(status.federation);
    document.getElementById("error").textContent = "";
  } catch (err) {
    const noToken = err === 401 || err === 403;
    askForToken(noToken);
    document.getElementById("error").textContent = noToken
      ? "this page needs the node's admin token: run `meshnode status --open` and open the " +
        "link it prints, or paste the token from DATA_DIR/admin.token below"
      : `cannot read the node's status (${err}); the status page answers on loopback only`;
  }
}

takeTokenFromFragment();
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  refresh();
});
refresh();
setInterval(refresh, 2000);
