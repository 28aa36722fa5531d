"""The clock: is it synchronised, and how far is it from the peers' clocks?

Why it matters: a hello more than 300 s from the receiver's clock is refused (``stale``), and
a change stamped more than 60 s ahead of a replica's clock is held back as
``future_timestamp`` (``meshnode_changes_rejected``) until that clock catches up. A Raspberry
Pi has no real-time clock: until NTP syncs it, it may be days off.

Synchronisation is asked of ``timedatectl`` (systemd-timesyncd, chrony and ntpd all report
through it) and, without systemd, of the kernel (``adjtimex``: the state every NTP daemon
sets). Skew is measured against the ``Date`` header of each linked node's and each bootstrap
node's ``/healthz``: the midpoint of the request against a header of 1 s resolution, so
within about ±(0.5 s + half the round trip).
"""

import asyncio
import ctypes
import email.utils
import shutil
import subprocess
import sys

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.doctor.probe import ProbeError, admin_get, http_get

__all__ = ["check_clock", "clock_sync", "skew_status"]

HELLO_MAX_SKEW_S = 300.0  # meshnode.transport.hello: beyond it, links are refused
CHANGE_MAX_SKEW_S = 60.0  # SceneReplica.max_clock_skew_s: beyond it, changes are held back
WARN_SKEW_S = 5.0
MAX_PEERS = 8
_TIME_ERROR = 5  # adjtimex(2): "clock not synchronized"
_STA_UNSYNC = 0x0040
_SYNC_FIX = ("run an NTP client: `apt-get install systemd-timesyncd` (or chrony) and "
             "`timedatectl set-ntp true`; start meshnode after time-sync.target (the systemd "
             "unit in docs/operators.md does)")


class _Timex(ctypes.Structure):
    # The head of struct timex (adjtimex(2)); the rest is room for the kernel to write.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("_rest", ctypes.c_char * 256)]


def clock_sync() -> Finding:
    """Whether this machine's clock is synchronised (a blocking call: run it in a thread)."""
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            out = None
        answer = out.stdout.strip() if out is not None and out.returncode == 0 else ""
        if answer == "yes":
            return Finding("clock.sync", Status.OK, "the clock is synchronised (timedatectl)")
        if answer == "no":
            return Finding("clock.sync", Status.WARN,
                           "the clock is not synchronised (timedatectl: NTPSynchronized=no)",
                           _SYNC_FIX)
    if not sys.platform.startswith("linux"):
        return Finding("clock.sync", Status.SKIP,
                       "cannot tell whether the clock is synchronised on this system",
                       "check that an NTP client runs")
    timex = _Timex()  # modes = 0: read only
    try:
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return Finding("clock.sync", Status.SKIP, "adjtimex is not available here")
    data = {"kernel_state": state, "max_error_us": timex.maxerror}
    if state < 0:
        return Finding("clock.sync", Status.SKIP, "adjtimex failed", data=data)
    if state == _TIME_ERROR or timex.status & _STA_UNSYNC:
        return Finding("clock.sync", Status.WARN,
                       "the kernel says the clock is not synchronised (no NTP client has set "
                       "it; adjtimex: TIME_ERROR)", _SYNC_FIX, data)
    return Finding("clock.sync", Status.OK,
                   f"the clock is synchronised (kernel: maximum error "
                   f"{timex.maxerror / 1000:.0f} ms)", data=data)


def skew_status(skew_s: float) -> tuple[Status, str]:
    """How bad a clock difference with a peer is, and what it breaks."""
    size = abs(skew_s)
    if size > HELLO_MAX_SKEW_S:
        return Status.FAIL, (f"over {HELLO_MAX_SKEW_S:.0f} s: links between the two are "
                             "refused (stale hello)")
    if size > CHANGE_MAX_SKEW_S:
        return Status.FAIL, (f"over {CHANGE_MAX_SKEW_S:.0f} s: the changes of the node ahead "
                             "are held back by the other (future_timestamp)")
    if size > WARN_SKEW_S:
        return Status.WARN, (f"under the {CHANGE_MAX_SKEW_S:.0f} s the rooms tolerate, "
                             "but clocks should agree within a second")
    return Status.OK, "in agreement"


async def _peer_urls(ctx: DoctorContext) -> list[str]:
    urls = list(ctx.config.bootstrap)
    try:
        peers = (await admin_get(ctx, "/api/peers")).json()
    except Exception:  # no running node: the bootstrap nodes are all we know
        peers = None
    if isinstance(peers, list):
        urls += [p["url"] for p in peers
                 if isinstance(p, dict) and p.get("kind") == "node" and p.get("url")]
    mine = {ctx.node_url.rstrip("/"), ctx.config.url}
    return list(dict.fromkeys(u.rstrip("/") for u in urls if u.rstrip("/") not in mine))


async def _skew(url: str, timeout_s: float) -> tuple[str, float | None, str]:
    try:
        answer = await http_get(url + "/healthz", timeout_s)
    except ProbeError as err:
        return url, None, str(err)
    date = answer.headers.get("Date")
    try:
        theirs = email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        theirs = None
    if theirs is None:
        return url, None, "its answer has no Date header"
    # The header is truncated to the second: its midpoint is half a second later.
    return url, theirs + 0.5 - (answer.sent_at + answer.received_at) / 2, ""


async def clock_skew(ctx: DoctorContext) -> Finding:
    """This machine's clock against each linked and bootstrap node's."""
    urls = (await _peer_urls(ctx))[:MAX_PEERS]
    if not urls:
        return Finding("clock.skew", Status.SKIP,
                       "no linked or bootstrap node to compare the clock with")
    results = await asyncio.gather(*(_skew(u, ctx.timeout_s) for u in urls))
    measured = {u: s for u, s, _ in results if s is not None}
    unreachable = {u: why for u, s, why in results if s is None}
    data = {"skew_s": {u: round(s, 1) for u, s in measured.items()},
            "unreachable": unreachable}
    if not measured:
        return Finding("clock.skew", Status.SKIP,
                       f"no peer answered to compare clocks with ({len(unreachable)} tried)",
                       data=data)
    worst_url = max(measured, key=lambda u: abs(measured[u]))
    worst = measured[worst_url]
    status, meaning = skew_status(worst)
    direction = "ahead of" if worst < 0 else "behind"
    message = (f"this machine's clock is {abs(worst):.1f} s {direction} {worst_url}'s "
               f"({meaning}; {len(measured)} peer(s) compared)")
    fix = "" if status is Status.OK else (
        "synchronise the clocks of both machines with NTP (`timedatectl timesync-status`, "
        "`chronyc tracking`); a clock set by hand drifts again")
    return Finding("clock.skew", status, message, fix, data)


async def check_clock(ctx: DoctorContext) -> list[Finding]:
    """``clock.sync`` and ``clock.skew``."""
    sync, skew = await asyncio.gather(asyncio.to_thread(clock_sync), clock_skew(ctx))
    return [sync, skew]
