"""Hand-read fast paths for ``protocol.compact``: the envelope of a change as this codebase
encodes it, read with slices instead of a msgpack ``Unpacker`` (whose construction alone costs
more than the rest of a compact change's expansion; netsim's 1,000 nodes expand some 70,000 a
simulated second).

Both readers accept only the narrow encodings :func:`protocol.msgpack_io.pack` produces
(author ``c4 20`` + 32 bytes, seq and hlc as unsigned ints, deps as a minimal array of
``c4 20`` bins) and answer None for anything else, including every malformed input: the
caller then takes the general path (``protocol.compact``), which decides exactly as before.
Whatever they do return equals what the general path returns for the same bytes (a property
test, ``tests/protocol/test_compact_scan.py``, holds them to that).
"""

_BIN32 = b"\xc4\x20"  # a 32-byte bin: author, each dep
_ITEM = 34  # one dep in a canonical deps array: c4 20 + 32 bytes
_SIGNATURE = 64
_PREFIX = 8
_INT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack's unsigned ints past fixint


def _uint(data: bytes, i: int, end: int) -> tuple[int, int] | None:
    """The unsigned int msgpack encodes at ``data[i]`` (ending by ``end``) and where it ends;
    None for any other type."""
    if i >= end:
        return None
    b = data[i]
    if b < 0x80:
        return b, i + 1
    width = _INT_WIDTHS.get(b)
    if width is None or i + 1 + width > end:
        return None
    return int.from_bytes(data[i + 1:i + 1 + width], "big"), i + 1 + width


def scan_compact(data: bytes, max_deps: int
                 ) -> tuple[bytes, int, bytes, tuple[bytes, ...], bytes, bytes] | None:
    """A well-formed compact change (marker, size and length limits checked by the caller)
    as ``(author, seq, head, prefixes, tail, signature)`` (``protocol.compact.CompactParts``
    and its seq), or None: not one this reader vouches for."""
    end = len(data) - _SIGNATURE
    if end < 36 or data[1] != 0xC4 or data[2] != 0x20:
        return None
    b = data[35]  # the seq (read inline: this runs for every compact change received)
    if b < 0x80:
        seq, i = b, 36
    else:
        width = _INT_WIDTHS.get(b)
        if width is None or 36 + width > end:
            return None
        seq, i = int.from_bytes(data[36:36 + width], "big"), 36 + width
    if seq < 1 or i + 1 >= end:
        return None
    kind = data[i]
    if kind == 0xC4:
        n, j = data[i + 1], i + 2
    elif kind == 0xC5 and i + 2 < end:
        n, j = (data[i + 1] << 8) | data[i + 2], i + 3
    else:
        return None
    p_end = j + n
    if not n or n % _PREFIX or n // _PREFIX > max_deps or p_end >= end:
        return None
    if n == _PREFIX:
        prefixes: tuple[bytes, ...] = (data[j:p_end],)
    else:
        prefixes = tuple([data[k:k + _PREFIX] for k in range(j, p_end, _PREFIX)])
        for a in range(len(prefixes) - 1):
            if prefixes[a] > prefixes[a + 1]:
                return None
    b = data[p_end]  # the hlc
    if b < 0x80:
        h_end = p_end + 1
    else:
        width = _INT_WIDTHS.get(b)
        if width is None or (b == 0xCF and data[p_end + 1] >= 0x80):  # not below 2^63
            return None
        h_end = p_end + 1 + width
    if h_end >= end:  # beyond the body, or no ops block after it
        return None
    return data[3:35], seq, data[1:i], prefixes, data[p_end:end], data[end:]


def scan_canonical(data: bytes, max_items: int) -> bytes | None:
    """The compact form of canonical change bytes with deps, or None (no deps, not read
    here: the caller's general path decides). ``max_items``: the longest array the general
    path's reader accepts."""
    end = len(data) - _SIGNATURE
    if end < 36 or data[0] != 0x95 or data[1:3] != _BIN32:
        return None
    got = _uint(data, 35, end)
    if got is None:
        return None
    a = got[1]
    if a >= end:
        return None
    head = data[a]
    if 0x91 <= head <= 0x9F:
        k, first = head & 0x0F, a + 1
    elif head == 0xDC and a + 2 < end:
        k, first = (data[a + 1] << 8) | data[a + 2], a + 3
        if k < 16 or k > max_items:  # not minimal: not pack's encoding
            return None
    else:
        return None
    d_end = first + _ITEM * k
    if d_end >= end:
        return None
    prev = b""
    for x in range(first, d_end, _ITEM):
        if data[x] != 0xC4 or data[x + 1] != 0x20:
            return None
        dep = data[x + 2:x + _ITEM]
        if dep <= prev:
            return None
        prev = dep
    hlc = _uint(data, d_end, end)
    if hlc is None or hlc[1] >= end:
        return None
    n = _PREFIX * k
    if n > 0xFFFF:
        return None
    size = bytes((0xC4, n)) if n < 0x100 else bytes((0xC5, n >> 8, n & 0xFF))
    return b"".join((b"\xc1", data[1:a], size,
                     b"".join([data[x + 2:x + 2 + _PREFIX] for x in range(first, d_end, _ITEM)]),
                     data[d_end:]))
