"""The command line."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshnode.cli import main
from meshnode.identity import Identity


def test_keygen_writes_0600_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys" / "node.key"
    assert main(["keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("12D3KooW")
    assert Identity.load(out).public_id == printed


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "node.key"
    assert main(["keygen", "--out", str(out)]) == 0
    first = Identity.load(out)
    assert main(["keygen", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert Identity.load(out) == first
    assert main(["keygen", "--out", str(out), "--force"]) == 0
    assert Identity.load(out) != first


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "0.1.0" in capsys.readouterr().out
