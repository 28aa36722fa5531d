"""Debugging and measuring taps: a file that an environment variable names when the process
starts, opened on first use, appended to unbuffered, and announced by a warning at start (what
it holds is for tests and measurements, never for production). ``MESHNODE_CAPTURE_LINKS``
(``meshnode.transport.capture``) and ``MESHNODE_TRACE_APPLIED``
(``meshnode.runtime.apply_trace``) are the two."""

import logging
import os
from typing import BinaryIO

__all__ = ["EnvFileTap"]


class EnvFileTap:
    """The file ``env`` names, or None when it names none (the tap is off)."""

    def __init__(self, env: str, holds: str, logger: logging.Logger) -> None:
        self.env = env
        self._holds = holds  # what the warning says the file gets
        self._log = logger
        self._file: BinaryIO | None = None
        self._opened = False

    def file(self) -> BinaryIO | None:
        """The open file (None: the tap is off). The environment is read once."""
        if not self._opened:
            self._opened = True
            path = os.environ.get(self.env)
            if path:
                self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (lives with the process)
                self._log.warning("%s is on (%s=%s): %s that file; for debugging, tests and "
                                  "measurements only", self.env, self.env, path, self._holds)
        return self._file
