"""Robust image reading and atomic image writing.

``read_image`` turns whatever a user drops into a photo folder into an RGB uint8
array, or raises :class:`ImageReadError` with a one-line reason: empty, corrupt
or truncated files, text named ``.jpg``, tiny images, decompression bombs (the
header's dimensions are checked before any pixel is decoded), and every pixel
format PIL opens (grayscale, palette, RGBA/LA composited on white, CMYK, 16-bit).
Phone photos are turned upright from their EXIF orientation tag.
"""

import contextlib
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_MEGAPIXELS = 50.0
DEFAULT_MIN_SIDE = 32

# What PIL raises on broken files besides UnidentifiedImageError: truncated data
# (OSError), broken PNG chunks (SyntaxError), bad headers or EXIF blocks
# (ValueError, EOFError) and damaged deflate streams (zlib.error).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(Exception):
    """A file that cannot be used as a photo; ``str()`` is one line naming it and why."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


def read_image(path, min_side=DEFAULT_MIN_SIDE, max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Read ``path`` as an upright RGB uint8 array of shape (H, W, 3).

    Args:
        path: image file (any format PIL reads; the extension is not trusted).
        min_side: smallest accepted width and height, in pixels.
        max_megapixels: largest accepted width x height / 1e6, checked on the header
            before decoding (decompression-bomb guard).

    Raises:
        ImageReadError: the file is missing, empty, not an image, corrupt or
            truncated, too small, too large, or in a pixel mode that cannot be
            turned into RGB.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            _check_dimensions(path, image.size, min_side, max_megapixels)
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(path, upright)
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"decompression-bomb guard: {error}") from None
    except _DECODE_ERRORS as error:
        raise ImageReadError(path, f"corrupt or truncated image ({error})") from None
    return rgb


def _check_file(path):
    """Raise ImageReadError unless ``path`` is a non-empty regular file."""
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")


def _check_dimensions(path, size, min_side, max_megapixels):
    """Reject header dimensions outside [min_side, max_megapixels] before decoding."""
    width, height = size
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageReadError(
            path,
            f"{width}x{height} px = {megapixels:.1f} MP exceeds the limit of {max_megapixels:g} MP "
            "(decompression-bomb guard; raise max_megapixels to accept it)",
        )
    if min(width, height) < min_side:
        raise ImageReadError(path, f"{width}x{height} px is below the minimum side of {min_side} px")


def _to_rgb(path, image):
    """Convert a decoded PIL image of any mode to an RGB uint8 array."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "F":
        raise ImageReadError(path, "32-bit float pixels are not supported (expected 8- or 16-bit)")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    try:
        return np.array(image.convert("RGB"), dtype=np.uint8)
    except ValueError as error:
        raise ImageReadError(path, f"pixel mode {image.mode} cannot be converted to RGB ({error})") from None


def write_image(path, rgb, overwrite=False, quality=95):
    """Write an RGB uint8 array atomically (temp file in the same folder + rename).

    The format follows the extension (.jpg, .png, ...). An existing file is
    refused with FileExistsError unless ``overwrite`` is true; a failed write
    leaves neither a partial file nor the temp file behind.
    """
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_image({path}): expected a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"write_image({path}): unknown image extension {path.suffix!r} (use .jpg or .png)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    options = {"quality": quality} if image_format == "JPEG" else {}
    with atomic_output(path) as temp_name:
        Image.fromarray(rgb).save(temp_name, format=image_format, **options)
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temp file name beside ``path``; on success rename it onto ``path``, else delete it.

    Readers never see a half-written ``path``: the rename (``os.replace``) is
    atomic within one folder. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    usual_permissions(temp_name)
    try:
        yield temp_name
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)


def usual_permissions(path):
    """Give a file made by ``tempfile.mkstemp`` the permissions a plain ``open`` would (0666
    less the umask): mkstemp's 0600 would make the renamed output private."""
    os.chmod(path, 0o666 & ~_current_umask())


def _current_umask():
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
