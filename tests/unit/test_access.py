"""The read-access table of ``meshnode.rooms.access``, row by row and exhaustively."""

import itertools

import pytest

from meshnode.rooms.access import (
    Refuse,
    RoomFacts,
    Share,
    announced_in_hello,
    decide,
    may_announce,
)

ROLES = ("none", "viewer", "editor", "admin", "owner")
INVITES = (None, "", "expired", "bad_signature", "issuer_may_not_grant")


@pytest.mark.parametrize(("is_open", "role", "invite", "removed"),
                         list(itertools.product((True, False), ROLES, INVITES, (False, True))))
def test_every_row(is_open: bool, role: str, invite: str | None, removed: bool) -> None:
    facts = RoomFacts(open=is_open, peer_role=role, invite_problem=invite, removed=removed)
    decision = decide(facts)
    if invite:
        # A refused invite is always said, even where the peer could read anyway: the
        # bearer must learn that its token is no good.
        assert decision == Refuse(f"invite_{invite}", decision.detail)  # type: ignore[union-attr]
        assert invite in decision.detail  # type: ignore[union-attr]
    elif role != "none" or invite == "":
        assert isinstance(decision, Share)
    elif removed:
        # Removed: not even an open room takes it back without a new invite.
        assert isinstance(decision, Refuse) and decision.reason == "removed"
    elif is_open:
        assert isinstance(decision, Share)
    else:
        assert isinstance(decision, Refuse) and decision.reason == "not_member"
    assert may_announce(facts) == isinstance(decision, Share)


def test_a_stranger_never_reads_an_invite_only_room() -> None:
    assert decide(RoomFacts(open=False, peer_role="none")) == Refuse(
        "not_member", "this room admits members only: join it with an invite from a member")


def test_the_hello_names_open_rooms_and_rooms_being_joined_only() -> None:
    rooms = {b"o" * 32: True, b"i" * 32: False, b"j" * 32: False}
    assert announced_in_hello(rooms, [b"j" * 32]) == [b"o" * 32, b"j" * 32]
    assert announced_in_hello(rooms, []) == [b"o" * 32]
    assert announced_in_hello({}, [b"x" * 32]) == []
