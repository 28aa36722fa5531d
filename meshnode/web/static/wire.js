// meshnode wire format in the browser: msgpack, base58btc, PeerIDs, did:key, and the change
// body (docs/protocol.md, "Changes"), decoded so that the page can check what its node asks
// it to sign against the edit it asked for ("Browser signing").
//
// Checked against docs/protocol.md's test vectors in tests/browser/test_people.py.

// ------------------------------------------------------------------ bytes

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  const clean = text.replace(/\s+/g, "");
  if (clean.length % 2 || /[^0-9a-fA-F]/.test(clean)) throw new Error("not hex");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromB64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equalBytes(a, b) {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array) || a.length !== b.length)
    return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export const utf8 = (text) => new TextEncoder().encode(text);

// ------------------------------------------------------------------ base58btc

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export function base58(bytes) {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  const digits = [];
  for (let i = zeros; i < bytes.length; i++) {
    let carry = bytes[i];
    for (let j = 0; j < digits.length; j++) {
      carry += digits[j] << 8;
      digits[j] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  return "1".repeat(zeros) + digits.reverse().map((d) => B58[d]).join("");
}

export function fromBase58(text) {
  let zeros = 0;
  while (zeros < text.length && text[zeros] === "1") zeros++;
  const bytes = [];
  for (let i = zeros; i < text.length; i++) {
    let carry = B58.indexOf(text[i]);
    if (carry < 0) throw new Error("not base58btc");
    for (let j = 0; j < bytes.length; j++) {
      carry += bytes[j] * 58;
      bytes[j] = carry & 0xff;
      carry >>= 8;
    }
    while (carry) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  return new Uint8Array([...new Array(zeros).fill(0), ...bytes.reverse()]);
}

// ------------------------------------------------------------------ names of a key

const PEER_ID_PREFIX = new Uint8Array([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);

// The libp2p PeerID of a raw 32-byte Ed25519 public key (meshnode/identity.py).
export function peerIdOf(publicKey) {
  return base58(concat(PEER_ID_PREFIX, publicKey));
}

export function keyOfPeerId(peerId) {
  const raw = fromBase58(peerId);
  if (raw.length !== 38 || !equalBytes(raw.subarray(0, 6), PEER_ID_PREFIX))
    throw new Error(`${peerId} is not an Ed25519 PeerID`);
  return raw.slice(6);
}

// did:key: multicodec ed25519-pub (0xed 0x01) + key, base58btc with the 'z' multibase prefix.
export function didOf(publicKey) {
  return "did:key:z" + base58(concat(new Uint8Array([0xed, 0x01]), publicKey));
}

// ------------------------------------------------------------------ msgpack

// Decode exactly one msgpack object. bin -> Uint8Array, str -> string, map -> plain object
// (string keys only), float32/64 -> number, integers -> number (BigInt above 2^53).
export function unpack(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > bytes.length) throw new Error("msgpack: truncated");
  };
  const u8 = () => (need(1), bytes[at++]);
  const big = (v) => (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const str = (n) => {
    need(n);
    const s = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  const bin = (n) => {
    need(n);
    const b = bytes.slice(at, at + n);
    at += n;
    return b;
  };
  const arr = (n, depth) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push(one(depth + 1));
    return out;
  };
  const map = (n, depth) => {
    const out = {};
    for (let i = 0; i < n; i++) {
      const k = one(depth + 1);
      if (typeof k !== "string") throw new Error("msgpack: map keys must be strings");
      if (Object.prototype.hasOwnProperty.call(out, k)) throw new Error("msgpack: duplicate key");
      out[k] = one(depth + 1);
    }
    return out;
  };
  function one(depth) {
    if (depth > 64) throw new Error("msgpack: nested too deep");
    const t = u8();
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xf0) === 0x80) return map(t & 0x0f, depth);
    if ((t & 0xf0) === 0x90) return arr(t & 0x0f, depth);
    if ((t & 0xe0) === 0xa0) return str(t & 0x1f);
    let v;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: need(2); v = view.getUint16(at); at += 2; return bin(v);
      case 0xc6: need(4); v = view.getUint32(at); at += 4; return bin(v);
      case 0xca: need(4); v = view.getFloat32(at); at += 4; return v;
      case 0xcb: need(8); v = view.getFloat64(at); at += 8; return v;
      case 0xcc: return u8();
      case 0xcd: need(2); v = view.getUint16(at); at += 2; return v;
      case 0xce: need(4); v = view.getUint32(at); at += 4; return v;
      case 0xcf: need(8); v = view.getBigUint64(at); at += 8; return big(v);
      case 0xd0: need(1); v = view.getInt8(at); at += 1; return v;
      case 0xd1: need(2); v = view.getInt16(at); at += 2; return v;
      case 0xd2: need(4); v = view.getInt32(at); at += 4; return v;
      case 0xd3: need(8); v = view.getBigInt64(at); at += 8; return big(v);
      case 0xd9: return str(u8());
      case 0xda: need(2); v = view.getUint16(at); at += 2; return str(v);
      case 0xdb: need(4); v = view.getUint32(at); at += 4; return str(v);
      case 0xdc: need(2); v = view.getUint16(at); at += 2; return arr(v, depth);
      case 0xdd: need(4); v = view.getUint32(at); at += 4; return arr(v, depth);
      case 0xde: need(2); v = view.getUint16(at); at += 2; return map(v, depth);
      case 0xdf: need(4); v = view.getUint32(at); at += 4; return map(v, depth);
      default: throw new Error(`msgpack: type byte 0x${t.toString(16)} is not used here`);
    }
  }
  const value = one(0);
  if (at !== bytes.length) throw new Error("msgpack: trailing bytes");
  return value;
}

