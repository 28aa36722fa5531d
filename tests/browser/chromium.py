"""A small async driver for headless Chromium over the DevTools protocol (CDP).

No npm, no Playwright: Debian's ``/usr/bin/chromium`` is started with a fresh profile and
``--remote-debugging-port=0``; the port it picked is read from ``DevToolsActivePort`` and one
WebSocket (aiohttp) carries every command, with page sessions multiplexed by ``sessionId``
(``Target.attachToTarget`` with ``flatten``).

    browser = await Chromium.launch()
    try:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/")
        title = await page.evaluate("document.title")
        await page.screenshot("shot.png")
    finally:
        await browser.close()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_PATH = "/usr/bin/chromium"

BASE_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    # WebRTC to a node on 127.0.0.1 (a loopback-only machine has no other address).
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # A real WebGL 2 context in software (SwiftShader through ANGLE), for three.js.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1280,800",
    "--remote-debugging-port=0",
)


class ChromiumError(RuntimeError):
    """Chromium did not start, died, or a DevTools command failed."""


class JavaScriptError(ChromiumError):
    """An evaluated expression threw (or its promise rejected)."""


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    """One console call, uncaught exception or browser log entry of a page."""

    kind: str  # "log", "warning", "error", ..., "exception", "log:<source>"
    text: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.text}"


class Chromium:
    """A running headless Chromium (its own process group and a throw-away profile)."""

    def __init__(self, process: asyncio.subprocess.Process, profile: Path, log_path: Path,
                 ws: aiohttp.ClientWebSocketResponse, http: aiohttp.ClientSession) -> None:
        self.process = process
        self.profile = profile
        self.log_path = log_path
        self._ws = ws
        self._http = http
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    # ------------------------------------------------------------------ life

    @classmethod
    async def launch(
        cls,
        executable: str = CHROMIUM_PATH,
        *,
        extra_flags: Sequence[str] = (),
        timeout: float = 30.0,
        nice: int | None = None,
    ) -> Chromium:
        """Start Chromium and connect to it. Raises ``ChromiumError`` (with its log) if it
        does not come up within ``timeout`` seconds. ``nice``: run it (and every process it
        starts) at that niceness, through coreutils' ``nice`` (a negative one needs root;
        without, ``nice`` says so and runs it at the usual priority)."""
        profile = Path(tempfile.mkdtemp(prefix="meshnode-chromium-"))
        log_path = profile.parent / (profile.name + ".log")
        args = [*(() if nice is None else ("nice", "-n", str(nice))), executable, *BASE_FLAGS,
                *extra_flags, f"--user-data-dir={profile}", "about:blank"]
        with open(log_path, "wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True,
            )
        try:
            ws_url = await _wait_for_devtools(process, profile, log_path, timeout)
            http = aiohttp.ClientSession()
            try:
                ws = await http.ws_connect(ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(
                    ws_close=5.0))
            except BaseException:
                await http.close()
                raise
        except BaseException:
            await _kill_group(process)
            shutil.rmtree(profile, ignore_errors=True)
            with contextlib.suppress(OSError):
                log_path.unlink()
            raise
        return cls(process, profile, log_path, ws, http)

    def log_tail(self, lines: int = 30) -> str:
        """The end of Chromium's own stderr/stdout."""
        return _tail(self.log_path, lines)

    async def close(self) -> None:
        """Close the browser, kill its process group and delete its profile. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._command("Browser.close"), 2.0)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(Exception):
            await self._ws.close()
        await self._http.close()
        await _kill_group(self.process)
        shutil.rmtree(self.profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    # ------------------------------------------------------------------ protocol

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    fut = self._waiting.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(data)
                    continue
                key = data.get("method", "")
                session = data.get("sessionId")
                for listener in list(self._listeners.get(f"{session}:{key}", ())):
                    listener(data.get("params", {}))
        except Exception as err:  # the connection broke
            error = err
        finally:
            reason = ChromiumError(
                f"the DevTools connection closed ({error!r}); Chromium log:\n{self.log_tail()}"
            )
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(reason)
            self._waiting.clear()

    async def _command(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
    ) -> dict[str, Any]:
        if self._reader.done():
            raise ChromiumError(f"Chromium is gone; its log:\n{self.log_tail()}")
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        try:
            await self._ws.send_str(json.dumps(message))
            reply = await fut
        finally:
            self._waiting.pop(ident, None)
        if "error" in reply:
            raise ChromiumError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _on(self, session: str | None, method: str,
            listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        key = f"{session}:{method}"
        self._listeners.setdefault(key, []).append(listener)
        return lambda: self._listeners.get(key, []).remove(listener)

    # ------------------------------------------------------------------ pages

    async def new_page(self, *, width: int = 1280, height: int = 800) -> Page:
        """Open a blank tab and attach to it."""
        created = await self._command("Target.createTarget", {"url": "about:blank"})
        attached = await self._command(
            "Target.attachToTarget", {"targetId": created["targetId"], "flatten": True}
        )
        page = Page(self, created["targetId"], attached["sessionId"])
        await page._setup(width, height)
        return page


class Page:
    """One tab. ``console`` collects its console output, exceptions and log entries."""

    def __init__(self, browser: Chromium, target_id: str, session: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session = session
        self.console: list[ConsoleMessage] = []

    async def _setup(self, width: int, height: int) -> None:
        s = self.session
        self.browser._on(s, "Runtime.consoleAPICalled", self._on_console)
        self.browser._on(s, "Runtime.exceptionThrown", self._on_exception)
        self.browser._on(s, "Log.entryAdded", self._on_log)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            await self.command(method)
        await self.command("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        })

    def _on_console(self, params: dict[str, Any]) -> None:
        parts = []
        for arg in params.get("args", []):
            if "value" in arg:
                value = arg["value"]
                parts.append(value if isinstance(value, str) else json.dumps(value))
            else:
                parts.append(arg.get("description") or arg.get("type", "?"))
        self.console.append(ConsoleMessage(params.get("type", "log"), " ".join(parts)))

    def _on_exception(self, params: dict[str, Any]) -> None:
        self.console.append(ConsoleMessage("exception", _describe_exception(
            params.get("exceptionDetails", {}))))

    def _on_log(self, params: dict[str, Any]) -> None:
        entry = params.get("entry", {})
        text = entry.get("text", "")
        if entry.get("url"):
            text += f" ({entry['url']})"
        self.console.append(ConsoleMessage(f"log:{entry.get('level', '?')}", text))

    def console_text(self) -> str:
        return "\n".join(str(m) for m in self.console) or "(no console output)"

    async def command(self, method: str, params: dict[str, Any] | None = None,
                      *, timeout: float = 30.0) -> dict[str, Any]:
        """Send a raw DevTools command to this page."""
        return await asyncio.wait_for(
            self.browser._command(method, params, session=self.session), timeout
        )

    async def goto(self, url: str, *, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        await self._load("Page.navigate", {"url": url}, url, timeout)

    async def reload(self, *, timeout: float = 30.0) -> None:
        """Reload and wait for the load event (an ``evaluate`` sent while the page navigates
        fails with "Inspected target navigated or closed")."""
        await self._load("Page.reload", {}, "the reload", timeout)

    async def _load(self, method: str, params: dict[str, Any], what: str,
                    timeout: float) -> None:
        loaded = asyncio.get_running_loop().create_future()

        def on_load(params: dict[str, Any]) -> None:
            if not loaded.done():
                loaded.set_result(None)

        off = self.browser._on(self.session, "Page.loadEventFired", on_load)
        try:
            result = await self.command(method, params, timeout=timeout)
            if result.get("errorText"):
                raise ChromiumError(f"navigating to {what} failed: {result['errorText']}")
            try:
                await asyncio.wait_for(loaded, timeout)
            except TimeoutError:
                raise ChromiumError(
                    f"{what} did not finish loading in {timeout} s; console:\n"
                    f"{self.console_text()}"
                ) from None
        finally:
            off()

    async def evaluate(self, expression: str, *, await_promise: bool = True,
                       timeout: float = 30.0) -> Any:
        """Evaluate a JavaScript expression in the page and return its JSON value (a promise
        is awaited first). Raises ``JavaScriptError`` if it throws or rejects."""
        try:
            reply = await self.command("Runtime.evaluate", {
                "expression": expression,
                "awaitPromise": await_promise,
                "returnByValue": True,
                "userGesture": True,
            }, timeout=timeout)
        except TimeoutError:
            raise ChromiumError(
                f"evaluating {expression!r} took over {timeout} s; console:\n"
                f"{self.console_text()}"
            ) from None
        details = reply.get("exceptionDetails")
        if details is not None:
            raise JavaScriptError(
                f"{expression!r} threw: {_describe_exception(details)}\nconsole:\n"
                f"{self.console_text()}"
            )
        result = reply.get("result", {})
        return result.get("value")

    async def screenshot(self, path: str | os.PathLike[str], *, selector: str | None = None,
                         timeout: float = 30.0) -> bytes:
        """Save a PNG of the viewport (or of the element ``selector`` names) to ``path``;
        return its bytes."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = await self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()",
                timeout=timeout,
            )
            x, y, w, h = box
            params["clip"] = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
        reply = await self.command("Page.captureScreenshot", params, timeout=timeout)
        data = base64.b64decode(reply["data"])
        Path(path).write_bytes(data)
        return data

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.browser._command("Target.closeTarget", {"targetId": self.target_id})


# ---------------------------------------------------------------------- helpers


def _describe_exception(details: dict[str, Any]) -> str:
    exc = details.get("exception") or {}
    text = exc.get("description") or exc.get("value") or details.get("text", "exception")
    where = details.get("url")
    if where:
        text = f"{text} (at {where}:{details.get('lineNumber', 0) + 1})"
    return str(text)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


async def _wait_for_devtools(process: asyncio.subprocess.Process, profile: Path,
                             log_path: Path, timeout: float) -> str:
    port_file = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if process.returncode is not None:
            raise ChromiumError(
                f"Chromium exited with code {process.returncode} while starting; its log:\n"
                f"{_tail(log_path, 40)}"
            )
        try:
            lines = port_file.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 2 and lines[0].strip().isdigit():
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        if loop.time() > deadline:
            raise ChromiumError(
                f"Chromium did not open its DevTools port within {timeout} s; its log:\n"
                f"{_tail(log_path, 40)}"
            )
        await asyncio.sleep(0.05)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Stop Chromium and every process it started (they share its process group)."""
    pgid = process.pid  # start_new_session: the group leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            await asyncio.wait_for(process.wait(), wait)
            break
        except TimeoutError:
            continue
    # Children may outlive the leader for a moment: make sure the group is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
