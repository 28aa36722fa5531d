#!/usr/bin/env python3
"""Developer entry point; needs only Python >= 3.11 with pip and venv.

    python3 dev.py test [PYTEST ARGS]   ruff, mypy, then pytest (this is what .ci/run calls)
    python3 dev.py run [ARGS]           meshnode up [ARGS]: run a node (default room, web client)
    python3 dev.py bench                run every benchmarks/*.py and print its JSON

Each command first makes sure ``.venv`` exists and holds ``-e .[dev]``; the install is redone only
when pyproject.toml has changed since the last one (its hash is kept in .venv/.meshnode-installed).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MARKER = VENV / ".meshnode-installed"
LINT_DIRS = ("protocol", "meshnode", "netsim", "tests", "benchmarks")
TYPED_DIRS = ("protocol", "meshnode", "netsim")


def say(message: str) -> None:
    print(f"[dev.py] {message}", file=sys.stderr, flush=True)


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def run(cmd: Sequence[str | Path]) -> int:
    say("$ " + " ".join(str(c) for c in cmd))
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


# Debian packages `pip install` needs to build py-libp2p's `fastecdsa` (no wheel for the
# version libp2p pins): a C compiler and GMP's headers. Header file -> package.
BUILD_PACKAGES = {Path("/usr/bin/gcc"): "gcc", Path("/usr/include/gmp.h"): "libgmp-dev"}


def _gmp_header_present() -> bool:
    return any(Path(d).joinpath("gmp.h").exists()
               for d in ("/usr/include", "/usr/local/include", "/usr/include/x86_64-linux-gnu",
                         "/usr/include/aarch64-linux-gnu"))


def ensure_build_packages() -> None:
    """Install gcc and libgmp-dev when we can (root with apt-get), before pip compiles
    fastecdsa for py-libp2p; otherwise say how (pip then fails with the compiler's error)."""
    missing = [pkg for path, pkg in BUILD_PACKAGES.items()
               if not (path.exists() or (pkg == "libgmp-dev" and _gmp_header_present()))]
    if missing:
        apt_install(missing, "to build py-libp2p's fastecdsa")


def apt_install(packages: Sequence[str], why: str) -> bool:
    """``apt-get install`` ``packages`` as root; False (with a hint) when we cannot."""
    if not (os.name == "posix" and os.geteuid() == 0 and Path("/usr/bin/apt-get").exists()):
        say("missing Debian packages " + " ".join(packages) + f" ({why}); as root: "
            "apt-get install " + " ".join(packages))
        return False
    say(f"installing Debian packages {why}: " + " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        say("$ " + " ".join(cmd))
        if subprocess.call(cmd, env=env) != 0:
            say("could not install " + " ".join(packages))
            return False
    return True


def ensure_env() -> Path:
    """Create .venv if missing and (re)install the project if pyproject.toml changed."""
    python = venv_python()
    if not python.exists():
        say(f"creating {VENV}")
        if run([sys.executable, "-m", "venv", VENV]) != 0:
            sys.exit("[dev.py] could not create .venv (on Debian: apt-get install python3-venv)")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if MARKER.exists() and MARKER.read_text().strip() == digest:
        return python
    say("pyproject.toml changed since the last install: installing -e .[dev]")
    ensure_build_packages()
    if run([python, "-m", "pip", "install", "--quiet", "-e", ".[dev]"]) != 0:
        sys.exit("[dev.py] FAILED: pip install -e .[dev]")
    MARKER.write_text(digest + "\n")
    return python


def existing(dirs: Sequence[str]) -> list[str]:
    return [d for d in dirs if (ROOT / d).is_dir()]


# Debian packages the tests drive for real: Chromium (the web client's tests), coturn (a
# TURN server, for links relayed through TURN) and libfaketime (nodes whose wall clock is
# wrong, or stepped while they run) and iproute2 (`ip netns`: LAN discovery between network
# namespaces, and netsim's emulation mode). Binary -> package.
SYSTEM_PACKAGES = {Path("/usr/bin/chromium"): "chromium", Path("/usr/bin/turnserver"): "coturn",
                   Path("/usr/bin/faketime"): "faketime", Path("/usr/sbin/ip"): "iproute2"}


def ensure_system_packages() -> None:
    """Install the Debian packages the tests use when we can (root with apt-get, as in CI);
    otherwise say how. Their tests skip without them unless MESHNODE_REQUIRE_BROWSER /
    MESHNODE_REQUIRE_TURN is set (CI sets both, so there a missing package fails)."""
    missing = [pkg for binary, pkg in SYSTEM_PACKAGES.items() if not binary.exists()]
    if not missing:
        return
    if os.name == "posix" and os.geteuid() == 0 and Path("/usr/bin/apt-get").exists():
        say("installing Debian packages for the tests: " + " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
            say("$ " + " ".join(cmd))
            if subprocess.call(cmd, env=env) != 0:
                say("could not install " + " ".join(missing) + "; their tests will not run")
                return
        return
    say("missing " + " ".join(missing) + ": their tests will skip (as root: apt-get install "
        + " ".join(missing) + ")")


def _workers(pytest_args: Sequence[str]) -> list[str]:
    """Run the suite on every core (pytest-xdist), unless the caller chose (``-n``/``-p``):
    most tests wait on real processes, so one worker leaves a core idle. Tests that share a
    machine-wide resource (network namespaces, Chromium) keep to one worker each
    (``tests/conftest.py`` puts them in an ``xdist_group``)."""
    chose = any(a.startswith(("-n", "--numprocesses")) for a in pytest_args)
    if chose or "no:xdist" in pytest_args:
        return []
    return ["-n", str(max(1, min(2, os.cpu_count() or 1))), "--dist", "loadgroup"]


def cmd_test(python: Path, pytest_args: Sequence[str]) -> int:
    ensure_system_packages()
    steps: list[tuple[str, list[str | Path]]] = [
        ("ruff", [python, "-m", "ruff", "check", *existing(LINT_DIRS)]),
        ("mypy", [python, "-m", "mypy", *existing(TYPED_DIRS)]),
        ("pytest", [python, "-m", "pytest", *_workers(pytest_args), *pytest_args]),
    ]
    failed = []
    for name, cmd in steps:
        say(f"step {name}")
        status = run(cmd)
        if status != 0:
            say(f"step {name} FAILED (exit {status})")
            failed.append(name)
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    say("all steps passed: ruff, mypy, pytest")
    return 0


def cmd_bench(python: Path) -> int:
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    scripts = [s for s in scripts if not s.name.startswith("_")]
    if not scripts:
        say("no benchmarks/*.py found")
        return 1
    failed = []
    for script in scripts:
        say(f"benchmark {script.relative_to(ROOT)}")
        if run([python, script]) != 0:
            failed.append(script.name)
    if failed:
        say("FAILED benchmarks: " + ", ".join(failed))
        return 1
    return 0


def main(argv: Sequence[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py may be started by an older python3)
        sys.exit("[dev.py] meshnode needs Python >= 3.11")
    if not argv or argv[0] not in ("test", "run", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    python = ensure_env()
    if command == "test":
        return cmd_test(python, rest)
    if command == "run":
        return run([python, "-m", "meshnode", "up", *rest])
    return cmd_bench(python)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
