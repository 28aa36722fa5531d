"""Asyncio drivers of the sans-I/O core: a room's runtime, shared by the node and the client."""
