"""What several benches share."""

import sys


def gunicorn_command(app: str, *args: str) -> list[str]:
    """The production command line (gunicorn.conf.py) serving ``app``, e.g. the guide's variant."""
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app, *args]


def fake_gemini_env(key: str, fake_url: str, **settings: str) -> dict[str, str]:
    """A server's environment for a bench against the fake Gemini at ``fake_url``: every picture
    made afresh (no image cache) and quiet logs; ``settings`` add or override."""
    return {
        "GENAI_API_KEY": key,
        "LIROO_GEMINI_BASE_URL": fake_url,
        "LIROO_IMAGE_CACHE": "off",
        "LIROO_LOG_LEVEL": "WARNING",
        **settings,
    }
