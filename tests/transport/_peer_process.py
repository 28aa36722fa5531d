"""A peer in its own process, for tests: the answerer of one link, echoing what it gets.

Protocol on stdin/stdout, one JSON object per line::

    -> {"peer_id": "12D3KooW..."}               (at start: who we are)
    <- {"offer": "<sdp>", "expected_peer": "12D3KooW..." | null}
    -> {"answer": "<sdp>"}
    -> {"established": "<the offerer's PeerID>", "rooms": ["<hex>", ...]}
    ... every message after the hello is sent back on the channel it came on ...
    -> {"closed": "<reason>", "echoed": <count>}  (then exit 0)

The process exits when the link closes or stdin reaches EOF. Run as
``python -m tests.transport._peer_process`` from the repository root.
"""

import asyncio
import json
import sys
from typing import Any

from meshnode.identity import Identity
from meshnode.transport.hello import HelloRejected
from meshnode.transport.ice import IceSettings
from meshnode.transport.link import LinkClosed, LinkSettings, LocalHello, PeerLink


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    identity = Identity.generate()
    emit({"peer_id": identity.public_id})
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    request = json.loads(await stdin.readline())
    settings = LinkSettings(ice=IceSettings(host_addresses=("127.0.0.1",)))
    link = PeerLink(identity, settings, LocalHello("node", (b"\x07" * 32,)),
                    expected_peer=request.get("expected_peer"))
    closed: asyncio.Future[str] = loop.create_future()
    echoed = 0

    def on_close(reason: str) -> None:
        if not closed.done():
            closed.set_result(reason)

    def on_message(channel: str, data: bytes) -> None:
        nonlocal echoed
        if link.send(channel, data):
            echoed += 1

    link.on_close = on_close
    emit({"answer": await link.accept_offer(request["offer"])})
    try:
        hello = await link.established()
    except (HelloRejected, LinkClosed) as exc:
        emit({"closed": exc.reason, "echoed": 0})
        return
    link.on_message = on_message
    emit({"established": link.peer_id, "rooms": [r.hex() for r in hello.rooms]})
    stdin_eof = asyncio.ensure_future(stdin.read())
    waits: list[asyncio.Future[Any]] = [closed, stdin_eof]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    stdin_eof.cancel()
    await link.close("stdin_closed")
    emit({"closed": await closed, "echoed": echoed})


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
