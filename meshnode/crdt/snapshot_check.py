"""A blind host's checks of a reader's sealed snapshot (docs/protocol.md, "Readers' sealed
snapshots on blind hosts").

A blind host cannot open a reader's snapshot, but it holds the room's whole public DAG, so it
checks everything that does not need a key before it stores and serves the snapshot (and,
later, prunes its history below the snapshot's frontier):

* ``oversized``: more bytes than the host accepts;
* ``bad_snapshot``: it does not decode or its signature does not verify;
* ``other_room``: another room's;
* ``not_sealed``: not a private room's snapshot with a sealed scene (a blind writer's, or a
  room that is not private);
* ``unknown_changes``: it names changes this host has not applied (it is behind: the reader
  offers a later snapshot again);
* ``public_mismatch``: its public part (frontier summary, listed changes, role book, cut-offs,
  invite uses, equivocations, epoch book) is not what this host's own DAG gives for the same
  set of changes;
* ``signer_not_reader``: its signer is not a reader of the room at the snapshot;
* ``stale_epoch``: the scene is not sealed under the newest epoch in the snapshot's past (it
  would be readable by members removed since an older epoch);
* ``wraps_mismatch``: its wraps are not exactly one per reader at the snapshot (a scene sealed
  to nobody, or to a subset, would strand the other readers once the host prunes).

What a blind host cannot check: that each wrap opens and that the sealed scene is the one the
public changes give. The outer signature and the AEAD's associated data (``snapshot_seal``)
bind both to the signer and the public part, so the host cannot alter them, and a reader
trusts a snapshot's scene to its signer exactly as for any snapshot (``from_snapshot``).

Pure: bytes and a replica in, a verdict out; the caller logs and counts the reason.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from meshnode.crdt.content import SceneContent
from meshnode.crdt.replica import SceneReplica
from meshnode.crdt.snapshot import PRIVATE_VERSION, DecodedSnapshot, decode_snapshot
from protocol.errors import DecodeError
from protocol.limits import Limits

__all__ = ["ReaderSnapshotRefusal", "SnapshotAccepted", "SnapshotRefused", "check_reader_snapshot",
           "decode_reader_snapshot", "judge_reader_snapshot"]


class ReaderSnapshotRefusal(StrEnum):
    """Why a blind host refuses a reader's snapshot; the value is a stable metric label."""

    OVERSIZED = "oversized"
    BAD_SNAPSHOT = "bad_snapshot"
    OTHER_ROOM = "other_room"
    NOT_SEALED = "not_sealed"
    UNKNOWN_CHANGES = "unknown_changes"
    PUBLIC_MISMATCH = "public_mismatch"
    SIGNER_NOT_READER = "signer_not_reader"
    STALE_EPOCH = "stale_epoch"
    WRAPS_MISMATCH = "wraps_mismatch"


@dataclass(frozen=True, slots=True)
class SnapshotAccepted:
    """The snapshot passed every check: store and serve it; ``frontier_hlc`` is its frontier
    (below which the host may prune once it is stored) and ``change_count`` how many changes
    it covers (summarised and listed)."""

    frontier_hlc: int
    change_count: int
    signer: bytes


@dataclass(frozen=True, slots=True)
class SnapshotRefused:
    """The snapshot is refused: ``reason`` is the label, ``detail`` teaches."""

    reason: ReaderSnapshotRefusal
    detail: str


Verdict = SnapshotAccepted | SnapshotRefused


def check_reader_snapshot(replica: SceneReplica, data: bytes, max_bytes: int) -> Verdict:
    """Check a reader's sealed snapshot of ``replica``'s private room against ``replica`` (a
    blind host's): the module docstring lists the checks and their reasons. The two halves
    are :func:`decode_reader_snapshot` (bytes only: may run in a worker thread) and
    :func:`judge_reader_snapshot` (reads the replica)."""
    decoded = decode_reader_snapshot(data, replica.limits, max_bytes)
    if isinstance(decoded, SnapshotRefused):
        return decoded
    return judge_reader_snapshot(replica, decoded)


