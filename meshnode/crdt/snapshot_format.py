"""The snapshot format's identifiers: magic, versions, signing domain, section counts.

Shared by the encoder (``snapshot_encode``) and the decoder (``snapshot_decode``), which
import them from here rather than from each other; the layout they describe is in
``meshnode.crdt.snapshot`` (the module docstring), which re-exports the public ones.
"""

MAGIC = "meshnode-snapshot"
VERSION = 3
PRIVATE_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
SNAPSHOT_DOMAIN = b"meshnode/snapshot/v1\x00"
_SECTIONS = {2: 17, 3: 18, 4: 20}

Node = tuple[bytes, int]
