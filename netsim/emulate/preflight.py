"""Can this machine emulate this scenario? A pure check, made before anything starts.

:func:`problems` returns every reason to refuse (empty: go ahead), each with a stable
``reason`` label and a sentence that says what to change. The runner raises
:class:`EmulationRefused` with all of them, so a researcher fixes everything in one go.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from netsim.links import LinkSpec
from netsim.scenario import Scenario, ScenarioError

NODES_PER_CORE = 4
"""Each node is two processes (``meshnode up`` and its client) with aiortc; on the measured
2-core machine 8 nodes leave the fabric enough CPU to keep its timing within a millisecond."""
MEMORY_PER_NODE_MB = 300
SUPPORTED_EVENTS = frozenset({"partition", "heal", "degrade", "restore", "crash", "restart",
                              "leave"})
SCTP_FIELDS = ("rto_min_ms", "rto_max_ms", "max_retransmits", "mtu", "overhead_bytes",
               "recovery", "sack_loss")
"""Link fields that model what the real stack does itself (SCTP retransmission, packetisation):
the emulator cannot impose them on real nodes."""


class Refusal(StrEnum):
    """Why a scenario cannot be emulated (stable labels)."""

    NOT_ROOT = "not_root"
    NO_TUN = "no_tun"
    NO_IP_TOOL = "no_ip_tool"
    TOO_MANY_NODES = "too_many_nodes"
    NOT_ENOUGH_MEMORY = "not_enough_memory"
    UNSUPPORTED_EVENT = "unsupported_event"
    UNSUPPORTED_LINK_FIELD = "unsupported_link_field"
    OVERLAY_SETTINGS = "overlay_settings"
    NODE_MODEL = "node_model"
    MEDIA = "media"


@dataclass(frozen=True)
class Problem:
    """One reason to refuse."""

    reason: Refusal
    detail: str


class EmulationRefused(ScenarioError):
    """The scenario cannot be emulated here; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - [{p.reason.value}] {p.detail}" for p in problems)
        super().__init__(f"cannot emulate this scenario (nothing was started):\n{lines}")


@dataclass(frozen=True)
class Host:
    """What the machine offers (read by :func:`this_host`; tests pass their own)."""

    euid: int
    tun_device: bool
    ip_tool: bool
    cpus: int
    memory_mb: int


def this_host() -> Host:
    """This machine."""
    mem = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return Host(euid=os.geteuid(), tun_device=os.path.exists("/dev/net/tun"),
                ip_tool=shutil.which("ip") is not None, cpus=os.cpu_count() or 1,
                memory_mb=mem)


def max_nodes(host: Host) -> int:
    """How many nodes this machine can run faithfully."""
    by_cpu = NODES_PER_CORE * max(1, host.cpus)
    by_mem = host.memory_mb // MEMORY_PER_NODE_MB if host.memory_mb else by_cpu
    return max(2, min(by_cpu, by_mem))


def problems(scenario: Scenario, host: Host, *, node_limit: int | None = None) -> list[Problem]:
    """Every reason this host cannot emulate ``scenario`` (empty: it can)."""
    out: list[Problem] = []
    if host.euid != 0:
        out.append(Problem(Refusal.NOT_ROOT, "emulation creates network namespaces and TUN "
                           "devices: run it as root (e.g. sudo netsim emulate ...)"))
    if not host.tun_device:
        out.append(Problem(Refusal.NO_TUN, "/dev/net/tun is missing: load the tun module "
                           "(modprobe tun) or, in a container, pass --device /dev/net/tun"))
    if not host.ip_tool:
        out.append(Problem(Refusal.NO_IP_TOOL, "the `ip` command (iproute2) is not installed"))
    limit = node_limit if node_limit is not None else max_nodes(host)
    if scenario.nodes > limit:
        out.append(Problem(Refusal.TOO_MANY_NODES,
                           f"{scenario.nodes} nodes, but this machine runs at most {limit} "
                           f"({NODES_PER_CORE} per core on {host.cpus} cores, "
                           f"{MEMORY_PER_NODE_MB} MB each): use netsim run for large rooms"))
    for ev in scenario.events:
        if ev.kind not in SUPPORTED_EVENTS:
            out.append(Problem(Refusal.UNSUPPORTED_EVENT,
                               f"event {ev.kind!r} at {ev.at_s:g} s is not emulated (supported: "
                               f"{', '.join(sorted(SUPPORTED_EVENTS))})"))
    default = LinkSpec()
    specs = [("links", scenario.links)] + [
        (f"link_overrides[{k}]", spec) for k, (_, spec) in enumerate(scenario.link_overrides)]
    for where, spec in specs:
        for f in fields(LinkSpec):
            if f.name in SCTP_FIELDS and getattr(spec, f.name) != getattr(default, f.name):
                out.append(Problem(Refusal.UNSUPPORTED_LINK_FIELD,
                                   f"{where}.{f.name}: real nodes run their own SCTP and "
                                   "packetisation; the fabric can only delay, drop and queue "
                                   "packets (remove the key)"))
    for ev in scenario.events:
        bad = sorted(set(ev.link) & set(SCTP_FIELDS))
        if bad:
            out.append(Problem(Refusal.UNSUPPORTED_LINK_FIELD,
                               f"event at {ev.at_s:g} s sets {bad}, which real nodes decide "
                               "themselves"))
    if scenario.overlay:
        out.append(Problem(Refusal.OVERLAY_SETTINGS,
                           f"[overlay] {sorted(scenario.overlay)}: real nodes run their live "
                           "settings (meshnode.runtime.room.LIVE_OVERLAY); remove the section"))
    for section in ("node", "liveness"):
        model: Any = getattr(scenario, section, None)
        if model is None:
            continue
        changed = sorted(f.name for f in fields(model)
                         if getattr(model, f.name) != getattr(type(model)(), f.name))
        if changed:
            out.append(Problem(Refusal.NODE_MODEL,
                               f"[{section}] {changed}: these model what real nodes do "
                               "themselves (processing, keepalives, redials); an emulation "
                               "runs the real thing, so remove them"))
    if scenario.media is not None:
        out.append(Problem(Refusal.MEDIA, "[media] is not emulated yet (real media needs "
                           "publishing clients); remove the section or use netsim run"))
    return out