// Encode canonically as protocol/msgpack_io.py does: minimal integer widths, float64 for
// every non-integral number, bin for Uint8Array, map keys in insertion order (pass them
// sorted: the protocol's canonical maps are).
export function pack(value) {
  const out = [];
  const push = (...b) => out.push(...b);
  const be = (n, width) => {
    for (let i = width - 1; i >= 0; i--) push(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn));
  };
  function one(v) {
    if (v === null || v === undefined) return push(0xc0);
    if (v === false) return push(0xc2);
    if (v === true) return push(0xc3);
    if (typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v) && !Object.is(v, -0))) {
      const n = BigInt(v);
      if (n >= 0n) {
        if (n < 0x80n) return push(Number(n));
        if (n < 0x100n) return push(0xcc, Number(n));
        if (n < 0x10000n) return push(0xcd), be(n, 2);
        if (n < 0x100000000n) return push(0xce), be(n, 4);
        return push(0xcf), be(n, 8);
      }
      if (n >= -32n) return push(Number(n) & 0xff);
      if (n >= -128n) return push(0xd0, Number(n) & 0xff);
      if (n >= -32768n) return push(0xd1), be(n & 0xffffn, 2);
      if (n >= -2147483648n) return push(0xd2), be(n & 0xffffffffn, 4);
      return push(0xd3), be(n & 0xffffffffffffffffn, 8);
    }
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new Error("msgpack: NaN and infinities are not values");
      const b = new Uint8Array(8);
      new DataView(b.buffer).setFloat64(0, v);
      return push(0xcb, ...b);
    }
    if (typeof v === "string") {
      const b = utf8(v);
      if (b.length < 32) push(0xa0 | b.length);
      else if (b.length < 0x100) push(0xd9, b.length);
      else if (b.length < 0x10000) push(0xda), be(b.length, 2);
      else push(0xdb), be(b.length, 4);
      return push(...b);
    }
    if (v instanceof Uint8Array) {
      if (v.length < 0x100) push(0xc4, v.length);
      else if (v.length < 0x10000) push(0xc5), be(v.length, 2);
      else push(0xc6), be(v.length, 4);
      return push(...v);
    }
    if (Array.isArray(v)) {
      if (v.length < 16) push(0x90 | v.length);
      else if (v.length < 0x10000) push(0xdc), be(v.length, 2);
      else push(0xdd), be(v.length, 4);
      for (const x of v) one(x);
      return;
    }
    if (typeof v === "object") {
      const keys = Object.keys(v);
      if (keys.length < 16) push(0x80 | keys.length);
      else if (keys.length < 0x10000) push(0xde), be(keys.length, 2);
      else push(0xdf), be(keys.length, 4);
      for (const k of keys) {
        one(k);
        one(v[k]);
      }
      return;
    }
    throw new Error(`msgpack: cannot encode ${typeof v}`);
  }
  one(value);
  return new Uint8Array(out);
}

// ------------------------------------------------------------------ changes

export const SIGNING_DOMAIN = utf8("meshnode/change/v1\0");
export const PRESENCE_DOMAIN = utf8("meshnode/presence/v1\0");
export const IDENTIFY_DOMAIN = utf8("meshnode/browser-identify/v1\0");

