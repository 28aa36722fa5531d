"""SessionLimits: what one browser session may do, and how its node paces what it sends
(the limits section of ``meshnode.web.session``'s protocol)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one browser session may do, and how the node paces what it sends."""

    max_message_bytes: int = 64 * 1024
    """Largest message accepted from the browser (UTF-8 bytes)."""
    max_send_bytes: int = 60_000
    """Messages larger than this are split by entry (see the module docstring)."""
    push_interval_s: float = 0.05
    """Least time between two state pushes caused by changes (20 per second)."""
    edit_rate: float = 50.0
    edit_burst: float = 100.0
    max_edits_in_flight: int = 256
    """Edits accepted but not yet durable; beyond this the node answers ``busy``."""
    presence_rate: float = 20.0
    presence_burst: float = 20.0
    max_presence_fields: int = 32
    max_presence_field_chars: int = 64
    sign_timeout_s: float = 20.0
    """How long the node waits for the page to sign one change."""
    sign_attempts: int = 4
    """Drafts of one edit (each after the page showed a later seq it signed) before
    ``seq_conflict``."""
    chain_wait_s: float = 5.0
    """How long the node waits for a person's own earlier change to arrive before drafting
    the next one (``seq_behind``)."""
