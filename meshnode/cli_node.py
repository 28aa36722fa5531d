"""The node's commands: ``up`` runs a node; the others ask a running node over its admin API
(which answers on loopback only, to the admin token), at ``--node URL`` (default
``http://127.0.0.1:8470``), with the token read from ``--data-dir`` (default
``./meshnode-data``) or ``--admin-token-file``.

Every failure ends in one line on stderr and a non-zero exit, never a traceback: 2 for input
the user must fix (a bad URL, a bad flag), 1 for everything else (no node there, a refusal).
"""

import argparse
import http.client
import json
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshnode.config import (
    DEFAULT_PORT,
    ConfigError,
    NodeConfig,
    check_node_url,
    config_from_mapping,
    load_config,
    parse_listen,
)
from meshnode.signaling.admin_token import (
    ADMIN_TOKEN_FILE,
    AdminTokenError,
    read_admin_token,
    write_admin_token,
)

DEFAULT_NODE_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_DATA_DIR = Path("meshnode-data")


def _up(args: argparse.Namespace) -> int:
    from meshnode.identity import IdentityFileError
    from meshnode.logs import setup_logging
    from meshnode.node import Node, NodeCrashed
    from meshnode.store import StoreError
    from meshnode.tuning import tune_gc

    try:
        cfg = load_config(args.config) if args.config else NodeConfig()
        if args.data_dir is not None:
            cfg = replace(cfg, data_dir=args.data_dir)
        if args.listen is not None:
            host, port = parse_listen(args.listen)
            cfg = replace(cfg, listen_host=host, listen_port=port)
        if args.bootstrap:
            for url in args.bootstrap:
                check_node_url(url, "--bootstrap")
            cfg = replace(cfg, bootstrap=tuple(args.bootstrap))
        if args.public_url is not None:
            cfg = config_from_mapping({"node": {"public_url": args.public_url}}, cfg)
        if args.no_default_room:
            cfg = replace(cfg, default_room=False)
        if args.log_format is not None:
            cfg = replace(cfg, log_format=args.log_format)
        if args.log_level is not None:
            cfg = replace(cfg, log_level=args.log_level)
        for token in args.join or ():
            check_join_token(token)
    except ConfigError as err:
        print(f"meshnode up: {err}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, cfg.log_format)
    tune_gc()

    async def run() -> int:
        node = Node(cfg)
        node.handle_signals()
        try:
            refused = await node.start(join=args.join or ())
        except (StoreError, IdentityFileError, AdminTokenError, OSError) as err:
            print(f"meshnode up: {err}", file=sys.stderr)
            await node.stop()
            return 1
        for problem in refused:
            print(f"meshnode up: --join: {problem}", file=sys.stderr)
        room = node.rooms.default_room_hex()
        print(f"meshnode {node.peer_id} is up.", flush=True)
        if room:
            print(f"Open {node.url}/?room={room} in a browser to enter the room.", flush=True)
        print(f"Metrics: {node.url}/metrics   Stop: Ctrl+C", flush=True)
        try:
            await node.run_until_signalled()
        except NodeCrashed as err:
            print(f"meshnode up: {err}", file=sys.stderr)
            return 1
        return 0

    _profile_on_signals()
    try:
        import uvloop

        return uvloop.run(run())
    except KeyboardInterrupt:
        return 0


def _profile_on_signals() -> None:
    """``MESHNODE_PROFILE=PATH`` (``{pid}`` is replaced): SIGUSR1 starts a cProfile of the
    node's loop, SIGUSR2 stops it and writes the stats to PATH; for
    ``benchmarks/node_bench.py --only-throughput --profile DIR``, which profiles just the
    sustained part. A developer's hook: off unless the variable is set."""
    import os

    target = os.environ.get("MESHNODE_PROFILE")
    if not target:
        return
    import cProfile
    import signal

    prof = cProfile.Profile()
    path = target.replace("{pid}", str(os.getpid()))

    def start(signum: int, frame: object) -> None:
        prof.enable()

    def stop(signum: int, frame: object) -> None:
        prof.disable()
        prof.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def check_join_token(token: str) -> None:
    """Refuse a ``--join`` token that cannot work before the node creates anything: one
    that does not decode, is expired or is not signed by its issuer (``ConfigError``, said in
    the operator's terms)."""
    import time

    from meshnode.rooms.invite import parse_invite
    from protocol.errors import DecodeError

    try:
        invite = parse_invite(token)
    except DecodeError as err:
        raise ConfigError(f"--join: {err}") from None
    problem = invite.verify(int(time.time() * 1000))
    if problem == "expired":
        expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(invite.expires_ms / 1000))
        raise ConfigError(f"--join: the invite expired at {expired} (this machine's clock says "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}): ask for "
                          "a new one (`meshnode room invite --ttl SECONDS`), or fix the clock")
    if problem is not None:
        raise ConfigError(f"--join: the invite token is not genuine ({problem}): it was "
                          "altered after it was signed; ask for a new one")


