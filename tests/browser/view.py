"""The 3D view in tests: wait for it to draw, screenshot it, check it is a real render."""

import struct
import zlib
from pathlib import Path

from .chromium import Page

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def screenshot_view(page: Page, name: str, *, meshes: int) -> tuple[int, int, int, bytes]:
    """Wait until the view shows ``meshes`` boxes and has drawn a frame, save a screenshot of
    it as ``tests/artifacts/<name>``, check it is not (nearly) one colour, and return
    ``decode_png`` of it."""
    await page.evaluate("""new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("meshes: " +
          window.meshnode.view.status().meshes)), 10000);
        const poll = () => window.meshnode.view.status().meshes === %d
          ? (clearTimeout(t), resolve()) : setTimeout(poll, 20);
        poll(); })""" % meshes)  # noqa: UP031 (JavaScript braces)
    assert await page.evaluate("window.meshnode.view.nextFrame()") is True
    ARTIFACTS.mkdir(exist_ok=True)
    shot = await page.screenshot(ARTIFACTS / name, selector="#view")
    width, height, bpp, pixels = decode_png(shot)
    assert width > 300 and height > 300
    colours = {pixels[i:i + 3] for i in range(0, len(pixels), bpp * 7)}
    assert len(colours) > 20, "the 3D view is (nearly) one colour"
    return width, height, bpp, pixels


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw pixels) of an 8-bit RGB(A) PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color_type in (2, 6) and interlace == 0
            bpp = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)
