// Avatars: each person present is a body in the 3D view at their presence `position`, facing
// their `yaw`, with their name above and a colour derived from their key; a speaking person's
// ring glows. The local person moves with the keyboard (WASD / arrow keys) and looks where the
// pointer is; app.js publishes that in its signed presence.

const SPEED = 3.0; // metres a second
const HALF_ROOM = 9.5; // the grid is 20 x 20

export function createAvatars({ three, scene, requestRender, colorFor, makeLabel, disposeLabel }) {
  const THREE = three;
  const bodies = new Map(); // PeerID -> {group, body, ring, label, name, color}
  const bodyGeometry = new THREE.CapsuleGeometry(0.3, 0.8, 4, 12);
  const noseGeometry = new THREE.ConeGeometry(0.12, 0.3, 10);
  const ringGeometry = new THREE.TorusGeometry(0.45, 0.05, 8, 24);

  function make(peer) {
    const group = new THREE.Group();
    const material = new THREE.MeshLambertMaterial({ color: colorFor(peer) });
    const body = new THREE.Mesh(bodyGeometry, material);
    body.position.y = 0.7;
    const nose = new THREE.Mesh(noseGeometry, material);
    nose.rotation.x = Math.PI / 2;
    nose.position.set(0, 1.1, 0.35);
    const ring = new THREE.Mesh(ringGeometry, new THREE.MeshBasicMaterial({ color: 0x50e070 }));
    ring.rotation.x = Math.PI / 2;
    ring.position.y = 0.05;
    ring.visible = false;
    group.add(body, nose, ring);
    group.userData.avatar = peer;
    scene.add(group);
    return { group, body, ring, label: null, name: null, material };
  }

  // entries: [[PeerID, fields], ...] of everyone present (the local person included).
  function sync(entries) {
    const seen = new Set();
    for (const [peer, fields] of entries) {
      const p = fields && fields.position;
      if (!Array.isArray(p) || p.length !== 3 || !p.every((v) => typeof v === "number" && isFinite(v)))
        continue;
      seen.add(peer);
      let a = bodies.get(peer);
      if (!a) {
        a = make(peer);
        bodies.set(peer, a);
      }
      a.group.position.set(p[0], p[1], p[2]);
      a.group.rotation.y = typeof fields.yaw === "number" && isFinite(fields.yaw) ? fields.yaw : 0;
      a.ring.visible = fields.speaking === true;
      const name = typeof fields.name === "string" && fields.name ? fields.name : `…${peer.slice(-6)}`;
      if (name !== a.name) {
        if (a.label) {
          a.group.remove(a.label);
          disposeLabel(a.label);
        }
        a.label = makeLabel(name);
        a.label.position.set(0, 1.75, 0);
        a.group.add(a.label);
        a.name = name;
      }
    }
    for (const [peer, a] of bodies) {
      if (seen.has(peer)) continue;
      a.group.removeFromParent();
      a.material.dispose();
      a.ring.material.dispose();
      if (a.label) disposeLabel(a.label);
      bodies.delete(peer);
    }
    requestRender();
  }

  return {
    sync,
    count: () => bodies.size,
    // Where each avatar is drawn, for tests: PeerID -> [x, y, z].
    positions: () => Object.fromEntries([...bodies].map(([k, a]) => [k, a.group.position.toArray()])),
    // Whose ring is lit, for tests: PeerID -> boolean.
    speaking: () => Object.fromEntries([...bodies].map(([k, a]) => [k, a.ring.visible])),
  };
}

// The local person's movement: returns {position, yaw, step(dt) -> moved?}.
export function createWalker(initial) {
  const keys = new Set();
  const me = { position: initial.slice(), yaw: 0 };
  const interesting = new Set(["KeyW", "KeyA", "KeyS", "KeyD", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight"]);
  addEventListener("keydown", (ev) => {
    if (!interesting.has(ev.code) || ev.target instanceof HTMLInputElement) return;
    keys.add(ev.code);
    ev.preventDefault();
  });
  addEventListener("keyup", (ev) => keys.delete(ev.code));
  addEventListener("blur", () => keys.clear());
  me.move = (dx, dz) => {
    me.position[0] = Math.max(-HALF_ROOM, Math.min(HALF_ROOM, me.position[0] + dx));
    me.position[2] = Math.max(-HALF_ROOM, Math.min(HALF_ROOM, me.position[2] + dz));
    me.position = me.position.map((v) => Math.round(v * 100) / 100);
  };
  me.lookAt = (point) => {
    const dx = point[0] - me.position[0];
    const dz = point[2] - me.position[2];
    if (Math.abs(dx) + Math.abs(dz) > 1e-3) me.yaw = Math.round(Math.atan2(dx, dz) * 1000) / 1000;
  };
  me.step = (dt) => {
    let dx = 0;
    let dz = 0;
    if (keys.has("KeyW") || keys.has("ArrowUp")) dz -= 1;
    if (keys.has("KeyS") || keys.has("ArrowDown")) dz += 1;
    if (keys.has("KeyA") || keys.has("ArrowLeft")) dx -= 1;
    if (keys.has("KeyD") || keys.has("ArrowRight")) dx += 1;
    if (!dx && !dz) return false;
    const n = Math.hypot(dx, dz);
    me.move((dx / n) * SPEED * dt, (dz / n) * SPEED * dt);
    me.yaw = Math.round(Math.atan2(dx, dz) * 1000) / 1000;
    return true;
  };
  return me;
}
