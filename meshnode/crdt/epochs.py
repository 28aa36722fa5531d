"""The epoch book of a private room: epochs (public), held secrets (private), and the content
gate (which changes' sealed content waits for a key).

Public part, the same on every replica, blind or not (a function of the DAG alone):

* ``epochs``: one ``Epoch`` per ``ROTATE`` op (its ID is the rotating change's ID): author,
  seq, recipients, commitment, the back-links ciphertext;
* ``lowering``: every accepted role op that made a member a non-reader (none or host), for
  the stale-epoch rule (R4) to find quickly;
* ``shared``: which epochs a ``SHARE`` gave to which member;
* ``sealed``: the changes that carry a ``SEALED`` op.

Private part (a function of the DAG plus this replica's identity):

* ``secrets``: epoch ID -> secret, each checked against the epoch's commitment. It survives a
  rebuild (a secret is a fact about the epoch, not an effect of a change);
* ``blocked``: changes (in causal order) whose content is not processed yet, because their
  epoch key is missing or an ancestor's content is blocked. Content is processed only after
  all of its ancestors' content, so a key that arrives late gives the state one would have had
  with the key all along;
* ``voided``: change ID -> why its sealed payload has no effect;
* ``name``: the sealed room-name register (stamp, name).
"""

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshnode.crdt.sealing import back_aad, commitment, derived_key, unpack_secrets


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch: created by the ``ROTATE`` op of change ``epoch_id``."""

    epoch_id: bytes
    author: bytes
    seq: int
    hlc: int
    recipients: frozenset[bytes]
    commitment: bytes
    back_nonce: bytes
    back: bytes


class EpochBook:
    """See the module docstring."""

    __slots__ = ("_aeads", "bad_keys", "blocked", "epochs", "lowering", "name", "room_id",
                 "sealed", "secrets", "shared", "voided")

    def __init__(self, room_id: bytes) -> None:
        self.room_id = room_id
        self.secrets: dict[bytes, bytes] = {}
        self._aeads: dict[bytes, AESGCM] = {}
        self.bad_keys: set[bytes] = set()
        self.epochs: dict[bytes, Epoch] = {}
        self.lowering: list[tuple[bytes, bytes, int]] = []  # (member, grant author, seq)
        self.shared: dict[bytes, set[bytes]] = {}
        self.sealed: set[bytes] = set()
        self.blocked: dict[bytes, None] = {}
        self.voided: dict[bytes, str] = {}
        self.name: tuple[list[Any], str] | None = None

    def reset_public(self) -> None:
        """Forget everything derived from changes (a rebuild replays them); keep secrets."""
        self.epochs = {}
        self.lowering = []
        self.shared = {}
        self.sealed = set()
        self.blocked = {}
        self.voided = {}
        self.name = None

    def add(self, epoch: Epoch) -> None:
        """Record an accepted epoch."""
        self.epochs[epoch.epoch_id] = epoch

    def held(self, epoch_id: bytes) -> bool:
        """True if this replica holds the epoch's (verified) secret."""
        return epoch_id in self.secrets

    def content_aead(self, epoch_id: bytes) -> AESGCM | None:
        """The AEAD of the epoch's content key (None if the secret is not held)."""
        aead = self._aeads.get(epoch_id)
        if aead is None:
            secret = self.secrets.get(epoch_id)
            if secret is None:
                return None
            aead = self._aeads[epoch_id] = AESGCM(
                derived_key(secret, self.room_id, "content"))
        return aead

    def learn(self, epoch_id: bytes, secret: bytes) -> bool:
        """Take a secret for a known epoch if it matches the commitment, then follow the
        epoch's back-links to earlier epochs. True if any new secret was learned."""
        learned = False
        work = [(epoch_id, secret)]
        while work:
            eid, sec = work.pop()
            epoch = self.epochs.get(eid)
            if epoch is None or eid in self.secrets:
                continue
            if commitment(sec, self.room_id) != epoch.commitment:
                self.bad_keys.add(eid)  # the rotator gave out a different key: ask for a SHARE
                continue
            self.secrets[eid] = sec
            self.bad_keys.discard(eid)
            learned = True
            aead = self.content_aead(eid)
            assert aead is not None
            try:
                plain = aead.decrypt(epoch.back_nonce, epoch.back,
                                     back_aad(self.room_id, epoch.author, epoch.seq))
            except (InvalidTag, ValueError):
                continue  # unreadable back-links: earlier epochs need a SHARE
            work.extend(unpack_secrets(plain) or ())
        return learned

    def waiting_for_key(self) -> int:
        """Changes whose sealed content waits for a key (or for an ancestor's)."""
        sealed = self.sealed
        return sum(1 for c in self.blocked if c in sealed)

    def counters(self) -> dict[str, Any]:
        """Figures for metrics (see ``SceneReplica.privacy_counters``)."""
        voided: dict[str, int] = {}
        for reason in self.voided.values():
            voided[reason] = voided.get(reason, 0) + 1
        return {
            "sealed_changes": len(self.sealed),
            "voided": voided,
            "waiting_for_key": self.waiting_for_key(),
            "epochs": len(self.epochs),
            "epochs_held": sum(1 for e in self.epochs if e in self.secrets),
        }


__all__ = ["Epoch", "EpochBook"]
