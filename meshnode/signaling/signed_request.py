"""Signed HTTP requests: a peer proves its identity to a node's room endpoints.

A member of an invite-only room may read its genesis, heads and snapshot over HTTP; to say who
it is, it signs the request with its Ed25519 key and sends one header::

    Meshnode-Signature: peer=<PeerID>, ts=<unix milliseconds>, sig=<base64url signature>

The signature covers ``meshnode/http-request/v1\\0`` followed by the msgpack array
``[METHOD, path-with-query, ts, host]`` (``host`` as sent in the ``Host`` header, lower-case),
so it is bound to one request on one node: it cannot be replayed against another path or
another node. The node accepts a timestamp within ``window_s`` (60 s) of its own clock and
remembers each accepted signature until it is that old, so a captured header cannot be used a
second time ("replay-safe enough": the memory is bounded; when it is full of fresh entries the
oldest are forgotten first, and their requests are at most ``window_s`` old).

``parse_signature_header`` is the one decoder of the header (fuzz-tested); ``RequestVerifier``
keeps the replay memory; ``sign_request`` is the client's side.
"""

import base64
import binascii
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from meshnode.identity import Identity, public_key_from_peer_id, verify_signature
from protocol.msgpack_io import pack

__all__ = [
    "SIGNATURE_HEADER",
    "RequestSignature",
    "RequestVerifier",
    "SignatureHeaderError",
    "SignatureRefused",
    "parse_signature_header",
    "sign_request",
    "signed_bytes",
]

SIGNATURE_HEADER = "Meshnode-Signature"
REQUEST_DOMAIN = b"meshnode/http-request/v1\x00"
MAX_HEADER_CHARS = 256
DEFAULT_WINDOW_S = 60.0
DEFAULT_REMEMBERED = 8192

_FIELD = re.compile(r"^\s*(peer|ts|sig)=([A-Za-z0-9_\-]+)\s*$")


class SignatureRefused(StrEnum):
    """Why a signed request was not accepted (stable: used as a metric label)."""

    MALFORMED = "signature_malformed"
    BAD_PEER = "signature_bad_peer"
    STALE = "signature_stale"
    REPLAYED = "signature_replayed"
    BAD_SIGNATURE = "signature_invalid"


@dataclass(frozen=True, slots=True)
class RequestSignature:
    """A parsed ``Meshnode-Signature`` header (not yet verified)."""

    peer: str
    public_key: bytes
    ts_ms: int
    signature: bytes


class SignatureHeaderError(ValueError):
    """The header is not ``peer=..., ts=..., sig=...``; ``reason`` says which refusal."""

    def __init__(self, reason: SignatureRefused, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_signature_header(value: str) -> RequestSignature:
    """Decode the header; raises ``SignatureHeaderError`` on anything malformed."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
        raise SignatureHeaderError(SignatureRefused.MALFORMED,
                                   f"the header is at most {MAX_HEADER_CHARS} characters")
    fields: dict[str, str] = {}
    for part in value.split(","):
        m = _FIELD.match(part)
        if m is None or m.group(1) in fields:
            raise SignatureHeaderError(SignatureRefused.MALFORMED,
                                       "expected peer=<PeerID>, ts=<ms>, sig=<base64url>")
        fields[m.group(1)] = m.group(2)
    if set(fields) != {"peer", "ts", "sig"}:
        raise SignatureHeaderError(SignatureRefused.MALFORMED,
                                   "expected peer=<PeerID>, ts=<ms>, sig=<base64url>")
    ts = fields["ts"]
    if not ts.isascii() or not ts.isdigit() or len(ts) > 15:
        raise SignatureHeaderError(SignatureRefused.MALFORMED, "ts is unix milliseconds")
    try:
        sig = base64.urlsafe_b64decode(fields["sig"] + "=" * (-len(fields["sig"]) % 4))
    except (binascii.Error, ValueError):
        raise SignatureHeaderError(SignatureRefused.MALFORMED, "sig is not base64url") from None
    if len(sig) != 64:
        raise SignatureHeaderError(SignatureRefused.MALFORMED, "sig is 64 bytes")
    try:
        key = public_key_from_peer_id(fields["peer"])
    except ValueError as err:
        raise SignatureHeaderError(SignatureRefused.BAD_PEER, str(err)) from None
    return RequestSignature(fields["peer"], key, int(ts), sig)


def signed_bytes(method: str, path: str, ts_ms: int, host: str) -> bytes:
    """What the signature covers."""
    return REQUEST_DOMAIN + pack([method.upper(), path, ts_ms, host.lower()])


def sign_request(identity: Identity, method: str, path: str, host: str,
                 now_s: float | None = None) -> dict[str, str]:
    """The header that signs ``METHOD path`` to ``host`` (the ``Host`` header's value)."""
    ts = int((time.time() if now_s is None else now_s) * 1000)
    sig = identity.sign(signed_bytes(method, path, ts, host))
    b64 = base64.urlsafe_b64encode(sig).rstrip(b"=").decode("ascii")
    return {SIGNATURE_HEADER: f"peer={identity.public_id}, ts={ts}, sig={b64}"}


class RequestVerifier:
    """Checks signed requests: signature, clock window, and no second use of a signature."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S,
                 max_remembered: int = DEFAULT_REMEMBERED) -> None:
        self.window_s = window_s
        self.max_remembered = max_remembered
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # signature -> forget after

    def verify(self, header: str, method: str, path: str, host: str,
               now_s: float) -> RequestSignature | SignatureRefused:
        """The signer, or why the request is refused. ``now_s`` is wall time (it is compared
        with the signer's wall clock)."""
        try:
            parsed = parse_signature_header(header)
        except SignatureHeaderError as err:
            return err.reason
        if abs(parsed.ts_ms / 1000 - now_s) > self.window_s:
            return SignatureRefused.STALE
        if not verify_signature(parsed.public_key, parsed.signature,
                                signed_bytes(method, path, parsed.ts_ms, host)):
            return SignatureRefused.BAD_SIGNATURE
        self._forget_expired(now_s)
        if parsed.signature in self._seen:
            return SignatureRefused.REPLAYED
        while len(self._seen) >= self.max_remembered:
            self._seen.popitem(last=False)
        self._seen[parsed.signature] = parsed.ts_ms / 1000 + self.window_s
        return parsed

    def _forget_expired(self, now_s: float) -> None:
        # Entries are kept in arrival order, and their expiry is not monotonic in it: stop at
        # the first live one (a few stale entries may linger until it expires; they are few).
        while self._seen:
            sig, until = next(iter(self._seen.items()))
            if until >= now_s:
                break
            del self._seen[sig]
