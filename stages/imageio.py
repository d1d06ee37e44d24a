"""Decoding untrusted image bytes into clean RGB arrays, and encoding PNGs.

Every input photo goes through ``decode_image``: whatever arrives (16-bit PNG,
grayscale, CMYK JPEG, RGBA, EXIF-rotated phone photos) comes out as an upright
(H, W, 3) uint8 RGB array, and anything unusable raises a SampleError with its
own code, so that a bad file becomes one failed manifest row.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.errors import SampleError

# Limits on input photos. The upper bound is checked from the header, before
# decoding, so a decompression bomb (a tiny file declaring 30000x30000) costs nothing.
MAX_PIXELS = 64_000_000  # 8000 x 8000
MIN_SIDE = 64  # below this no detector finds landmarks worth fitting

# Error codes of this module (documented in README's error table).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED_IMAGE = "truncated_image"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_TOO_SMALL = "image_too_small"
ANIMATED_IMAGE = "animated_image"


def decode_image(data: bytes, source: str = "<bytes>", min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode image bytes to an upright (H, W, 3) uint8 RGB array, or raise SampleError."""
    if len(data) == 0:
        raise SampleError(EMPTY_FILE, f"{source} is an empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise SampleError(IMAGE_TOO_LARGE,
                                  f"{source} declares {width}x{height} pixels (limit {MAX_PIXELS:,})")
            if getattr(image, "n_frames", 1) > 1:
                raise SampleError(ANIMATED_IMAGE, f"{source} is an animated image with {image.n_frames} frames")
            image.load()
    except SampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise SampleError(IMAGE_TOO_LARGE, f"{source}: {error}") from error
    except UnidentifiedImageError as error:
        raise SampleError(NOT_AN_IMAGE, f"{source} is not a readable image") from error
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow reports cut-off files as OSError ("image file is truncated", "broken data stream").
        raise SampleError(TRUNCATED_IMAGE, f"{source} is truncated or corrupt: {error}") from error

    image = ImageOps.exif_transpose(image)
    rgb = _to_rgb8(image)
    if min(rgb.shape[:2]) < min_side:
        raise SampleError(IMAGE_TOO_SMALL,
                          f"{source} is {rgb.shape[1]}x{rgb.shape[0]} pixels; at least {min_side} per side needed")
    return rgb


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; 16-bit data is scaled, alpha composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        gray = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(array * (255.0 if array.max(initial=0) <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if image.mode == "RGB;16" or (image.mode == "RGB" and np.asarray(image).dtype != np.uint8):
        array = np.asarray(image, dtype=np.float64)
        return np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def encode_png(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) or (H, W) uint8 array as PNG bytes."""
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()
