"""The operations guide's comic loop on our stack, as a WSGI entry point for comparisons.

Same app, provider, SDK, image pipeline and storage as ours; only the loop
differs, as the guide describes it: the script, then one panel at a time,
a memory check (psutil) before each, ``gc.collect()`` after each, and a 5 s
pause between panels. Serve with ``gunicorn -c gunicorn.conf.py bench.guide_comic:app``;
it answers POST /generate_comic_guide.
"""
import gc
import time

import psutil
from flask import jsonify, request

from liroo import create_app
from liroo.generation.comic import ComicScript, panel_count, panel_image_prompt, script_prompt
from liroo.imaging import process_for_storage
from liroo.services import services
from liroo.storage import IMMUTABLE_CACHE, media_key

PAUSE_S = 5.0
LIMIT_MB = 1500

app = create_app()


@app.post("/generate_comic_guide")
def guide_comic():
    svc = services()
    settings, provider, storage = svc.settings, svc.provider, svc.storage
    body = request.get_json()
    text, level, style = body["text"], body.get("level", "moderate"), "comic_book"
    script = provider.generate_structured(
        script_prompt(text, level, style, panel_count(text, 8)), ComicScript
    )
    panels = []
    for number, panel in enumerate(script.panels[:8], 1):
        if psutil.Process().memory_info().rss / 2**20 > LIMIT_MB:
            break
        result = provider.generate_image(panel_image_prompt(script, panel, style), "1:1")
        image = process_for_storage(result.data, settings)
        url = storage.put(
            media_key("images", image.extension),
            image.data,
            image.mime_type,
            IMMUTABLE_CACHE,
            public_base=request.host_url,
        )
        panels.append(
            {
                "panel_id": number,
                "scene": panel.scene,
                "image_prompt": panel.image_prompt,
                "image_url": url,
            }
        )
        del result, image
        gc.collect()
        if number < len(script.panels[:8]):
            time.sleep(PAUSE_S)
    return jsonify(
        {
            "success": True,
            "comic": {
                "comic_title": script.comic_title,
                "theme": script.theme,
                "character_style_guide": {},
                "panel_layout": panels,
            },
        }
    )