export const OP = {
  GENESIS: 0, CREATE: 1, SET: 2, MOVE: 3, DELETE: 4, ROLE: 5, REVOKE_INVITE: 6,
  SEALED: 7, ROTATE: 8, SHARE: 9, NAME: 10,
};

// A change body ([author, seq, deps, hlc, [actors, names, ops]]) as an object; throws if it
// is not one. `body` excludes the signature.
export function decodeBody(body) {
  const obj = unpack(body);
  if (!Array.isArray(obj) || obj.length !== 5) throw new Error("not a change body");
  const [author, seq, deps, hlc, block] = obj;
  if (!(author instanceof Uint8Array) || author.length !== 32) throw new Error("bad author");
  if (!Number.isInteger(seq) || seq < 1) throw new Error("bad seq");
  if (!(Number.isInteger(hlc) || typeof hlc === "bigint")) throw new Error("bad hlc");
  if (!Array.isArray(deps) || deps.some((d) => !(d instanceof Uint8Array) || d.length !== 32))
    throw new Error("bad deps");
  if (!Array.isArray(block) || block.length !== 3) throw new Error("bad ops block");
  const [actors, names, ops] = block;
  if (!Array.isArray(actors) || !Array.isArray(names) || !Array.isArray(ops))
    throw new Error("bad ops block");
  return { author, seq, deps, hlc, actors, names, ops };
}

// A whole change (body || 64-byte signature).
export function decodeChange(bytes) {
  if (bytes.length <= 64) throw new Error("too short to hold a signature");
  const body = bytes.subarray(0, bytes.length - 64);
  return { ...decodeBody(body), body, signature: bytes.slice(bytes.length - 64) };
}

export function signingPayload(roomId, body) {
  return concat(SIGNING_DOMAIN, roomId, body);
}

// The hybrid logical clock's milliseconds.
export function hlcMillis(hlc) {
  return Number(BigInt(hlc) >> 16n);
}

// ------------------------------------------------------------------ checking a draft

// Entity ID text ("root", "<PeerID>/<counter>") as [keyBytes | null, counter].
function parseEntity(id) {
  if (id === "root") return [null, 0];
  const cut = id.lastIndexOf("/");
  const counter = Number(id.slice(cut + 1));
  if (cut < 0 || !Number.isInteger(counter) || counter < 1) throw new Error(`bad entity ${id}`);
  return [keyOfPeerId(id.slice(0, cut)), counter];
}

// The entity an op's reference names: [key|null, counter]; int actors (dep indices) are
// refused: the page cannot know a dep's author.
function resolveRef(ref, author, actors) {
  if (ref === null) return [null, 0];
  if (Number.isInteger(ref)) return [author, ref];
  if (!Array.isArray(ref) || ref.length !== 2) throw new Error("bad entity reference");
  const actor = actors[ref[0]];
  if (!(actor instanceof Uint8Array) || actor.length !== 32)
    throw new Error("an entity reference names an actor the page cannot see");
  return [actor, ref[1]];
}

function sameEntity(a, b) {
  if (a[0] === null || b[0] === null) return a[0] === b[0] && a[1] === b[1];
  return a[1] === b[1] && equalBytes(a[0], b[0]);
}

// Deep equality of a value the page asked for (JSON) and the value in the body (msgpack).
export function sameValue(asked, got) {
  if (asked === null || asked === undefined) return got === null;
  if (typeof asked === "number") return typeof got === "number" && got === asked;
  if (typeof asked !== "object") return asked === got;
  if (Array.isArray(asked))
    return Array.isArray(got) && got.length === asked.length && asked.every((x, i) => sameValue(x, got[i]));
  if (got === null || typeof got !== "object" || Array.isArray(got) || got instanceof Uint8Array)
    return false;
  const ka = Object.keys(asked);
  const kg = Object.keys(got);
  return ka.length === kg.length && ka.every((k) => Object.prototype.hasOwnProperty.call(got, k) && sameValue(asked[k], got[k]));
}

// Does `body` (Uint8Array) make exactly the edit `edit` ({t, ...} as the page sent it), as
// `me` (public key bytes)? Returns null if so, else what is wrong (the page refuses to sign).
export function checkDraft(body, edit, me) {
  let ch;
  try {
    ch = decodeBody(body);
  } catch (err) {
    return `not a change: ${err.message}`;
  }
  if (!equalBytes(ch.author, me)) return "the change is not authored by this person";
  return checkOps(ch.author, ch.actors, ch.names, ch.ops, edit);
}

