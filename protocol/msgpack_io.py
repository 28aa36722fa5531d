"""The one place that turns peer bytes into msgpack objects, with limits applied while parsing."""

from typing import Any

import msgpack

from protocol.errors import FrameTooLarge, MalformedMsgpack
from protocol.limits import Limits


def unpack(data: bytes, limits: Limits, max_bytes: int, what: str) -> Any:
    """Parse exactly one msgpack object from ``data``.

    Length limits are given to the C parser, so an oversized string or collection is refused
    before it is allocated. Any parser failure becomes :class:`MalformedMsgpack`.
    """
    if type(data) is not bytes and isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if type(data) is not bytes:
        raise MalformedMsgpack(f"{what} must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise FrameTooLarge(f"{what} of {len(data)} bytes is over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limits.max_str_bytes,
            max_bin_len=max(limits.max_bin_bytes, limits.max_change_bytes),
            max_array_len=max(limits.max_collection_items, limits.max_ops_per_change),
            max_map_len=limits.max_collection_items,
            max_ext_len=0,
        )
    # msgpack raises ValueError subclasses, TypeError (unhashable keys) and others: at this
    # trust boundary every one of them means "not a valid object".
    except Exception as exc:
        raise MalformedMsgpack(f"{what} is not valid msgpack: {exc}") from None


def pack(obj: object) -> bytes:
    """Encode canonically: minimal integer widths, float64, bin type for bytes."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
