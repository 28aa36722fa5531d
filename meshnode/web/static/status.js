// The operator's status page: polls the admin API (loopback only) every 2 s.
"use strict";

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

async function refresh() {
  try {
    const [status, peers] = await Promise.all([
      fetch("/api/status").then((r) => (r.ok ? r.json() : Promise.reject(r.status))),
      fetch("/api/peers").then((r) => (r.ok ? r.json() : Promise.reject(r.status))),
    ]);
    document.getElementById("peer-id").textContent = status.peer_id;
    document.getElementById("summary").textContent =
      `${status.url} · up ${Math.round(status.uptime_s)} s · ${status.links} link(s) · ` +
      `${status.rooms.length} room(s)`;
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
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent =
      `cannot read the node's status (${err}); the status page answers on loopback only`;
  }
}

refresh();
setInterval(refresh, 2000);
