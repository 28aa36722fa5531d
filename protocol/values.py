"""Component field values: a JSON-like subset of msgpack.

A value is ``None``, a bool, a 64-bit integer, a finite float, a string, a list of values or
a map from string to value, nested at most ``Limits.max_value_depth`` deep. Binary data and
non-finite floats are excluded so every value survives a round trip through JSON (the web
client) and compares equal to itself (NaN would not, and replicas could never agree).
"""

from typing import Any

from protocol.errors import LimitExceeded, SchemaError
from protocol.limits import DEFAULT_LIMITS, Limits

Value = Any  # None | bool | int | float | str | list[Value] | dict[str, Value]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class InvalidValue(ValueError):
    """A value given to the local API that the protocol cannot carry."""


def check_value(value: object, limits: Limits = DEFAULT_LIMITS, depth: int = 0) -> None:
    """Check a value decoded from the wire; raise a ``DecodeError`` subclass if invalid."""
    t = type(value)
    if t is float:
        if value - value != 0.0:  # type: ignore[operator]  # NaN or infinity
            raise SchemaError("non-finite float in value")
    elif t is str or t is int or t is bool or value is None:
        return
    elif t is list:
        if depth >= limits.max_value_depth:
            raise LimitExceeded("value nested too deeply")
        items: list[object] = value  # type: ignore[assignment]
        if len(items) > limits.max_collection_items:
            raise LimitExceeded("value list too long")
        for item in items:
            if type(item) is float:
                if item - item != 0.0:
                    raise SchemaError("non-finite float in value")
            else:
                check_value(item, limits, depth + 1)
    elif t is dict:
        if depth >= limits.max_value_depth:
            raise LimitExceeded("value nested too deeply")
        mapping: dict[object, object] = value  # type: ignore[assignment]
        if len(mapping) > limits.max_collection_items:
            raise LimitExceeded("value map too large")
        for key, item in mapping.items():
            if type(key) is not str:
                raise SchemaError("value map key is not a string")
            check_value(item, limits, depth + 1)
    else:
        raise SchemaError(f"value of type {t.__name__} is not allowed")


def normalize_value(value: object, limits: Limits = DEFAULT_LIMITS, depth: int = 0) -> Value:
    """Return the canonical form of a value given to the local API.

    Tuples become lists, map keys are sorted (so one logical value always encodes to the
    same bytes), and anything the wire cannot carry raises :class:`InvalidValue`.
    """
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str) and len(value.encode()) > limits.max_str_bytes:
            raise InvalidValue("string value too long")
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidValue("integer value out of the 64-bit range")
        return int(value)
    if isinstance(value, float):
        if value - value != 0.0:
            raise InvalidValue("non-finite floats (NaN, inf) cannot be stored")
        return float(value)
    if depth >= limits.max_value_depth:
        raise InvalidValue(f"value nested deeper than {limits.max_value_depth}")
    if isinstance(value, (list, tuple)):
        if len(value) > limits.max_collection_items:
            raise InvalidValue("list value too long")
        return [normalize_value(v, limits, depth + 1) for v in value]
    if isinstance(value, dict):
        if len(value) > limits.max_collection_items:
            raise InvalidValue("map value too large")
        if not all(isinstance(key, str) for key in value):
            raise InvalidValue("map keys must be strings")
        out: dict[str, Value] = {}
        for key in sorted(value):
            out[key] = normalize_value(value[key], limits, depth + 1)
        return out
    raise InvalidValue(f"values of type {type(value).__name__} cannot be stored")
