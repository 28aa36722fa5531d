"""``Bootstrap``: how a node finds the mesh, and remembers where it found it.

It stays linked to the configured bootstrap nodes (redialling while a link is down), dials
a few nodes of the address book once at start (not those the federation policy refuses),
and records in the address book every node
that links to us with a URL. Address-book reads and writes run in a worker thread: the
store's calls block (an fsync may be under way).
"""

import asyncio
import logging
from collections.abc import Callable

from meshnode.federation.policy import FederationRefusal
from meshnode.runtime.links import Established, LinkManager, LinkService
from meshnode.runtime.tasks import TaskSet
from meshnode.store import ChangeStore, StoreError

log = logging.getLogger("meshnode.node")

__all__ = ["BOOTSTRAP_RETRY_S", "Bootstrap", "describe_error", "dial_once"]

BOOTSTRAP_RETRY_S = 5.0
REDIAL_AT_START = 8


def describe_error(err: BaseException) -> str:
    """An error for a log line: its reason label and message, or at least its type."""
    text = str(err) or type(err).__name__
    reason = getattr(err, "reason", None)
    return text if reason is None or text.startswith(str(reason)) else f"{reason}: {text}"


async def dial_once(links: LinkManager, url: str) -> None:
    """Link to the node at ``url``; log (do not raise) if that fails."""
    try:
        await links.dial_url(url)
    except Exception as err:  # LinkRefused, LinkClosed, HelloRejected, ...
        log.info("could not link to %s: %s", url, describe_error(err))


class Bootstrap(LinkService):
    """Bootstrap links and the address book (see the module docstring)."""

    def __init__(self, links: LinkManager, store: ChangeStore, bootstrap: tuple[str, ...],
                 url: Callable[[], str], *, clock: Callable[[], float],
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self._links = links
        self._store = store
        self._bootstrap = bootstrap
        self._url = url
        self._clock = clock
        self._tasks = TaskSet("bootstrap", on_crash)
        links.register(self)

    async def start(self) -> None:
        """Start the bootstrap loops and dial the most recently seen known nodes."""
        for url in self._bootstrap:
            self._tasks.spawn(self._keep_bootstrapped(url), f"bootstrap {url}")
        known = await asyncio.to_thread(self._store.known_peers, REDIAL_AT_START)
        for peer, url, _seen in known:
            if (url and url not in self._bootstrap and url != self._url()
                    and self._links.federation.may_link(peer)):
                self._tasks.spawn(dial_once(self._links, url), f"redial {peer[:12]}")

    async def aclose(self) -> None:
        """Stop dialling."""
        await self._tasks.aclose()

    def link_up(self, est: Established) -> None:
        """Remember where a node that linked to us can be reached."""
        if est.hello.url and est.hello.kind == "node":
            self._tasks.spawn(self._remember(est.peer, est.hello.url, self._clock()),
                              f"remember {est.peer[:12]}")

    async def _remember(self, peer: str, url: str, seen_at: float) -> None:
        try:
            await asyncio.to_thread(self._store.remember_peer, peer, url, seen_at)
        except StoreError as err:
            log.warning("could not remember peer %s at %s: %s", peer, url, err)

    async def _keep_bootstrapped(self, url: str) -> None:
        """Stay linked to a bootstrap node: redial while we have no link to it."""
        peer: str | None = None
        while True:
            if peer is None or peer not in self._links.links:
                try:
                    est = await self._links.dial_url(url)
                    peer = est.peer
                except Exception as err:  # whatever went wrong, keep trying
                    reason = getattr(err, "reason", None)
                    if reason in tuple(FederationRefusal):
                        # The node there is one the policy refuses: dialling it again
                        # would only be refused again (a restart reads the URL anew).
                        log.warning("bootstrap %s: its node is refused by the federation "
                                    "policy (%s); not dialling it again", url, reason)
                        return
                    if reason != "duplicate":
                        log.info("bootstrap %s: %s (retrying)", url, describe_error(err))
            await asyncio.sleep(BOOTSTRAP_RETRY_S)
