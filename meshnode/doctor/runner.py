"""Run the checks, print what they found, and decide the exit status.

Exit status: 0 when nothing failed (warnings included), 1 when a check failed, 2 when the
doctor could not even read the configuration (said on stderr, as ``meshnode up`` does).
"""

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from meshnode.doctor.clock import check_clock
from meshnode.doctor.disk import check_disk
from meshnode.doctor.files import check_admin_token, check_permissions
from meshnode.doctor.findings import ORDER, Check, DoctorContext, Finding, Status
from meshnode.doctor.network import check_network
from meshnode.doctor.probe import running_node
from meshnode.doctor.web import check_public_url

__all__ = ["CHECKS", "exit_status", "render_json", "render_text", "run_checks"]


async def check_running(ctx: DoctorContext) -> list[Finding]:
    """``node.running``: whether the node answers its operator (else the checks that ask it
    say less)."""
    status, why = await running_node(ctx)
    if status is None:
        return [Finding("node.running", Status.WARN,
                        f"{why}: the checks that ask the running node (peers' clocks, the "
                        "admin token, the proxy) say less",
                        "start it, or pass --node URL and --data-dir of the node you mean")]
    return [Finding("node.running", Status.OK,
                    f"node {status.get('peer_id')} answers at {ctx.node_url}",
                    data={"peer_id": status.get("peer_id"), "url": status.get("url")})]


CHECKS: tuple[Check, ...] = (check_running, check_clock, check_permissions, check_admin_token,
                             check_disk, check_network, check_public_url)
"""Every check, in the order their findings are printed."""


async def _run_one(check: Check, ctx: DoctorContext) -> list[Finding]:
    name = check.__name__.removeprefix("check_")
    try:
        async with asyncio.timeout(ctx.timeout_s * 4 + 5):
            return await check(ctx)
    except TimeoutError:
        return [Finding(name, Status.FAIL, f"the {name} check did not finish in time")]
    except Exception as err:  # a bug in a check must not hide the other checks' findings
        return [Finding(name, Status.FAIL, f"the {name} check crashed: {err!r}",
                        "report it: this is a bug in meshnode doctor")]


async def run_checks(ctx: DoctorContext, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Run ``checks`` concurrently; their findings in the order of ``checks``."""
    results = await asyncio.gather(*(_run_one(c, ctx) for c in checks))
    return [finding for found in results for finding in found]


def exit_status(findings: Sequence[Finding]) -> int:
    """1 if any finding failed, else 0."""
    return 1 if any(f.status is Status.FAIL for f in findings) else 0


def worst(findings: Sequence[Finding]) -> Status:
    """The most serious status among ``findings`` (OK when there are none)."""
    return max((f.status for f in findings), key=lambda s: ORDER[s], default=Status.OK)


def render_json(findings: Sequence[Finding]) -> str:
    """``meshnode doctor --json``: ``{"ok", "status", "findings": [...]}``."""
    body: dict[str, Any] = {"ok": exit_status(findings) == 0, "status": str(worst(findings)),
                            "findings": [f.to_json() for f in findings]}
    return json.dumps(body, indent=2)


_MARK = {Status.OK: "ok  ", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.SKIP: "skip"}


def render_text(findings: Sequence[Finding]) -> str:
    """The human report: one line per finding, the fix indented below it."""
    lines = []
    for f in findings:
        lines.append(f"[{_MARK[f.status]}] {f.check}: {f.message}")
        if f.fix and f.status in (Status.WARN, Status.FAIL):
            lines.append(f"       fix: {f.fix}")
    fails = sum(f.status is Status.FAIL for f in findings)
    warns = sum(f.status is Status.WARN for f in findings)
    lines.append("")
    lines.append(f"{fails} failed, {warns} warning(s), "
                 f"{len(findings) - fails - warns} fine or not applicable")
    return "\n".join(lines)
