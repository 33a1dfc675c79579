"""Checks on uploaded image files. The type is decided by decoding the bytes, never by name or header."""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation, ValidationError
from django.utils.text import get_valid_filename
from PIL import Image

from catalog.pixels import SIDE_SWAPPING_TURNS, upright_turn
from catalog.thumbnails import thumbnail_draft

# Formats a shopper's camera or an admin's export produce; everything else is refused.
ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF"}
# The extension a stored file gets, from its decoded format: what a web server later serves it as.
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
              "HEIF": "heic"}
# Of those, what every browser shows (HEIC and TIFF: Safari alone); other photos are shown by their WebP copy.
BROWSER_EXTENSIONS = tuple(f".{EXTENSIONS[name]}" for name in ("JPEG", "PNG", "WEBP", "GIF", "BMP"))
# The longest stem of a stored name, in UTF-8 bytes. File systems allow 255 bytes in a name, but Django bounds a
# stored name in characters (100 with its folder), which in 4-byte characters is up to 400 bytes: "File name too
# long". This leaves room for the extension and for the "_" and 7 characters Django adds to a name already taken.
STORED_STEM_MAX_BYTES = 200
# A progressive JPEG is decoded once over per scan, and a file may repeat a scan without end: 3,000 scans of a
# 7000x7000 picture fit in 318 KB and held a web worker for 12 s (a minute, the worker's limit, from 1.5 MB). Cameras
# and editors write at most a few dozen (libjpeg's progressive mode 10).
JPEG_MAX_SCANS = 100
# Of segments (and scans) walked to count the scans: a file of millions of empty ones took seconds to walk. Cameras
# write a few dozen.
JPEG_MAX_SEGMENTS = 1000
# Bytes that are no marker (junk, 0xFF fill) before the first scan; cameras write none.
JPEG_MAX_GAP = 1024
JPEG_START = b"\xff\xd8"
# The next marker, as libjpeg finds it: past any bytes that are none (junk, 0xFF fill), and in a scan's coded data
# past a 0xFF followed by 0x00 (a stuffed byte) or a restart marker.
_NEXT_MARKER = re.compile(rb"\xff([^\x00\xff])")  # one 0xFF: "\xff+" backtracked through a long run (64 KB: 21 s)
_NEXT_MARKER_AFTER_SCAN = re.compile(rb"\xff([^\x00\xd0-\xd7\xff])")
# TIFF tags: a tile's width and length. libtiff decodes a whole tile before Pillow crops it to the picture, and
# nothing ties a tile's size to the picture's: a 1 MB file of 64x64 pixels in one 32768x32768 tile took 1.1 GB.
TIFF_TILE_WIDTH, TIFF_TILE_LENGTH = 322, 323
TIFF_TILE_MIN_PIXELS = 1 << 20  # tiles of any picture may be this large (a 256x256 picture in 1024x1024 tiles)


@dataclass(frozen=True)
class ImageInfo:
    width: int  # as shown, i.e. after the EXIF rotation: pages size <img> tags with these
    height: int
    format: str
    sha256: str
    # With keep_image: the decoded pixels, at reduced size for JPEGs, EXIF not applied.
    image: Image.Image | None = field(default=None, compare=False, repr=False)


def inspect_image(file, *, keep_image: bool = False, keep_min_side: int | None = None) -> ImageInfo:
    """Validate an uploaded file as an image and describe it. Raises ValidationError with a message users can read.

    ``keep_image``: also return the decoded image, so that nothing decodes it a second time. A JPEG is then decoded
    at the smallest DCT scale that covers the thumbnail, or keeps both sides >= ``keep_min_side``: the whole file is
    still read and decoded (a truncated or corrupt one fails the same way), at a fraction of the cost.
    """
    size = getattr(file, "size", None)
    if size == 0:
        raise ValidationError("The file is empty.", code="empty")
    if size is not None and size > settings.UPLOAD_MAX_BYTES:
        limit_mb = settings.UPLOAD_MAX_BYTES // (1024 * 1024)
        raise ValidationError(f"The file is larger than {limit_mb} MB.", code="too_large")

    digest = hashlib.sha256()
    file.seek(0)
    for chunk in iter(lambda: file.read(1024 * 1024), b""):
        digest.update(chunk)
    file.seek(0)
    if file.read(2) == JPEG_START:  # what Pillow opens as a JPEG (or an MPO)
        _check_jpeg_parts(file)
    file.seek(0)

    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP and refuses from twice that; below its refusal our own limit decides,
            # so the message can name UPLOAD_MAX_PIXELS and the image's size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Never closed here: Pillow would close the caller's file with it. Pixels not kept go with ``image``.
            image = Image.open(file)
            width, height = image.size
            image_format = image.format
            _check_dimensions(width, height)
            if image_format not in ACCEPTED_FORMATS:  # before decoding: EPS, for one, runs Ghostscript
                raise ValidationError(f"{image_format} images are not supported.", code="format")
            if image_format == "TIFF":
                _check_tiff_tiles(image)
            if keep_image and keep_min_side:
                image.draft("RGB", (keep_min_side, keep_min_side))
            elif keep_image:
                thumbnail_draft(image)
            image.load()  # decode fully: catches truncated and corrupt files
            if upright_turn(image) in SIDE_SWAPPING_TURNS:
                width, height = height, width
            kept = image if keep_image else None
    except ValidationError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own bound, checked before we see the size
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        megapixels = f" ({int(claimed[1]) // 1_000_000} megapixels)" if claimed else ""
        raise ValidationError(
            f"The image has too many pixels{megapixels}; the limit is {_pixel_limit()}.", code="too_many_pixels"
        ) from None
    except Exception:  # noqa: BLE001 - on malformed input Pillow's decoders raise OSError, SyntaxError,
        # ValueError, EOFError, struct.error, IndexError, ...: every one of them means "not an image we can read"
        raise ValidationError("The file is not a readable image.", code="invalid_image") from None
    finally:
        file.seek(0)
    return ImageInfo(width=width, height=height, format=image_format, sha256=digest.hexdigest(), image=kept)


