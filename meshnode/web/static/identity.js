// The person's key in this browser: Ed25519 through WebCrypto, kept in IndexedDB.
//
// Generated on the first visit and NOT extractable: no script (this page's included) can
// read the private key; it can only ask WebCrypto to sign with it. The price: such a key
// cannot be exported. So a key is made exportable only when the person asks for it before it
// exists (open the page once with `?identity=exportable`) or imports one (the person holds the
// file already). An exportable key is still used through a non-extractable CryptoKey; its
// seed is kept encrypted (AES-GCM) under a second non-extractable key in IndexedDB, so it is
// only readable through exportIdentity(), which any script of this origin could call: that is
// the trade-off, documented in docs/clients.md.
//
// Export file: meshnode.identity_export (Python) documents the format; both read both.
//
// Seq guard (docs/protocol.md, "Browser signing"): for each (person, room) the page keeps the
// highest seq it signed and the last changes it signed, in IndexedDB, and signs under a Web
// Lock named after them: two tabs of one person never sign one seq twice, whatever node each
// talks to; a draft at or below a signed seq is refused with the signed changes, which the
// node then applies before drafting again.

import {
  b64,
  checkDraft,
  checkSealedDraft,
  concat,
  decodeBody,
  didOf,
  fromB64,
  IDENTIFY_DOMAIN,
  pack,
  peerIdOf,
  PRESENCE_DOMAIN,
  sealPresence,
  signingPayload,
  utf8,
} from "./wire.js";

const DB_NAME = "meshnode";
const DB_VERSION = 1;
const KEEP_SIGNED = 16; // signed changes kept per (person, room), to bring to another node
const EXPORT_FORMAT = "meshnode-identity-encrypted-v1";
const PLAIN_HEADER = "meshnode-identity-v1";
const PBKDF2_ROUNDS = 600000;
const PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);
const ED = { name: "Ed25519" };

// ------------------------------------------------------------------ IndexedDB

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("identity")) db.createObjectStore("identity");
      if (!db.objectStoreNames.contains("chains")) db.createObjectStore("chains");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function dbGet(store, key) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const req = db.transaction(store).objectStore(store).get(key);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  } finally {
    db.close();
  }
}

async function dbPut(store, key, value) {
  const db = await openDb();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(store, "readwrite");
      tx.objectStore(store).put(value, key);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

// ------------------------------------------------------------------ keys

async function seedKey(seed, extractable = false) {
  return crypto.subtle.importKey("pkcs8", concat(PKCS8_PREFIX, seed), ED, extractable, ["sign"]);
}

async function publicOf(seed) {
  // WebCrypto derives the public key only through a JWK export of an extractable key.
  const key = await seedKey(seed, true);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  return fromB64(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (jwk.x.length % 4)) % 4));
}

async function recordFromSeed(seed) {
  const publicKey = await publicOf(seed);
  const wrapKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, wrapKey, seed));
  return {
    peer_id: peerIdOf(publicKey),
    publicKey,
    privateKey: await seedKey(seed, false),
    exportable: true,
    wrapKey,
    wrapped: { iv, data: wrapped },
  };
}

async function newRecord(exportable) {
  if (exportable) return recordFromSeed(crypto.getRandomValues(new Uint8Array(32)));
  const pair = await crypto.subtle.generateKey(ED, false, ["sign", "verify"]);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { peer_id: peerIdOf(publicKey), publicKey, privateKey: pair.privateKey, exportable: false };
}

let current = null; // the loaded record

// The person's identity: loaded from IndexedDB, or made on the first visit.
export async function loadIdentity({ exportable = false } = {}) {
  if (current) return current;
  let rec = await dbGet("identity", "current");
  if (!rec) {
    // Two tabs opened at once must end with one key: decide under a lock.
    await navigator.locks.request("meshnode-identity", async () => {
      rec = await dbGet("identity", "current");
      if (!rec) {
        rec = await newRecord(exportable);
        await dbPut("identity", "current", rec);
      }
    });
  }
  current = rec;
  return rec;
}

export function identityInfo() {
  if (!current) return null;
  return { peer_id: current.peer_id, did: didOf(current.publicKey), exportable: !!current.exportable };
}

export function publicKey() {
  return current.publicKey;
}

async function sign(bytes) {
  return new Uint8Array(await crypto.subtle.sign(ED, current.privateKey, bytes));
}

// ------------------------------------------------------------------ export and import

async function passKey(passphrase, salt, rounds) {
  const base = await crypto.subtle.importKey("raw", utf8(passphrase), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt, iterations: rounds }, base,
    { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

// The identity as an encrypted identity file's text (JSON).
export async function exportIdentity(passphrase) {
  const rec = await loadIdentity();
  if (!passphrase) throw new Error("an export needs a passphrase");
  if (!rec.exportable)
    throw new Error("this identity's key was made non-extractable and cannot leave this browser; " +
      "open the page with ?identity=exportable in a new profile for an exportable one");
  const seed = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: rec.wrapped.iv }, rec.wrapKey, rec.wrapped.data));
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const key = await passKey(passphrase, salt, PBKDF2_ROUNDS);
  const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: utf8(rec.peer_id) }, key, seed));
  seed.fill(0);
  return JSON.stringify({
    format: EXPORT_FORMAT, peer_id: rec.peer_id, did: didOf(rec.publicKey),
    kdf: "PBKDF2-SHA256", iterations: PBKDF2_ROUNDS, salt: b64(salt),
    cipher: "AES-256-GCM", iv: b64(iv), ciphertext: b64(sealed),
  }, null, 1) + "\n";
}

