"""The browser's JSON messages: checking what a page sends and encoding what it receives.

Every check raises :class:`BadMessage` with a stable ``reason``; the session turns it into
an ``error`` reply. See ``meshnode.web.session`` for the protocol itself.
"""

import base64
import json
import math
from collections.abc import Callable
from typing import Any

from meshnode.crdt import EntityId, SceneReplica

MAX_REQ = 2**53 - 1
"""The largest request number (the largest integer a JavaScript number holds exactly)."""


class BadMessage(Exception):
    """A browser message that does not follow the protocol."""

    def __init__(self, reason: str, text: str, req: int | None = None) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.req = req


# ---------------------------------------------------------------------- message parsing


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def peek_req(msg: dict[str, Any]) -> int | None:
    req = msg.get("req")
    return req if type(req) is int and 0 <= req <= MAX_REQ else None


def want_req(msg: dict[str, Any]) -> int:
    req = msg.get("req")
    if type(req) is not int or not 0 <= req <= MAX_REQ:
        raise BadMessage("bad_message", f'an edit needs an integer "req" in 0..{MAX_REQ}')
    return req


def _want_str(msg: dict[str, Any], key: str, req: int) -> str:
    value = msg.get(key)
    if type(value) is not str:
        raise BadMessage("bad_message", f"{msg['t']} needs a string {key!r}", req)
    return value


def _want_entity(msg: dict[str, Any], key: str, req: int) -> EntityId:
    text = _want_str(msg, key, req)
    try:
        return EntityId.parse(text)
    except ValueError as err:
        raise BadMessage("bad_message", f"{key!r}: {err}", req) from None


def _parse_create(msg: dict[str, Any], req: int) -> Callable[[SceneReplica], Any]:
    parent = _want_entity(msg, "parent", req)
    components = msg.get("components", {})
    if type(components) is not dict or any(type(f) is not dict for f in components.values()):
        raise BadMessage(
            "bad_message", 'create needs "components" as {component: {field: value}}', req
        )
    return lambda replica: replica.create_entity(parent, components)


def _parse_set(msg: dict[str, Any], req: int) -> Callable[[SceneReplica], Any]:
    entity = _want_entity(msg, "id", req)
    component = _want_str(msg, "component", req)
    field = _want_str(msg, "field", req)
    if "value" not in msg:
        raise BadMessage("bad_message", 'set needs a "value" (null is one)', req)
    value = msg["value"]
    return lambda replica: replica.set_field(entity, component, field, value)


def _parse_move(msg: dict[str, Any], req: int) -> Callable[[SceneReplica], Any]:
    entity = _want_entity(msg, "id", req)
    parent = _want_entity(msg, "parent", req)
    return lambda replica: replica.move(entity, parent)


def _parse_delete(msg: dict[str, Any], req: int) -> Callable[[SceneReplica], Any]:
    entity = _want_entity(msg, "id", req)
    return lambda replica: replica.delete(entity)


EDITS: dict[str, Callable[[dict[str, Any], int], Callable[[SceneReplica], Any]]] = {
    "create": _parse_create,
    "set": _parse_set,
    "move": _parse_move,
    "delete": _parse_delete,
}


# ---------------------------------------------------------------------- JSON encoding


def _json_default(obj: object) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    raise TypeError(f"{type(obj).__name__} cannot be sent to a browser")


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats replaced by null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_json_default)
    except ValueError:  # a NaN or infinity (scene values cannot hold one; presence might)
        return json.dumps(_finite(obj), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
