"""Signaling: how peers exchange SDP offers and answers (HTTP for bootstrap and browsers,
relayed through the mesh for peers learnt from the overlay)."""
