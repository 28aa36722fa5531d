"""The command line."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshnode.cli import main
from meshnode.identity import Identity
from meshnode.signaling.admin_token import read_admin_token, write_admin_token


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


# ---------------------------------------------------------------------- errors, never tracebacks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def _server(reply: bytes | None) -> Iterator[str]:
    """A TCP server on loopback that answers every connection with ``reply`` (None: closes
    it at once): something at --node that is not a meshnode."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                if reply is not None:
                    conn.recv(65536)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        srv.close()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    err = capsys.readouterr().err
    return code, err


BAD_NODE_URLS = ["http://[::1", "node-b:8470", "", "ftp://node-b", "http://", "http://a b:80",
                 "http://127.0.0.1:99999", "http://[::1]:http"]


@pytest.mark.parametrize("url", BAD_NODE_URLS)
@pytest.mark.parametrize("command", [["room", "list"], ["status"], ["peers"],
                                     ["room", "create", "x"], ["status", "--open"]])
def test_a_bad_node_url_is_one_line_and_exit_2(url: str, command: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([*command, "--node", url], capsys)
    assert code == 2, err
    assert err.startswith("meshnode: --node ") and err.count("\n") == 1
    assert "http://" in err and "Traceback" not in err


def test_connection_problems_are_one_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    token_dir = ["--data-dir", str(tmp_path)]
    cases = [f"http://127.0.0.1:{_free_port()}"]
    with _server(None) as closes, \
            _server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") as not_json, \
            _server(b"garbage\r\n\r\n") as not_http:
        cases += [closes, not_json, not_http]
        for url in cases:
            code, err = _run(["room", "list", "--node", url, *token_dir], capsys)
            assert code == 1, (url, err)
            assert err.startswith("meshnode: ") and err.count("\n") == 1, (url, err)
            assert url in err and "Traceback" not in err


def test_up_refuses_a_bootstrap_without_a_scheme(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    for bad in ("node-b:8470", "http://[::1", "http://"):
        code, err = _run(["up", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                          "--bootstrap", bad], capsys)
        assert code == 2, err
        assert err.startswith("meshnode up: --bootstrap") and "Traceback" not in err
    assert "did you mean 'http://node-b:8470'" in _run(
        ["up", "--data-dir", str(data), "--bootstrap", "node-b:8470"], capsys)[1]
    assert not data.exists()


def test_rotate_token_writes_a_private_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "d" / "admin.token"
    assert main(["admin", "rotate-token", "--data-dir", str(tmp_path / "d")]) == 0
    first = read_admin_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["admin", "rotate-token", "--admin-token-file", str(path)]) == 0
    assert read_admin_token(path) != first
    assert "old token no longer works" in capsys.readouterr().err


def test_status_open_prints_the_page_with_the_token(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    token = write_admin_token(tmp_path / "admin.token")
    assert main(["status", "--open", "--node", "http://127.0.0.1:8470",
                 "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"http://127.0.0.1:8470/status#token={token}"


def test_up_refuses_a_token_file_others_can_read(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "admin.token").write_text("mnadm1leaked\n")
    (data / "admin.token").chmod(0o644)
    code, err = _run(["up", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                      "--no-default-room"], capsys)
    assert code == 1 and "rotate-token" in err and "Traceback" not in err
