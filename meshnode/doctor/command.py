"""The ``meshnode doctor`` command line (its checks: ``meshnode.doctor``)."""

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshnode.config import ConfigError, NodeConfig, check_node_url, load_config
from meshnode.doctor.findings import DoctorContext
from meshnode.doctor.runner import exit_status, render_json, render_text, run_checks
from meshnode.signaling.admin_token import ADMIN_TOKEN_FILE

__all__ = ["add_doctor_command", "local_node_url"]


def local_node_url(cfg: NodeConfig) -> str:
    """Where the node's admin API answers on this machine (its listen address; loopback for
    a wildcard)."""
    host = cfg.listen_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.listen_port}"


def _doctor(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config) if args.config else NodeConfig()
        if args.data_dir is not None:
            cfg = replace(cfg, data_dir=args.data_dir)
        node_url = (check_node_url(args.node, "--node").rstrip("/") if args.node
                    else local_node_url(cfg))
    except ConfigError as err:
        print(f"meshnode doctor: {err}", file=sys.stderr)
        return 2
    token = args.admin_token_file or cfg.data_dir / ADMIN_TOKEN_FILE
    ctx = DoctorContext(cfg, args.config, node_url, Path(token), timeout_s=args.timeout)
    findings = asyncio.run(run_checks(ctx))
    print(render_json(findings) if args.json else render_text(findings))
    return exit_status(findings)


def add_doctor_command(sub: Any) -> None:
    """Add ``doctor`` to the ``meshnode`` parser."""
    doctor = sub.add_parser(
        "doctor", help="check this node's clock, files, disk, UDP, STUN/TURN, public_url and "
                       "proxy, and say how to fix what is wrong (exit 1 if something is)")
    doctor.add_argument("--config", type=Path, help="the node's TOML configuration file")
    doctor.add_argument("--data-dir", type=Path,
                        help="the node's data directory (default: the configuration's)")
    doctor.add_argument("--node", help="the running node's URL (default: its listen address)")
    doctor.add_argument("--admin-token-file", type=Path,
                        help=f"the admin token file (default DATA_DIR/{ADMIN_TOKEN_FILE})")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--timeout", type=float, default=5.0,
                        help="seconds each network probe may take (default 5)")
    doctor.set_defaults(handler=_doctor)