// The scene ops (with their actors and names tables) make exactly `edit`? null or the problem.
function checkOps(author, actors, names, ops, edit) {
  if (actors.some((a) => !(a instanceof Uint8Array) || a.length !== 32 || equalBytes(a, author)))
    return "actors must be 32-byte keys other than the author";
  const name = (i) => (Number.isInteger(i) && i >= 0 && i < names.length ? names[i] : undefined);
  try {
    if (edit.t === "create") {
      if (!ops.length || ops[0][0] !== OP.CREATE || ops[0].length !== 3) return "expected one create";
      const counter = ops[0][1];
      if (!Number.isInteger(counter) || counter < 1) return "bad create counter";
      if (!sameEntity(resolveRef(ops[0][2], author, actors), parseEntity(edit.parent)))
        return "the create names another parent";
      const want = new Map();
      for (const [comp, fields] of Object.entries(edit.components || {}))
        for (const [field, value] of Object.entries(fields)) want.set(`${comp}\u0000${field}`, value);
      const rest = ops.slice(1);
      if (rest.length !== want.size) return "the create sets other fields than asked";
      for (const op of rest) {
        if (op[0] !== OP.SET || op.length !== 5 || op[1] !== counter) return "unexpected op in a create";
        const key = `${name(op[2])}\u0000${name(op[3])}`;
        if (!want.has(key) || !sameValue(want.get(key), op[4])) return `field ${key} differs`;
        want.delete(key);
      }
      return null;
    }
    if (ops.length !== 1) return "expected exactly one op";
    const op = ops[0];
    if (edit.t === "set") {
      if (op[0] !== OP.SET || op.length !== 5) return "expected a set";
      if (!sameEntity(resolveRef(op[1], author, actors), parseEntity(edit.id))) return "another entity";
      if (name(op[2]) !== edit.component || name(op[3]) !== edit.field) return "another field";
      return sameValue(edit.value, op[4]) ? null : "another value";
    }
    if (edit.t === "move") {
      if (op[0] !== OP.MOVE || op.length !== 3) return "expected a move";
      if (!sameEntity(resolveRef(op[1], author, actors), parseEntity(edit.id))) return "another entity";
      return sameEntity(resolveRef(op[2], author, actors), parseEntity(edit.parent)) ? null : "another parent";
    }
    if (edit.t === "delete") {
      if (op[0] !== OP.DELETE || op.length !== 2) return "expected a delete";
      return sameEntity(resolveRef(op[1], author, actors), parseEntity(edit.id)) ? null : "another entity";
    }
  } catch (err) {
    return err.message;
  }
  return `the page does not sign ${edit.t} edits`;
}

// ------------------------------------------------------------------ private rooms

// docs/protocol.md, "Private rooms" and "Browser signing in private rooms". In a private room
// the node seals the page's scene ops under an epoch key and sends, with the body, the epoch's
// secret and the raw change that created the epoch. The page checks the chain that makes the
// key the one every reader uses: SHA-256(epoch change) is the SEALED op's epoch reference, the
// secret matches the commitment in that change's ROTATE op, the content key is derived from
// the secret; then it opens the ciphertext (AES-256-GCM, the AAD binds room, author, seq, hlc
// and epoch), removes the padding and checks the ops against the edit, as for a clear change.

const SEAL_DOMAIN = utf8("meshnode/seal/v1\0");
const SMALL_BUCKET = 64;
const LARGE_BUCKET = 1024;
const SMALL_LIMIT = 4096;

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// HKDF-SHA256, empty salt, 32 bytes (meshnode/crdt/sealing.py).
export async function hkdf(secret, info) {
  const key = await crypto.subtle.importKey("raw", secret, "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, key, 256);
  return new Uint8Array(bits);
}

export function commitmentInfo(roomId) {
  return concat(utf8("meshnode/commit/v1"), roomId);
}

export function derivedInfo(roomId, purpose) {
  return concat(utf8(`meshnode/${purpose}/v1`), roomId);
}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

export function sealAad(roomId, author, seq, hlc, epochRef) {
  return concat(SEAL_DOMAIN, roomId, author, u64(seq), u64(hlc), epochRef);
}

export function bucket(n) {
  const step = n < SMALL_LIMIT ? SMALL_BUCKET : LARGE_BUCKET;
  return (Math.floor(n / step) + 1) * step;
}

export function pad(data) {
  const out = new Uint8Array(bucket(data.length));
  out.set(data);
  out[data.length] = 0x80;
  return out;
}

// ISO/IEC 7816-4 padding removed, the bucket checked; null if malformed.
export function unpad(data) {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  if (end === 0 || data[end - 1] !== 0x80 || data.length !== bucket(end - 1)) return null;
  return data.slice(0, end - 1);
}

async function aesKey(raw, usage) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, [usage]);
}

