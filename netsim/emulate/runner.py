"""``netsim emulate``: run a scenario with real ``meshnode up`` processes.

One network namespace per node, joined only through the fabric process
(:mod:`netsim.emulate.fabric`), which applies the scenario's link models to every IP packet.
In each namespace run the node (its own data directory, bootstrap URLs of its topology
neighbours, the room joined by an admin invite) and an agent (:mod:`netsim.emulate.agent`: the
node's admin calls and a real Python client that edits on the scenario's schedule and reports
when each change arrives).

Order of a run: refuse what cannot be honoured (:mod:`netsim.emulate.preflight`), create the
namespaces, start the fabric, start the nodes one by one in breadth-first order from node 0 (the
room's founder), wait until every topology edge carries a link, connect the clients, let the
editors create their first entities and wait until every node has them; that instant is scenario
time 0. Events and edits follow the scenario's clock from there; at ``duration_s`` the run stops.

Teardown is unconditional: every process this run started is killed by its process group (they
also die with the runner, by ``PR_SET_PDEATHSIG``), what still runs in the run's namespaces is
killed, and the namespaces are deleted (their TUN devices with them). It runs on success, on
failure and on Ctrl+C / SIGTERM; namespaces a SIGKILLed run left behind are removed by the next.

The processes themselves (:class:`~netsim.emulate.children.Child`: started in a session of
their own, dying with the runner) are in :mod:`netsim.emulate.children`, re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshnode.runtime.apply_trace import TRACE_ENV, read_trace
from netsim.emulate import namespaces, trace
from netsim.emulate.children import NICE as NICE
from netsim.emulate.children import PR_SET_PDEATHSIG as PR_SET_PDEATHSIG
from netsim.emulate.children import Child as Child
from netsim.emulate.children import _die_with_parent, _ready_or_exit
from netsim.emulate.fabric import FabricSpec
from netsim.emulate.namespaces import PREFIX, Plan
from netsim.emulate.preflight import EmulationRefused, problems, this_host
from netsim.emulate.results import EmulationObservations, results
from netsim.emulate.workload import down_intervals, schedule
from netsim.links import LinkSpec
from netsim.scenario import Scenario, ScenarioError
from netsim.topology import Topology, build, neighbours

NODE_PORT = 8470
SETUP_TIMEOUT_S = 60.0
FOUNDER = 0
"""The node whose default room the run uses (the room's owner)."""


class EmulationFailed(RuntimeError):
    """A part of the emulation did not come up (the message says which, with its log)."""


def topology_of(scenario: Scenario) -> tuple[Topology, dict[tuple[int, int], LinkSpec]]:
    """The scenario's graph and per-direction link specs, built exactly as netsim builds them
    (the same seeded draw), so both modes run on the same network."""
    rng = random.Random(scenario.seed)
    try:
        topo = build(scenario.topology["kind"], scenario.topology, random.Random(rng.random()),
                     scenario.links)
    except ValueError as err:
        raise ScenarioError(f"topology: {err}") from None
    edge_set = set(topo.edges)
    overrides: dict[tuple[int, int], LinkSpec] = {}
    for edges, spec in scenario.link_overrides:
        for e in edges:
            if e not in edge_set:
                raise ScenarioError(f"link_overrides: {list(e)} is not a topology edge")
            overrides[e] = spec
    specs = {}
    for a, b in topo.edges:
        for s, d in ((a, b), (b, a)):
            specs[(s, d)] = overrides.get((a, b)) or topo.link_spec(s, d, scenario.links)
    return topo, specs


class Emulation:
    """One run (see the module docstring); :meth:`run` returns ``results.json``'s content."""

    def __init__(self, scenario: Scenario, out: Path, *, python: str = sys.executable,
                 echo: Callable[[str], None] | None = None) -> None:
        self.scenario = scenario
        self.out = out
        self.python = python
        self.echo = echo or (lambda msg: print(f"netsim emulate: {msg}", file=sys.stderr,
                                               flush=True))
        self.topology, self.specs = topology_of(scenario)
        self.plan = Plan(os.getpid(), scenario.nodes)
        self.children: list[Child] = []
        self.nodes: dict[int, Child] = {}
        self.agents: dict[int, Child] = {}
        self.peer_ids: dict[str, int] = {}
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self.obs = EmulationObservations()
        self.t0: float | None = None
        self.room = ""
        self.work = Path(tempfile.mkdtemp(prefix="netsim-emulate-"))
        self.logs = out / "logs"
        self.created_namespaces = False

    # ------------------------------------------------------------------ processes

    async def _spawn(self, name: str, argv: list[str], ns: str | None = None,
                     on_line: Callable[[str], None] | None = None,
                     env: dict[str, str] | None = None) -> Child:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + argv
        log = open(self.logs / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log, start_new_session=True, preexec_fn=_die_with_parent,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        child = Child(name, proc, log, on_line)
        self.children.append(child)
        child.start_reading()
        return child

    def teardown(self) -> None:
        """Kill everything this run started and delete its namespaces (idempotent; sync, so
        it also runs after the event loop is gone)."""
        for child in self.children:
            child.kill()
        if self.created_namespaces:
            namespaces.remove(namespaces.ours(self.plan.pid))
        for child in self.children:
            with contextlib.suppress(OSError):
                child.log.close()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ agents

    def _agent_line(self, node: int) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            try:
                msg = json.loads(line)
            except ValueError:
                return
            if "re" in msg:
                fut = self.replies.pop(int(msg["re"]), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif "ev" in msg and self.t0 is not None:
                t = float(msg["t"]) - self.t0
                cid = str(msg["cid"])
                if msg["ev"] == "sent":
                    self.obs.submitted[cid] = (node, t)
                elif msg["ev"] == "local":
                    self.obs.local.setdefault(cid, t)
                else:
                    self.obs.delivered.setdefault(cid, {}).setdefault(node, t)
        return on_line

    async def ask(self, who: int, op: str, timeout: float = SETUP_TIMEOUT_S,
                  **kw: Any) -> dict[str, Any]:
        """Send a request to node ``who``'s agent; its reply (raises if it failed)."""
        agent = self.agents[who]
        self.next_id += 1
        rid = self.next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        assert agent.proc.stdin is not None
        agent.proc.stdin.write((json.dumps({"id": rid, "op": op, **kw}) + "\n").encode())
        await agent.proc.stdin.drain()
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise EmulationFailed(f"node {who}'s agent did not answer {op!r} in {timeout:g} s;"
                                  f" its log: {self.logs / agent.name}.log") from None
        if not reply.get("ok"):
            raise EmulationFailed(f"node {who}'s agent: {op}: {reply.get('error')}")
        return reply

    async def admin(self, node: int, method: str, path: str, body: Any = None) -> Any:
        """An admin API call to node ``node`` (from inside its namespace)."""
        return (await self.ask(node, "admin", method=method, path=path, body=body))["body"]

    # ------------------------------------------------------------------ nodes

    def _node_config(self, i: int) -> Path:
        addr = Plan.address(i)
        path = self.work / f"node{i}.toml"
        path.write_text(
            "[node]\n"
            f'public_url = "http://{addr}:{NODE_PORT}"\n'
            "[network]\n"
            f'host_addresses = ["{addr}"]\n'
            "[discovery]\n"
            "enabled = false\n"
            "[log]\n"
            'level = "info"\n')
        return path

    async def start_node(self, i: int, extra: list[str]) -> Child:
        """Start ``meshnode up`` in node ``i``'s namespace; wait until it serves."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_line(line: str) -> None:
            if " is up." in line and line.startswith("meshnode "):
                self.peer_ids[line.split()[1]] = i
            if "?room=" in line and not self.room:
                self.room = line.split("?room=")[1].split()[0]
            if line.startswith("Metrics: ") and not ready.done():
                ready.set_result(None)

        data = self.work / f"node{i}"
        child = await self._spawn(
            f"node-{i}", [self.python, "-m", "meshnode", "up", "--config",
                          str(self._node_config(i)), "--data-dir", str(data),
                          "--listen", f"0.0.0.0:{NODE_PORT}", *extra],
            ns=self.plan.namespace(i), on_line=on_line,
            env={TRACE_ENV: str(self._applied_trace(i))})
        self.nodes[i] = child
        if not await _ready_or_exit(ready, child, SETUP_TIMEOUT_S):
            raise EmulationFailed(f"node {i} did not start:\n{child.tail()}")
        return child

    def _applied_trace(self, i: int) -> Path:
        """Where node ``i`` appends the time it applied each change (a restart appends)."""
        return self.logs / f"applied-{i}.trace"

    def _read_applied(self) -> None:
        """Node-side apply times, relative to the workload's time 0 (``obs.applied``)."""
        assert self.t0 is not None
        for i in range(self.scenario.nodes):
            try:
                text = self._applied_trace(i).read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            for cid, t in read_trace(text).items():
                self.obs.applied.setdefault(cid, {})[i] = t - self.t0

    def _bootstrap(self, i: int) -> list[str]:
        """Node ``i`` bootstraps to its topology neighbours with a smaller index (those
        started before it), the rule netsim's liveness model follows (``bootstrap = "lower"``)."""
        args = []
        for j in neighbours(self.topology)[i]:
            if j < i:
                args += ["--bootstrap", f"http://{Plan.address(j)}:{NODE_PORT}"]
        return args

    async def _until(self, check: Callable[[], Any], what: str,
                     timeout: float = SETUP_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await check():
                    return True
            except EmulationFailed:
                pass
            await asyncio.sleep(0.2)
        self.obs.warnings.append(f"setup: timed out waiting for {what}")
        self.echo(f"warning: timed out waiting for {what}")
        return False

    async def setup(self) -> None:
        """Namespaces, fabric, nodes, links, clients, first entities (see module docs)."""
        sc = self.scenario
        self.logs.mkdir(parents=True, exist_ok=True)
        self.echo(f"run {self.plan.pid}: namespaces {PREFIX}-{self.plan.pid}-*, work dir "
                  f"{self.work}, logs in {self.logs}")
        stale = namespaces.stale()
        if stale:
            self.echo(f"removing {len(stale)} namespace(s) left by a killed run")
            namespaces.remove(stale)
        namespaces.create(self.plan)
        self.created_namespaces = True
        spec = FabricSpec(
            seed=sc.seed if sc.link_seed is None else sc.link_seed,
            addresses=[Plan.address(i) for i in range(sc.nodes)],
            namespaces=self.plan.namespaces,
            tun_names=[self.plan.tun(i) for i in range(sc.nodes)],
            prefix_len=namespaces.SUBNET_PREFIX_LEN,
            links={f"{a}-{b}": s.to_dict() for (a, b), s in sorted(self.specs.items())},
            events=[{"at_s": ev.at_s, "kind": ev.kind, "groups": ev.groups,
                     "edges": [list(e) for e in ev.edges], "link": ev.link}
                    for ev in sc.events if ev.kind in ("partition", "heal", "degrade",
                                                       "restore")],
            # Only the room's owner may make admins, and a joining node with nothing but the
            # genesis shares the room only with the owner: a node that is no neighbour of
            # the founder joins over a setup-only path to it, then restarts with its own
            # bootstrap list, before the fabric is restricted to the topology.
            setup_mesh=self.topology.degrees()[FOUNDER] < sc.nodes - 1,
            default_link=sc.links.to_dict(),
            trace=str(self.logs / "packets.trace"))
        spec_path = self.work / "fabric.json"
        spec_path.write_text(spec.to_json())
        fabric_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def fabric_line(line: str) -> None:
            if line.startswith("{"):
                msg = json.loads(line)
                if msg.get("ready") and not fabric_ready.done():
                    fabric_ready.set_result(None)
                if "stats" in msg:
                    self.obs.fabric = msg["stats"]

        self.fabric = await self._spawn("fabric", [self.python, "-m", "netsim.emulate.fabric",
                                                   str(spec_path)], on_line=fabric_line)
        if not await _ready_or_exit(fabric_ready, self.fabric, 30):
            raise EmulationFailed("the fabric did not start; see "
                                  f"{self.logs / 'fabric.log'}")
        self.echo(f"fabric up; starting {sc.nodes} nodes")
        for i in range(sc.nodes):
            self.agents[i] = await self._spawn(
                f"agent-{i}", [self.python, "-m", "netsim.emulate.agent",
                               str(self.work / f"node{i}"), Plan.address(i)],
                ns=self.plan.namespace(i), on_line=self._agent_line(i))
        adj = neighbours(self.topology)
        admin_invite = editor_invite = ""
        for i in range(sc.nodes):
            if i == FOUNDER:
                await self.start_node(i, [])
                if not self.room:
                    raise EmulationFailed("node 0 (the founder) did not print its default room")
                admin_invite = (await self.admin(i, "POST", f"/api/rooms/{self.room}/invites",
                                                 {"role": "admin"}))["token"]
                editor_invite = (await self.admin(i, "POST", f"/api/rooms/{self.room}/invites",
                                                  {"role": "editor"}))["token"]
                continue
            boot = self._bootstrap(i)
            detour = FOUNDER not in adj[i]
            if detour:  # see setup_mesh
                boot += ["--bootstrap", f"http://{Plan.address(FOUNDER)}:{NODE_PORT}"]
            await self.start_node(i, ["--no-default-room", "--join", admin_invite, *boot])

            async def admitted(i: int = i) -> bool:
                rooms = await self.admin(i, "GET", "/api/rooms")
                return any(r["id"] == self.room and r["role"] == "admin" for r in rooms)

            await self._until(admitted, f"node {i} to be admitted to the room")
            if detour:  # again, with its own bootstrap list only
                await self._crash(i)
                await self.start_node(i, ["--no-default-room", *self._bootstrap(i)])
        assert self.fabric.proc.stdin is not None
        self.fabric.proc.stdin.write(b'{"restrict": true}\n')
        self.echo("nodes up; waiting for a link on every topology edge and on no other pair")

        async def linked() -> bool:
            for i in range(sc.nodes):
                peers = await self.admin(i, "GET", "/api/peers")
                have = {self.peer_ids.get(p["peer"]) for p in peers if p["kind"] == "node"}
                if have != set(adj[i]):
                    return False
            return True

        await self._until(linked, "a link on every topology edge")
        self.echo("links up; connecting the clients")
        await asyncio.gather(*(self.ask(i, "join", room=self.room, invite=editor_invite,
                                        watch_own=i < sc.workload.editors)
                               for i in range(sc.nodes)))
        wl = sc.workload
        per_editor = max(1, wl.initial_entities // max(1, wl.editors))
        await asyncio.gather(*(self.ask(i, "initial", seed=sc.seed, node=i, count=per_editor)
                               for i in range(wl.editors)))

        async def same_heads() -> bool:
            heads = [(await self.ask(i, "heads", room=self.room))["body"]["vv"]
                     for i in range(sc.nodes)]
            return all(h == heads[0] for h in heads)

        await self._until(same_heads, "every node to hold the first entities")

    # ------------------------------------------------------------------ the run

    async def _crash(self, i: int) -> None:
        child = self.nodes.pop(i, None)
        if child is not None:
            child.kill()
            await child.proc.wait()

    async def _restart(self, i: int) -> None:
        if i in self.nodes:
            return
        try:
            await self.start_node(i, ["--no-default-room", *self._bootstrap(i)])
        except EmulationFailed as err:
            self.obs.warnings.append(f"restart of node {i} failed: {err}")

    async def _event(self, at_s: float, kind: str, nodes: list[int]) -> None:
        assert self.t0 is not None
        await asyncio.sleep(max(0.0, self.t0 + at_s - time.monotonic()))
        for i in nodes:
            if kind in ("crash", "leave"):
                await self._crash(i)
            elif kind == "restart":
                await self._restart(i)

    async def run_workload(self) -> None:
        """From scenario time 0 to ``duration_s``: edits, events, then the final state."""
        sc = self.scenario
        wl = sc.workload
        plan = schedule(sc)
        stop = wl.stop_s if wl.stop_s is not None else sc.duration_s * 0.75
        self.t0 = t0 = time.monotonic() + 0.5
        assert self.fabric.proc.stdin is not None
        self.fabric.proc.stdin.write((json.dumps({"start": t0}) + "\n").encode())
        for i in range(sc.nodes):
            mine = [[e.at_s, e.kind] for e in plan if e.node == i]
            await self.ask(i, "run", t0=t0, edits=mine,
                           presence_hz=wl.presence_hz if i < wl.editors else 0.0,
                           stop_s=stop, seed=sc.seed, node=i)
        tasks = [asyncio.ensure_future(self._event(ev.at_s, ev.kind, ev.nodes))
                 for ev in sc.events if ev.kind in ("crash", "restart", "leave")]
        self.obs.partitions = [ev.at_s for ev in sc.events if ev.kind == "partition"]
        self.obs.heals = [ev.at_s for ev in sc.events if ev.kind == "heal"]
        self.echo(f"running: {len(plan)} edits over {sc.duration_s:g} s")
        await asyncio.sleep(max(0.0, t0 + sc.duration_s - time.monotonic()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.obs.down = down_intervals(sc)
        self.obs.live_at_end = [i for i in range(sc.nodes) if i in self.nodes]
        for i in self.obs.live_at_end:
            try:
                self.obs.final_heads[i] = (await self.ask(i, "heads", timeout=10,
                                                          room=self.room))["body"]["vv"]
            except EmulationFailed as err:
                self.obs.warnings.append(str(err))
        self.fabric.proc.stdin.write(b'{"stop": true}\n')
        try:
            await asyncio.wait_for(self.fabric.proc.wait(), 10)
            if self.fabric.reader is not None:
                await asyncio.wait_for(self.fabric.reader, 5)
        except TimeoutError:
            self.obs.warnings.append("the fabric did not report its counters")

    async def stop_children(self) -> None:
        """Kill every process of the run and reap it (inside the loop, so that asyncio closes
        their pipes cleanly)."""
        for child in self.children:
            child.kill()
        for child in self.children:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.proc.wait(), 10)
            if child.reader is not None:
                child.reader.cancel()
                await asyncio.gather(child.reader, return_exceptions=True)

    async def run(self) -> dict[str, Any]:
        """Set up, run, and return the results; every process is stopped when it returns or
        raises (namespaces: :meth:`teardown`)."""
        try:
            return await self._run()
        finally:
            await asyncio.shield(self.stop_children())

    async def _run(self) -> dict[str, Any]:
        started = time.perf_counter()
        await self.setup()
        self.obs.setup_s = time.perf_counter() - started
        await self.run_workload()
        for i, agent in self.agents.items():
            if agent.proc.stdin is not None and agent.proc.returncode is None:
                agent.proc.stdin.write(b'{"op": "stop"}\n')
                del i
        await asyncio.sleep(0.5)
        self.obs.trace = trace.summary(trace.read(self.logs / "packets.trace"))
        self._read_applied()
        sc = self.scenario
        return results(name=sc.name, seed=sc.seed, duration_s=sc.duration_s,
                       sample_interval_s=sc.sample_interval_s, topology=self.topology,
                       default_spec=sc.links, obs=self.obs,
                       wall_time_s=time.perf_counter() - started)


def refuse_unless_possible(scenario: Scenario, node_limit: int | None = None) -> None:
    """Raise :class:`EmulationRefused` naming every reason this machine cannot run it."""
    found = problems(scenario, this_host(), node_limit=node_limit)
    if found:
        raise EmulationRefused(found)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def emulate(scenario: Scenario, out: Path, *, node_limit: int | None = None,
            echo: Callable[[str], None] | None = None,
            python: str = sys.executable) -> dict[str, Any]:
    """Run ``scenario`` in emulation; results as ``netsim run`` writes them. Everything it
    started is gone when this returns or raises (KeyboardInterrupt included). ``python``: the
    interpreter that runs the nodes, agents and fabric."""
    refuse_unless_possible(scenario, node_limit)
    out.mkdir(parents=True, exist_ok=True)
    emulation = Emulation(scenario, out, echo=echo, python=python)
    # Ctrl-C and SIGTERM both interrupt the run wherever it is, whatever this process
    # inherited: asyncio.run's own SIGINT handling stands aside when SIGINT was not Python's
    # default on entry (ignored by the shell that started a background job, for one), and a
    # signal blocked by the parent would never arrive.
    interrupts = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in interrupts}
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts)
    try:
        return asyncio.run(emulation.run())
    finally:
        emulation.teardown()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