def _fail(message: str, code: int = 1) -> SystemExit:
    # One line whatever a server or an OS error put in the message.
    print("meshnode: " + " ".join(message.split()), file=sys.stderr)
    return SystemExit(code)


def _token_path(args: argparse.Namespace) -> Path:
    if args.admin_token_file is not None:
        return Path(args.admin_token_file)
    return Path(args.data_dir) / ADMIN_TOKEN_FILE


def _node_url(args: argparse.Namespace) -> str:
    try:
        return check_node_url(args.node, "--node").rstrip("/")
    except ConfigError as err:
        raise _fail(str(err), 2) from None


def _api(args: argparse.Namespace, method: str, path: str,
         body: dict[str, Any] | None = None, *, timeout: float = 15.0,
         slow: str = "") -> Any:
    """One admin API call. ``slow``: what the node is doing, said when it does not answer
    within ``timeout`` (else a timeout reads as "no node answers")."""
    base = _node_url(args)
    # Without a token the node answers 401; ask anyway, so that "no node there" is told first.
    token_problem = ""
    headers: dict[str, str] = {}
    try:
        headers["Authorization"] = f"Bearer {read_admin_token(_token_path(args))}"
    except AdminTokenError as err:
        token_problem = str(err)
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("error", err.reason)
        except (ValueError, AttributeError, OSError):
            detail = err.reason
        if err.code == 401 and token_problem:
            detail = token_problem
        raise _fail(f"{detail} ({err.code})") from None
    except (urllib.error.URLError, ConnectionRefusedError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        if slow and isinstance(reason, TimeoutError):
            raise _fail(f"the node at {base} did not answer within {timeout:g} s ({slow}); "
                        "try again, or check its log") from None
        raise _fail(f"no node answers at {base} ({reason}); start one with `meshnode up` "
                    "or pass --node URL") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        # A server that hangs up or speaks something else, a URL urllib cannot use, or an
        # answer that is not JSON.
        raise _fail(f"{base} did not answer like a meshnode node ({err!r}); is --node the "
                    "node's URL?") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return value


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _room(args: argparse.Namespace) -> int:
    if args.room_command == "create":
        body: dict[str, Any] = {"name": args.name}
        # Private is the default for invite rooms; an open room admits anyone, so it is not.
        if args.private and args.public:
            raise _fail("--private and --public exclude each other", 2)
        if args.private and args.admit == "open":
            raise _fail("an open room admits anyone, so it cannot be private: use --admit "
                        "invite (the default with --private) or --public", 2)
        private = args.private or not (args.public or args.admit == "open")
        body["private"] = private
        if args.admit or private:
            body["admit"] = args.admit or "invite"
        _print(_api(args, "POST", "/api/rooms", body))
    elif args.room_command == "list":
        rooms = _api(args, "GET", "/api/rooms")
        for r in rooms:
            print(f"{r['id']}  {r['name']!r}  role={r['role']} changes={r['changes']} "
                  f"entities={r['entities']} peers={len(r['peers'])} admit={r['admit']}"
                  f"{_privacy_line(r)}")
    elif args.room_command == "invite":
        body = {"role": args.role, "ttl_s": args.ttl}
        if args.max_uses is not None:
            body["max_uses"] = args.max_uses
        out = _api(args, "POST", f"/api/rooms/{args.room}/invites", body)
        if args.json:
            _print(out)
        else:
            print(out["token"])
            print(f"invite ID {out['id']} (revoke it with `meshnode room revoke-invite "
                  f"{args.room} {out['id']}`)", file=sys.stderr)
    elif args.room_command == "role":
        out = _api(args, "POST", f"/api/rooms/{args.room}/members",
                   {"peer": args.peer, "role": args.role})
        print(f"{out['peer']} is now {out['role']} in room {out['room']}")
    elif args.room_command == "remove":
        out = _api(args, "DELETE", f"/api/rooms/{args.room}/members/{args.peer}")
        print(f"{out['peer']} removed from room {out['room']}; its changes made without "
              f"having seen the removal are retracted on every replica")
    elif args.room_command == "revoke-invite":
        out = _api(args, "POST", f"/api/rooms/{args.room}/invites/{args.invite_id}/revoke", {})
        print(f"invite {out['invite']} revoked in room {out['room']}")
    elif args.room_command == "join":
        _print(_api(args, "POST", "/api/rooms/join", {"token": args.token}))
    elif args.room_command == "hosts":
        room = args.room.strip().lower()
        if len(room) != 64 or any(c not in "0123456789abcdef" for c in room):
            raise _fail(f"a room ID is 64 hex digits (as `meshnode room list` prints); got "
                        f"{args.room!r}", 2)
        if not 0.5 <= args.timeout <= 30:
            raise _fail(f"--timeout is 0.5 to 30 seconds; got {args.timeout:g}", 2)
        # The node searches for --timeout seconds, then checks what it found (bounded too).
        _print(_api(args, "GET", f"/api/rooms/{room}/hosts?timeout={args.timeout:g}",
                    timeout=args.timeout + 10,
                    slow=f"looking up room {room[:16]}…'s hosts in the DHT"))
    return 0


def _privacy_line(room: dict[str, Any]) -> str:
    """`` private · this node: reader`` (or ``host (cannot read)``), "" for other rooms."""
    if not room.get("private"):
        return ""
    if room.get("this_node") == "reader":
        waiting = "" if room.get("readable") else ", waiting for keys from a reader"
        return f"  private · this node: reader{waiting}"
    return f"  private · this node: {room.get('this_node', 'host')} (cannot read)"


def _peers(args: argparse.Namespace) -> int:
    for p in _api(args, "GET", "/api/peers"):
        print(f"{p['peer']}  {p['kind']:6}  rooms={len(p['rooms'])}  {p['url'] or '-'}")
    fed = _api(args, "GET", "/api/status").get("federation")
    if fed is not None:
        _print_federation(fed)
    return 0


def _print_federation(fed: dict[str, Any]) -> None:
    """Which operators host which rooms with us, the policy, and whom it refused (each part
    only when there is something to say: a default node with no links prints nothing)."""
    hosted = [r for r in fed["rooms"] if r["hosts"]]
    if hosted:
        print("\noperators hosting rooms with us:")
        for room in hosted:
            print(f"  {room['room'][:16]} {room['name']}: {', '.join(room['hosts'])}")
    policy = fed["policy"]
    allow, off = policy["allow"], policy["no_announce"]
    if policy["deny"] or allow is not None or off or not policy["announce_default"]:
        print("federation policy: deny " + (", ".join(policy["deny"]) or "nobody") + "; allow "
              + ("any operator" if allow is None else ", ".join(allow) or "no other node"))
        print("  announce: " + ("every room" if policy["announce_default"] else "no room")
              + (f" except {', '.join(r[:16] for r in off)}" if off else "")
              + (f"; also {', '.join(r[:16] for r in policy['announce_rooms'])}"
                 if not policy["announce_default"] and policy["announce_rooms"] else ""))
    for r in fed["refused"]:
        print(f"  refused {r['peer']}: {r['reason']} x{r['count']} (last: {r['how']})")


def _status(args: argparse.Namespace) -> int:
    if args.open:
        # The token travels in the fragment: browsers never send it to a server, and the
        # page moves it to sessionStorage and out of the address bar at once.
        base = _node_url(args)
        try:
            token = read_admin_token(_token_path(args))
        except AdminTokenError as err:
            raise _fail(str(err)) from None
        print(f"{base}/status#token={token}")
        return 0
    _print(_api(args, "GET", "/api/status"))
    return 0


def _admin(args: argparse.Namespace) -> int:
    path = _token_path(args)
    try:
        write_admin_token(path)
    except OSError as err:
        raise _fail(f"cannot write {path}: {err.strerror or err}") from None
    print(f"wrote a new admin token to {path} (mode 0600); the running node uses it from "
          "its next admin request, and the old token no longer works", file=sys.stderr)
    return 0


def add_node_commands(sub: Any) -> None:
    """Add ``up``, ``room``, ``peers`` and ``status`` to the ``meshnode`` parser."""
    up = sub.add_parser("up", help="run a node (with no options: a default node on "
                                   f"127.0.0.1:{DEFAULT_PORT}, data in ./meshnode-data)")
    up.add_argument("--config", type=Path, help="TOML configuration file (docs/operators.md)")
    up.add_argument("--data-dir", type=Path, help="where the identity and store live")
    up.add_argument("--listen", help=f"HOST:PORT to serve HTTP on (default 127.0.0.1:"
                                     f"{DEFAULT_PORT}; port 0 picks a free one)")
    up.add_argument("--bootstrap", action="append", metavar="URL",
                    help="a node to link to at start (repeatable)")
    up.add_argument("--join", action="append", metavar="TOKEN",
                    help="host the room of this invite token (repeatable)")
    up.add_argument("--public-url", help="the URL other nodes should use to reach this one")
    up.add_argument("--no-default-room", action="store_true",
                    help="do not create a default room on first start")
    up.add_argument("--log-format", choices=("text", "json"))
    up.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    up.set_defaults(handler=_up)

    def with_token(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"the node's data directory, where its {ADMIN_TOKEN_FILE} is "
                            f"(default {DEFAULT_DATA_DIR})")
        p.add_argument("--admin-token-file", type=Path,
                       help=f"the admin token file (default DATA_DIR/{ADMIN_TOKEN_FILE})")

    def with_node(p: argparse.ArgumentParser) -> None:
        p.add_argument("--node", default=DEFAULT_NODE_URL,
                       help=f"the running node's URL (default {DEFAULT_NODE_URL})")
        with_token(p)

    room = sub.add_parser("room", help="manage the rooms of a running node")
    rsub = room.add_subparsers(dest="room_command", metavar="ACTION", required=True)
    create = rsub.add_parser("create", help="found a new room owned by the node")
    create.add_argument("name")
    create.add_argument("--admit", choices=("open", "invite"),
                        help="open: any client that connects is admitted (as the node's "
                             "rooms.admit_role, editor by default); invite (the default "
                             "unless --public): members join with invites")
    create.add_argument("--private", action="store_true",
                        help="seal the scene, presence and name so that hosts that are not "
                             "members cannot read them (the default for invite rooms)")
    create.add_argument("--public", action="store_true",
                        help="not private: every node hosting the room can read it (with "
                             "the node's admit policy unless --admit)")
    with_node(create)
    lst = rsub.add_parser("list", help="list the node's rooms")
    with_node(lst)
    invite = rsub.add_parser("invite", help="print an invite token for a room")
    invite.add_argument("room", help="room ID (hex)")
    invite.add_argument("--role", default="editor",
                        choices=("viewer", "editor", "admin", "host"),
                        help="host: a node that stores, relays and admits members of a "
                             "private room without reading it (default editor)")
    invite.add_argument("--ttl", type=float, default=7 * 86_400.0, help="seconds (default 7 days)")
    invite.add_argument("--max-uses", type=_positive_int, metavar="N",
                        help="admit at most N members with it (default: no limit)")
    invite.add_argument("--json", action="store_true",
                        help="print the token, its ID and limits as JSON")
    with_node(invite)
    role = rsub.add_parser("role", help="give a member a role (a lower one retracts what they "
                                        "do without having seen it)")
    role.add_argument("room", help="room ID (hex)")
    role.add_argument("peer", help="the member's PeerID")
    role.add_argument("role", choices=("admin", "editor", "viewer", "host", "none"))
    with_node(role)
    remove = rsub.add_parser("remove", help="remove a member from a room")
    remove.add_argument("room", help="room ID (hex)")
    remove.add_argument("peer", help="the member's PeerID")
    with_node(remove)
    revoke = rsub.add_parser("revoke-invite", help="revoke an invite: nobody joins with it "
                                                   "any more")
    revoke.add_argument("room", help="room ID (hex)")
    revoke.add_argument("invite_id", help="the invite ID (hex) that `room invite` printed")
    with_node(revoke)
    join = rsub.add_parser("join", help="host a room from an invite token")
    join.add_argument("token")
    with_node(join)
    hosts = rsub.add_parser("hosts", help="the room's live hosts, found through the DHT: a "
                                          "JSON list, one object per host (peer_id, urls)")
    hosts.add_argument("room", help="room ID (hex)")
    hosts.add_argument("--timeout", type=float, default=5.0,
                       help="seconds to search the DHT, 0.5 to 30 (default 5)")
    with_node(hosts)
    room.set_defaults(handler=_room)

    peers = sub.add_parser("peers", help="list a running node's links, which operators host "
                                         "which rooms with it, and its federation policy")
    with_node(peers)
    peers.set_defaults(handler=_peers)
    status = sub.add_parser("status", help="show a running node's status")
    with_node(status)
    status.add_argument("--open", action="store_true",
                        help="print the status page's URL, with the admin token for the page")
    status.set_defaults(handler=_status)

    admin = sub.add_parser("admin", help="the admin token of a node")
    asub = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    rotate = asub.add_parser("rotate-token",
                             help="write a new admin token; the old one stops working")
    with_token(rotate)
    admin.set_defaults(handler=_admin)
