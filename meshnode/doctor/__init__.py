"""``meshnode doctor``: checks what goes wrong with a node in the field, and says how to fix it.

The clock (synchronised, and its skew against linked and bootstrap nodes), the data
directory and its secrets (permissions, the admin token), disk space and database growth,
UDP (the host addresses, STUN, a real TURN allocation with the configured credentials, and
whether UDP from the relay reaches the node), ``public_url`` (reachable, leading to this node,
consistent with the listen address) and the reverse proxy in front (headers passed, admin
routes blocked). Each check lives in its own module and returns ``Finding``s; ``runner``
runs them. Human output by default, ``--json`` for scripts; exit status 1 when a check fails.
"""

from meshnode.doctor.findings import DoctorContext, Finding, Status
from meshnode.doctor.runner import CHECKS, exit_status, render_json, render_text, run_checks

__all__ = ["CHECKS", "DoctorContext", "Finding", "Status", "exit_status", "render_json",
           "render_text", "run_checks"]
