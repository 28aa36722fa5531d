"""Invite tokens: how a room admin lets another node or a client into a room.

A token is text an operator can paste (``mninv1`` + base58). It holds the room's genesis
change (so the receiver can build the replica offline and check the room ID), the role it
grants, an expiry, where to connect, how many members it may admit (``max_uses``, 0: no
limit), and the issuer's signature. Whoever presents it in a hello is granted the role by the
node that checks it, if the issuer may grant that role in that node's replica. A token is a
bearer capability: share it like a password.

Its **ID** (SHA-256 of the signed body) names it in the room's CRDT: the grant a node makes
when redeeming it names the ID, so every replica counts its uses the same way, and an admin
revokes it by ID (``SceneReplica.revoke_invite``). Tokens from before use limits (a body of
7 fields) still parse, with no limit.

A 9th field names the public half of the invite's own key pair (``invite_key``; see
``meshnode.crdt.redemption``): the invitee keeps the secret half and signs its redemption, so
a ``host`` can admit it with a proof every replica checks.

Three byte forms share one layout, ``msgpack([body, signature, extra?])``:

* the **public form** (:meth:`Invite.raw`), ``[body, signature]``: what identifies the invite;
* the **token** (:meth:`Invite.token`), ``[body, signature, invite_secret: bin(32)]``: the
  secret half travels with the token, to the invitee only (the token stays a bearer
  capability: whoever holds it can redeem it);
* the **presented form** (:meth:`Invite.presented`), ``[body, signature, redemption:
  bin(64)]``: what an invitee puts in its hello (or join request). It carries the invitee's
  redemption signature for its own key and never the secret, so the node that redeems it (a
  blind ``host`` of a private room, say) cannot reuse the invite for anyone else.
"""

import hashlib
import math
import secrets
from dataclasses import dataclass

import base58

from meshnode.crdt.redemption import invite_keypair, make_proof, redemption_signature
from protocol.change import MAX_INVITE_USES, change_id
from protocol.errors import DecodeError, FrameTooLarge, SchemaError
from protocol.limits import DEFAULT_LIMITS
from protocol.link import MAX_INVITE_BYTES as LINK_MAX_INVITE_BYTES
from protocol.msgpack_io import pack, unpack

PREFIX = "mninv1"
INVITE_DOMAIN = b"meshnode/invite/v1\x00"
GRANTABLE = ("viewer", "editor", "admin", "host")
INVITE_SECRET_BYTES = 32
REDEMPTION_BYTES = 64
MAX_URLS = 4  # with 256 characters each, an invite still fits in a hello
# An invite must fit in a hello, which carries invites of at most this size.
MAX_INVITE_BYTES = LINK_MAX_INVITE_BYTES
# base58 of MAX_INVITE_BYTES bytes is at most this long (decoding is quadratic in the length,
# so longer text is refused before it is decoded).
MAX_TOKEN_CHARS = len(PREFIX) + math.ceil(MAX_INVITE_BYTES * math.log(256) / math.log(58)) + 1


