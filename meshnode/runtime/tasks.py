"""``TaskSet``: the background tasks of one service, with one owner.

Every task a service starts (a dial, an admission, a bootstrap loop) goes through its
``TaskSet``: ``spawn`` starts it, ``aclose`` cancels every task still running and waits for
them, so a stopped service leaves nothing behind. A task that ends with an unexpected error
is a bug, never silently lost: it is logged with its traceback and handed to ``on_crash``
(the node stops on it, see ``meshnode.node``). Tasks catch the failures they expect
(an unreachable peer, a refused link) themselves.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

log = logging.getLogger("meshnode.tasks")

__all__ = ["TaskSet"]


class TaskSet:
    """The tasks of one owner (see the module docstring)."""

    def __init__(self, owner: str,
                 on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self.owner = owner
        self._on_crash = on_crash
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` as a task owned by this set. After ``aclose`` the coroutine is
        closed unrun and None returned: late callbacks (a link closing during shutdown)
        must not start work that nobody would wait for."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("task %r crashed", task.get_name(), exc_info=error)
        if self._on_crash is not None:
            self._on_crash(task.get_name(), error)

    async def aclose(self) -> None:
        """Cancel every running task and wait until all have ended; no new task starts
        afterwards. Safe to call twice."""
        self._closed = True
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def __aenter__(self) -> "TaskSet":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
