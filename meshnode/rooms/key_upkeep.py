"""Keeping a private room's keys moving: who writes a ``SHARE``, and when to ``ROTATE``.

Pure (no clock, no randomness of its own): the node and the Python client call
:meth:`KeyUpkeep.plan` with the replica, ``now`` and an injected ``random.Random``, and do
what the returned :class:`KeyWork` says in one commit (``replica.share(m)`` for each member,
``replica.rotate()``).

* **Auto-SHARE.** A reader without the latest epochs (a member just admitted, by a blind host
  maybe, or one whose wrap failed its commitment) gets them from *whichever reader is online*.
  So that not every online reader writes a ``SHARE`` at once, each waits a random delay in
  ``[0, share_jitter_s)`` from the moment it first sees the keyless reader, then shares only
  if the reader is still keyless (a ``SHARE`` from someone else, seen meanwhile, takes it off
  ``keyless_readers()``). Duplicates are harmless, only bytes.
* **Scheduled rotation.** Every ``rotate_every_s`` seconds (0: never) of the room's newest
  epoch age (by its change's author clock, so the schedule survives restarts and is shared by
  all readers), an editor-or-above reader rotates, after its own jitter (concurrent rotations
  are valid, only wasteful). Removal rotates by itself in the removing change (the CRDT core).
"""

import random
from dataclasses import dataclass, field

from meshnode.crdt import SceneReplica

__all__ = ["KeyUpkeep", "KeyWork"]

ROTATORS = frozenset({"editor", "admin", "owner"})


@dataclass(frozen=True, slots=True)
class KeyWork:
    """What to commit now: ``shares`` (member keys) and whether to ``rotate``; ``next_at``:
    when to look again (None: nothing is scheduled)."""

    shares: tuple[bytes, ...] = ()
    rotate: bool = False
    next_at: float | None = None

    @property
    def empty(self) -> bool:
        """True if there is nothing to commit now."""
        return not self.shares and not self.rotate


@dataclass(slots=True)
class KeyUpkeep:
    """The auto-SHARE and rotation schedule of one private room, for one reader."""

    share_jitter_s: float = 2.0
    rotate_every_s: float = 0.0
    _share_at: dict[bytes, float] = field(default_factory=dict)
    _rotate_at: float | None = None

    def plan(self, replica: SceneReplica, me: bytes, now: float, rng: random.Random,
             wall_now: float) -> KeyWork:
        """What this reader (public key ``me``) should write now (``now``: monotonic seconds
        for the jitter timers; ``wall_now``: wall-clock seconds, compared with the epochs'
        clock stamps)."""
        if not replica.private or not replica.is_reader() or not replica.epoch_ids():
            self._share_at.clear()
            self._rotate_at = None
            return KeyWork()
        keyless = set(replica.keyless_readers())
        for member in list(self._share_at):
            if member not in keyless:
                del self._share_at[member]  # someone shared (or the member left)
        for member in sorted(keyless):
            if member not in self._share_at:
                self._share_at[member] = now + rng.random() * self.share_jitter_s
        shares = tuple(m for m, at in sorted(self._share_at.items()) if at <= now)
        for m in shares:
            del self._share_at[m]
        rotate = self._rotation_due(replica, me, now, rng, wall_now)
        pending = list(self._share_at.values())
        if self._rotate_at is not None:
            pending.append(self._rotate_at)
        return KeyWork(shares, rotate, min(pending) if pending else None)

    def _rotation_due(self, replica: SceneReplica, me: bytes, now: float, rng: random.Random,
                      wall_now: float) -> bool:
        if self.rotate_every_s <= 0 or replica.role_of(me) not in ROTATORS:
            self._rotate_at = None
            return False
        newest = max((replica.change_time(e) or 0.0) for e in replica.epoch_ids())
        if wall_now - newest < self.rotate_every_s:
            self._rotate_at = None
            return False
        if self._rotate_at is None:
            self._rotate_at = now + rng.random() * self.share_jitter_s
        if self._rotate_at <= now:
            self._rotate_at = None
            return True
        return False
