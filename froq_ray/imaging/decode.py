"""Image bytes -> RGB uint8 face crops of a fixed size, with a status and an error message per item.

This is the CPU stage of every job, so it never raises for bad data: each input becomes a
:class:`DecodedImage` (or one slot of a :class:`DecodedBatch`) whose ``status`` is one of
:mod:`froq_ray.status` and whose ``error`` says what went wrong (``None`` when the status is ``ok``).

Status rules
------------
- ``empty``: zero-byte input.
- ``not_an_image``: no decoder recognises the bytes (PIL's ``UnidentifiedImageError`` on bytes that do not
  start with a known image signature), or the input is not bytes-like at all.
- ``corrupt``: the format is recognised but the image cannot be decoded: truncated or damaged data (the
  pixels are fully decoded with ``Image.load()`` and PIL's ``LOAD_TRUNCATED_IMAGES`` is never enabled, so a
  truncated file is rejected, not padded with grey), a damaged header behind a valid signature, an image
  larger than ``max_pixels`` (decompression-bomb guard), or a pixel mode that cannot be converted to RGB.
- ``None`` instead of bytes means the read stage already failed: the item keeps the status and error the
  caller passes in ``prior_statuses``/``prior_errors`` (default ``read_error``), and decode does not touch it.

Pixel conventions
-----------------
- Output is RGB uint8, H x W x 3, exactly ``size`` x ``size``.
- EXIF orientation is applied first (``ImageOps.exif_transpose``); ``width``/``height`` report the size of
  the image as displayed (after orientation, before resizing); both are 0 when decoding failed.
- Crops are expected to be ArcFace-aligned already, so an input of another size is *resized* (never cropped):
  a non-square input is stretched to a square. Resampling is PIL's bicubic filter, which widens its support
  when downscaling and so antialiases; for large JPEGs the decoder's DCT scaling (``Image.draft``) first
  reduces the image by 2/4/8 while it stays at least ``size`` on each side, which is much faster.
- Transparency (RGBA, LA, PA, palette images with a transparent colour) is composited on black, i.e.
  each colour is multiplied by alpha/255 (rounded). Transparent pixels therefore look like the black
  padding of aligned crops, whatever colour happens to be stored under them.
- 16-bit greyscale (``I;16*``; ``I`` is read as 16-bit) is scaled to 8 bits by round(v * 255 / 65535).
  16-bit RGB PNGs are reduced to 8 bits by PIL itself, which keeps the high byte (floor(v / 256)).
- Greyscale, bilevel, palette, CMYK and YCbCr are converted with PIL's ``convert("RGB")``.
- Multi-frame files (GIF, animated WebP, MPO) contribute their first frame.

The decode outcome does not depend on the process's warning filters: PIL warnings (decompression-bomb
warning, malformed EXIF, ...) are silenced while decoding, so ``-W error`` cannot turn a decodable image into a
crash or a different status. (``warnings.catch_warnings`` is process-global in Python < 3.14; do not decode
from several threads of one process while other code in it changes warning filters.)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from froq_ray import status as st

DEFAULT_SIZE = 112
# Below PIL's own warning threshold (~89.5 Mpx), so PIL's process-wide check never decides for us.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_RESAMPLE = Image.Resampling.BICUBIC
# Before the bicubic pass, box-reduce by an integer factor while the image stays >= 3x the target.
_REDUCING_GAP = 3.0


@dataclass
class DecodedImage:
    """One decoded item. ``pixels`` is (size, size, 3) uint8 RGB when ``status == "ok"``, else ``None``."""

    pixels: np.ndarray | None
    status: str
    error: str | None
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.status == st.OK


@dataclass
class DecodedBatch:
    """A batch in input order. Failed items have all-zero pixels, a non-OK status and an error message."""

    pixels: np.ndarray  # (N, size, size, 3) uint8
    statuses: list[str]
    errors: list[str | None]
    widths: np.ndarray  # (N,) int32, 0 where decoding failed
    heights: np.ndarray  # (N,) int32, 0 where decoding failed

    def __len__(self) -> int:
        return len(self.statuses)

    @property
    def ok_mask(self) -> np.ndarray:
        return np.fromiter((s == st.OK for s in self.statuses), dtype=bool, count=len(self.statuses))


class _DecodeFailure(Exception):
    """Internal: a bad input, carrying the status it deserves."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(
    data: bytes | None, size: int = DEFAULT_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode one image to a (size, size, 3) RGB uint8 array; never raises for bad data.

    ``None`` (the read failed upstream) gives status ``read_error``; use :func:`decode_batch` with
    ``prior_statuses`` to carry a specific upstream status through.
    """
    if data is None:
        return DecodedImage(None, st.READ_ERROR, "no bytes: the read stage failed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = _decode_one(data, size, max_pixels)
    if isinstance(outcome, _DecodeFailure):
        return DecodedImage(None, outcome.status, outcome.message)
    image, width, height = outcome
    return DecodedImage(np.array(image, dtype=np.uint8), st.OK, None, width, height)


def decode_batch(
    blobs: Sequence[bytes | None],
    size: int = DEFAULT_SIZE,
    *,
    prior_statuses: Sequence[str | None] | None = None,
    prior_errors: Sequence[str | None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedBatch:
    """Decode a batch in order; one output slot per input, never raises for bad data.

    A ``None`` blob is an item whose read already failed: it keeps ``prior_statuses[i]`` and
    ``prior_errors[i]`` when given (``read_error`` and a generic message otherwise).
    ``prior_*`` entries for items that have bytes are ignored: those items are decoded.
    """
    n = len(blobs)
    pixels = np.zeros((n, size, size, 3), dtype=np.uint8)
    statuses: list[str] = []
    errors: list[str | None] = []
    widths = np.zeros(n, dtype=np.int32)
    heights = np.zeros(n, dtype=np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, data in enumerate(blobs):
            if data is None:
                status, error = _prior(prior_statuses, prior_errors, i)
                statuses.append(status)
                errors.append(error)
                continue
            outcome = _decode_one(data, size, max_pixels)
            if isinstance(outcome, _DecodeFailure):
                statuses.append(outcome.status)
                errors.append(outcome.message)
                continue
            image, widths[i], heights[i] = outcome
            pixels[i] = np.asarray(image)
            statuses.append(st.OK)
            errors.append(None)
    return DecodedBatch(pixels, statuses, errors, widths, heights)


def _prior(
    prior_statuses: Sequence[str | None] | None, prior_errors: Sequence[str | None] | None, i: int
) -> tuple[str, str]:
    status = prior_statuses[i] if prior_statuses is not None else None
    error = prior_errors[i] if prior_errors is not None else None
    return status or st.READ_ERROR, error or "no bytes: the read stage failed"


def _decode_one(data: object, size: int, max_pixels: int) -> tuple[Image.Image, int, int] | _DecodeFailure:
    """Decode to an RGB PIL image of (size, size) plus the displayed width/height, or a failure."""
    try:
        return _decode_or_raise(data, size, max_pixels)
    except _DecodeFailure as failure:
        return failure
    except Exception as exc:  # noqa: BLE001 - any decoder error on bad data becomes a row status
        return _DecodeFailure(st.CORRUPT, f"{type(exc).__name__}: {exc}")


def _decode_or_raise(data: object, size: int, max_pixels: int) -> tuple[Image.Image, int, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _DecodeFailure(st.NOT_AN_IMAGE, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise _DecodeFailure(st.EMPTY, "zero-byte input")
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise _DecodeFailure(
            st.CORRUPT,
            f"image too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}",
        )
    orientation = _orientation(image)
    if image.format in ("JPEG", "MPO") and min(width, height) >= 2 * size:
        image.draft(image.mode, (size, size))  # DCT-domain downscale by 2/4/8, result stays >= size
    image.load()
    if orientation in range(2, 9):
        ImageOps.exif_transpose(image, in_place=True)
        if orientation >= 5:  # 5..8 swap the axes
            width, height = height, width
    rgb = _to_rgb8(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return rgb, width, height


def _open(data: bytes | bytearray | memoryview) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        known = sniff_format(bytes(data[:16]))
        if known is None:
            raise _DecodeFailure(
                st.NOT_AN_IMAGE, f"no image decoder recognises these bytes (starts with {bytes(data[:8])!r})"
            ) from None
        raise _DecodeFailure(st.CORRUPT, f"{known} signature but the header cannot be parsed") from None


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent or unreadable (a broken EXIF block must not reject the pixels)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - Pillow may raise anything on a broken EXIF block: orientation 1
        return 1


def _to_rgb8(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(scale_16_to_8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in _ALPHA_MODES:
        return Image.fromarray(composite_on_black(np.asarray(image.convert("RGBA"))), mode="RGB")
    return image.convert("RGB")


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit values -> uint8 by round(v * 255 / 65535) = (v + 128) // 257 (exact: 257 is odd, no ties)."""
    clipped = np.clip(values, 0, 65535).astype(np.uint32)
    return ((clipped + 128) // 257).astype(np.uint8)


def composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB = round(rgb * alpha / 255)."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
)


def sniff_format(head: bytes) -> str | None:
    """Name of the image format whose magic number ``head`` starts with, else ``None``."""
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic and (name != "WEBP" or head[:4] == b"RIFF"):
            return name
    if head[:2] == b"BM" and len(head) >= 10 and head[6:10] == b"\x00\x00\x00\x00":  # reserved fields are 0
        return "BMP"
    return None
