"""The guide's image pipeline against ours, on model-like pictures, one fresh process per run.

    .venv/bin/python bench/imaging.py [--formats jpeg,webp,png]

The script draws 8 illustration-like RGBA pictures (gradients, inked shapes,
soft shading, fine grain, transparent soft edges; 1024x1024 and 2048x2048),
then runs each pipeline on each picture in its own new Python process (this
script in ``--worker`` mode), so no run inherits another's heap or caches.
Each worker measures the pipeline call only: wall time, output bytes, and peak
RSS increase (the kernel's high-water mark, reset through
/proc/self/clear_refs just before the call, minus RSS at that moment).

Guide's pipeline: verify, reopen, RGBA composited onto white through
``split()[3]``, ``thumbnail((1024, 1024), LANCZOS)``, PNG ``optimize=True,
compress_level=6``. Ours: ``liroo.imaging.process_for_storage`` with the settings
(LIROO_IMAGE_FORMAT / LIROO_IMAGE_QUALITY from the environment, else the
defaults). Similarity: PSNR of our output against the guide's (both
1024-pixel RGB), computed from Pillow's difference histogram.

The table also tries the other formats (``--formats``) so the default can be
chosen from measurements; the last line is for the configured format:
``time_ratio=… bytes_ratio=… peak_ratio=… psnr_db=…`` (ours / guide's; psnr_db
is the worst image's).
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (1024, 1024, 1024, 1024, 2048, 2048, 2048, 2048)


# --- model-like pictures ------------------------------------------------------

def make_picture(seed: int, side: int) -> Image.Image:
    """An illustration-like RGBA picture: sky gradient, glow, inked shapes, shading, grain, soft
    alpha edge."""
    rnd = random.Random(seed)
    palette = [tuple(rnd.randrange(256) for _ in range(3)) for _ in range(8)]

    sky = ImageOps.colorize(Image.linear_gradient("L").resize((side, side)), palette[0], palette[1])
    glow = Image.radial_gradient("L").resize((side, side))
    glow_colour = Image.new("RGB", (side, side), palette[2])
    img = Image.composite(sky, glow_colour, glow)  # the glow fades out towards its edge

    draw = ImageDraw.Draw(img)
    ink = (30, 25, 35)
    line = max(2, side // 300)
    # Rolling hills with outlines.
    for i in range(3):
        base = int(side * (0.55 + 0.12 * i))
        points = [
            (x, base + int(side * 0.05 * math.sin(x / side * (3 + i) * math.pi + seed + i)))
            for x in range(0, side + 16, 16)
        ]
        polygon = points + [(side, side), (0, side)]
        draw.polygon(polygon, fill=palette[3 + i], outline=ink, width=line)
    # Characters and props: circles, rounded boxes, stars, with ink outlines and highlights.
    for _ in range(14):
        x, y = rnd.randrange(side), rnd.randrange(side)
        r = rnd.randrange(side // 40, side // 8)
        colour = palette[rnd.randrange(len(palette))]
        kind = rnd.randrange(3)
        if kind == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=ink, width=line)
            draw.ellipse((x - r // 2, y - r // 2, x - r // 5, y - r // 5), fill=(255, 255, 240))
        elif kind == 1:
            draw.rounded_rectangle(
                (x - r, y - r // 2, x + r, y + r),
                radius=r // 4,
                fill=colour,
                outline=ink,
                width=line,
            )
        else:
            star = [
                (
                    x + (r if k % 2 == 0 else r // 2) * math.cos(k * math.pi / 5),
                    y + (r if k % 2 == 0 else r // 2) * math.sin(k * math.pi / 5),
                )
                for k in range(10)
            ]
            draw.polygon(star, fill=colour, outline=ink, width=line)
    # Hatching in a corner, as pen texture.
    for k in range(0, side // 3, max(4, side // 200)):
        draw.line((k, 0, 0, k), fill=ink, width=1)

    # Soft shading: a blurred copy multiplied in, as painted light and shadow.
    shade = img.filter(ImageFilter.GaussianBlur(side / 60))
    img = Image.blend(img, shade, 0.35)

    # Fine grain, as in generated images: uniform noise of +-5 levels, per channel.
    amplitude = 5
    bands = []
    for channel in img.split():
        noise = Image.frombytes("L", img.size, rnd.randbytes(side * side)).point(
            lambda v: v * (2 * amplitude) // 255
        )
        bands.append(ImageChops.add(channel, noise, scale=1.0, offset=-amplitude))
    img = Image.merge("RGB", bands)

    # Transparency: an opaque rounded card whose edge fades out (a sticker on a transparent page).
    alpha = Image.new("L", (side, side), 0)
    margin = side // 12
    ImageDraw.Draw(alpha).rounded_rectangle(
        (margin, margin, side - margin, side - margin), radius=side // 8, fill=255
    )
    alpha = alpha.filter(ImageFilter.GaussianBlur(side / 40))
    img.putalpha(alpha)
    return img


# --- the two pipelines ---------------------------------------------------------


def guide_pipeline(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data))
    img.verify()
    img = Image.open(io.BytesIO(data))
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.split()[3])
        img = background
    img.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True, compress_level=6)
    img.close()
    return out.getvalue()


def ours_pipeline(data: bytes) -> bytes:
    from liroo.imaging import process_for_storage
    from liroo.settings import Settings

    return process_for_storage(data, Settings.from_env()).data


# --- worker: one pipeline, one picture, one process ---------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def worker(pipeline: str, src: str, dst: str) -> None:
    from liroo import imaging  # imports and Pillow's plugin registry are loaded before measuring

    Image.init()
    data = Path(src).read_bytes()
    info = imaging.inspect_image(data, 10**9)
    run = guide_pipeline if pipeline == "guide" else ours_pipeline
    gc.collect()
    exact = _reset_peak()
    base_kb = _status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = run(data)
    seconds = time.perf_counter() - started
    peak_kb = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(dst).write_bytes(out)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "bytes": len(out),
                "peak_mb": (peak_kb - base_kb) / 1024,
                "estimate_mb": imaging.estimate_decode_mb(info),
                "exact_peak": exact,
            }
        )
    )


def run_worker(pipeline: str, src: Path, dst: Path, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", pipeline, str(src), str(dst)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- similarity ------------------------------------------------------------------


def psnr(a_bytes: bytes, b_bytes: bytes) -> float:
    with Image.open(io.BytesIO(a_bytes)) as a, Image.open(io.BytesIO(b_bytes)) as b:
        a, b = a.convert("RGB"), b.convert("RGB")
        if a.size != b.size:
            raise ValueError(f"sizes differ: {a.size} vs {b.size}")
        hist = ImageChops.difference(a, b).histogram()
        count = a.width * a.height * 3
    squared = sum((i % 256) ** 2 * n for i, n in enumerate(hist))
    mse = squared / count
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


# --- main ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--formats",
        default="jpeg,webp,png",
        help="our output formats to compare (the configured one is always included)",
    )
    args = parser.parse_args()

    from liroo.settings import Settings

    configured = Settings.from_env()
    formats = [configured.image_format] + [
        f for f in args.formats.split(",") if f and f != configured.image_format
    ]

    with tempfile.TemporaryDirectory(prefix="liroo-bench-") as tmp:
        tmpdir = Path(tmp)
        inputs = []
        for seed, side in enumerate(SIZES):
            path = tmpdir / f"picture-{seed}-{side}.png"
            picture = make_picture(seed, side)
            picture.save(path, "PNG")  # what a model returns: a plain PNG
            picture.close()
            inputs.append(path)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LIROO_IMAGE_FORMAT")}
        print(
            f"{'picture':<22}{'pipeline':<11}{'ms':>8}{'bytes':>10}"
            f"{'peak MB':>9}{'est MB':>8}{'psnr dB':>9}"
        )
        results: dict[str, list[dict]] = {"guide": []}
        for fmt in formats:
            results[fmt] = []
        for path in inputs:
            guide = run_worker("guide", path, tmpdir / "guide.png", base_env)
            guide_out = (tmpdir / "guide.png").read_bytes()
            results["guide"].append(guide)
            rows = [("guide png", guide, None)]
            for fmt in formats:
                dst = tmpdir / f"ours.{fmt}"
                ours = run_worker("ours", path, dst, {**base_env, "LIROO_IMAGE_FORMAT": fmt})
                ours["psnr_db"] = psnr(dst.read_bytes(), guide_out)
                results[fmt].append(ours)
                rows.append((f"ours {fmt}", ours, ours["psnr_db"]))
            for label, r, similarity in rows:
                print(
                    f"{path.name:<22}{label:<11}{r['seconds'] * 1000:>8.1f}{r['bytes']:>10}"
                    f"{r['peak_mb']:>9.1f}"
                    f"{r['estimate_mb'] if label != 'guide png' else float('nan'):>8.1f}"
                    f"{similarity if similarity is not None else float('nan'):>9.2f}"
                )

        if not all(r["exact_peak"] for rs in results.values() for r in rs):
            print(
                "note: /proc/self/clear_refs unavailable; peak figures are ru_maxrss deltas (less "
                "exact)"
            )

        def ratios(fmt: str) -> dict[str, float]:
            guide, ours = results["guide"], results[fmt]
            return {
                "time_ratio": sum(r["seconds"] for r in ours) / sum(r["seconds"] for r in guide),
                "bytes_ratio": sum(r["bytes"] for r in ours) / sum(r["bytes"] for r in guide),
                "peak_ratio": sum(r["peak_mb"] for r in ours) / sum(r["peak_mb"] for r in guide),
                "psnr_db": min(r["psnr_db"] for r in ours),
            }

        print()
        guide = results["guide"]
        print(
            f"guide: {sum(r['seconds'] for r in guide) / len(guide) * 1000:.0f} ms/image, "
            f"{sum(r['bytes'] for r in guide) / len(guide) / 1024:.0f} KiB/image, "
            f"peak +{max(r['peak_mb'] for r in guide):.1f} MB"
        )
        for fmt in formats:
            ours = results[fmt]
            line = " ".join(f"{k}={v:.3f}" for k, v in ratios(fmt).items())
            print(
                f"ours {fmt:<5} {sum(r['seconds'] for r in ours) / len(ours) * 1000:.0f} ms/image, "
                f"{sum(r['bytes'] for r in ours) / len(ours) / 1024:.0f} KiB/image, "
                f"peak +{max(r['peak_mb'] for r in ours):.1f} MB "
                f"(estimate max {max(r['estimate_mb'] for r in ours):.1f})"
                f": {line}"
            )
        print(f"configured format: {configured.image_format}, quality {configured.image_quality}")
        print(" ".join(f"{k}={v:.3f}" for k, v in ratios(configured.image_format).items()))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
