"""The signing requests of one browser session: which bodies the node asked its page to sign,
and the page's answers, checked.

Each request has a number (``sreq``) the node picks, once; an answer for a number that is not
open (never asked, answered already, or given up on) is refused as
``unknown_signing_request`` and changes nothing: a replayed or reordered answer cannot be
applied to another request's body. A signature is checked against the exact body asked for
(``bad_signature`` otherwise), so a page that signs other bytes gets nothing applied.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
from dataclasses import dataclass
from typing import Any

from meshnode.web.messages import MAX_REQ, BadMessage

__all__ = ["SignAnswer", "SignDesk", "parse_sign_answer"]

MAX_OPEN = 64
"""Signing requests of one session waiting for an answer at once (one per person on a node is
the rule; the bound is for a page that never answers)."""

MAX_CHANGE_B64 = 90_000
MAX_CHANGES = 16
"""Signed changes a page shows at most in one refusal (it keeps its last 16)."""


@dataclass(frozen=True, slots=True)
class SignAnswer:
    """A page's answer to one signing request: a 64-byte ``signature`` of the body, or a
    refusal with its ``reason``: ``seq_reused`` (the page signed up to ``seq`` already;
    ``changes`` are the signed changes from the drafted seq on, oldest first),
    ``already_signed`` (the same, and the change of seq ``seq`` is this very edit, signed
    before a failover), ``mismatch`` (the body is not the edit the page asked for), ..."""

    sreq: int
    signature: bytes | None = None
    reason: str | None = None
    seq: int | None = None
    changes: tuple[bytes, ...] = ()


def _b64(value: object, what: str, limit: int) -> bytes:
    if type(value) is not str or len(value) > limit:
        raise BadMessage("bad_message", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage("bad_message", f"{what} is not valid base64") from None


def parse_sign_answer(msg: dict[str, Any]) -> SignAnswer:
    """A ``signed`` or ``sign_refused`` message, checked for shape (``BadMessage``)."""
    sreq = msg.get("sreq")
    if type(sreq) is not int or not 0 < sreq <= MAX_REQ:
        raise BadMessage("bad_message", 'a signing answer needs its integer "sreq"')
    if msg["t"] == "signed":
        sig = _b64(msg.get("sig"), '"sig"', 100)
        if len(sig) != 64:
            raise BadMessage("bad_message", '"sig" must be a 64-byte Ed25519 signature')
        return SignAnswer(sreq, signature=sig)
    reason = msg.get("reason")
    if type(reason) is not str or not 0 < len(reason) <= 64:
        raise BadMessage("bad_message", 'a refusal needs a "reason"')
    seq = msg.get("seq")
    if seq is not None and (type(seq) is not int or not 0 < seq <= MAX_REQ):
        raise BadMessage("bad_message", '"seq" must be a positive integer')
    raw = msg.get("changes", [])
    if type(raw) is not list or len(raw) > MAX_CHANGES:
        raise BadMessage("bad_message", f'"changes" must be a list of at most {MAX_CHANGES} '
                         "base64 changes")
    changes = tuple(_b64(c, '"changes"', MAX_CHANGE_B64) for c in raw)
    return SignAnswer(sreq, reason=reason, seq=seq, changes=changes)


class SignDesk:
    """The open signing requests of one session (see the module docstring)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._open: dict[int, asyncio.Future[SignAnswer]] = {}

    def open(self) -> tuple[int, asyncio.Future[SignAnswer]]:
        """A new request number and the future its answer resolves. Raises
        ``OverflowError`` if too many are open."""
        if len(self._open) >= MAX_OPEN:
            raise OverflowError("too many signing requests are waiting for the page")
        sreq = next(self._numbers)
        fut: asyncio.Future[SignAnswer] = asyncio.get_running_loop().create_future()
        self._open[sreq] = fut
        return sreq, fut

    def forget(self, sreq: int) -> None:
        """Give up on a request: a late answer to it is then an unknown one."""
        fut = self._open.pop(sreq, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def answer(self, answer: SignAnswer) -> bool:
        """Resolve the request the answer names; False if it is not open (nothing done)."""
        fut = self._open.pop(answer.sreq, None)
        if fut is None or fut.done():
            return False
        fut.set_result(answer)
        return True

    def close(self) -> None:
        """Give up on every open request."""
        for sreq in list(self._open):
            self.forget(sreq)
