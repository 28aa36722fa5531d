"""The data directory and the secrets in it: who can read them, and whether they work.

``identity.key`` (the node's signing key), ``admin.token`` (the operator's key to the admin
API), the database (room content, private rooms included) and a configuration file that
holds a TURN credential must be readable by their owner only: mode 0600 (the directory 0700).
The node itself refuses to start with a group- or world-readable identity, and its admin
API refuses every request while the token file is; the doctor says so before that happens.
"""

import os
import stat
from pathlib import Path

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.doctor.probe import ProbeError, admin_get
from meshnode.signaling.admin_token import AdminTokenError, read_admin_token
from meshnode.store.sqlite import DB_FILENAME

__all__ = ["check_admin_token", "check_permissions"]

IDENTITY_FILE = "identity.key"


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _exposed(mode: int) -> str:
    who = [name for bits, name in ((0o070, "its group"), (0o007, "every user")) if mode & bits]
    return " and ".join(who)


def _secret_file(check: str, path: Path, what: str, missing: Finding | None) -> Finding:
    mode = _mode(path)
    if mode is None:
        return missing or Finding(check, Status.SKIP, f"no {path} yet")
    data = {"path": str(path), "mode": f"{mode:04o}"}
    if mode & 0o077:
        return Finding(check, Status.FAIL,
                       f"{path} ({what}) can be read by {_exposed(mode)} (mode {mode:04o})",
                       f"chmod 600 {path}; if others could have copied it, treat it as "
                       "leaked (see docs/operators.md)", data)
    return Finding(check, Status.OK, f"{path} is private (mode {mode:04o})", data=data)


def _config_has_secret(ctx: DoctorContext) -> bool:
    return any(s.credential for s in ctx.config.ice.servers)


async def check_permissions(ctx: DoctorContext) -> list[Finding]:
    """``files.data_dir``, ``files.identity``, ``files.database``, ``files.config``."""
    data_dir = ctx.config.data_dir
    found: list[Finding] = []
    mode = _mode(data_dir)
    if mode is None:
        found.append(Finding("files.data_dir", Status.WARN,
                             f"the data directory {data_dir} does not exist yet",
                             "start the node once (it creates it, mode 0700), or check "
                             "--data-dir / [node] data_dir"))
    elif mode & 0o077:
        found.append(Finding("files.data_dir", Status.WARN,
                             f"the data directory {data_dir} can be listed by "
                             f"{_exposed(mode)} (mode {mode:04o})", f"chmod 700 {data_dir}",
                             {"path": str(data_dir), "mode": f"{mode:04o}"}))
    elif not os.access(data_dir, os.W_OK):
        found.append(Finding("files.data_dir", Status.FAIL,
                             f"the data directory {data_dir} is not writable by this user",
                             "run the doctor (and the node) as the user that owns it "
                             "(`sudo -u meshnode meshnode doctor ...`)"))
    else:
        found.append(Finding("files.data_dir", Status.OK,
                             f"the data directory {data_dir} is private (mode {mode:04o})"))
    found.append(_secret_file("files.identity", data_dir / IDENTITY_FILE,
                              "the node's private key", None))
    for name in (DB_FILENAME, DB_FILENAME + "-wal"):
        finding = _secret_file("files.database", data_dir / name, "the rooms' content", None)
        if finding.status is not Status.SKIP or name == DB_FILENAME:
            found.append(finding)
    if ctx.config_path is not None:
        if _config_has_secret(ctx):
            found.append(_secret_file("files.config", ctx.config_path,
                                      "the configuration, with a TURN credential", None))
        else:
            found.append(Finding("files.config", Status.OK,
                                 f"{ctx.config_path} holds no secret"))
    return found


async def check_admin_token(ctx: DoctorContext) -> list[Finding]:
    """``admin.token``: the token file exists, is private and well formed, and the running
    node accepts it."""
    path = ctx.token_path
    try:
        token = read_admin_token(path)
    except AdminTokenError as err:
        missing = not path.exists()
        return [Finding("admin.token", Status.WARN if missing else Status.FAIL, str(err),
                        "start the node once (it writes the token)" if missing else
                        "`meshnode admin rotate-token` writes a new private one",
                        {"path": str(path)})]
    try:
        answer = await admin_get(ctx, "/api/status")
    except ProbeError as err:
        return [Finding("admin.token", Status.OK,
                        f"{path} is present and private (no running node at {ctx.node_url} "
                        f"to try it on: {err})", data={"path": str(path)})]
    if answer.status == 200:
        return [Finding("admin.token", Status.OK,
                        f"{path} is present, private, and the running node accepts it",
                        data={"path": str(path), "token_chars": len(token)})]
    body = answer.json()
    why = body.get("error") if isinstance(body, dict) else f"HTTP {answer.status}"
    return [Finding("admin.token", Status.FAIL,
                    f"the node at {ctx.node_url} refuses the token in {path}: {why}",
                    "pass the node's own --data-dir (or --admin-token-file), and --node if it "
                    "listens elsewhere", {"path": str(path), "http_status": answer.status})]
