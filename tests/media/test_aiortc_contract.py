"""Contract with aiortc's private internals: the driver's hooks are still where it expects.

aiortc has no public RTP API, so ``meshnode.media.aiortc_driver`` uses the private attributes
listed in ``PRIVATE_HOOKS`` (of aiortc, and of aioice and pylibsrtp for the direct send
path) and relies on the aiortc, aioice and pylibsrtp call sites in ``CALL_SITES``. After an
upgrade this test names exactly which one moved (pyproject pins ``aiortc<1.17``).
"""

import inspect
from importlib.metadata import version

import pytest

from meshnode.media.aiortc_driver import (
    CALL_SITES,
    HOOK_OWNERS,
    PRIVATE_HOOKS,
    CallSite,
    make_media_pc,
)
from meshnode.transport.ice import IceSettings
from tests.media.test_driver_relay import negotiate, until

ICE = IceSettings(host_addresses=("127.0.0.1",))


pytestmark = pytest.mark.usefixtures("loopback_only")  # tests/media/conftest.py


async def test_every_private_hook_exists_on_real_aiortc_objects() -> None:
    # Connected, so that aioice's selected pair and its socket protocol exist (the send path
    # hooks W2 live on them).
    pc, peer = make_media_pc(ICE.rtc_configuration()), make_media_pc(ICE.rtc_configuration())
    try:
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        await negotiate(pc, peer)
        dtls = transceiver.sender.transport
        await until(lambda: dtls.state == "connected", "the DTLS transport connected")
        connection = dtls.transport._connection
        pair = connection._nominated[1]
        instances = {
            "RTCRtpReceiver": transceiver.receiver,
            "RTCRtpSender": transceiver.sender,
            "RTCRtpTransceiver": transceiver,
            "RTCDtlsTransport": dtls,
            "RTCIceTransport": dtls.transport,
            "Connection": connection,
            "CandidatePair": pair,
            "StunProtocol": pair.protocol,
            "Session": dtls._tx_srtp,  # pylibsrtp (W3)
        }
        assert set(instances) == set(HOOK_OWNERS)
        for owner, instance in instances.items():
            assert isinstance(instance, HOOK_OWNERS[owner]), (owner, type(instance))
        missing = [
            f"{h.label} {h.owner}.{h.attribute} ({h.why})"
            for h in PRIVATE_HOOKS
            if not hasattr(instances[h.owner], h.attribute)
        ]
        assert not missing, (
            f"aiortc {version('aiortc')} / aioice {version('aioice')} moved private attributes "
            "the media driver uses: " + "; ".join(missing)
            + ". Update meshnode/media/aiortc_hooks.py (PRIVATE_HOOKS) before upgrading."
        )
    finally:
        await pc.close()
        await peer.close()


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.label}-{s.owner}.{s.function}")
def test_aiortc_still_calls_the_hooks_the_same_way(site: CallSite) -> None:
    function = getattr(HOOK_OWNERS[site.owner], site.function, None)
    assert function is not None, (
        f"aiortc {version('aiortc')}: {site.owner}.{site.function} is gone; the media driver's "
        f"hook {site.label} relies on it"
    )
    source = inspect.getsource(function)
    assert site.text in source, (
        f"aiortc {version('aiortc')}: {site.owner}.{site.function} no longer contains "
        f"{site.text!r}; the media driver's hook {site.label} relies on it"
    )


def test_aiortc_is_the_pinned_version() -> None:
    major, minor = (int(x) for x in version("aiortc").split(".")[:2])
    assert (major, minor) == (1, 16), (
        f"aiortc {version('aiortc')} is installed; the media driver's private hooks were "
        "written against 1.16 (pyproject pins aiortc>=1.16.0,<1.17)"
    )
