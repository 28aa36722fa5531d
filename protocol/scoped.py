"""``ScopedHook``: a process-wide hook that is set only for the length of a ``with`` block.

The decode and verify caches a simulator installs are read on hot paths as plain module
state, yet must never outlive the simulation that owns them: ``hook.using(value)`` sets the
hook inside the block and puts back whatever was there before when the block ends, even on
error, so nested and successive owners compose.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["ScopedHook"]


class ScopedHook(Generic[T]):
    """One hook; ``value`` is None outside every ``using`` block."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: T | None = None

    @contextmanager
    def using(self, value: T | None) -> Iterator[None]:
        """Set the hook to ``value`` (None: unset) inside the block; restore it after."""
        previous, self.value = self.value, value
        try:
            yield
        finally:
            self.value = previous
