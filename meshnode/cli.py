"""The ``meshnode`` command line:

meshnode up [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--bootstrap URL ...]
                                         run a node (the default command)
meshnode keygen [--out PATH] [--force]   create an identity file, print its PeerID
meshnode identity show|export|import     a person's key, to and from browsers (encrypted file)
meshnode room create|list|invite|join|hosts|role|remove|revoke-invite
                                         manage the rooms and members of a running node
meshnode peers | status [--open]         what a running node is linked to / doing
meshnode admin rotate-token              replace the admin token (the CLI's key to the node)
meshnode doctor [--config FILE] [--json] check the clock, files, disk, UDP, TURN, public_url
meshnode demo                            run the local scene-CRDT demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from meshnode import __version__
from meshnode.cli_identity import DEFAULT_IDENTITY_PATH


def _keygen(args: argparse.Namespace) -> int:
    from meshnode.identity import Identity

    out: Path = args.out
    identity = Identity.generate()
    try:
        identity.save(out, overwrite=args.force)
    except FileExistsError:
        print(
            f"meshnode keygen: {out} already exists; pass --force to replace it "
            f"(the old identity is then lost)",
            file=sys.stderr,
        )
        return 1
    print(identity.public_id)
    print(f"wrote identity to {out} (mode 0600)", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from meshnode import demo

    return demo.main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshnode",
        description="Federated peer-to-peer mesh node for small collaborative 3D rooms.",
    )
    parser.add_argument("--version", action="version", version=f"meshnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    keygen = sub.add_parser("keygen", help="create an Ed25519 identity file and print its PeerID")
    keygen.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_IDENTITY_PATH,
        help=f"where to write the identity (default: {DEFAULT_IDENTITY_PATH})",
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(handler=_keygen)

    demo = sub.add_parser("demo", help="run the local scene-CRDT demo (two replicas, one room)")
    demo.set_defaults(handler=_demo)
    from meshnode.cli_identity import add_identity_commands

    add_identity_commands(sub)
    from meshnode.cli_node import add_node_commands

    add_node_commands(sub)
    from meshnode.doctor.command import add_doctor_command

    add_doctor_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `meshnode` alone runs a node with the defaults
        args = parser.parse_args(["up"])
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