def image_file_name(name: str, image_format: str) -> str:
    """``name`` with the extension of the decoded format ("IMG_1234" or "photo.txt" holding a JPEG -> "….jpg"),
    so a stored file is never served as something it is not, and its stem cut to STORED_STEM_MAX_BYTES."""
    # Storage keeps only letters, digits, "-", "_" and ".": of "📷" or "#" it kept nothing, and the photo was stored as
    # the hidden, extension-less ".jpg" (so is any name starting with a dot).
    try:
        stem = get_valid_filename(PurePath(name or "").stem).lstrip(".") or "image"
    except SuspiciousFileOperation:  # nothing of it is left
        stem = "image"
    # Cut on a character boundary ("ignore" drops a character the cut split).
    stem = stem.encode("utf-8", "replace")[:STORED_STEM_MAX_BYTES].decode("utf-8", "ignore")
    return f"{stem}.{EXTENSIONS[image_format]}"


def _pixel_limit() -> str:
    limit = settings.UPLOAD_MAX_PIXELS
    if Image.MAX_IMAGE_PIXELS:  # Pillow refuses from twice its own bound, whatever the setting says
        limit = min(limit, 2 * Image.MAX_IMAGE_PIXELS)
    return f"{limit // 1_000_000} megapixels" if limit >= 1_000_000 else f"{limit} pixels"


def _check_tiff_tiles(image: Image.Image) -> None:
    """Refuse a TIFF whose tiles are larger than its picture (see TIFF_TILE_WIDTH)."""
    tile = image.tag_v2.get(TIFF_TILE_WIDTH), image.tag_v2.get(TIFF_TILE_LENGTH)
    if all(isinstance(side, int) for side in tile) and tile[0] * tile[1] > max(
        image.width * image.height, TIFF_TILE_MIN_PIXELS
    ):
        raise ValidationError(
            f"The TIFF is stored in tiles of {tile[0]}x{tile[1]} pixels, larger than its {image.width}x"
            f"{image.height} picture. Save it again without tiles, or as a JPEG or PNG.",
            code="tiff_tiles",
        )


def _check_jpeg_parts(file) -> None:
    """Refuse a JPEG whose decoding would cost far more than its pixels' size says: more than JPEG_MAX_SCANS scans,
    JPEG_MAX_SEGMENTS segments, or JPEG_MAX_GAP bytes between two markers before its first scan. Before Pillow opens
    it, which reads what comes before the first scan byte by byte in Python (19 MB of 0xFF fill: 15 s).

    The file is walked marker by marker as libjpeg reads it, to the first picture's end: what follows it (a motion
    photo's video, an MPO's second picture) and what segments hold (an EXIF thumbnail) are not counted."""
    file.seek(0)
    data = file.read()
    file.seek(0)
    at, segments, scans = len(JPEG_START), 0, 0
    while True:
        found = _NEXT_MARKER.search(data, at)
        if scans == 0 and (found.start() if found else len(data)) - at > JPEG_MAX_GAP:  # fill and junk included
            raise ValidationError(f"The JPEG holds more than {JPEG_MAX_GAP} bytes of no picture between its parts. "
                                  "Save it again as a plain JPEG.", code="jpeg_gap")
        if found is None:
            break
        marker, at = found[1][0], found.end()
        if marker == 0xD9:  # the picture's end
            break
        segments += 1  # markers that stand alone too: Pillow steps through each before the first scan
        if segments > JPEG_MAX_SEGMENTS:
            raise ValidationError(f"The JPEG is made of more than {JPEG_MAX_SEGMENTS} parts. Save it again as a "
                                  "plain JPEG.", code="too_many_segments")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers that stand alone: no length
            continue
        at += max(int.from_bytes(data[at:at + 2], "big"), 2)  # its length, which counts itself
        if marker == 0xDA:  # a scan: its coded data runs to the next marker
            scans += 1
            if (following := _NEXT_MARKER_AFTER_SCAN.search(data, at)) is None:
                break
            at = following.start()
    if scans > JPEG_MAX_SCANS:
        raise ValidationError(f"The JPEG is stored in {scans} passes; the limit is {JPEG_MAX_SCANS}. Save it again "
                              "as a plain JPEG.", code="too_many_scans")


def _check_dimensions(width: int, height: int) -> None:
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise ValidationError(
            f"The image has too many pixels ({width}x{height}); the limit is {_pixel_limit()}.",
            code="too_many_pixels",
        )
    if min(width, height) < settings.UPLOAD_MIN_SIDE:
        raise ValidationError(
            f"The image is {width}x{height} pixels; each side needs at least {settings.UPLOAD_MIN_SIDE}.",
            code="too_small",
        )
