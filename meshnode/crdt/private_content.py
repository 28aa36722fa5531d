"""``PrivateContentLayer``: a private room's sealed content, opened on apply, sealed on commit.

A base of ``PrivateRoom`` (``meshnode.crdt.privacy`` describes the chain and the two layers):
after a change passes the public rules, its epoch keys are recorded and its ``SEALED``
payload, for a key holder, decrypted and judged against the change's causal past (voided, or
waiting in causal order for a key); on ``commit``, the batch's scene ops are sealed under
the current epoch, with a rotation or shares when the readers changed.
"""

from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshnode.crdt.editing import PrivateBatch
from meshnode.crdt.epochs import Epoch
from meshnode.crdt.member_keys import unwrap, wrap, x25519_private
from meshnode.crdt.private_rules import SEALABLE_CODES, PrivatePlan, PrivateRules
from meshnode.crdt.quota import entity_quota
from meshnode.crdt.results import Rejected
from meshnode.crdt.roles import READER_ROLES, ROLE_ADMIN, ROLE_EDITOR, ROLE_OWNER
from meshnode.crdt.scene_rules import judge_scene_ops
from meshnode.crdt.sealing import (
    back_aad,
    commitment,
    derived_key,
    pack_secrets,
    seal_aad,
    share_info,
    split_secrets,
    unpad,
    wrap_info,
)
from meshnode.crdt.tree import Stamp
from protocol.change import OP_ROLE, Change, check_ops, decode_change
from protocol.errors import DecodeError
from protocol.msgpack_io import pack, unpack
from protocol.private_ops import OP_NAME, OP_ROTATE, OP_SEALED, OP_SHARE, SECRET_BYTES


