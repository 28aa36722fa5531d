"""Counting the garbage other DHT peers answer with.

py-libp2p parses every DHT answer itself (Kademlia protobufs, signed peer records) and, when
one does not parse, logs a warning and goes on as if the peer had answered nothing: the node
is never handed the garbage, so it cannot count it where it reads answers. This filter sits on
py-libp2p's Kademlia loggers instead: a warning that says an answer did not parse (an
undecodable message, a provider entry that does not parse, an invalid signed peer record) is
turned into one ``report("bad_dht_answer", detail)`` call (``RoomDiscovery.reject``: a count
in ``meshnode_discovery_rejected_total{reason}`` and a rate-limited log line of ours) and
swallowed; other libp2p records pass only from ERROR up, as before.

The phrases matched are those of py-libp2p 0.8.1 (the version the project pins); a libp2p
that words them otherwise is not counted, and its warnings stay hidden as before.
"""

import logging
from collections.abc import Callable

__all__ = ["KAD_LOGGERS", "DhtAnswerWatch"]

KAD_LOGGERS = ("libp2p.kad_dht.kad_dht", "libp2p.kad_dht.provider_store",
               "libp2p.kad_dht.value_store", "libp2p.kad_dht.peer_routing",
               "libp2p.kad_dht.utils")
_GARBAGE = ("error parsing message", "failed to parse", "invalid-signed-record",
            "truncated message", "decodeerror", "unexpected end-group", "wrong wire type",
            "exceeds maximum", "too large", "unsigned varint", "certified-addr-book")
BAD_DHT_ANSWER = "bad_dht_answer"


class DhtAnswerWatch(logging.Filter):
    """The filter of the module docstring; ``install()`` puts it on py-libp2p's Kademlia
    loggers, ``uninstall()`` takes it off."""

    def __init__(self, report: Callable[[str, str], None]) -> None:
        super().__init__()
        self._report = report

    def filter(self, record: logging.LogRecord) -> bool:
        """Count a parse failure (and drop its record); pass other records from ERROR up."""
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: not ours to judge
            return record.levelno >= logging.ERROR
        lowered = text.lower()
        if record.levelno >= logging.WARNING and any(p in lowered for p in _GARBAGE):
            self._report(BAD_DHT_ANSWER, text[:200])
            return False
        return record.levelno >= logging.ERROR

    def install(self) -> None:
        """Watch py-libp2p's Kademlia loggers (their warnings reach the filter)."""
        for name in KAD_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.addFilter(self)

    def uninstall(self) -> None:
        """Stop watching (the loggers go back to ERROR)."""
        for name in KAD_LOGGERS:
            logger = logging.getLogger(name)
            logger.removeFilter(self)
            logger.setLevel(logging.ERROR)
