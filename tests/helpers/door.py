"""The memory door of a real server: a setting with room for one picture at a time, and the
door's figures."""

import requests

from tests.fake_gemini import gemini_env


def one_picture_at_a_time(fake_gemini, queue: int, **extra) -> dict[str, str]:
    """Settings on the loopback Gemini whose door lets one picture in at a time (600 MB of a
    1000 MB limit) and keeps a line of ``queue`` places, where a request waits up to 60 s."""
    return gemini_env(
        fake_gemini,
        MEMORY_LIMIT_MB=1000,
        LIROO_IMAGE_RESERVE_MB=600,
        LIROO_ADMISSION_WAIT_S=60,
        LIROO_ADMISSION_QUEUE=queue,
        **extra,
    )


def admission(server) -> dict:
    """The memory door's figures (/memory's governor.admission) of the worker that answers."""
    return requests.get(server.url("/memory"), timeout=10).json()["governor"]["admission"]