def decode_reader_snapshot(data: bytes, limits: Limits,
                           max_bytes: int) -> DecodedSnapshot | SnapshotRefused:
    """The checks that need the bytes only (``oversized``, ``bad_snapshot``,
    ``not_sealed``): the decoded snapshot, or the refusal."""
    R = ReaderSnapshotRefusal
    if len(data) > max_bytes:
        return SnapshotRefused(R.OVERSIZED, f"{len(data)} bytes > the {max_bytes} accepted")
    try:
        snap = decode_snapshot(data, limits, None)
    except DecodeError as err:
        return SnapshotRefused(R.BAD_SNAPSHOT, str(err))
    content = snap.content
    if content.private is None or snap.sealed is None or content.frontier is None:
        return SnapshotRefused(R.NOT_SEALED, "not a private room's snapshot with a sealed "
                               f"scene (version {PRIVATE_VERSION}, sealed section)")
    return snap


def judge_reader_snapshot(replica: SceneReplica, snap: DecodedSnapshot) -> Verdict:
    """The checks against ``replica`` (a blind host's) of a snapshot that
    :func:`decode_reader_snapshot` accepted; reads the replica, changes nothing."""
    R = ReaderSnapshotRefusal
    if snap.room_id != replica.room_id:
        return SnapshotRefused(R.OTHER_ROOM, "the snapshot is another room's")
    if not replica.private:
        return SnapshotRefused(R.NOT_SEALED, "this room is not private")
    return _check_public(replica, snap, snap.content)


