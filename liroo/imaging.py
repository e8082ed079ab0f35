"""The safe image pipeline: every generated picture passes through ``process_image``.

Bytes from a model are untrusted. The header is read first and anything that is
not a PNG, JPEG or WebP, or whose pixel count is above the limit, is refused
before a single pixel is decoded (``inspect_image``); ``estimate_decode_mb``
turns the header into the memory the decode will need, so callers can reserve
it from the governor first. Then: decode (JPEGs already shrunk by libjpeg's
``draft``), flatten alpha onto white, convert to RGB, fit within the side limit
(``reduce`` then Lanczos), drop all metadata, encode. Each intermediate image
is closed as soon as the next one exists, so the peak stays near two frames.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from .settings import Settings

# The formats models return. Refusing everything else keeps Pillow's rarer
# decoders (TIFF, PSD, EPS ...) and their bugs out of reach of untrusted bytes.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")

# Shorter than any real PNG, JPEG or WebP file: an empty or cut-off reply.
MIN_IMAGE_BYTES = 24

# Shrink by whole factors first, as far as the target allows (libjpeg's DCT
# scaling via draft() for JPEGs, Image.reduce()'s box averaging otherwise),
# then Lanczos for the remaining fraction. On the bench's 2048-pixel pictures
# that is ~6 ms instead of ~40 ms, within ~48 dB PSNR of pure Lanczos.
REDUCING_GAP = 1.0

WHITE = (255, 255, 255)

# Encoder options per stored format. JPEG keeps full chroma resolution
# (subsampling 4:4:4): illustrations have sharp coloured edges that 4:2:0
# smears (on the bench's pictures 4:2:0 saves ~25% of the bytes and loses
# ~1.5 dB PSNR); optimize only tunes the Huffman tables (~4 ms, 5-10% smaller).
# PNG skips optimize=True: twice the time for <1% fewer bytes.
_ENCODERS = {
    "jpeg": (
        "JPEG",
        "image/jpeg",
        "jpg",
        lambda q: {"quality": q, "optimize": True, "subsampling": 0},
    ),
    "webp": ("WEBP", "image/webp", "webp", lambda q: {"quality": q, "method": 4}),
    "png": ("PNG", "image/png", "png", lambda q: {"compress_level": 6}),
}

# Bytes per pixel of Pillow's in-memory frames: every multi-band mode is
# stored as 32-bit pixels, so RGB costs as much as RGBA.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
_MB = 1024 * 1024

# EXIF Orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ValueError):
    """The bytes are not an image we will process. ``code`` is stable, ``message`` is a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # "PNG", "JPEG" or "WEBP"
    mode: str  # Pillow mode as stored in the file: "RGBA", "RGB", "P", "L", ...

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    mime_type: str
    extension: str  # without the dot: "jpg", "webp" or "png"
    width: int
    height: int


