"""A debugging tap on link traffic: every data-channel message a link sends or receives,
appended to a file, for tests that must show what a node put on the wire (a private room's
blind host must never send or receive its content in clear).

Off unless the environment variable ``MESHNODE_CAPTURE_LINKS`` names a file when the process
starts; then each message is appended as ``direction (1 byte: b">" sent, b"<" received) ||
length (u32 BE) || bytes``, after DTLS (what the node itself handles). Never turn it on in
production: the file holds everything the node exchanges (and a warning says so at start).
"""

import logging
import struct

from meshnode.taps import EnvFileTap

__all__ = ["CAPTURE_ENV", "read_capture", "record"]

CAPTURE_ENV = "MESHNODE_CAPTURE_LINKS"
_TAP = EnvFileTap(CAPTURE_ENV, "every link message is appended to",
                  logging.getLogger("meshnode.transport"))


def record(sent: bool, data: bytes) -> None:
    """Append one message to the capture file, if capture is on."""
    f = _TAP.file()
    if f is not None:
        f.write((b">" if sent else b"<") + struct.pack(">I", len(data)) + data)


def read_capture(data: bytes) -> list[tuple[bool, bytes]]:
    """The ``(sent, message)`` records of a capture file's bytes (a torn last record, from
    a process killed mid-write, is left out)."""
    out = []
    i = 0
    while i + 5 <= len(data):
        n = struct.unpack(">I", data[i + 1:i + 5])[0]
        if i + 5 + n > len(data):
            break
        out.append((data[i:i + 1] == b">", data[i + 5:i + 5 + n]))
        i += 5 + n
    return out
