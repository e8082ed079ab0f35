"""The image pipeline on real Pillow: refusals before decoding, RGB within the side limit, no
metadata."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, JpegImagePlugin, PngImagePlugin

from liroo import imaging
from liroo.imaging import ImageRejected, estimate_decode_mb, inspect_image, process_image

MAX_PIXELS = 40_000_000


def encode(im: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def process(
    data: bytes,
    fmt: str = "png",
    max_side: int = 1024,
    max_pixels: int = MAX_PIXELS,
    quality: int = 85,
):
    return process_image(data, max_side=max_side, fmt=fmt, quality=quality, max_pixels=max_pixels)


def decoded(result) -> Image.Image:
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with one tiny IDAT: a decompression bomb's
    header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_with_header(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "red"), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# --- refusals ---------------------------------------------------------------------


# Both ways in refuse before decoding: the header check alone, and the whole pipeline.
ENTRIES = [
    pytest.param(lambda data: inspect_image(data, MAX_PIXELS), id="inspect_image"),
    pytest.param(process, id="process"),
]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("width,height", [(100_000, 100_000), (65_535, 65_535), (7_000, 7_000)])
def test_bomb_header_is_refused_before_decoding(width, height, entry):
    bomb = png_with_header(width, height)
    assert len(bomb) < 200  # tiny file, huge claim
    with pytest.raises(ImageRejected) as err:
        entry(bomb)
    assert err.value.code == "image_too_large"
    assert "40,000,000" in err.value.message


def test_pixel_limit_is_the_setting_not_pillows_default():
    # 50x50 = 2,500 pixels: above a limit of 2,000 but below twice it, which is
    # where Pillow would only warn; the pipeline must refuse it all the same.
    data = encode(Image.new("RGB", (50, 50), "blue"))
    with pytest.raises(ImageRejected) as err:
        process(data, max_pixels=2_000)
    assert err.value.code == "image_too_large"
    assert process(data, max_pixels=2_500).width == 50


def test_jpeg_bomb_header_is_refused():
    with pytest.raises(ImageRejected) as err:
        process(jpeg_with_header(60_000, 60_000), fmt="jpeg")
    assert err.value.code == "image_too_large"


@pytest.mark.parametrize(
    "junk",
    [
        b"<html><body>Internal error</body></html>",
        b'{"error": {"code": 500, "message": "backend error"}}',
        bytes(range(256)) * 4,
    ],
)
@pytest.mark.parametrize("entry", ENTRIES)
def test_junk_is_not_an_image(junk, entry):
    with pytest.raises(ImageRejected) as err:
        entry(junk)
    assert err.value.code == "not_an_image"
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])
def test_too_small_to_be_an_image(data):
    with pytest.raises(ImageRejected) as err:
        process(data)
    assert err.value.code == "image_too_small"


def test_formats_models_do_not_send_are_refused():
    gif = encode(Image.new("RGB", (64, 64), "green"), "GIF")
    with pytest.raises(ImageRejected) as err:
        process(gif)
    assert err.value.code == "not_an_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused_with_a_clear_error(fmt):
    # noise: compresses poorly, so half the file is half the picture
    im = Image.effect_noise((512, 512), 60).convert("RGB")
    data = encode(im, fmt)
    cut = data[: len(data) // 2]
    assert inspect_image(cut, MAX_PIXELS).width == 512  # the header alone is fine
    with pytest.raises(ImageRejected) as err:
        process(cut)
    assert err.value.code == "not_an_image"
    assert "damaged or incomplete" in err.value.message


# --- what comes out -------------------------------------------------------------------


def test_alpha_is_flattened_onto_white():
    im = Image.new("RGBA", (300, 100), (255, 0, 0, 0))  # fully transparent red
    im.paste((0, 0, 0, 128), (100, 0, 200, 100))  # half-transparent black
    im.paste((0, 0, 255, 255), (200, 0, 300, 100))  # opaque blue
    out = decoded(process(encode(im), fmt="png"))
    assert out.mode == "RGB"
    assert out.getpixel((50, 50)) == (255, 255, 255)
    grey = out.getpixel((150, 50))
    assert all(126 <= c <= 128 for c in grey), grey  # black at 50% over white
    assert out.getpixel((250, 50)) == (0, 0, 255)


def test_palette_transparency_is_flattened_too():
    im = Image.new("P", (64, 64), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (32, 0, 64, 64))
    data = encode(im, transparency=0)
    out = decoded(process(data, fmt="png"))
    assert out.mode == "RGB"
    assert out.getpixel((10, 10)) == (255, 255, 255)
    assert out.getpixel((50, 10)) == (0, 255, 0)


@pytest.mark.parametrize(
    "size,expected",
    [
        ((2048, 2048), (1024, 1024)),
        ((2048, 1536), (1024, 768)),
        ((3000, 500), (1024, 171)),
        ((600, 4000), (154, 1024)),
        ((800, 600), (800, 600)),  # never enlarged
    ],
)
def test_fits_within_the_side_limit(size, expected):
    result = process(encode(Image.new("RGBA", size, (10, 200, 30, 255))), fmt="jpeg")
    assert (result.width, result.height) == expected
    out = decoded(result)
    assert out.size == expected and out.mode == "RGB"


@pytest.mark.parametrize(
    "fmt,pil_format,mime,ext",
    [
        ("jpeg", "JPEG", "image/jpeg", "jpg"),
        ("webp", "WEBP", "image/webp", "webp"),
        ("png", "PNG", "image/png", "png"),
    ],
)
def test_output_format(fmt, pil_format, mime, ext):
    result = process(encode(Image.new("RGB", (200, 100), (200, 30, 30))), fmt=fmt)
    assert (result.mime_type, result.extension) == (mime, ext)
    assert imaging.output_extension(fmt) == ext
    out = decoded(result)
    assert out.format == pil_format
    r, g, b = out.getpixel((100, 50))
    assert abs(r - 200) <= 4 and abs(g - 30) <= 4 and abs(b - 30) <= 4


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_metadata_is_stripped(fmt):
    im = Image.new("RGBA", (64, 64), (20, 40, 60, 255))
    exif = Image.Exif()
    exif[0x010E] = "secret description"  # ImageDescription
    exif[0x013B] = "secret artist"  # Artist
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret comment")
    text.add_itxt("prompt", "secret prompt")
    icc = b"\0" * 128  # any bytes: Pillow stores the profile as given
    source = encode(im, exif=exif.tobytes(), pnginfo=text, icc_profile=icc)
    assert b"secret" in source

    data = process(source, fmt=fmt).data
    assert b"secret" not in data
    assert b"Exif" not in data
    out = decoded(process(source, fmt=fmt))
    assert "exif" not in out.info and "icc_profile" not in out.info
    assert not getattr(out, "text", {})


def test_exif_orientation_is_applied_before_it_is_dropped():
    im = Image.new("RGB", (200, 100), "white")
    im.paste((255, 0, 0), (0, 0, 20, 100))  # a red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    out = decoded(process(encode(im, "JPEG", exif=exif.tobytes(), quality=95), fmt="png"))
    assert out.size == (100, 200)
    r, g, b = out.getpixel((50, 5))  # the left edge is now the top
    assert r > 200 and g < 60 and b < 60


def test_big_jpeg_is_decoded_small_through_draft(monkeypatch):
    """A 4096-pixel JPEG is decoded by libjpeg at 1/4 size, and still comes out right."""
    im = Image.new("RGB", (4096, 4096), (255, 0, 0))
    im.paste((0, 0, 255), (2048, 0, 4096, 4096))
    data = encode(im, "JPEG", quality=95)

    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # records what the real draft() decided, and returns it unchanged
        result = real_draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = process(data, fmt="png")
    assert drafted == [(1024, 1024)]  # decoded at 1/4: one 4 MB frame instead of 64 MB
    out = decoded(result)
    assert out.size == (1024, 1024)
    left, right = out.getpixel((200, 512)), out.getpixel((800, 512))
    assert left[0] > 240 and left[2] < 15 and right[2] > 240 and right[0] < 15


def test_estimate_grows_with_dimensions_and_covers_the_frames():
    sizes = [512, 1024, 2048, 4096]
    estimates = [estimate_decode_mb(inspect_image(png_with_header(s, s), 10**9)) for s in sizes]
    assert estimates == sorted(estimates) and len(set(estimates)) == len(estimates)
    # A 4096x4096 RGBA frame alone is 64 MB; flattening needs a second full frame.
    assert estimates[-1] >= 128
    # JPEGs decode through draft(), so the same dimensions need far less.
    assert (
        estimate_decode_mb(inspect_image(jpeg_with_header(4096, 4096), 10**9)) < estimates[-1] / 4
    )


def test_inspect_reads_the_header():
    info = inspect_image(png_with_header(1024, 768), MAX_PIXELS)
    assert (info.width, info.height, info.format, info.mode) == (1024, 768, "PNG", "RGBA")
    assert info.pixels == 1024 * 768


def test_rejection_codes_are_the_documented_ones():
    codes = set()
    for data in (b"", b"x" * 100, png_with_header(10_000, 10_000)):
        with pytest.raises(ImageRejected) as err:
            process(data)
        codes.add(err.value.code)
    assert codes == {"image_too_small", "not_an_image", "image_too_large"}
    # Below the smallest valid WebP, so no real image is "too small".
    assert imaging.MIN_IMAGE_BYTES <= 26


def test_a_grainy_picture_is_encoded_not_refused():
    """Noise-like pixels need more than Pillow's one-byte-a-pixel buffer for an optimized JPEG."""
    import os

    noise = Image.frombytes("RGB", (512, 512), os.urandom(512 * 512 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=1)
    processed = process_image(
        buffer.getvalue(), max_side=1024, fmt="jpeg", quality=85, max_pixels=40_000_000
    )
    assert processed.data[:2] == b"\xff\xd8" and (processed.width, processed.height) == (512, 512)
