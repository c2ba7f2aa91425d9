"""In-memory test images: synthetic face-like crops, encoders for every format the decoder handles, bad inputs.

Small API meant for every test module:

- :func:`make_face_like_image` - deterministic smooth RGB image with a face-ish layout and some texture.
- :func:`encode` - numpy array -> image bytes in any PIL format (mode inferred from shape/dtype or given).
- :func:`encode_palette` - palette (mode "P") image, optionally with a transparent index.
- :func:`encode_png_rgb16` - a 16-bit-per-channel RGB PNG written by hand (PIL cannot write one).
- :func:`with_exif_orientation` / :func:`oriented` - an image stored with an EXIF orientation tag, and the
  displayed result that tag implies (computed with numpy, independently of PIL).
- :func:`bad_inputs` - named bad byte strings; :data:`BAD_INPUT_STATUS` - the row status each must get.
- :func:`write_identity_tree` - a small identity-foldered JPEG tree on disk (like lfw-dev/images).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from froq_ray import status as st

EXIF_ORIENTATION_TAG = 0x0112


def make_face_like_image(seed: int = 0, size: int | tuple[int, int] = 112) -> np.ndarray:
    """(H, W, 3) uint8: dark background, skin-toned ellipse, eyes and mouth, soft gradients, mild texture.

    Smooth regions plus edges make JPEG sizes realistic (a few KB at 112x112) and give blur/downscale
    something to remove. ``size`` is an int (square) or (height, width).
    """
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    background = rng.uniform(20, 90, size=3) * (0.6 + 0.4 * y[..., None])
    skin = rng.uniform([150, 100, 80], [230, 170, 140])
    face = ((x - 0.5) / 0.32) ** 2 + ((y - 0.55) / 0.42) ** 2 < 1.0
    image = np.where(face[..., None], skin * (1.05 - 0.25 * y[..., None]), background)
    for cx in (0.36, 0.64):  # eyes
        eye = ((x - cx) / 0.07) ** 2 + ((y - 0.45) / 0.035) ** 2 < 1.0
        image[eye] = rng.uniform(10, 60, size=3)
    mouth = ((x - 0.5) / 0.13) ** 2 + ((y - 0.75) / 0.03) ** 2 < 1.0
    image[mouth] = rng.uniform([120, 30, 30], [180, 70, 70])
    image += rng.normal(0.0, 6.0, size=(height, width, 1))  # luminance texture, like skin and hair
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **save_kwargs: object) -> bytes:
    """Encode ``array`` as ``fmt`` ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", ...).

    Mode is inferred unless given: (H, W) bool -> "1", (H, W) uint8 -> "L", (H, W) uint16 -> "I;16", (H, W, 2) -> "LA",
    (H, W, 3) -> "RGB", (H, W, 4) -> "RGBA". Pass ``mode="CMYK"`` for a 4-channel CMYK array.
    Extra keyword arguments go to ``PIL.Image.save`` (quality, lossless, exif, ...).
    """
    image = Image.fromarray(array, mode=mode) if mode is not None else _from_array(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:  # PIL infers "1" from bool, "L" from uint8, "I;16" from uint16
        return Image.fromarray(array)
    channels_to_mode = {2: "LA", 3: "RGB", 4: "RGBA"}
    return Image.fromarray(array, mode=channels_to_mode[array.shape[2]])


def encode_palette(
    indices: np.ndarray, palette: np.ndarray, fmt: str = "PNG", transparent_index: int | None = None
) -> bytes:
    """Mode "P" image from (H, W) uint8 ``indices`` into a (K, 3) uint8 ``palette``."""
    image = Image.fromarray(indices.astype(np.uint8), mode="L").convert("P")
    image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    kwargs: dict[str, object] = {} if transparent_index is None else {"transparency": transparent_index}
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def encode_png_rgb16(array: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> 16-bit RGB PNG bytes (colour type 2, bit depth 16, no filtering)."""
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return png_from_chunks([(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Assemble a PNG from (type, payload) chunks with correct lengths and CRCs."""
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        out.append(struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc))
    return b"".join(out)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB but carries no pixel data (cheap 'bomb' header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return png_from_chunks([(b"IHDR", header), (b"IEND", b"")])


def with_exif_orientation(
    stored: np.ndarray, orientation: int, fmt: str = "PNG", **save_kwargs: object
) -> bytes:
    """Encode ``stored`` (as it lies in the file) with EXIF orientation ``orientation`` (1..8)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **save_kwargs)


def oriented(stored: np.ndarray, orientation: int) -> np.ndarray:
    """The displayed image for EXIF ``orientation`` (TIFF/EXIF spec), by numpy flips/rotations only.

    1 normal, 2 mirror horizontal, 3 rotate 180, 4 mirror vertical, 5 transpose (mirror along the
    main diagonal), 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
    """
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.rot90(a, k=-1)[::-1, :],
        8: lambda a: np.rot90(a, k=1),
    }
    return np.ascontiguousarray(transforms[orientation](stored))


def sample_jpeg(seed: int = 0, size: int = 112, quality: int = 90) -> bytes:
    return encode(make_face_like_image(seed, size), "JPEG", quality=quality)


def bad_inputs() -> dict[str, bytes]:
    """Named bad inputs; :data:`BAD_INPUT_STATUS` gives the status each must decode to."""
    jpeg = sample_jpeg(seed=1)
    png = encode(make_face_like_image(seed=2), "PNG")
    damaged_ihdr = bytearray(png)
    damaged_ihdr[20] ^= 0xFF  # inside IHDR's width field: the chunk CRC no longer matches
    return {
        "empty": b"",
        "text": b"this is not an image, just some text\n" * 4,
        "html": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "random_bytes": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "jpeg_magic_only": jpeg[:3],
        "jpeg_header_only": jpeg[:200],
        "jpeg_truncated_half": jpeg[: len(jpeg) // 2],
        "jpeg_truncated_end": jpeg[:-16],
        "jpeg_missing_eoi": jpeg[:-2],
        "png_truncated": png[: len(png) // 2],
        "png_damaged_header": bytes(damaged_ihdr),
        "webp_truncated": (webp := encode(make_face_like_image(seed=4), "WEBP", quality=80))[
            : len(webp) // 2
        ],
        "decompression_bomb_header": png_header_only(30000, 30000),
    }


BAD_INPUT_STATUS: dict[str, str] = {
    "empty": st.EMPTY,
    "text": st.NOT_AN_IMAGE,
    "html": st.NOT_AN_IMAGE,
    "random_bytes": st.NOT_AN_IMAGE,
    "jpeg_magic_only": st.CORRUPT,
    "jpeg_header_only": st.CORRUPT,
    "jpeg_truncated_half": st.CORRUPT,
    "jpeg_truncated_end": st.CORRUPT,
    "jpeg_missing_eoi": st.CORRUPT,
    "png_truncated": st.CORRUPT,
    "png_damaged_header": st.CORRUPT,
    "webp_truncated": st.CORRUPT,
    "decompression_bomb_header": st.CORRUPT,
}


def write_identity_tree(
    root: Path, identities: int = 3, per_identity: int = 2, size: int = 112
) -> list[Path]:
    """Write ``root/<Identity_k>/<Identity_k>_000j.jpg`` JPEGs of face-like images; returns their paths."""
    paths = []
    for k in range(identities):
        name = f"Identity_{k}"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            path = folder / f"{name}_{j + 1:04d}.jpg"
            path.write_bytes(encode(make_face_like_image(seed=100 * k + j, size=size), "JPEG", quality=90))
            paths.append(path)
    return paths