@dataclass(frozen=True, slots=True)
class Invite:
    """A decoded invite; :meth:`verify` checks its signature."""

    room_id: bytes
    genesis: bytes
    role: str
    issuer: bytes
    expires_ms: int
    urls: tuple[str, ...]
    nonce: bytes
    signature: bytes
    body: bytes
    max_uses: int = 0
    invite_key: bytes | None = None
    invite_secret: bytes | None = None
    """The secret half of the invite's key pair (in a token only; never sent to a node)."""
    redemption: bytes | None = None
    """The invitee's redemption signature (in the presented form from a hello)."""

    @property
    def id(self) -> bytes:
        """The invite ID: SHA-256 of the signed body."""
        return invite_id(self.body)

    def verify(self, now_ms: int) -> str | None:
        """None if valid now, else why not (``bad_signature``, ``expired``, ``wrong_room``)."""
        from meshnode.identity import verify_signature

        if not verify_signature(self.issuer, self.signature, INVITE_DOMAIN + self.body):
            return "bad_signature"
        if now_ms > self.expires_ms:
            return "expired"
        if change_id(self.genesis) != self.room_id:
            return "wrong_room"
        return None

    def raw(self) -> bytes:
        """The public form ``[body, signature]`` (no secret, no redemption)."""
        return pack([self.body, self.signature])

    def token(self) -> str:
        """The text form an operator shares (with the invite's secret half, if it has one)."""
        if self.invite_secret is None:
            return PREFIX + base58.b58encode(self.raw()).decode()
        return PREFIX + base58.b58encode(
            pack([self.body, self.signature, self.invite_secret])).decode()

    def presented(self, grantee: bytes) -> bytes:
        """The bytes an invitee whose key is ``grantee`` carries in its hello: the public
        form plus its redemption signature (``meshnode.crdt.redemption``), if the token holds
        the invite's secret half; the public form otherwise (an invite without a key pair)."""
        if self.invite_secret is None:
            return self.raw()
        return pack([self.body, self.signature,
                     redemption_signature(self.invite_secret, self.room_id, grantee)])

    def proof(self) -> bytes | None:
        """The redemption proof a grant carries (``make_proof``), if this invite was
        presented with a redemption signature (None otherwise)."""
        if self.redemption is None:
            return None
        return make_proof(self.body, self.signature, self.redemption)


def invite_id(body: bytes) -> bytes:
    """The ID of the invite whose signed body is ``body``."""
    return hashlib.sha256(body).digest()


def make_invite(
    room_id: bytes, genesis: bytes, role: str, issuer_public_key: bytes, sign: object,
    expires_ms: int, urls: list[str], max_uses: int = 0, invite_key: bytes | None = None,
    invite_secret: bytes | None = None,
) -> Invite:
    """Build and sign an invite (``sign``: bytes -> signature, e.g. ``Identity.sign``).
    ``max_uses``: how many members it may admit (0: no limit). ``invite_key``: the public
    half of the invite's key pair (``meshnode.crdt.redemption.invite_keypair``), for
    redemption proofs; ``invite_secret``: its secret half, carried in the token (the public
    half is derived from it when ``invite_key`` is not given)."""
    if invite_secret is not None:
        if type(invite_secret) is not bytes or len(invite_secret) != INVITE_SECRET_BYTES:
            raise ValueError("invite_secret is a 32-byte Ed25519 seed")
        derived = invite_keypair(invite_secret)[1]
        if invite_key is not None and invite_key != derived:
            raise ValueError("invite_key is not the public half of invite_secret")
        invite_key = derived
    if role not in GRANTABLE:
        raise ValueError(f"role must be one of {', '.join(GRANTABLE)}")
    if type(max_uses) is not int or not 0 <= max_uses < MAX_INVITE_USES:
        raise ValueError(f"max_uses must be an integer from 0 (no limit) to {MAX_INVITE_USES - 1}")
    nonce = secrets.token_bytes(8)
    fields: list[object] = [room_id, genesis, role, issuer_public_key, expires_ms,
                            urls[:MAX_URLS], nonce, max_uses]
    if invite_key is not None:
        if type(invite_key) is not bytes or len(invite_key) != 32:
            raise ValueError("invite_key is a 32-byte Ed25519 public key")
        fields.append(invite_key)
    body = pack(fields)
    assert callable(sign)
    sig = sign(INVITE_DOMAIN + body)
    inv = Invite(room_id, genesis, role, issuer_public_key, expires_ms, tuple(urls[:MAX_URLS]),
                 nonce, sig, body, max_uses, invite_key, invite_secret)
    try:  # never hand out a token that no node can read back, nor one too big for a hello
        decode_invite_bytes(inv.raw())
        parse_invite(inv.token())
        decode_invite_bytes(inv.presented(issuer_public_key))
    except DecodeError as err:
        raise ValueError(f"cannot make this invite: {err}") from None
    return inv