// Read an identity file (encrypted export, or the Python client's plain identity file) and
// make it this browser's identity. Takes effect on the next connection (reload).
export async function importIdentity(file, passphrase) {
  const text = typeof file === "string" ? file : await file.text();
  let seed;
  if (text.trim().startsWith("{")) {
    const doc = JSON.parse(text);
    if (doc.format !== EXPORT_FORMAT || doc.kdf !== "PBKDF2-SHA256" || doc.cipher !== "AES-256-GCM")
      throw new Error("not a meshnode encrypted identity file");
    if (!Number.isInteger(doc.iterations) || doc.iterations < 100000 || doc.iterations > 10000000)
      throw new Error("unsupported PBKDF2 iterations");
    const key = await passKey(passphrase || "", fromB64(doc.salt), doc.iterations);
    try {
      seed = new Uint8Array(await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: fromB64(doc.iv), additionalData: utf8(doc.peer_id) }, key, fromB64(doc.ciphertext)));
    } catch {
      throw new Error("wrong passphrase (or a damaged identity file)");
    }
  } else {
    const lines = text.trim().split(/\r?\n/);
    if (lines.length !== 2 || lines[0].trim() !== PLAIN_HEADER) throw new Error("not an identity file");
    seed = fromB64(lines[1].trim());
  }
  if (seed.length !== 32) throw new Error("the key in the file is not a 32-byte Ed25519 seed");
  const rec = await recordFromSeed(seed);
  seed.fill(0);
  await navigator.locks.request("meshnode-identity", () => dbPut("identity", "current", rec));
  current = rec;
  return identityInfo();
}

// ------------------------------------------------------------------ what the page signs

// Proof for the node that this page holds the key (docs/protocol.md, "Browser signing").
export async function signIdentify(roomId, nodeKey, challenge) {
  return sign(concat(IDENTIFY_DOMAIN, roomId, nodeKey, challenge));
}

function chainKey(roomHex) {
  return `${current.peer_id} ${roomHex}`;
}

// Sign the change body the node drafted for `edit`, unless it is not that edit or its seq is
// not above every seq this person signed in this room (any tab). In a private room `sealed`
// is the node's {secret, epoch} (bytes): the page opens the sealed ops with the checked epoch
// key and compares them (wire.js checkSealedDraft); the secret is used for that check only and
// never stored. Returns {sig} or {refused, detail?, seq?, changes?, mine?}.
export async function signDraft(roomHex, roomId, body, edit, tab, req, sealed = null) {
  return navigator.locks.request(`meshnode-chain ${chainKey(roomHex)}`, async () => {
    const draft = decodeBody(body);
    const chain = (await dbGet("chains", chainKey(roomHex))) || { seq: 0, signed: [] };
    if (draft.seq <= chain.seq) {
      const later = chain.signed.filter((s) => s.seq >= draft.seq).sort((a, b) => a.seq - b.seq);
      const mine = chain.signed.find((s) => s.tab === tab && s.req === req && s.seq >= draft.seq);
      return {
        refused: mine ? "already_signed" : "seq_reused",
        seq: mine ? mine.seq : chain.seq,
        changes: later.map((s) => s.change),
      };
    }
    const problem = sealed
      ? await checkSealedDraft(body, edit, current.publicKey, roomId, sealed)
      : checkDraft(body, edit, current.publicKey);
    if (problem) return { refused: "mismatch", detail: problem };
    const sig = await sign(signingPayload(roomId, body));
    const signed = [...chain.signed, { seq: draft.seq, change: concat(body, sig), tab, req }].slice(-KEEP_SIGNED);
    await dbPut("chains", chainKey(roomHex), { seq: draft.seq, signed });
    return { sig };
  });
}

let presenceSeq = 0;

// A presence update signed by the person: {body, sig} (base64), body = [key, seq, fields].
// In a private room `seal` is the node's {epoch, key} (bytes): the fields are sealed under
// that presence key (wire.js sealPresence), so that hosts relay them blind.
export async function signPresence(roomId, fields, seal = null) {
  const sorted = {};
  for (const k of Object.keys(fields).sort()) sorted[k] = fields[k];
  presenceSeq = Math.max(presenceSeq + 1, Date.now());
  const shown = seal
    ? await sealPresence(seal.key, seal.epoch, roomId, current.publicKey, presenceSeq, sorted,
      crypto.getRandomValues(new Uint8Array(12)))
    : sorted;
  const body = pack([current.publicKey, presenceSeq, shown]);
  const sig = await sign(concat(PRESENCE_DOMAIN, roomId, body));
  return { body: b64(body), sig: b64(sig) };
}
