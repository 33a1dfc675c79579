"""Write the hostile-upload corpus next to this script: ``.venv/bin/python tests/corpus/make_corpus.py``.

Every file is small (the "huge" images are solid colour or only claim their size in a header); the file over the
upload size limit is made at test time by tests/test_hostile_uploads.py, not committed. The accepted photos are
derived from tests/images (see tests/images/LICENSES.md for their sources). The output is deterministic: running
the script again rewrites the same bytes. tests/test_hostile_uploads.py documents what each file must give.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent / "images"
EXIF_ORIENTATION = 0x0112
EXIF_MODEL = 0x0110
TIFF_EXTRA_SAMPLES = 338


def photo(name: str, long_side: int) -> Image.Image:
    image = Image.open(PHOTOS / name).convert("RGB")
    image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written by hand: Pillow writes no 16-bit colour, and a streamed 1-bit canvas needs no 50 MB buffer."""
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def solid_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG. Its stream is nothing but zero bytes, which deflate packs at its best
    (about 1000:1): 20000 x 20000 pixels in ~50 KB."""
    row = bytes((width + 7) // 8)
    return png(width, height, bit_depth=1, colour_type=0, rows=(row for _ in range(height)))


def bomb_png() -> bytes:
    """A header claiming 100000 x 100000 RGBA (40 GB decoded) before a short stream of zeros: only the size matters."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1_000_000, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def sixteen_bit_rgb_png(image: Image.Image) -> bytes:
    pixels = np.asarray(image, dtype=np.uint16) * 257  # 0..255 -> 0..65535, big-endian below as PNG wants
    rows = (row.astype(">u2").tobytes() for row in pixels)
    return png(image.width, image.height, bit_depth=16, colour_type=2, rows=rows)


def sixteen_bit_grey_png(image: Image.Image) -> bytes:
    grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    rows = (row.astype(">u2").tobytes() for row in grey)
    return png(image.width, image.height, bit_depth=16, colour_type=0, rows=rows)


def premultiplied_grey_tiff(image: Image.Image) -> bytes:
    """Grey with an associated (premultiplied) alpha: Pillow's mode "La", which it converts to no colour mode
    directly. Pillow writes LA with unassociated alpha (ExtraSamples 2); the one entry is set to 1 here."""
    grey = image.convert("L")
    data = bytearray(encoded(Image.merge("LA", (grey, Image.new("L", grey.size, 255))), "TIFF"))
    assert data[:2] == b"II"  # little-endian, as Pillow writes it
    directory = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[directory : directory + 2])[0]):
        at = directory + 2 + 12 * entry
        if struct.unpack("<H", data[at : at + 2])[0] == TIFF_EXTRA_SAMPLES:
            data[at + 8 : at + 10] = struct.pack("<H", 1)
    return bytes(data)


def many_scans_jpeg(image: Image.Image, scans: int = 150) -> bytes:
    """A progressive JPEG whose last scan is repeated ``scans`` times: decoded once over per scan (libjpeg only
    warns), so the count, not the size, sets the work."""
    data = encoded(image, "JPEG", quality=85, progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * scans + data[end:]


def tiled_tiff(side: int = 64, tile: int = 2048) -> bytes:
    """A grey ``side`` x ``side`` TIFF in one deflated ``tile`` x ``tile`` tile of zeros, which libtiff inflates
    whole before Pillow crops it (a tile of 32768 would take 1 GB from 1 MB of file)."""
    pixels = zlib.compress(bytes(tile * tile), 9)
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1), (322, 4, tile),
               (323, 4, tile), (324, 4, 8 + 2 + 12 * 10 + 4), (325, 4, len(pixels))]  # the pixels after the IFD
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value, *((0,) if kind == 3 else ()))
        for tag, kind, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


def animated_gif() -> bytes:
    """Two frames: a running shoe first, a cactus second; search must use the first."""
    first = photo("shoe-running-2.jpg", 160)
    second = photo("plant-cactus.jpg", 160).resize(first.size)
    return encoded(first, "GIF", save_all=True, append_images=[second], duration=500, loop=0)


