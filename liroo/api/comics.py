"""POST /generate_comic and POST /generate_image."""

from __future__ import annotations

from flask import Blueprint

from .. import routes
from ..generation.comic import generate_comic
from ..generation.images import ImageJob, make_image
from ..generation.options import NO_TEXT_IN_PICTURE, style_phrase
from ..generation.results import ImageResult
from .runner import parse_body, run_generation

bp = Blueprint("comics", __name__)


@routes.COMIC.view(bp)
def comic():
    body = parse_body(routes.COMIC.request)
    return run_generation(
        body, lambda ctx: generate_comic(ctx, body.text, body.level, body.image_style).body()
    )


@routes.IMAGE.view(bp)
def image():
    body = parse_body(routes.IMAGE.request)

    def work(ctx):
        ctx.progress.plan(1, "Drawing the picture")
        prompt = body.prompt
        if body.context:
            prompt += f"\nContext: {body.context}"
        prompt += (
            f"\nStyle: {style_phrase(body.image_style)}. Suitable for a {body.level} "
            f"reader. {NO_TEXT_IN_PICTURE}"
        )
        url = make_image(
            ctx,
            ImageJob(
                prompt=prompt,
                cache_parts=(body.image_style, body.level),
                aspect_ratio=body.aspect_ratio,
                label="image",
            ),
        )
        ctx.progress.advance("Picture ready")
        return ImageResult(url=url, image_url=url, provider=ctx.provider.name).body()

    return run_generation(body, work)
