"""A measuring tap: the moment this node applied each change, appended to a file, so that an
emulation (``netsim emulate``) reads node-to-node latency at the nodes themselves instead of
through client processes (whose own scheduling delays, on a loaded machine, dominated the
tail: a client hop's p99 was 68 ms where a node's relaying hop was 15 ms).

Off unless the environment variable ``MESHNODE_TRACE_APPLIED`` names a file when the process
starts; then each change applied is appended as one line ``<change id, hex> <monotonic s>``
(``time.monotonic()``: one clock for every process of the machine, network namespaces
included). The file holds change IDs and times only, no content; still, turn it on for
measurements only (a warning says so at start).
"""

import logging
import time

from meshnode.taps import EnvFileTap

__all__ = ["TRACE_ENV", "read_trace", "record_applied"]

TRACE_ENV = "MESHNODE_TRACE_APPLIED"
_TAP = EnvFileTap(TRACE_ENV, "the time of every change applied is appended to",
                  logging.getLogger("meshnode.runtime"))


def record_applied(change_id: bytes) -> None:
    """Append that this node applied ``change_id`` now, if the trace is on."""
    f = _TAP.file()
    if f is not None:
        f.write(f"{change_id.hex()} {time.monotonic():.6f}\n".encode("ascii"))


def read_trace(text: str) -> dict[str, float]:
    """The first time each change appears in a trace file's text (a node that restarted
    applies again what it loads; a torn or malformed line, from a process killed mid-write,
    is skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            bytes.fromhex(parts[0])
            t = float(parts[1])
        except ValueError:
            continue
        out.setdefault(parts[0], t)
    return out