class PrivateContentLayer(PrivateRules):
    """The content layer of ``PrivateRoom`` (see the module docstring)."""

    # ------------------------------------------------------------------ after acceptance

    def _record_private(self, ch: Change, cid: bytes, author: bytes, plan: PrivatePlan) -> None:
        """Book an accepted change of a private room, learn any key it gives this replica,
        and process (or block) its content."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        learned: list[tuple[bytes, bytes]] = []
        rot = plan.rotate
        if rot is not None:
            ep.add(Epoch(cid, author, ch.seq, ch.hlc, plan.recipients, rot[1], rot[3], rot[4]))
            if plan.my_wrap is not None and cid not in ep.secrets:
                secret = unwrap(plan.my_wrap, self._private_key(),
                                wrap_info(self.room_id, author, ch.seq, me))
                if secret is not None and len(secret) == SECRET_BYTES:
                    learned.append((cid, secret))
                else:
                    ep.bad_keys.add(cid)
        for member in plan.lowering:
            ep.lowering.append((member, author, ch.seq))
        for recipient, op in plan.shares:
            ep.shared.setdefault(recipient, set()).update(op[2])
            if recipient == me:
                plain = unwrap(op[3], self._private_key(),
                               share_info(self.room_id, author, ch.seq, me))
                secrets = None if plain is None else split_secrets(plain, len(op[2]))
                if secrets is not None:
                    learned.extend(zip(op[2], secrets, strict=True))
        if plan.sealed is not None:
            ep.sealed.add(cid)
        new_key = False
        for eid, secret in learned:
            new_key = ep.learn(eid, secret) or new_key
        blocked = ep.blocked
        if (blocked and any(d in blocked for d in ch.deps)) or (
            plan.sealed is not None and not ep.held(plan.sealed[1] or cid)
        ):
            blocked[cid] = None
        elif plan.sealed is not None:
            self._process_content(ch, cid, author, plan.sealed)
        if new_key and blocked:
            self._drain()

    def _private_key(self) -> X25519PrivateKey:
        if self._x25519 is None:
            self._x25519 = x25519_private(self._identity)
        return self._x25519

    def _drain(self) -> None:
        """Process blocked content whose key and ancestors' content are now there, in causal
        order (one pass: ``blocked`` is in causal order)."""
        ep = self._epochs
        assert ep is not None
        blocked = ep.blocked
        graph = self._graph
        for cid in list(blocked):
            p = graph.index[cid]
            if any(d in blocked for d in graph.deps_at(p)):
                continue
            if cid in ep.sealed:
                ch = decode_change(graph.raw[cid], self.limits, known_id=cid)
                op = next(o for o in ch.ops if o[0] == OP_SEALED)
                if not ep.held(op[1] or cid):
                    continue
                del blocked[cid]
                self._process_content(ch, cid, graph.author_at(p), op)
            else:
                del blocked[cid]

    def _void(self, cid: bytes, reason: str) -> None:
        ep = self._epochs
        assert ep is not None
        ep.voided[cid] = reason

    def _process_content(self, ch: Change, cid: bytes, author: bytes, op: list[Any]) -> None:
        """Decrypt a sealed payload and apply it, or void it with a reason."""
        ep = self._epochs
        assert ep is not None
        aead = ep.content_aead(op[1] or cid)
        assert aead is not None
        try:
            padded = aead.decrypt(op[2], op[3], seal_aad(self.room_id, ch.author, ch.seq,
                                                          ch.hlc, op[1]))
        except (InvalidTag, ValueError):
            return self._void(cid, "undecryptable")
        plain = unpad(padded)
        if plain is None:
            return self._void(cid, "bad_padding")
        block = self._decode_payload(plain, author)
        if block is None:
            return self._void(cid, "schema")
        actors, names, ops = block
        graph = self._graph
        deps = ch.deps
        vv = graph.past_vv(deps)
        book = self._roles
        eq = self._equivocators

        def in_past(target: bytes) -> bool:
            return graph.in_past(target, deps)

        role = book.role_in_past(author, vv, in_past, eq, with_inert=bool(book.inert))
        admin = ROLE_ADMIN <= role <= ROLE_OWNER
        name: list[str] = []

        def other(_idx: int, o: list[Any]) -> None:
            if o[0] != OP_NAME:
                raise Rejected("schema")
            if not admin:
                raise Rejected("name_not_allowed")
            name.append(o[1])

        try:
            created, sets, moves, foreign = judge_scene_ops(
                ops, author, actors, names, admin=admin, quota=entity_quota(role),
                creation=self._creation, created_by=self._created_by, equivocators=eq,
                graph=graph, deps=deps, vv=vv, other=other)
        except Rejected as rej:
            return self._void(cid, rej.reason)
        stamp: Stamp = [ch.hlc, author, cid]
        dead = cid in self._revocation.dead
        if not dead and (book.inert or self._revocation.dead):
            live = book.role_in_past(author, vv, in_past, eq)
            if (not ROLE_EDITOR <= live <= ROLE_OWNER
                    or ((foreign or name) and not ROLE_ADMIN <= live <= ROLE_OWNER)):
                self._void(cid, "authority_revoked")
                dead = True
        self._scene_effect(stamp, ch.seq, created, sets, moves, dead)
        if name and not dead and (ep.name is None or ep.name[0] <= stamp):
            ep.name = (stamp, name[-1])
            self.room_name = name[-1]
        return None

    def _decode_payload(self, plain: bytes,
                        author: bytes) -> tuple[list[bytes], list[str], list[Any]] | None:
        """``[actors, names, ops]`` of a decrypted payload, shape-checked; None if bad."""
        limits = self.limits
        try:
            block = unpack(plain, limits, limits.max_change_bytes, "sealed payload")
            if type(block) is not list or len(block) != 3:
                return None
            actors, names, ops = block
            if type(actors) is not list or type(names) is not list or type(ops) is not list:
                return None
            if (not ops or len(ops) > limits.max_ops_per_change
                    or len(actors) > limits.max_actors_per_change
                    or len(names) > limits.max_names_per_change):
                return None
            for a in actors:
                if type(a) is not bytes or len(a) != 32 or a == author:
                    return None
            if len(set(actors)) != len(actors):
                return None
            for nm in names:
                if type(nm) is not str or not nm or len(nm) > limits.max_name_chars:
                    return None
            if len(set(names)) != len(names):
                return None
            for o in ops:
                if type(o) is not list or not o or o[0] not in SEALABLE_CODES:
                    return None
            check_ops(ops, len(actors), len(names), limits)
        except DecodeError:
            return None
        return [self._key(a) for a in actors], names, ops

    # ------------------------------------------------------------------ sealing on commit
    def _seal_batch(
        self, ops: list[Any], batch_actors: list[bytes], names: list[str], vv: Mapping[bytes, int],
        deps: list[bytes], seq: int, hlc: int,
    ) -> tuple[list[bytes], list[Any], dict[str, Any]]:
        """Turn a batch into a private room's public ops: role ops in clear (members in a
        public actors table), then ROTATE, SHARE and SEALED as needed. Returns
        ``(public actors, ops, what _commit_private books)``."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        room = self.room_id
        rnd = self._random_bytes
        extra = self._private_batch or PrivateBatch()
        public: list[Any] = []
        sealed_ops: list[Any] = []
        pub_actors: list[bytes] = []
        index: dict[bytes, int] = {}

        def pidx(k: bytes) -> int:
            i = index.get(k)
            if i is None:
                i = index[k] = len(pub_actors)
                pub_actors.append(k)
            return i

        own: list[tuple[bytes, int]] = []
        for op in ops:
            if op[0] in SEALABLE_CODES:
                sealed_ops.append(op)
            elif op[0] == OP_ROLE:
                member = batch_actors[op[1]]
                own.append((member, op[2]))
                public.append([op[0], pidx(member), *op[2:]])
            else:
                public.append(op)
        role = self._roles.role_in_past(me, vv)
        readers = self._reader_set(vv, deps, own)
        lowering = self._lowered(own, vv, deps)
        rotate = extra.rotate or (bool(lowering) and ROLE_EDITOR <= role <= ROLE_OWNER
                                  and me in readers)
        epoch_ref: bytes | None = None
        if sealed_ops and not rotate:
            epoch_ref = self._usable_epoch(vv, deps, lowering)
            rotate = epoch_ref is None
        booked: dict[str, Any] = {"sealed": bool(sealed_ops), "recipients": frozenset(),
                                  "secret": None, "lowering": lowering}
        key: AESGCM | None = None
        if rotate:
            secret = rnd(SECRET_BYTES)
            wraps = [[None if m == me else pidx(m),
                      wrap(secret, m, wrap_info(room, me, seq, m))] for m in sorted(readers)]
            content = AESGCM(derived_key(secret, room, "content"))
            back_pairs = [(e, ep.secrets[e]) for e in self._frontier(vv)]
            back_nonce = rnd(12)
            back = content.encrypt(back_nonce, pack_secrets(back_pairs), back_aad(room, me, seq))
            public.append([OP_ROTATE, commitment(secret, room), wraps, back_nonce, back])
            booked.update(secret=secret, recipients=frozenset(readers), commitment=public[-1][1],
                          back_nonce=back_nonce, back=back)
            key = content
            epoch_ref = b""
        shares = list(extra.shares)
        if me in readers and self._frontier(vv):
            # A reader who grants a reader role shares the keys in the same change.
            shares += [m for m, r in own if r in READER_ROLES and m not in shares
                       and self._roles.role_in_past(m, vv) not in READER_ROLES]
        for member in shares:
            eids = self._frontier(vv)
            plain = b"".join(ep.secrets[e] for e in eids)
            public.append([OP_SHARE, pidx(member), eids,
                           wrap(plain, member, share_info(room, me, seq, member))])
        if sealed_ops:
            assert epoch_ref is not None
            if key is None:
                key = ep.content_aead(epoch_ref)
                assert key is not None
            nonce = rnd(12)
            payload = pack([list(batch_actors), list(names), sealed_ops])
            padded = payload + b"\x80" + bytes(_bucket_fill(len(payload)))
            public.append([OP_SEALED, epoch_ref, nonce,
                           key.encrypt(nonce, padded, seal_aad(room, me, seq, hlc, epoch_ref))])
            names_used = [o[1] for o in sealed_ops if o[0] == OP_NAME]
            booked["name"] = names_used[-1] if names_used else None
        booked["shares"] = [(m, list(self._frontier(vv))) for m in shares]
        return pub_actors, public, booked

    def _commit_private(self, cid: bytes, seq: int, hlc: int, deps: list[bytes],
                        booked: dict[str, Any]) -> None:
        """Book a just-committed private change as a peer's would be booked (its content is
        already applied locally)."""
        ep = self._epochs
        assert ep is not None
        me = self._me
        self._private_batch = None
        if booked["secret"] is not None:
            ep.add(Epoch(cid, me, seq, hlc, booked["recipients"], booked["commitment"],
                         booked["back_nonce"], booked["back"]))
            ep.secrets[cid] = booked["secret"]
        for member in booked["lowering"]:
            ep.lowering.append((member, me, seq))
        for member, eids in booked["shares"]:
            ep.shared.setdefault(member, set()).update(eids)
        if booked["sealed"]:
            ep.sealed.add(cid)
            name = booked.get("name")
            if name is not None:
                stamp: Stamp = [hlc, me, cid]
                ep.name = (stamp, name)
                self.room_name = name
        if ep.blocked and any(d in ep.blocked for d in deps):
            ep.blocked[cid] = None  # no content (sealing waits for keys): keeps the order


def _bucket_fill(n: int) -> int:
    from meshnode.crdt.sealing import bucket

    return bucket(n) - n - 1
