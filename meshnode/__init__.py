"""meshnode: a federated peer-to-peer mesh node for small collaborative 3D rooms.

A sans-I/O core (signed scene CRDT, sync, gossip overlay, rooms and federation, presence, media
selection) driven by thin drivers: the node (asyncio + aiortc), netsim (a deterministic simulator)
and the tests.
"""

__version__ = "0.1.0"
