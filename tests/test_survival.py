"""A short survival run under a real memory limit (bench/survival.py has the full one).

The real gunicorn server runs in a memory cgroup made here (root is needed);
a burst of image requests whose decodes need far more than the limit must
leave no OOM kill and no dropped connection with the governor on, every
refusal a 503 with Retry-After, and still serve; the same burst with the
governor off must really get the server OOM-killed, or the test proves nothing.
"""
import pytest

from bench import survival
from tests.fake_gemini import FakeGemini

LIMIT = survival.run_limited.parse_size("512m")
_reason = survival.cgroup_unavailable_reason(LIMIT)
pytestmark = pytest.mark.skipif(
    _reason is not None, reason=f"no memory cgroup can be made here: {_reason}"
)


def test_the_governor_survives_what_kills_the_ungoverned_server():
    with FakeGemini(image_size=(4096, 4096), image_mode="RGBA") as fake:
        governed = survival.run(True, fake, LIMIT, requests_n=30)
        ungoverned = survival.run(False, fake, LIMIT, requests_n=30)
    print(survival.report(governed))
    print(survival.report(ungoverned))
    assert governed.source == "cgroup_v1" or governed.source == "cgroup_v2"
    # learned from the cgroup, not configured
    assert governed.learned_limit_mb == pytest.approx(512 * 0.75)
    assert governed.oom_kills == 0
    assert governed.dropped == 0
    assert governed.refusals_without_retry_after == 0
    assert governed.other == 0
    assert governed.served >= 0.2 * governed.total
    assert ungoverned.oom_kills >= 1, (
        "the burst did not hurt the ungoverned server: the test has no teeth"
    )