export async function sealPayload(contentKey, nonce, plaintext, aad) {
  const key = await aesKey(contentKey, "encrypt");
  return new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, key, pad(plaintext)));
}

// The plaintext of a sealed payload, or null if it does not open or its padding is bad.
export async function openPayload(contentKey, nonce, ct, aad) {
  const key = await aesKey(contentKey, "decrypt");
  let padded;
  try {
    padded = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, key, ct));
  } catch {
    return null;
  }
  return unpad(padded);
}

// The content key of the epoch `epochRef`, checked: `epochChange` (raw signed change) hashes
// to `epochRef` and its ROTATE op commits to `secret`. Throws with what is wrong.
export async function checkedContentKey(roomId, epochRef, secret, epochChange) {
  if (!(secret instanceof Uint8Array) || secret.length !== 32) throw new Error("bad epoch secret");
  if (!equalBytes(await sha256(epochChange), epochRef))
    throw new Error("the epoch change is not the epoch the body is sealed under");
  const created = decodeChange(epochChange);
  const rotate = created.ops.filter((op) => Array.isArray(op) && op[0] === OP.ROTATE);
  if (rotate.length !== 1 || !(rotate[0][1] instanceof Uint8Array))
    throw new Error("the epoch change has no rotation");
  if (!equalBytes(await hkdf(secret, commitmentInfo(roomId)), rotate[0][1]))
    throw new Error("the epoch secret does not match the epoch's commitment");
  return hkdf(secret, derivedInfo(roomId, "content"));
}

// Does the sealed `body` make exactly `edit`, as `me`, in room `roomId`? `sealed` is the
// node's {secret, epoch} (bytes). Returns null if so, else what is wrong.
export async function checkSealedDraft(body, edit, me, roomId, sealed) {
  let ch;
  try {
    ch = decodeBody(body);
  } catch (err) {
    return `not a change: ${err.message}`;
  }
  if (!equalBytes(ch.author, me)) return "the change is not authored by this person";
  // Nothing in clear but the one SEALED op: no role, rotation, share or scene op.
  if (ch.actors.length || ch.names.length || ch.ops.length !== 1) return "expected one sealed op";
  const op = ch.ops[0];
  if (!Array.isArray(op) || op.length !== 4 || op[0] !== OP.SEALED) return "expected one sealed op";
  const [, epochRef, nonce, ct] = op;
  if (!(epochRef instanceof Uint8Array) || epochRef.length !== 32)
    return "the sealed op must name an existing epoch";
  if (!(nonce instanceof Uint8Array) || nonce.length !== 12 || !(ct instanceof Uint8Array))
    return "bad sealed op";
  if (!sealed || !(sealed.secret instanceof Uint8Array) || !(sealed.epoch instanceof Uint8Array))
    return "a sealed change comes with its epoch's secret and change";
  let key;
  try {
    key = await checkedContentKey(roomId, epochRef, sealed.secret, sealed.epoch);
  } catch (err) {
    return err.message;
  }
  const plain = await openPayload(key, nonce, ct, sealAad(roomId, ch.author, ch.seq, ch.hlc, epochRef));
  if (plain === null) return "the sealed ops do not open under the epoch's key";
  let block;
  try {
    block = unpack(plain);
  } catch (err) {
    return `the sealed ops are not msgpack: ${err.message}`;
  }
  if (!Array.isArray(block) || block.length !== 3 || !block.every(Array.isArray))
    return "the sealed ops are not [actors, names, ops]";
  return checkOps(ch.author, block[0], block[1], block[2], edit);
}

// A private room's presence (meshnode/overlay/sealed_presence.py): the fields become one,
// {sealed: base64(epoch || nonce || AES-256-GCM(presence key, nonce, pad(msgpack(fields)),
// aad))}, aad = "meshnode/presence-seal/v1\0" || room || participant || seq (u64) || epoch.
const PRESENCE_SEAL_DOMAIN = utf8("meshnode/presence-seal/v1\0");

export function presenceAad(roomId, participant, seq, epoch) {
  return concat(PRESENCE_SEAL_DOMAIN, roomId, participant, u64(seq), epoch);
}

export async function sealPresence(presenceKey, epoch, roomId, participant, seq, fields, nonce) {
  const ct = await sealPayload(presenceKey, nonce, pack(fields),
    presenceAad(roomId, participant, seq, epoch));
  return { sealed: b64(concat(epoch, nonce, ct)) };
}