def _check_public(replica: SceneReplica, snap: DecodedSnapshot,
                  content: SceneContent) -> Verdict:
    R = ReaderSnapshotRefusal
    frontier, priv, section = content.frontier, content.private, snap.sealed
    assert frontier is not None and priv is not None and section is not None
    meta = replica._graph.meta  # the applied changes: what this host's DAG holds
    for c in content.changes:
        m = meta.get(c.change_id)
        if m is None:
            return SnapshotRefused(R.UNKNOWN_CHANGES, "it lists changes this host has not "
                                   "applied yet")
        if (m.author, m.seq, m.hlc, tuple(m.deps)) != (c.author, c.seq, c.hlc, c.deps):
            return SnapshotRefused(R.PUBLIC_MISMATCH, "a listed change's author, seq, clock "
                                   "or deps differ from the change's")
    for _author, _seq, head in frontier.authors:
        if head not in meta:
            return SnapshotRefused(R.UNKNOWN_CHANGES, "its frontier names changes this host "
                                   "has not applied yet")
    try:
        mine = replica.export_content(frontier.hlc, opened=False)
    except RuntimeError as err:  # a local batch open: the caller retries later
        return SnapshotRefused(R.UNKNOWN_CHANGES, str(err))
    assert mine.frontier is not None and mine.private is not None
    if set(mine.frontier.authors) != set(frontier.authors):
        return SnapshotRefused(R.PUBLIC_MISMATCH, "its frontier summarises another set of "
                               "changes than this host's DAG at the same clock")
    listed = {c.change_id for c in content.changes}
    vv: dict[bytes, int] = {a: s for a, s, _h in frontier.authors}
    for c in content.changes:
        vv[c.author] = max(vv.get(c.author, 0), c.seq)

    def in_s(cid: bytes) -> bool:
        m = meta.get(cid)
        return cid in listed or (m is not None and m.hlc <= frontier.hlc)

    def by_author(author: bytes, seq: int) -> bool:
        return vv.get(author, 0) >= seq

    # Each book's rows as tuples, with the index of the change the row belongs to.
    books: list[tuple[str, int, Iterable[tuple[object, ...]], Iterable[tuple[object, ...]]]] = [
        ("role book", 1, [(g.member, g.change_id, g.role, g.inert) for g in mine.grants],
         [(g.member, g.change_id, g.role, g.inert) for g in content.grants]),
        ("equivocations", 0, mine.equivocations, content.equivocations),
        ("cut-offs", 1, [(c.member, c.change_id, c.cutoff) for c in mine.cuts],
         [(c.member, c.change_id, c.cutoff) for c in content.cuts]),
        ("invite uses", 1, [(u.invite_id, u.change_id, u.op_index, u.member, u.max_uses)
                            for u in mine.invite_uses],
         [(u.invite_id, u.change_id, u.op_index, u.member, u.max_uses)
          for u in content.invite_uses]),
        ("invite revocations", 1, [(r.invite_id, r.change_id) for r in mine.invite_revocations],
         [(r.invite_id, r.change_id) for r in content.invite_revocations]),
    ]
    for what, at, ours, theirs in books:
        if {row for row in ours if in_s(_as_id(row[at]))} != set(theirs):
            return SnapshotRefused(R.PUBLIC_MISMATCH, f"its {what} differs from this host's "
                                   "for the same changes")
    epochs_ours = {e for e in mine.private.epochs if by_author(e.author, e.seq)}
    if set(priv.epochs) != epochs_ours:
        return SnapshotRefused(R.PUBLIC_MISMATCH, "its epoch book differs from this host's "
                               "for the same changes")
    if set(priv.lowering) != {row for row in mine.private.lowering
                              if by_author(row[1], row[2])}:
        return SnapshotRefused(R.PUBLIC_MISMATCH, "its removals book differs from this host's")
    # Which change shared an epoch is not kept: exact when this host holds exactly the
    # snapshot's changes, else the snapshot's shares must be among this host's.
    shared_ours = {(m, e) for m, eids in mine.private.shared for e in eids}
    shared_theirs = {(m, e) for m, eids in priv.shared for e in eids}
    exact = {a: s for a, s in replica._graph.vv_all.items() if s} == vv
    if not shared_theirs <= shared_ours or (exact and shared_theirs != shared_ours):
        return SnapshotRefused(R.PUBLIC_MISMATCH, "its key shares differ from this host's")
    # The frontier's entries (which depend on the changes after it) and the retracted
    # changes (a later cut-off may retract one of S) are comparable when this host holds
    # exactly S; otherwise the checks above pin S's public state.
    if exact and (set(frontier.entries) != set(mine.frontier.entries)
                  or frontier.pruned != mine.frontier.pruned
                  or set(content.retracted) != set(mine.retracted)):
        return SnapshotRefused(R.PUBLIC_MISMATCH, "its frontier entries or retracted changes "
                               "differ from this host's")
    heads = _heads(replica, [h for _a, _s, h in frontier.authors] + sorted(listed))
    readers = replica._reader_set(vv, heads, [])
    if snap.signer not in readers:
        return SnapshotRefused(R.SIGNER_NOT_READER, "its signer is not a reader of the room "
                               "at the snapshot")
    if section.epoch_id != _usable_epoch(replica, vv, heads):
        return SnapshotRefused(R.STALE_EPOCH, "the scene is not sealed under the epoch a "
                               "reader seals under at the snapshot (the newest one no removal "
                               "made stale)")
    if set(section.wraps) != readers:
        return SnapshotRefused(R.WRAPS_MISMATCH, f"{len(section.wraps)} wrap(s) for "
                               f"{len(readers)} reader(s): one per reader is required")
    covered = sum(vv.values())
    return SnapshotAccepted(frontier.hlc, covered, snap.signer)


def _as_id(value: object) -> bytes:
    assert type(value) is bytes
    return value


def _usable_epoch(replica: SceneReplica, vv: dict[bytes, int], heads: list[bytes],
                  ) -> bytes | None:
    """The epoch a reader holding every epoch seals under at (``vv``, ``heads``): the newest
    one in that past that no removal made stale (``PrivateRoom._usable_epoch`` without the
    secrets, which a reader that seals holds all of)."""
    book = replica._epochs
    assert book is not None
    best = None
    for epoch in book.epochs.values():
        if not replica._epoch_in_past(epoch, vv, heads):
            continue
        if best is not None and (epoch.hlc, epoch.epoch_id) <= (best.hlc, best.epoch_id):
            continue
        if not replica._stale(epoch, vv, heads, []):
            best = epoch
    return None if best is None else best.epoch_id


def _heads(replica: SceneReplica, candidates: list[bytes]) -> list[bytes]:
    """The changes among ``candidates`` that no other candidate has in its past."""
    graph = replica._graph
    uniq = sorted(set(candidates))
    return [c for c in uniq if not graph.in_past(c, [d for d in uniq if d != c])]
