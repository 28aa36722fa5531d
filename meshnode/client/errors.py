"""What the Python client raises: it could not join, the node refused it the room, or the
node cannot store its change yet."""

class ClientError(Exception):
    """The client could not join the room (the message says why)."""


class StoreUnavailable(ClientError):
    """The node cannot make our change durable now: its store fails for :attr:`reason`
    (``disk_full``, ``io_error``, ``locked``...; a stable label).

    Nothing is lost: the change is signed, the node holds it and retries, and acknowledges it
    once it is durable. A later :meth:`RoomClient.flush` that succeeds means this change is
    durable too (the node acknowledges a change only after its whole causal past).
    """

    def __init__(self, url: str, reason: str, change_ids: tuple[bytes, ...]) -> None:
        shown = ", ".join(cid.hex()[:12] for cid in change_ids[:3])
        super().__init__(
            f"the node at {url} cannot store change {shown} yet: its store fails "
            f"({reason}). The node keeps the change and retries; flush again later (a "
            f"successful flush covers this change too) or ask the operator to fix the node"
        )
        self.reason = reason
        self.change_ids = change_ids


class AdmissionRefused(ClientError):
    """The node will not let us into the room; ``reason`` is its stable label
    (``not_member``, ``invite_expired``, ``invite_bad_signature``, ``unknown_room``, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"the node refused us the room: {reason}{suffix}")
        self.reason = reason
        self.detail = detail
