"""``SceneReplica``: one room's scene as a signed, Byzantine-tolerant CRDT.

Sans-I/O: it never reads a clock, a socket or a disk. Callers pass ``now`` (wall-clock
seconds, and optionally a monotonic ``mono`` reading) and move change bytes between replicas
themselves. Changes from the node's own store go through :meth:`SceneReplica.replay`, which
trusts their clocks, reports every change it cannot apply, and sets the floor below which the
replica never signs a seq again.

This module holds construction, reading and the application of changes from peers (validation
against each change's causal past, then the effects); the local editing API comes from
``meshnode.crdt.editing.LocalEdits``. Revocation (cut-offs, invite limits) is judged with
``meshnode.crdt.revocation``: a change it retracts is kept as a tombstone (in the hash graph,
without effects), and when a new change retracts changes already applied, the replica rebuilds
its state from the stored change bytes (``_rebuild``), so the state depends only on the set of
changes held.

``SceneReplica`` is one chain of classes, a file each (single inheritance, which mypyc can
compile): ``EditChecks`` (``edit_checks``: what every local edit checks first),
``LocalEdits`` (``editing``: the local editing API, commit), ``PrivateRules``,
``PrivateContentLayer`` and ``PrivateRoom`` (``private_rules``, ``private_content``,
``privacy``: private rooms), ``ReplicaState`` (``replica_state``: attributes, reading),
``ReplicaContent`` (``replica_content``: export and import of ``SceneContent``),
``ReplicaIntegrate`` (``replica_integrate``: integrating one change, rebuilding),
``ReplicaApply`` (``replica_apply``: taking in changes) and ``SceneReplica`` (here:
construction, snapshots, compaction).
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any

from meshnode.crdt.clock import HybridClock
from meshnode.crdt.compaction import MAX_TAIL, CompactionJob
from meshnode.crdt.content import SceneContent
from meshnode.crdt.ids import ROOT
from meshnode.crdt.replica_apply import MAX_REBUILD_PASSES as MAX_REBUILD_PASSES
from meshnode.crdt.replica_apply import ReplicaApply as ReplicaApply
from meshnode.crdt.replica_content import ReplicaContent as ReplicaContent
from meshnode.crdt.replica_state import Node as Node
from meshnode.crdt.replica_state import ReplicaState as ReplicaState
from meshnode.crdt.replica_state import _copy_value as _copy_value
from meshnode.crdt.roles import ROLE_NONE
from meshnode.crdt.snapshot import (
    DecodedSnapshot,
    SnapshotKeyMissing,
    decode_snapshot,
    encode_snapshot,
    open_snapshot,
)
from meshnode.crdt.snapshot_seal import unwrap_secret
from meshnode.identity import Identity, verify_signature
from protocol.change import (
    MAX_NONCE_BYTES,
    OP_GENESIS,
    change_id,
    decode_change,
    encode_change,
    signing_payload,
)
from protocol.errors import DecodeError, SchemaError
from protocol.private_ops import GENESIS_FLAG_PRIVATE


class SceneReplica(ReplicaApply):
    """A replica of one room's scene. Build it with :meth:`create`, :meth:`from_genesis` or
    :meth:`from_snapshot`; see ``docs/architecture.md`` for the rules it enforces."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls, owner: Identity, now: float, *, nonce: bytes, name: str = "room",
        private: bool = False, **kwargs: Any,
    ) -> "SceneReplica":
        """Found a new room owned by ``owner``: sign its genesis change.

        ``nonce`` (1 to 32 bytes) makes two rooms with one owner and name distinct. It is
        required because the core has no randomness of its own: a node passes
        ``os.urandom(16)``, a simulation or test a value derived from its seed.

        ``private``: a private room (docs/protocol.md, "Private rooms"): the genesis carries
        the private flag and no name; the owner's second change (committed here, sent with
        the history like any other) creates the first epoch and seals the name.
        """
        if type(nonce) is not bytes or not 1 <= len(nonce) <= MAX_NONCE_BYTES:
            raise ValueError(
                f"nonce must be 1..{MAX_NONCE_BYTES} bytes (e.g. os.urandom(16)), "
                f"not {nonce!r:.40}"
            )
        clock = HybridClock()
        genesis = encode_change(
            author=owner.public_key,
            seq=1,
            deps=[],
            hlc=clock.tick(now),
            actors=[],
            names=[],
            ops=[[OP_GENESIS, name, nonce]] if not private
            else [[OP_GENESIS, "", nonce, GENESIS_FLAG_PRIVATE]],
            room_id=b"",
            sign=owner.sign,
        )
        replica = cls.from_genesis(genesis, owner, **kwargs)
        if private:
            replica.set_room_name(name)
            replica.commit(now)
        return replica

    @classmethod
    def from_genesis(cls, genesis: bytes, identity: Identity, **kwargs: Any) -> "SceneReplica":
        """Join a room knowing only its genesis change. Raises ``DecodeError`` if it is not a
        valid, correctly signed genesis change."""
        replica = cls(identity, **kwargs)
        ch = decode_change(genesis, replica.limits)
        if ch.seq != 1 or ch.deps or len(ch.ops) != 1 or ch.ops[0][0] != OP_GENESIS:
            raise DecodeError("not a genesis change")
        if not verify_signature(ch.author, ch.signature, signing_payload(b"", ch.body)):
            raise DecodeError("genesis signature does not verify")
        replica._adopt_genesis(ch, genesis)
        return replica

    def snapshot(self, keep_after_hlc: int | None = None) -> bytes:
        """A signed snapshot of the committed state (see ``meshnode.crdt.snapshot``);
        ``keep_after_hlc``: its frontier (see ``export_content``)."""
        return self.snapshot_job(keep_after_hlc)()

    def snapshot_job(self, keep_after_hlc: int | None = None) -> Callable[[], bytes]:
        """:meth:`snapshot` in two steps, so a host keeps the heavy one off its event loop:
        the export runs now (with the replica: one pass over the changes' metadata, no
        crypto); the returned callable encodes, seals and signs it, touching only the
        exported plain data, so it may run in a worker thread while the replica goes on."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch before a snapshot")
        ident = self._identity
        seal = self._snapshot_seal() if self._epochs is not None else None
        content = self.export_content(keep_after_hlc, opened=seal is not None)
        room_id = self.room_id
        return functools.partial(encode_snapshot, content, ident.public_key, room_id,
                                 ident.sign, seal)

    @property
    def snapshot_sealed(self) -> bool:
        """True if :meth:`snapshot` writes this private room's scene (sealed): this replica
        is a reader holding the current epoch, with no content waiting for a key. False for
        a blind replica (its snapshot holds the public part only) and for other rooms."""
        return self._epochs is not None and self._snapshot_seal() is not None

    @classmethod
    def from_snapshot(
        cls, data: bytes, identity: Identity, *, trusted_signers: Iterable[bytes] | None = None,
        **kwargs: Any,
    ) -> "SceneReplica":
        """Start a replica from a snapshot instead of replaying history.

        The snapshot's state is taken on trust from its signer: by default any current member
        of the room it describes; pass ``trusted_signers`` (public keys) to narrow that.
        Changes inside the snapshot cannot be retracted by a cut-off that arrives later (the
        replica has no history to replay; ``docs/protocol.md``, Snapshots).
        """
        replica = cls(identity, **kwargs)
        snap = decode_snapshot(data, replica.limits, trusted_signers)
        content = snap.content
        if content.private is not None and snap.sealed is not None:
            content = replica._open_snapshot(snap)
        try:
            replica._import_content(content)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"snapshot: inconsistent contents ({type(exc).__name__}: {exc})") from None
        if content.private is not None and not content.private.opened and replica.is_reader():
            raise SnapshotKeyMissing(
                "this member is a reader of the private room but the snapshot is not sealed "
                "to it (written before it was admitted, or by a blind host): load the "
                "history instead, or wait for a reader's snapshot")
        if (
            trusted_signers is None
            and snap.signer != replica.owner
            and replica._roles.current_role(snap.signer) == ROLE_NONE
        ):
            raise DecodeError("snapshot signer is not a member of the room")
        replica._base = content
        return replica

    def _open_snapshot(self, snap: DecodedSnapshot) -> SceneContent:
        """The whole content of a sealed snapshot if it was wrapped to this identity, else
        its public part (``docs/protocol.md``, "Sealed snapshots")."""
        section, priv = snap.sealed, snap.content.private
        assert section is not None and priv is not None
        epoch = next((e for e in priv.epochs if e.epoch_id == section.epoch_id), None)
        secret = unwrap_secret(section, snap.room_id, snap.signer, self._identity.public_key,
                               self._private_key(),
                               None if epoch is None else epoch.commitment)
        if secret is None:
            return snap.content
        return open_snapshot(snap, secret, self.limits)

    def restore_bytes(self, datas: Iterable[bytes]) -> list[bytes]:
        """Give a replica started from a snapshot the bytes of the changes it has applied,
        so it serves them to peers again; return the other changes, in order, for
        ``apply_many``. A change's ID is the hash of its bytes, so only the right bytes can
        be attached to an applied change."""
        graph = self._graph
        rest: list[bytes] = []
        seen: set[bytes] = set()
        keep = self._history is None
        for data in datas:
            cid = change_id(data)
            p = graph.index.get(cid)
            if p is None:
                rest.append(data)
            elif p >= 0:
                if keep:
                    graph.raw.setdefault(cid, data)
                else:
                    seen.add(cid)  # stays in the store: only its presence is checked
        if not keep:
            self._restored_missing = sum(1 for c in graph.order
                                         if c not in graph.raw and c not in seen)
        return rest

    def unserved_count(self) -> int:
        """Applied changes whose bytes this replica lacks, so cannot send to peers (those a
        snapshot brought and ``restore_bytes`` did not)."""
        if self._history is not None:
            return self._restored_missing
        graph = self._graph
        return sum(1 for c in graph.order if c not in graph.raw)

    def frontier_vv(self) -> dict[bytes, int]:
        """Author public key -> how many of the author's seqs lie below this replica's
        frontier (held only as a summary, never sent to peers); empty without a frontier. A
        peer whose version vector is below this for some author cannot be brought up to date
        by changes (``behind_frontier``): it must start again from a snapshot."""
        return dict(self._graph.base)

    def prunable(self, keep_after_hlc: int) -> int:
        """How many of the oldest applied changes (in application order, genesis aside) are
        stamped at or before ``keep_after_hlc``: a cheap lower bound of what ``compact``
        would prune, to decide whether it is worth its cost (it re-imports the state)."""
        return self._graph.count_stamped_before(keep_after_hlc)

    def compact(self, keep_after_hlc: int) -> tuple[bytes, list[bytes]]:
        """Prune the history below a frontier (``export_content``): the replica carries on
        from its own frontier snapshot, holding the changes after it and a summary of the
        rest. Returns the signed snapshot (to store before anything is deleted) and the IDs
        of the changes now below the frontier (those a store may delete once the snapshot
        is stored). A peer whose heads are all below the frontier must start again from a
        snapshot (its changes are refused as ``behind_frontier`` or wait for deps).
        The three phases in one call; a host splits them (``meshnode.crdt.compaction``)."""
        job = self.prepare_compaction(keep_after_hlc)
        job.build()
        done = self.finish_compaction(job)
        if done is None:  # pragma: no cover - nothing can intervene within one call
            raise RuntimeError("compaction abandoned")
        return done

    def prepare_compaction(self, keep_after_hlc: int) -> CompactionJob:
        """Phase 1 of a compaction (``meshnode.crdt.compaction``): export the state pruned
        at ``keep_after_hlc``; ``job.build()`` may then run elsewhere (a worker thread)."""
        if self._batch is not None:
            raise RuntimeError("commit() or discard() the local batch before compact()")
        graph = self._graph
        seal = None
        if self._epochs is not None:
            seal = self._snapshot_seal()
            if seal is None:
                raise RuntimeError("only a reader holding the current epoch, with no content "
                                   "waiting for a key, prunes a private room (snapshot_sealed)")
        content = self.export_content(keep_after_hlc, opened=seal is not None)
        ident = self._identity
        limits, skew = self.limits, self.max_clock_skew_s

        def blank() -> SceneReplica:
            return SceneReplica(ident, limits=limits, max_clock_skew_s=skew)

        return CompactionJob(content, graph, len(graph.order), list(graph.index),
                             self.room_id, ident.sign, ident.public_key, blank, seal)

    def finish_compaction(self, job: CompactionJob) -> tuple[bytes, list[bytes]] | None:
        """Phase 3 (after ``job.build()``): adopt the pruned state and re-apply the changes
        applied since phase 1. Returns ``compact``'s result, or None with nothing changed if
        the built state cannot be adopted (see ``meshnode.crdt.compaction``)."""
        old = self._graph
        fresh = job.built
        if fresh is None or old is not job.graph or self._batch is not None \
                or self._full_graph is not None:
            return None
        tail = old.order[job.mark:]
        if len(tail) > MAX_TAIL:
            return None
        # Each tail change must apply on the pruned history as it did on the full one: its
        # deps held there (after the frontier, or on its boundary), its stamp after it.
        fresh_meta, floor = fresh._graph.meta, fresh._graph.base_hlc
        seen: set[bytes] = set()
        for cid in tail:
            m = old.meta[cid]
            if m.hlc <= floor or not all(d in fresh_meta or d in seen for d in m.deps):
                return None
            seen.add(cid)
        datas = self._bytes_of(tail)
        if len(datas) != len(tail):
            return None  # a tail change left memory before it was stored: not re-applicable
        saved = (self._graph, self._tree, self._fields, self._creation, self._created_by,
                 self._equivocators, self.equivocations, self._revocation, self._roles,
                 self._base, self._my_role, self._epochs)
        if fresh._epochs is not None and self._epochs is not None:
            fresh._epochs.secrets.update(self._epochs.secrets)  # learned since phase 1
        (self._graph, self._tree, self._fields, self._creation, self._created_by,
         self._equivocators, self.equivocations, self._revocation, self._roles,
         self._epochs) = (
            fresh._graph, fresh._tree, fresh._fields, fresh._creation, fresh._created_by,
            fresh._equivocators, fresh.equivocations, fresh._revocation, fresh._roles,
            fresh._epochs)
        self._base = job.content
        self._my_role = None
        graph = self._graph
        for cid in graph.order:
            raw = old.raw.get(cid)
            if raw is not None:
                graph.raw[cid] = raw
        if tail:
            self.replay(datas)
            now = self._graph.meta  # a retraction in the tail rebuilds: a new graph
            if not all(c in now for c in tail):  # pragma: no cover - checked above
                (self._graph, self._tree, self._fields, self._creation, self._created_by,
                 self._equivocators, self.equivocations, self._revocation, self._roles,
                 self._base, self._my_role, self._epochs) = saved
                return None
        self._trim_bytes()
        return job.snapshot, job.pruned



def _resolve(ref: Any, author: bytes, actors: list[bytes]) -> Node:
    if ref is None:
        return ROOT
    if type(ref) is int:
        return (author, ref)
    return (actors[ref[0]], ref[1])
