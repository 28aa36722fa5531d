"""``meshnode identity show|export|import``: move a person's key between the Python client and
browsers (the encrypted identity file of :mod:`meshnode.identity_export`).

The passphrase is read from ``MESHNODE_PASSPHRASE`` if set (for scripts), else asked on the
terminal (twice for an export). An operator who wants their browser to act as the node's owner
imports the node's identity into the page (``export`` it from the node's data directory), or
grants their browser's PeerID admin instead: ``meshnode room role ROOM PEERID admin``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_IDENTITY_PATH = Path("meshnode-data") / "identity.key"
"""Where ``meshnode keygen`` and ``meshnode identity`` keep the identity by default."""


PASSPHRASE_ENV = "MESHNODE_PASSPHRASE"


def _passphrase(confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("passphrase again: ") != first:
        raise SystemExit("meshnode identity: the passphrases differ")
    return first


def _show(args: argparse.Namespace) -> int:
    from meshnode.identity import IdentityFileError
    from meshnode.identity_export import did_key, load_identity

    try:
        text = Path(args.identity).read_text("ascii")
        identity = load_identity(args.identity, _passphrase(False)
                                 if text.lstrip().startswith("{") else None)
    except (OSError, UnicodeDecodeError, IdentityFileError) as err:
        print(f"meshnode identity show: {err}", file=sys.stderr)
        return 1
    print(identity.public_id)
    print(did_key(identity.public_key))
    return 0


def _export(args: argparse.Namespace) -> int:
    from meshnode.identity import Identity, IdentityFileError
    from meshnode.identity_export import export_identity

    try:
        identity = Identity.load(args.identity)
    except (OSError, IdentityFileError) as err:
        print(f"meshnode identity export: {err}", file=sys.stderr)
        return 1
    text = export_identity(identity, _passphrase(True))
    if args.out is None:
        sys.stdout.write(text)
    else:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        print(f"wrote {identity.public_id} to {args.out} (encrypted)", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from meshnode.identity import IdentityFileError
    from meshnode.identity_export import import_identity, is_encrypted_identity

    try:
        text = Path(args.file).read_text("utf-8")
        identity = import_identity(
            text, _passphrase(False) if is_encrypted_identity(text) else None)
        identity.save(args.out, overwrite=args.force)
    except FileExistsError:
        print(f"meshnode identity import: {args.out} exists; pass --force to replace it "
              "(the identity in it is then lost)", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError, IdentityFileError) as err:
        print(f"meshnode identity import: {err}", file=sys.stderr)
        return 1
    print(identity.public_id)
    print(f"wrote identity to {args.out} (mode 0600)", file=sys.stderr)
    return 0


def add_identity_commands(sub: Any) -> None:
    """Add ``meshnode identity ...`` to the CLI's subcommands."""
    ident = sub.add_parser("identity", help="show, export or import an identity (person's key)")
    isub = ident.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    show = isub.add_parser("show", help="print the PeerID and did:key of an identity file")
    show.add_argument("--identity", type=Path, default=DEFAULT_IDENTITY_PATH)
    show.set_defaults(handler=_show)
    export = isub.add_parser("export", help="write a passphrase-encrypted copy (for a browser)")
    export.add_argument("--identity", type=Path, default=DEFAULT_IDENTITY_PATH)
    export.add_argument("--out", type=Path, default=None, help="(default: standard output)")
    export.set_defaults(handler=_export)
    imp = isub.add_parser("import", help="save a browser's export as a plain identity file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--out", type=Path, default=DEFAULT_IDENTITY_PATH)
    imp.add_argument("--force", action="store_true", help="replace an existing file")
    imp.set_defaults(handler=_import)
