"""``set_media``'s argument checks: what the wire can carry, refused early with a clear error
instead of failing in the encoder when the preferences are sent."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.client.media import ClientMedia
from meshnode.transport.ice import IceSettings
from protocol.link import decode_link, encode_link
from protocol.media import MediaPrefs

ROOM = bytes(range(32))


def media() -> ClientMedia:
    return ClientMedia(ROOM, "12D3KooWLRQSFLEwE3dE5VSqECWWSadt3QLiG1vsjSNszyVSCFux", IceSettings())


@pytest.mark.parametrize("bad", [0, 0.5, -1, 1_000_001, math.nan, math.inf, True, "100"])
def test_a_max_kbps_the_wire_cannot_carry_is_refused(bad: object) -> None:
    m = media()
    with pytest.raises(ValueError, match="max_kbps"):
        m.set_media(max_kbps=bad)  # type: ignore[arg-type]
    assert m._prefs == MediaPrefs(ROOM)  # nothing asked


@given(st.one_of(st.integers(1, 1_000_000), st.floats(1, 1_000_000)), st.booleans())
def test_any_valid_preference_encodes(kbps: float, audio_only: bool) -> None:
    m = media()
    m.set_media(audio_only=audio_only, max_kbps=kbps)
    assert m._prefs.max_kbps == int(kbps) >= 1  # a fraction rounds down: "at most"
    assert decode_link(encode_link(m._prefs)) == m._prefs
    m.set_media()
    assert m._prefs == MediaPrefs(ROOM)
