"""The admin token: the secret that makes an HTTP request the operator's.

Loopback alone proves nothing (any web page the operator visits runs on loopback too), so every
admin route also wants ``Authorization: Bearer <token>``. The token is random text in a file of
the data directory (``admin.token``, mode 0600, created on first start); whoever can read that
file is the operator. The CLI reads it from ``--data-dir`` (or ``--admin-token-file``).

Rotation: ``meshnode admin rotate-token`` writes a new token in place (atomically). The running
node notices at the next admin request (it compares the file's inode, size and mtime before each
check and re-reads it when they change), so no restart is needed and the old token stops working
at once. A node whose token file disappears refuses every admin request until the file is back
(fail closed); a restart creates a new one.
"""

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ADMIN_TOKEN_FILE",
    "AdminTokenError",
    "AdminTokenFile",
    "read_admin_token",
    "write_admin_token",
]

ADMIN_TOKEN_FILE = "admin.token"
"""The token file's name inside the data directory."""

_TOKEN_BYTES = 32
_MAX_FILE_BYTES = 1024
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


class AdminTokenError(Exception):
    """The token file is missing, unsafe or malformed; the message says what to do."""


def _new_token() -> str:
    return "mnadm1" + secrets.token_urlsafe(_TOKEN_BYTES)


def write_admin_token(path: Path) -> str:
    """Write a new random token to ``path`` atomically (mode 0600); return it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = _new_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # in case the umask took the owner's bits
            os.write(fd, (token + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def read_admin_token(path: Path) -> str:
    """Read the token at ``path``; raises ``AdminTokenError`` saying what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
    except FileNotFoundError:
        raise AdminTokenError(
            f"no admin token at {path}: start the node once (it creates the file), or pass "
            "--data-dir DIR / --admin-token-file FILE of the node you mean") from None
    except PermissionError:
        raise AdminTokenError(f"cannot read the admin token {path}: run as the user that "
                              "runs the node") from None
    except OSError as err:
        raise AdminTokenError(f"cannot read the admin token {path}: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise AdminTokenError(
                f"admin token {path} is readable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}), so it may have leaked: run "
                "`meshnode admin rotate-token` (it writes a new one with mode 0600)")
        raw = os.read(fd, _MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    token = raw.decode("ascii", "replace").strip()
    if len(raw) > _MAX_FILE_BYTES or not token or not token.isascii() or " " in token:
        raise AdminTokenError(f"admin token {path} is malformed: run "
                              "`meshnode admin rotate-token` to write a new one")
    return token


@dataclass(slots=True)
class _Loaded:
    key: tuple[int, int, int, int]
    token: str | None


class AdminTokenFile:
    """The node's side: the token file, re-read whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: _Loaded | None = None

    def ensure(self) -> None:
        """Create the file if there is none (at start); an unsafe file raises
        ``AdminTokenError``."""
        if not self.path.exists():
            write_admin_token(self.path)
        read_admin_token(self.path)

    def current(self) -> str | None:
        """The token in force now (None: the file is missing or unusable: refuse all)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            self._loaded = None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
        if self._loaded is None or self._loaded.key != key:
            try:
                token: str | None = read_admin_token(self.path)
            except AdminTokenError:
                token = None
            self._loaded = _Loaded(key, token)
        return self._loaded.token

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is the token in force (compared in constant time)."""
        token = self.current()
        return token is not None and hmac.compare_digest(presented.encode("utf-8", "replace"),
                                                         token.encode("ascii"))
