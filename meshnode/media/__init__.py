"""Media relay: forward RTP between peers without decoding."""