def decode_invite_bytes(raw: bytes) -> Invite:
    """Decode the bytes form; raises ``DecodeError`` on anything malformed."""
    outer = unpack(raw, DEFAULT_LIMITS, MAX_INVITE_BYTES, "invite")
    if type(outer) is not list or len(outer) not in (2, 3):
        raise SchemaError("invite is [body, signature, secret or redemption?]")
    body, sig = outer[:2]
    if type(body) is not bytes or type(sig) is not bytes or len(sig) != 64:
        raise SchemaError("invite is [body: bytes, signature: 64 bytes]")
    extra = outer[2] if len(outer) == 3 else None
    if extra is not None and (type(extra) is not bytes
                              or len(extra) not in (INVITE_SECRET_BYTES, REDEMPTION_BYTES)):
        raise SchemaError("an invite's third element is its secret (32 bytes) or a "
                          "redemption signature (64 bytes)")
    f = unpack(body, DEFAULT_LIMITS, MAX_INVITE_BYTES, "invite body")
    if type(f) is not list or len(f) not in (7, 8, 9):
        raise SchemaError("invite body is [room, genesis, role, issuer, expires, urls, nonce, "
                          "max_uses]")
    room_id, genesis, role, issuer, expires, urls, nonce = f[:7]
    max_uses = f[7] if len(f) >= 8 else 0  # a token from before use limits
    invite_key = f[8] if len(f) == 9 else None
    if invite_key is not None and (type(invite_key) is not bytes or len(invite_key) != 32):
        raise SchemaError("invite key must be a 32-byte public key")
    if type(room_id) is not bytes or len(room_id) != 32 or type(genesis) is not bytes:
        raise SchemaError("invite room must be 32 bytes and genesis bytes")
    if role not in GRANTABLE or type(role) is not str:
        raise SchemaError("invite role is not grantable")
    if type(issuer) is not bytes or len(issuer) != 32:
        raise SchemaError("invite issuer must be a 32-byte key")
    if type(expires) is not int or expires < 0:
        raise SchemaError("invite expiry must be a non-negative integer")
    if type(urls) is not list or len(urls) > MAX_URLS or not all(
        type(u) is str and len(u) <= 256 for u in urls
    ):
        raise SchemaError("invite urls must be a short list of strings")
    if type(nonce) is not bytes:
        raise SchemaError("invite nonce must be bytes")
    if type(max_uses) is not int or not 0 <= max_uses < MAX_INVITE_USES:
        raise SchemaError("invite max_uses must be an integer in [0, 2^32)")
    secret = extra if extra is not None and len(extra) == INVITE_SECRET_BYTES else None
    redemption = extra if extra is not None and len(extra) == REDEMPTION_BYTES else None
    if extra is not None and invite_key is None:
        raise SchemaError("an invite without a key pair carries no secret or redemption")
    if secret is not None and invite_keypair(secret)[1] != invite_key:
        raise SchemaError("the invite's secret is not the half of its invite key")
    return Invite(room_id, genesis, role, issuer, expires, tuple(urls), nonce, sig, body,
                  max_uses, invite_key, secret, redemption)


def parse_invite(token: str) -> Invite:
    """Decode the text form; raises ``DecodeError`` with what is wrong."""
    token = token.strip()
    if not token.startswith(PREFIX):
        shown = token[:12] + ("…" if len(token) > 12 else "")
        raise DecodeError(f"this is not an invite token: an invite starts with {PREFIX!r} "
                          f"(got {shown!r}); copy the whole token that `meshnode room invite` "
                          "printed")
    if len(token) > MAX_TOKEN_CHARS:
        raise FrameTooLarge(f"invite of {len(token)} characters is over the limit of "
                            f"{MAX_TOKEN_CHARS}")
    try:
        raw = base58.b58decode(token[len(PREFIX):])
    except ValueError:
        raise DecodeError(f"the invite token has characters an invite never holds (it is "
                          f"base58: no 0, O, I, l, spaces or punctuation after {PREFIX!r}); "
                          "copy it again, in one piece") from None
    try:
        return decode_invite_bytes(raw)
    except DecodeError as err:
        # The details (msgpack, field layouts) mean nothing to whoever pasted the token.
        # (The reason label stays the decoder's.)
        raise type(err)(f"the invite token is damaged or cut short ({len(token)} characters): "
                        "copy the whole token, in one piece, or ask for a new one") from None
