"""What several benches share."""

import sys


def gunicorn_command(app: str, *args: str) -> list[str]:
    """The production command line (gunicorn.conf.py) serving ``app``, e.g. the guide's variant."""
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app, *args]