def output_extension(fmt: str) -> str:
    """The file extension ``process_image`` gives ``fmt`` ("jpg", "webp", "png"), e.g. for a cache
    key."""
    return _ENCODERS[fmt][2]


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Read only the header; refuse junk and images above ``max_pixels`` without decoding them."""
    im = _open(data, max_pixels)
    try:
        return ImageInfo(im.width, im.height, im.format, im.mode)
    finally:
        im.close()


def estimate_decode_mb(info: ImageInfo, max_side: int = 1024) -> float:
    """Peak memory (MB) that ``process_image`` will need for an image with this header.

    Stages, each with the frames alive at once: decode (+ RGBA copy for
    palette/grey images with alpha), flatten (source + white RGB canvas),
    resize (RGB source + Pillow's one-pass intermediate + output), encode
    (output + encoder buffers, about one more output frame).
    """
    width, height = info.width, info.height
    if info.format == "JPEG":
        width, height = _draft_size(width, height, max_side)
    pixels = width * height
    source = pixels * _BYTES_PER_PIXEL.get(info.mode, 4)
    out_w, out_h = _fit(width, height, max_side)
    output = out_w * out_h * 4

    if info.mode in ("RGBA", "LA", "PA", "P"):
        # P/LA/PA are first converted to RGBA; then RGBA + RGB canvas.
        converted = 0 if info.mode == "RGBA" else pixels * 4
        flatten = source + converted + pixels * 4
    else:
        flatten = source + pixels * 4 if info.mode != "RGB" else source
    resize = pixels * 4 + out_w * height * 4 + output
    encode = 2 * output
    return max(flatten, resize, encode) / _MB + 1.0  # +1 MB: decoder and codec state


def process_image(
    data: bytes, *, max_side: int, fmt: str, quality: int, max_pixels: int
) -> ProcessedImage:
    """Untrusted image bytes -> an RGB image within ``max_side``, metadata-free, encoded as
    ``fmt``."""
    pil_format, mime_type, extension, options = _ENCODERS[fmt]
    im = _open(data, max_pixels)
    try:
        target = _fit(im.width, im.height, max_side)
        box = None
        if im.format == "JPEG" and target != im.size:
            # libjpeg decodes straight to 1/2, 1/4 or 1/8 size: less work, a smaller frame.
            drafted = im.draft(
                "RGB", (int(target[0] * REDUCING_GAP), int(target[1] * REDUCING_GAP))
            )
            box = drafted[1] if drafted else None
        try:
            with _bomb_warnings_as_errors():
                im.load()
            # Metadata is dropped, so an EXIF rotation must be applied to the pixels.
            # (Read after load(): a PNG may keep its EXIF after the pixel data.)
            transpose = _EXIF_TRANSPOSE.get(_orientation(im))
            im = _to_rgb(im)
        except MemoryError:
            raise
        # Pillow raises many types for damaged data (OSError, SyntaxError, ValueError ...)
        except Exception:
            raise ImageRejected(
                "not_an_image", "The image data is damaged or incomplete."
            ) from None
        if im.size != target or box is not None:
            im = _replace(
                im, im.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
            )
        if transpose is not None:
            im = _replace(im, im.transpose(transpose))
        im.info.clear()  # no EXIF, XMP, ICC or text chunks reach the output
        out = io.BytesIO()
        try:
            im.save(out, pil_format, **options(quality))
        except OSError:
            # Pillow sizes JPEG's optimize buffer at one byte a pixel; a grainy (noise-like)
            # picture at 4:4:4 needs more and fails. Without optimize libjpeg streams its output.
            out = io.BytesIO()
            im.save(out, pil_format, **{**options(quality), "optimize": False})
        return ProcessedImage(out.getvalue(), mime_type, extension, im.width, im.height)
    finally:
        im.close()


def process_for_storage(data: bytes, settings: Settings) -> ProcessedImage:
    """``process_image`` as the service stores pictures: LIROO_MAX_IMAGE_SIDE,
    LIROO_IMAGE_FORMAT, LIROO_IMAGE_QUALITY and LIROO_MAX_IMAGE_PIXELS."""
    return process_image(
        data,
        max_side=settings.max_image_side,
        fmt=settings.image_format,
        quality=settings.image_quality,
        max_pixels=settings.max_image_pixels,
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if len(data) < MIN_IMAGE_BYTES:
        raise ImageRejected("image_too_small", "The image data is too short to be an image.")
    # One value per process (it comes from Settings), so concurrent calls all
    # write the same number: Pillow then refuses the header itself in open().
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with _bomb_warnings_as_errors():
            im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("image_too_large", _too_large_message(max_pixels)) from None
    except MemoryError:
        raise
    except Exception:  # UnidentifiedImageError, or a header damaged enough to fail parsing
        raise ImageRejected("not_an_image", "The data is not a PNG, JPEG or WebP image.") from None
    # The gate itself, independent of Pillow's global and of warning filters.
    if im.width < 1 or im.height < 1 or im.width * im.height > max_pixels:
        im.close()
        raise ImageRejected("image_too_large", _too_large_message(max_pixels))
    return im


@contextmanager
def _bomb_warnings_as_errors():
    # catch_warnings() swaps the process-wide filter list (it is not per-thread
    # before Python 3.14), but every thread installs the same filter, so an
    # interleaving can at worst leave that filter in place after the block
    # (harmless) or let one warning through as a warning; the explicit pixel
    # check in _open() stays the gate either way. A filter set once at import
    # would be undone by anything that resets filters (pytest does).
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _too_large_message(max_pixels: int) -> str:
    return f"The image has more than {max_pixels:,} pixels."


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size libjpeg's draft mode will decode to (mirrors JpegImageFile.draft)."""
    target = _fit(width, height, max_side)
    if target == (width, height):
        return width, height
    wanted = (int(target[0] * REDUCING_GAP), int(target[1] * REDUCING_GAP))
    scale = min(width // wanted[0], height // wanted[1])
    s = next(s for s in (8, 4, 2, 1) if scale >= s)
    return (width + s - 1) // s, (height + s - 1) // s


def _to_rgb(im: Image.Image) -> Image.Image:
    """Flatten any transparency onto white and return an RGB image; ``im`` is closed when
    replaced."""
    if im.mode == "P" and "transparency" in im.info or im.mode in ("LA", "PA"):
        im = _replace(im, im.convert("RGBA"))
    if im.mode == "RGBA":
        canvas = Image.new("RGB", im.size, WHITE)
        canvas.paste(im, mask=im)  # an RGBA mask means "use its alpha": no separate band copy
        return _replace(im, canvas)
    if im.mode != "RGB":
        return _replace(im, im.convert("RGB"))
    return im


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    if new is not old:
        old.close()
    return new


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)  # Orientation
    except Exception:  # a damaged EXIF block is metadata we drop anyway
        return None
