"""Opening a page in headless Chromium (Debian's ``chromium``): its DOM as Chromium built it, and a
screenshot decoded to pixels (a small PNG reader: 8-bit RGB/RGBA, not interlaced, as Chromium writes).

Without ``chromium`` a test skips, saying why, unless ``CI`` is set: in CI it fails (``.ci/run``
installs the package)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is missing and CI is set: install it (apt-get install chromium; .ci/run does)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


def _run(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after Chromium parsed and laid it out."""
    return _run(page, profile, "--dump-dom").stdout


def screenshot(page: Path, profile: Path, png: Path, size: tuple[int, int] = (1100, 1400)) -> Path:
    _run(page, profile, f"--screenshot={png}", f"--window-size={size[0]},{size[1]}")
    return png


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside elements that have an id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        self._open.append(values.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.text_by_id[ident] = self.text_by_id.get(ident, "") + data

    def find(self, tag: str, css_class: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and css_class in a.get("class", "").split()]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def pixels(png: Path) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of a PNG screenshot."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, "an unexpected PNG format"
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    previous, seen = bytearray(stride), set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            line[i] = (line[i] + (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]) & 0xFF
        seen.update(tuple(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return seen  # type: ignore[return-value]
