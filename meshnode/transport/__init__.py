"""The transport driver: aiortc peer connections carrying frames between peers."""
