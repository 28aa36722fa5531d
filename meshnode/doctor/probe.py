"""HTTP probes for the checks: a plain GET with its timing (``http_get``), and the running
node's admin API with the operator's token (``admin_get``)."""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from meshnode.doctor.findings import DoctorContext
from meshnode.signaling.admin_token import AdminTokenError, read_admin_token

__all__ = ["Answer", "ProbeError", "admin_get", "http_get"]


class ProbeError(Exception):
    """The request got no HTTP answer (the message says why, in one line)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, with the wall-clock times the request left and the answer came."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    sent_at: float
    received_at: float

    def json(self) -> Any:
        """The body as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def http_get(url: str, timeout_s: float, headers: Mapping[str, str] | None = None,
                   max_bytes: int = 1 << 20) -> Answer:
    """GET ``url`` (no redirects followed, no proxy from the environment)."""
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            sent = time.time()
            async with session.get(url, headers=dict(headers or {}),
                                   allow_redirects=False) as resp:
                body = await resp.content.read(max_bytes)
                return Answer(resp.status, dict(resp.headers), body, sent, time.time())
    except TimeoutError:
        raise ProbeError(f"no answer within {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as err:
        raise ProbeError(" ".join(str(err).split()) or type(err).__name__) from None


async def admin_get(ctx: DoctorContext, path: str) -> Answer:
    """GET an admin route of the running node, as the operator. Raises ``ProbeError`` when
    no node answers, ``AdminTokenError`` when the token file cannot be used."""
    token = read_admin_token(ctx.token_path)
    return await http_get(ctx.node_url + path, ctx.timeout_s,
                          {"Authorization": f"Bearer {token}"})


async def running_node(ctx: DoctorContext) -> tuple[dict[str, Any] | None, str]:
    """The running node's ``/api/status`` (None, and why, when it cannot be had)."""
    try:
        answer = await admin_get(ctx, "/api/status")
    except ProbeError as err:
        return None, f"no node answers at {ctx.node_url} ({err})"
    except AdminTokenError as err:
        return None, str(err)
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else answer.body[:200].decode(
            "utf-8", "replace")
        return None, f"{ctx.node_url}/api/status answered {answer.status}: {detail}"
    return body, ""
