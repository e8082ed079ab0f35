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
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"no memory cgroup can be made here: {_reason}")


def test_the_governor_survives_what_kills_the_ungoverned_server():
    with FakeGemini(image_size=(4096, 4096), image_mode="RGBA") as fake:
        governed = survival.run(True, fake, LIMIT, requests_n=30)
        ungoverned = survival.run(False, fake, LIMIT, requests_n=30)
    print(survival.report(governed))
    print(survival.report(ungoverned))
    assert governed.source == "cgroup_v1" or governed.source == "cgroup_v2"
    assert governed.learned_limit_mb == pytest.approx(512 * 0.75)  # learned from the cgroup, not configured
    assert governed.oom_kills == 0
    assert governed.dropped == 0
    assert governed.refusals_without_retry_after == 0
    assert governed.other == 0
    assert governed.served >= 0.2 * governed.total
    assert ungoverned.oom_kills >= 1, "the burst did not hurt the ungoverned server: the test has no teeth"


def test_concurrent_long_narrations_kill_only_the_ungoverned_server():
    """40 concurrent 20,000-character narrations (bench/survival.py's speech scenario): every chunk in flight
    holds ~20 MB while the SDK receives, decodes and encodes it."""
    with FakeGemini() as fake:
        fake.set_latency(0.5, operation="speech")
        governed = survival.run(True, fake, LIMIT, requests_n=40, request=survival.SPEECH_REQUEST)
        ungoverned = survival.run(False, fake, LIMIT, requests_n=40, request=survival.SPEECH_REQUEST)
    print(survival.report(governed, "speech"))
    print(survival.report(ungoverned, "speech"))
    assert governed.oom_kills == 0
    assert governed.dropped == 0
    assert governed.refusals_without_retry_after == 0
    assert governed.other == 0
    assert governed.served >= 1
    assert ungoverned.oom_kills >= 1, "the narrations did not hurt the ungoverned server: the test has no teeth"
