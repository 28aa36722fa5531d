"""The person behind a browser session: proving their key, and the edits their page signs
(the node drafts each change as the person, the page signs it, the node checks and applies
it; a page that signed further elsewhere brings those changes first)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

from meshnode.crdt import EntityId, PermissionDenied
from meshnode.crdt.authoring import DraftRefused, SealedDraft
from meshnode.identity import public_key_from_peer_id, verify_signature
from meshnode.identity_export import did_key
from meshnode.web.messages import BadMessage
from meshnode.web.people import identify_payload
from meshnode.web.rooms import EditFn
from meshnode.web.session_view import SessionView
from meshnode.web.signing import SignAnswer
from protocol.change import OP_CREATE, decode_change, signing_payload
from protocol.errors import DecodeError

log = logging.getLogger("meshnode.web.session")  # one logger for the whole session


class PersonEdits(SessionView):
    """Identification and person-signed edits of a ``BrowserSession``."""

    async def _handle_identify(self, msg: dict[str, Any]) -> None:
        """The page proves it holds its person's key (a signature of the welcome's challenge)
        and, with an invite, redeems it; the node admits the person and says their role."""
        peer, sig, invite = msg.get("peer"), msg.get("sig"), msg.get("invite")
        if type(peer) is not str or type(sig) is not str or len(sig) > 100:
            raise BadMessage("bad_message", 'identify needs a "peer" and a base64 "sig"')
        if invite is not None and (type(invite) is not str or len(invite) > 8192):
            raise BadMessage("bad_message", '"invite" must be an invite token')
        try:
            key = public_key_from_peer_id(peer)
            signature = base64.b64decode(sig, validate=True)
        except (ValueError, binascii.Error) as err:
            raise BadMessage("bad_message", f"identify: {err}") from None
        if self.person is not None and self.person != key:
            raise BadMessage("already_identified", "this session belongs to another person; "
                             "open a new connection to change identity")
        node_key = public_key_from_peer_id(self._room.me)
        payload = identify_payload(self._room.room_id, node_key, self._challenge)
        if not verify_signature(key, signature, payload):
            raise BadMessage("bad_identity_proof", "the signature does not prove this key: "
                             "sign the welcome's challenge with the person's key")
        self.person, self.person_id = key, peer
        self.counters["identified"] += 1
        problem = None
        try:
            problem = await self._room.admit_person(peer, invite)
        except Exception:
            log.exception("session %s: admitting %s failed", self.name, peer)
            problem = "admission_failed"
        if problem is not None:
            self.counters[f"admission_{problem}"] += 1
        self._send({"t": "identified", "peer": peer, "did": did_key(key),
                    "role": self._room.role_of(peer), "problem": problem})
        if self._sent_privacy.get("private"):
            # What this person may see changed (a reader now sees the scene): push it now.
            self._dirty = True
            self._flush()

    def _handle_sign_answer(self, answer: SignAnswer) -> None:
        if not self._desk.answer(answer):
            # Replayed, reordered or made up: it names no request the node has open.
            raise BadMessage("unknown_signing_request",
                             f"signing request {answer.sreq} is not open (answered already, "
                             "given up on, or never asked): nothing was applied")

    async def _run_person_edit(self, req: int, fn: EditFn) -> None:
        if self.person is None:
            self._refuse(req, "not_identified", "identify first: the page signs its edits "
                         "with its person's key")
            return
        if self._edits_in_flight >= self.limits.max_edits_in_flight:
            self._refuse(req, "busy", "busy: too many edits waiting to be durable")
            return
        if not self._edit_bucket.take(1.0, self._clock()):
            self._refuse(req, "edit_rate_limited",
                         f"rate limited: at most {self.limits.edit_rate:g} edits a second")
            return
        self._edits_in_flight += 1
        try:
            async with self._room.author_lock(self.person):
                ack = await self._author(req, self.person, fn)
        except Exception as err:
            log.exception("session %s: edit %d failed", self.name, req)
            self._refuse(req, "edit_failed", f"the node could not make this edit: {err}")
            return
        finally:
            self._edits_in_flight -= 1
        if ack is not None:
            await self._ack(ack)

    async def _author(self, req: int, person: bytes, fn: EditFn) -> dict[str, Any] | None:
        """Draft the edit as the person, have the page sign it, apply it. Returns the ack to
        send (None: a refusal was sent)."""
        rotated = False
        for _ in range(self.limits.sign_attempts):
            try:
                draft = self._room.draft(person, fn)
            except DraftRefused as err:
                if err.reason == "no_usable_epoch" and not rotated:
                    # A removal left the latest epoch stale: the node starts a new one, if
                    # it may (its own change), and drafts again under it.
                    rotated = True
                    rotate = getattr(self._room, "rotate_keys", None)
                    if callable(rotate) and await rotate():
                        continue
                self._refuse(req, "edit_refused", f"permission denied: {err}", err.reason)
                return None
            except PermissionDenied as err:
                self._refuse(req, "edit_refused", f"permission denied: {err}")
                return None
            except (ValueError, TypeError) as err:
                self._refuse(req, "edit_refused", str(err) or type(err).__name__)
                return None
            answer = await self._ask_signature(req, draft)
            if answer is None:
                return None
            if answer.signature is not None:
                return await self._apply_signed(req, person, draft, answer.signature)
            if answer.reason in ("seq_reused", "already_signed") and answer.changes:
                brought = await self._bring_signed(req, person, answer.changes)
                if brought is None:
                    return None
                if answer.reason == "already_signed" and answer.seq in brought:
                    # The page signed this very edit before (a failover redelivery).
                    return self._ack_of_change(req, person, brought[answer.seq])
                continue  # the person's chain is further along: draft again
            self._refuse(req, "sign_refused", f"the page refused to sign: {answer.reason}",
                         answer.reason)
            return None
        self._refuse(req, "seq_conflict", "the person's changes from another tab or node "
                     "kept overtaking this one: try again", "seq_conflict")
        return None

    async def _ask_signature(self, req: int, draft: SealedDraft) -> SignAnswer | None:
        try:
            sreq, fut = self._desk.open()
        except OverflowError as err:
            self._refuse(req, "busy", str(err))
            return None
        ask: dict[str, Any] = {"t": "sign", "req": req, "sreq": sreq, "seq": draft.seq,
                               "body": base64.b64encode(draft.body).decode("ascii")}
        if draft.epoch_secret is not None and draft.epoch_change is not None:
            # A private room: what the page needs to open the sealed ops and compare them
            # with its edit (docs/protocol.md, "Browser signing in private rooms"). Drafted
            # only for a person who is a reader and may edit (meshnode.crdt.authoring).
            ask["sealed"] = {"secret": base64.b64encode(draft.epoch_secret).decode("ascii"),
                             "epoch": base64.b64encode(draft.epoch_change).decode("ascii")}
            self.counters["epoch_keys_given"] += 1
        self._send(ask)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.limits.sign_timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            self._desk.forget(sreq)
            if self._closed:
                return None
            self._refuse(req, "sign_timeout", "the page did not sign in time")
            return None

    async def _apply_signed(self, req: int, person: bytes, draft: SealedDraft,
                            signature: bytes) -> dict[str, Any] | None:
        payload = signing_payload(self._room.room_id, draft.body)
        if not verify_signature(person, signature, payload):
            self._refuse(req, "bad_signature", "the signature is not the person's over the "
                         "change asked for: nothing was applied", "bad_signature")
            return None
        problem = await self._room.submit_signed(draft.body + signature)
        if problem is not None:
            self._refuse(req, "edit_refused", f"the room refused the change: {problem}",
                         problem)
            return None
        ack: dict[str, Any] = {"t": "ack", "req": req, "ok": True, "seq": draft.seq}
        if isinstance(draft.result, EntityId):
            ack["id"] = str(draft.result)
        return ack

    async def _bring_signed(self, req: int, person: bytes, changes: tuple[bytes, ...]
                            ) -> dict[int, bytes] | None:
        """The page shows changes it signed that this replica lacks: apply them and wait until
        the person's chain reaches them here. Returns them by seq (None: refused)."""
        by_seq: dict[int, bytes] = {}
        for data in changes:
            try:
                ch = decode_change(data)
            except DecodeError as err:
                self._refuse(req, "bad_signed_change", f"the page's signed change: {err}",
                             "bad_signed_change")
                return None
            if ch.author != person or not verify_signature(
                    person, ch.signature, signing_payload(self._room.room_id, ch.body)):
                self._refuse(req, "bad_signed_change", "the page's signed change is not the "
                             "person's", "bad_signed_change")
                return None
            by_seq[ch.seq] = data
        for seq in sorted(by_seq):
            problem = await self._room.submit_signed(by_seq[seq])
            if problem is not None:
                self._refuse(req, "edit_refused", f"the person's change {seq} was refused: "
                             f"{problem}", problem)
                return None
        top = max(by_seq)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.chain_wait_s
        while self._room.author_seq(person) < top:
            if loop.time() > deadline or self._closed:
                self._refuse(req, "seq_behind", "this node does not hold the person's earlier "
                             "changes yet: try again in a moment", "seq_behind")
                return None
            await asyncio.sleep(0.05)
        return by_seq

    def _ack_of_change(self, req: int, person: bytes, data: bytes) -> dict[str, Any]:
        ch = decode_change(data)
        ack: dict[str, Any] = {"t": "ack", "req": req, "ok": True, "seq": ch.seq}
        creates = [op for op in ch.ops if op[0] == OP_CREATE]
        if creates:
            ack["id"] = str(EntityId(person, creates[0][1]))
        return ack