def exif_pair() -> tuple[bytes, bytes]:
    """The same running shoe upright and stored sideways with EXIF orientation 6, as phones store portrait shots
    (sides a multiple of 16, so the rotated JPEG's blocks are the upright one's blocks turned)."""
    upright = Image.open(PHOTOS / "shoe-running-2.jpg").convert("RGB").resize((240, 160), Image.Resampling.LANCZOS)
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 says: turn 90 degrees clockwise to view
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return (encoded(upright, "JPEG", quality=95, subsampling=0),
            encoded(sideways, "JPEG", quality=95, subsampling=0, exif=exif.tobytes()))


def malformed_exif(rotated: bytes) -> bytes:
    """``rotated`` with one more EXIF entry, the camera model, whose type says "one 4-byte float" where the tag is
    text: Pillow reads it, and writing it back (as ImageOps.exif_transpose does) raises."""
    image = Image.open(io.BytesIO(rotated))
    exif = image.getexif()
    exif[EXIF_MODEL] = "Phone"
    data = bytearray(encoded(image, "JPEG", quality=95, subsampling=0, exif=exif.tobytes()))
    tiff = data.index(b"Exif\x00\x00") + 6
    order = "<" if data[tiff:tiff + 2] == b"II" else ">"
    ifd = tiff + struct.unpack(order + "I", data[tiff + 4:tiff + 8])[0]
    for index in range(struct.unpack(order + "H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * index
        if struct.unpack(order + "H", data[entry:entry + 2])[0] == EXIF_MODEL:
            data[entry + 2:entry + 8] = struct.pack(order + "HI", 11, 1)  # type FLOAT, count 1
    return bytes(data)


SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="400" height="300" viewBox="0 0 400 300">
  <rect width="400" height="300" fill="#2f855a"/><circle cx="200" cy="150" r="90" fill="#fff"/>
</svg>
"""
HTML = b"""<!DOCTYPE html>
<html><head><title>Not a photo</title></head>
<body><script>alert(document.cookie)</script><img src="x.jpg"></body></html>
"""
TEXT = b"Shopping list:\n- milk\n- a sofa that looks like the one at Anna's\n"
EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 64 64
%%EndComments
newpath 0 0 moveto 64 64 lineto stroke
showpage
%%EOF
"""


def corpus() -> dict[str, bytes]:
    shoe = photo("shoe-running-2.jpg", 240)
    full = encoded(shoe, "JPEG", quality=85)
    upright, rotated = exif_pair()
    return {
        # Refused
        "empty.jpg": b"",
        "text.jpg": TEXT,
        "page.jpg": HTML,
        "drawing.svg": SVG,
        "drawing.eps": EPS,
        "truncated.jpg": full[: len(full) * 3 // 5],
        "bomb.png": bomb_png(),
        "huge-20000x20000.png": solid_bilevel_png(20_000, 20_000),
        "over-limit-8000x7000.png": solid_bilevel_png(8_000, 7_000),
        "tiny-1x1.png": encoded(Image.new("RGB", (1, 1), (200, 40, 40)), "PNG"),
        "many-scans.jpg": many_scans_jpeg(shoe),
        "tiled.tif": tiled_tiff(),
        # Accepted
        "animated.gif": animated_gif(),
        "cmyk.jpg": encoded(shoe.convert("CMYK"), "JPEG", quality=85),
        "rgb-16bit.png": sixteen_bit_rgb_png(photo("shoe-running-2.jpg", 160)),
        "grey-16bit.png": sixteen_bit_grey_png(photo("chair-cafe-pair.jpg", 120)),
        "grey-premultiplied.tif": premultiplied_grey_tiff(photo("chair-cafe-pair.jpg", 120)),
        "phone.heic": _heic(shoe),
        "exif-upright.jpg": upright,
        "exif-rotated.jpg": rotated,
        "exif-malformed.jpg": malformed_exif(rotated),
        "jpeg-named.txt": full,
        "progressive.jpg": encoded(shoe, "JPEG", quality=85, progressive=True),
        "small-12x8.png": encoded(photo("shoe-running-2.jpg", 12), "PNG"),  # the shorter side at UPLOAD_MIN_SIDE
    }


def _heic(image: Image.Image) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return encoded(image, "HEIF", quality=60)


def main() -> int:
    for name, data in corpus().items():
        (HERE / name).write_bytes(data)
        print(f"{name:28} {len(data):>7} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
