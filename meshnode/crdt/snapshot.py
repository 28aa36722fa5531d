"""Signed snapshots: a replica's materialised state, so a late joiner need not replay history.

The codec works on ``SceneContent`` (``meshnode.crdt.content``), the plain structure a replica
exports and imports; it never touches a replica. This module is its public face and the
format's description (below): the encoder is ``snapshot_encode``, the decoder
``snapshot_decode``, the identifiers both share ``snapshot_format``, the sealed section's
cryptography ``snapshot_seal``.

Wire form: ``body || signature``; ``body`` is the msgpack array

``["meshnode-snapshot", 3, signer, genesis, hlc, keys, changes, entities, log, fields, grants,
equivocations, retracted, dead_entities, cuts, invite_uses, invite_revocations, frontier]``

Version 3 (frontier snapshots) summarises the changes below a *frontier* (every change
stamped at or before a clock value: a causally closed set) instead of listing them:

* ``frontier``: ``[hlc, pruned, authors, entries]``; ``authors``: ``[key, seq count, last
  change ID]`` per author below the frontier; ``pruned``: how many changes below it are not
  listed; ``entries``: ``[change_id, key, seq, hlc, kind, [[key, seq]...], [entry index...]]``
  for the changes below it that are kept (the genesis first): kind 2 a head, kind 1 a change
  later ones depend on (with the entries where its version vector is below ``authors``),
  kind 0 one the state names; the last list: changes of equivocating authors in its past.
* ``changes`` then lists only the changes after the frontier; change index ``i`` is entry
  ``i`` for ``i < len(entries)``, else ``changes[i - len(entries)]``.

So a snapshot's size is the room's (state, members, boundary) plus the changes after the
frontier, whatever the history's length. Version 2 (every change listed, no frontier
section) is still read.

* ``keys``: public keys; other sections refer to them by index.
* ``changes``: ``[change_id, key, seq, hlc, [dep index...]]`` per applied change, in causal
  order (version 2: every change, genesis first). Raw change bytes are not included: a
  replica started from a snapshot serves history only from the snapshot on.
* ``entities``: ``[key, counter, creation seq, [creating change index...]]``; entity index
  ``i`` here is ``i + 2`` in ``log``, ``fields`` and ``dead_entities`` (0 is ROOT, 1 is
  TRASH). The creating changes (usually one; two if an equivocator made it twice) keep causal
  checks exact.
* ``log``: the tree's move log, ``[change index, op index, child, parent]`` in log order.
* ``fields``: ``[entity, component, field, change index, value]`` (each register's winner).
* ``grants``: ``[member key, change index, role, inert]``.
* ``equivocations``: ``[change index, change index]``.
* ``retracted``: ``[change index, reason]``: changes kept only as tombstones (cut-offs).
* ``dead_entities``: entity indices.
* ``cuts``: ``[member key, change index, cut-off]``.
* ``invite_uses``: ``[invite ID, change index, op index, member key, max_uses]``.
* ``invite_revocations``: ``[invite ID, change index]``.

Version 4 (private rooms, docs/protocol.md "Sealed snapshots") adds two sections:

* ``privacy``: the public epoch book, ``[epochs, lowering, shared, sealed]``; ``epochs``:
  ``[epoch_id, key, seq, hlc, [recipient key...], commitment, back_nonce, back]``;
  ``lowering``: ``[member key, grant author key, grant seq]``; ``shared``: ``[member key,
  [epoch_id...]]``; ``sealed``: change indices of the listed changes carrying a ``SEALED`` op;
* ``sealed``: None (a blind replica's snapshot: no scene at all), or ``[epoch_id, [[reader
  key, wrap]...], nonce, ciphertext]`` (``meshnode.crdt.snapshot_seal``), whose plaintext is
  ``[keys, entities, log, fields, dead_entities, name, voided, secrets]``: the scene rows as
  above (keys indexing this inner ``keys``), ``name`` None or ``[change index, name]``,
  ``voided`` ``[change index, reason]``, ``secrets`` ``[epoch_id, secret]``.

In version 4 the clear ``entities``, ``log``, ``fields`` and ``dead_entities`` are empty: a
blind host stores and serves the snapshot as opaque bytes and starts from its public part.

The signer signs ``SNAPSHOT_DOMAIN || room_id || body``. A snapshot is trusted content: its
state is not re-derived from signed changes, so load snapshots only from signers you trust
(by default: members of the room). Version 1 snapshots (before cut-offs) are refused: a node
then syncs the history instead.
"""

from meshnode.crdt.snapshot_decode import DecodedSnapshot as DecodedSnapshot
from meshnode.crdt.snapshot_decode import SnapshotKeyMissing as SnapshotKeyMissing
from meshnode.crdt.snapshot_decode import SnapshotSealError as SnapshotSealError
from meshnode.crdt.snapshot_decode import decode_snapshot as decode_snapshot
from meshnode.crdt.snapshot_decode import open_snapshot as open_snapshot
from meshnode.crdt.snapshot_encode import encode_snapshot as encode_snapshot
from meshnode.crdt.snapshot_format import MAGIC as MAGIC
from meshnode.crdt.snapshot_format import PRIVATE_VERSION as PRIVATE_VERSION
from meshnode.crdt.snapshot_format import READABLE_VERSIONS as READABLE_VERSIONS
from meshnode.crdt.snapshot_format import SNAPSHOT_DOMAIN as SNAPSHOT_DOMAIN
from meshnode.crdt.snapshot_format import VERSION as VERSION

__all__ = ["MAGIC", "PRIVATE_VERSION", "READABLE_VERSIONS", "SNAPSHOT_DOMAIN", "VERSION",
           "DecodedSnapshot", "SnapshotKeyMissing", "SnapshotSealError", "decode_snapshot",
           "encode_snapshot", "open_snapshot"]
