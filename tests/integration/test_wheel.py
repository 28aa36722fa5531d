"""The production install and the upgrade path (issue 17).

The wheel: built from this checkout, installed into a fresh venv with no dev extras; there it
runs ``meshnode --version``, ``meshnode up`` (health, the web client's static files) and
``meshnode doctor --json``. To stay fast and work offline, the venv gets the runtime
dependencies (and only those: the closure of meshnode's ``Requires-Dist`` without extras) from
the running interpreter's environment through a ``.pth`` file of symlinks, and the wheel is
installed with ``--no-index --no-deps``; ``pip check`` then proves the declared
dependencies are all there.

The upgrade: ``fixtures/store-schema1`` is a data directory written by meshnode at schema
version 1 (commit adb93b4, before the DHT table): ``meshnode up`` of that code, its default
room, and a Python client that created five entities, then SIGTERM. Today's node opens it,
migrates it forward and serves the room with nothing lost; a store newer than the code is
refused with a message that says what to do, and left untouched.
"""

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from meshnode import __version__
from meshnode.store.sqlite import SCHEMA_VERSION
from tests.integration.nodeproc import NodeProcess

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "store-schema1"
FIXTURE_ROOM = "67eadffd7ab4e5e8b4e4cd4dd9c6b52de93dff1779ebd0b5d781d6cef19d4685"
SOURCES = ("pyproject.toml", "README.md", "meshnode", "protocol", "netsim")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: the build must not leave build/ and egg-info in the checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
           str(src)]
    try:  # offline when the build backend is already here; else pip fetches it (PyPI)
        import setuptools
        import wheel  # noqa: F401

        if int(setuptools.__version__.split(".")[0]) >= 68:
            cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(cmd, check=True, timeout=600)
    (built,) = out.glob("meshnode-*.whl")
    return built


def _runtime_closure(built: Path) -> list[importlib.metadata.Distribution]:
    """The wheel's runtime dependencies (no extras), transitively, as installed here."""
    with zipfile.ZipFile(built) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        text = whl.read(meta).decode()
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(line.partition(":")[2]) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(req.name)
        seen[name] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return list(seen.values())


def _deps_dir(tmp: Path, built: Path) -> Path:
    """A directory of symlinks to the runtime dependencies' files (and dist-infos)."""
    deps = tmp / "deps"
    deps.mkdir()
    for dist in _runtime_closure(built):
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            target = base / top
            if target.exists() and not (deps / top).exists():
                (deps / top).symlink_to(target)
    return deps


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and the runtime dependencies only: its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = _build_wheel(tmp)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    (site / "meshnode-deps.pth").write_text(str(_deps_dir(tmp, built)) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    str(built)], check=True, timeout=300)
    return bin_dir


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_the_wheel_installs_without_dev_extras_and_runs(installed: Path,
                                                        tmp_path: Path) -> None:
    # Imported from the venv, not from this checkout; no dev tool came along.
    where = _run(installed, "python", "-c", "import meshnode; print(meshnode.__file__)",
                 cwd=tmp_path)
    assert where.stdout.startswith(str(installed.parent)), where
    assert _run(installed, "python", "-c", "import pytest", cwd=tmp_path).returncode != 0
    assert _run(installed, "python", "-m", "pip", "check", cwd=tmp_path).returncode == 0
    version = _run(installed, "meshnode", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"meshnode {__version__}"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    node = subprocess.Popen([str(installed / "meshnode"), "up", "--data-dir", "data",
                             "--listen", "127.0.0.1:0"], cwd=tmp_path, text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert node.stdout is not None
        url = ""
        for line in node.stdout:
            m = re.search(r"Metrics: (http://\S+)/metrics", line)
            if m:
                url = m.group(1)
                break
        assert url, "the node did not start"
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["ok"] is True
        for path in ("/", "/static/app.js", "/static/vendor/three.module.min.js", "/status"):
            # package data: the web client's files, vendored three.js included
            with urllib.request.urlopen(url + path, timeout=10) as resp:
                assert resp.status == 200 and resp.read()
        doctor = _run(installed, "meshnode", "doctor", "--json", "--data-dir", "data",
                      "--node", url, cwd=tmp_path)
        report = json.loads(doctor.stdout)
        assert doctor.returncode == 0, report
        assert {f["check"]: f["status"] for f in report["findings"]}["node.running"] == "ok"
    finally:
        node.terminate()
        assert node.wait(30) == 0


def _schema(data: Path) -> str:
    with contextlib.closing(sqlite3.connect(data / "meshnode.db")) as db:
        return str(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def test_a_store_of_the_previous_schema_is_migrated_forward(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in ("meshnode.db", "identity.key"):
        shutil.copy(FIXTURE / name, data / name)
        (data / name).chmod(0o600)
    assert _schema(data) == "1"
    node = NodeProcess(data).start()
    try:
        (room,) = [r for r in node.get("/api/rooms") if r["id"] == FIXTURE_ROOM]
        assert room["entities"] == 5 and room["role"] == "owner"
    finally:
        assert node.terminate() == 0
    assert int(_schema(data)) == SCHEMA_VERSION

    # A store from a newer meshnode: refused, with what to do, and left as it was.
    db = sqlite3.connect(data / "meshnode.db")
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))
    db.close()  # the last connection out checkpoints the WAL into the file
    before = (data / "meshnode.db").read_bytes()
    out = subprocess.run([sys.executable, "-m", "meshnode", "up", "--data-dir", str(data),
                          "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1}, written by a newer meshnode" in out.stderr
    assert "Upgrade meshnode" in out.stderr
    assert (data / "meshnode.db").read_bytes() == before
